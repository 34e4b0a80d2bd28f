"""PoTD-style seeded start: one committed seed drives the initial weights and the data order.

Proof-of-Training-Data (Choi, Shavit, Duvenaud 2023) fixes the run's randomness as
``s = H(H(d1) || ... || H(dn) || s_rand)``: neither the initial weights W0 nor the data order can be
hand-picked, and changing any record changes both. Here the dataset's Merkle root (over the same
per-sample hashes H(di), see `computewatch.formats.dataset`) stands for the concatenated sample
hashes: it commits to exactly the same ordered list, and a Verifier holding only the root can
still recompute the seed. So

    seed = BLAKE3-derive_key(RUN_SEED_CONTEXT, dataset_root || nonce)

with the 32-byte root first (fixed length, so the split is unambiguous) and the nonce playing
s_rand. Everything random in the run is then derived from ``seed`` alone:

- `substream(seed, purpose)`: a 63-bit torch seed per purpose ("init", "dropout", ...), from the
  BLAKE3 keyed hash of ``SUBSTREAM_TAG || purpose`` under the seed;
- `data_order(seed, n, epoch)`: a Fisher-Yates permutation driven by the BLAKE3 keyed-hash XOF,
  not by torch's RNG, so the order a Verifier recomputes does not depend on the torch version.

The byte-level definitions (and a test vector) are in docs/formats.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import blake3 as _blake3
import torch

from computewatch.crypto.errors import FormatError
from computewatch.crypto.sampler import XofSampler

__all__ = [
    "NONCE_SIZE",
    "ORDER_TAG",
    "RUN_SEED_CONTEXT",
    "SEED_SIZE",
    "SUBSTREAM_TAG",
    "batches",
    "data_order",
    "derive_run_seed",
    "init_generator",
    "new_nonce",
    "steps_per_epoch",
    "substream",
]

SEED_SIZE = 32
NONCE_SIZE = 32  # what `new_nonce` draws; any non-empty nonce up to _MAX_NONCE bytes is accepted
# BLAKE3 derive_key contexts must be hardcoded and globally unique; this one names the project,
# the format version and the purpose.
RUN_SEED_CONTEXT = "computewatch v1 2026-11 PoTD run seed"
# Tags prefixed to keyed-hash messages, so the seed used as a key for one purpose can never
# collide with another (the NUL ends the tag; purposes cannot contain NUL).
SUBSTREAM_TAG = b"computewatch/v1/substream\x00"
ORDER_TAG = b"computewatch/v1/data-order\x00"

_MAX_NONCE = 1024
_ROOT_SIZE = 32
_MASK63 = (1 << 63) - 1
_WORDS_PER_READ = 8192  # XOF words fetched per read while shuffling (64 KiB; never changes the stream)


def _check_seed(seed: bytes) -> bytes:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_SIZE:
        got = f"{len(seed)} bytes" if isinstance(seed, (bytes, bytearray)) else type(seed).__name__
        raise FormatError(f"run seed must be {SEED_SIZE} bytes, got {got}")
    return bytes(seed)


def _check_count(name: str, value: int, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise FormatError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def new_nonce() -> bytes:
    """A fresh random nonce (s_rand) from the OS CSPRNG."""
    return os.urandom(NONCE_SIZE)


def derive_run_seed(dataset_root: bytes, nonce: bytes) -> bytes:
    """The run seed s: BLAKE3 derive_key(RUN_SEED_CONTEXT, dataset_root || nonce), 32 bytes.

    ``dataset_root`` is the RFC 9162 root of the per-sample BLAKE3 hashes (it stands for PoTD's
    H(d1) || ... || H(dn)); ``nonce`` is s_rand, 1 to 1024 bytes, letting one dataset seed many
    runs.
    """
    if not isinstance(dataset_root, (bytes, bytearray)) or len(dataset_root) != _ROOT_SIZE:
        raise FormatError(f"dataset root must be {_ROOT_SIZE} bytes")
    if not isinstance(nonce, (bytes, bytearray)) or not 1 <= len(nonce) <= _MAX_NONCE:
        raise FormatError(f"nonce must be 1 to {_MAX_NONCE} bytes")
    hasher = _blake3.blake3(derive_key_context=RUN_SEED_CONTEXT)
    hasher.update(bytes(dataset_root))
    hasher.update(bytes(nonce))
    return hasher.digest()


def substream(seed: bytes, purpose: str) -> int:
    """A 63-bit torch seed for one purpose ("init", "dropout", ...), derived from the run seed.

    The first 8 bytes (little-endian) of BLAKE3-keyed(seed, SUBSTREAM_TAG || purpose as UTF-8),
    top bit cleared so the value is a valid signed 64-bit seed everywhere. It exceeds 2**53, so
    canonical JSON would carry it as a decimal string; better to record the purpose and recompute.
    """
    key = _check_seed(seed)
    if not isinstance(purpose, str) or not purpose or "\x00" in purpose:
        raise FormatError(f"purpose must be a non-empty string without NUL, got {purpose!r}")
    digest = _blake3.blake3(SUBSTREAM_TAG + purpose.encode("utf-8"), key=key).digest(length=8)
    return int.from_bytes(digest, "little") & _MASK63


def init_generator(seed: bytes) -> torch.Generator:
    """A CPU torch.Generator seeded with substream(seed, "init"): the only source of W0."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(substream(seed, "init"))
    return generator


