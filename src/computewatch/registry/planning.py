"""Inspection plans: a committed seed, a bound population and a reproducible draw (§3.2).

Per monitoring period the Verifier commits to a plan before the period starts: the SHA-256
commitment of a document that names the hash of a secret seed, the population (the sorted
serials of the stockpile's eligible chips) and the parameters of Eq. 1 with the sample count s
they give. During the period only the Verifier, holding the seed, knows which chips are drawn;
after it the seed is revealed and anyone holding the document and the population re-derives
exactly one plan. The byte-level rules are in docs/registry.md ("Inspection plans").
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Sequence
from typing import Any

from computewatch.crypto.canonical import canonical_json, parse_canonical_json
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.sampler import XofSampler
from computewatch.registry.errors import PlanError

__all__ = [
    "DRAW_TAG",
    "SEED_SIZE",
    "SEED_TAG",
    "decode_population",
    "draw",
    "encode_population",
    "new_seed",
    "plan_commitment",
    "population_digest",
    "rederive",
    "seed_commitment",
]

SEED_SIZE = 32
SEED_TAG = b"computewatch/v1/inspection-seed\x00"
DRAW_TAG = b"computewatch/v1/inspection-draw\x00"
_READ_WORDS = 4096


def new_seed() -> bytes:
    """The Verifier's private randomness for one plan (OS CSPRNG)."""
    return os.urandom(SEED_SIZE)


def _check_seed(seed: bytes) -> bytes:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_SIZE:
        raise PlanError(f"an inspection seed is {SEED_SIZE} bytes")
    return bytes(seed)


def seed_commitment(seed: bytes) -> str:
    """SHA-256(SEED_TAG || seed), hex: published before the period, the seed after it."""
    return hashlib.sha256(SEED_TAG + _check_seed(seed)).hexdigest()


def encode_population(serials: Sequence[str]) -> bytes:
    """The population as bytes: serials in ascending UTF-8 byte order, each followed by LF."""
    out = sorted(serials, key=lambda s: s.encode("utf-8"))
    for a, b in itertools.pairwise(out):
        if a == b:
            raise PlanError(f"serial {a!r} appears twice in the population")
    if any("\n" in s or not s for s in out):
        raise PlanError("a serial in the population is empty or holds a line feed")
    return "".join(s + "\n" for s in out).encode("utf-8")


def decode_population(data: bytes) -> list[str]:
    text = data.decode("utf-8")
    return text.split("\n")[:-1] if text else []


def population_digest(encoded: bytes) -> str:
    return hashlib.sha256(encoded).hexdigest()


def plan_commitment(document: dict[str, Any]) -> str:
    """SHA-256 of the plan document's canonical JSON, hex."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def draw(seed: bytes, commitment: str, population: int, samples: int) -> list[int]:
    """Positions (into the sorted population) of the `samples` chips drawn, in draw order.

    A partial Fisher-Yates shuffle of 0..population-1 driven by `crypto.sampler.XofSampler` over
    the XOF of BLAKE3-keyed(key = seed, DRAW_TAG || commitment as 32 bytes): for
    k = 0 .. samples-1, swap positions k and k + below(population - k) (64-bit little-endian
    words, rejection keeps each draw unbiased); position k is the k-th chip drawn. Without
    replacement, O(samples).
    """
    key = _check_seed(seed)
    if not (isinstance(population, int) and isinstance(samples, int) and 0 <= samples <= population <= 1 << 64):
        raise PlanError(f"cannot draw {samples!r} chips from a population of {population!r}")
    try:
        message = DRAW_TAG + bytes.fromhex(commitment)
    except (TypeError, ValueError):
        raise PlanError("plan commitment must be 32 bytes of hex") from None
    if len(message) != len(DRAW_TAG) + 32:
        raise PlanError("plan commitment must be 32 bytes of hex")
    below = XofSampler(key, message, read_words=_READ_WORDS).below
    swapped: dict[int, int] = {}
    out = []
    for k in range(samples):
        j = k + below(population - k)
        at_j, at_k = swapped.get(j, j), swapped.get(k, k)
        swapped[j] = at_k
        out.append(at_j)
    return out


def rederive(document: bytes, population: bytes, seed: bytes, commitment: str | None = None) -> list[str]:
    """Re-derive a plan from its published parts: the document (canonical JSON), the population
    bytes (`encode_population`) and the revealed seed. Checks every binding first; returns the
    serials drawn, in draw order. Raises PlanError naming the binding that fails."""
    digest = hashlib.sha256(document).hexdigest()
    if commitment is not None and digest != commitment:
        raise PlanError("the plan document does not hash to the commitment")
    try:
        doc = parse_canonical_json(document)
    except ComputewatchError as exc:
        raise PlanError(f"plan document: {exc}") from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise PlanError("plan document: not a version-1 plan")
    try:
        committed_seed, pop, samples = doc["seed_commitment"], doc["population"], doc["samples"]
        size, pop_digest = pop["size"], pop["digest"]
    except (KeyError, TypeError):
        raise PlanError("plan document: missing seed_commitment, population or samples") from None
    if seed_commitment(seed) != committed_seed:
        raise PlanError("the seed does not match the committed seed hash")
    if population_digest(population) != pop_digest:
        raise PlanError("the population does not match the committed population digest")
    try:
        serials = decode_population(population)
    except UnicodeDecodeError:
        raise PlanError("the population is not UTF-8 text") from None
    if len(serials) != size or encode_population(serials) != population:
        raise PlanError("the population is not the committed sorted list")
    return [serials[i] for i in draw(seed, digest, len(serials), samples)]