def data_order(seed: bytes, n_samples: int, epoch: int) -> list[int]:
    """The epoch's permutation of sample ids 0..n_samples-1, reproducible from the seed alone.

    Fisher-Yates from the identity: for i = n-1 down to 1, swap positions i and j, where j is
    the next `crypto.sampler.XofSampler.below(i+1)` of the XOF of BLAKE3-keyed(seed, ORDER_TAG ||
    epoch as 8 bytes little-endian) (64-bit little-endian words, rejection keeps j unbiased).
    """
    key = _check_seed(seed)
    _check_count("n_samples", n_samples, 0)
    _check_count("epoch", epoch, 0)
    if epoch >= 1 << 64:
        raise FormatError(f"epoch must be below 2**64, got {epoch}")
    sampler = XofSampler(key, ORDER_TAG + epoch.to_bytes(8, "little"), read_words=max(1, min(_WORDS_PER_READ, n_samples)))
    below = sampler.below
    perm = list(range(n_samples))
    for i in range(n_samples - 1, 0, -1):
        j = below(i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """Full batches per epoch; the last n_samples mod batch_size ids of each epoch are dropped."""
    _check_count("n_samples", n_samples, 1)
    _check_count("batch_size", batch_size, 1)
    if batch_size > n_samples:
        raise FormatError(f"batch_size {batch_size} exceeds the dataset's {n_samples} samples")
    return n_samples // batch_size


def batches(
    seed: bytes, n_samples: int, batch_size: int, steps: int, start_step: int = 0
) -> Iterator[tuple[int, list[int]]]:
    """Yield (step, sample ids) for the ``steps`` steps start_step .. start_step+steps-1.

    Step t belongs to epoch t // E and takes slice (t mod E) of that epoch's `data_order`, where
    E = n_samples // batch_size: each epoch's incomplete last batch is dropped, so every step has
    exactly ``batch_size`` ids and a Verifier replaying steps i..i+k needs only the seed, never the
    batches before i.
    """
    _check_seed(seed)
    per_epoch = steps_per_epoch(n_samples, batch_size)
    _check_count("steps", steps, 0)
    _check_count("start_step", start_step, 0)
    return _batches(bytes(seed), n_samples, batch_size, per_epoch, start_step, start_step + steps)


def _batches(
    seed: bytes, n_samples: int, batch_size: int, per_epoch: int, start: int, stop: int
) -> Iterator[tuple[int, list[int]]]:
    # A separate generator so argument errors surface at the call, not at the first next().
    epoch, order = -1, []
    for step in range(start, stop):
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            order = data_order(seed, n_samples, epoch)
        pos = (step % per_epoch) * batch_size
        yield step, order[pos : pos + batch_size]
