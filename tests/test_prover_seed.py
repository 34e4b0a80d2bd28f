"""PoTD-style seed: bound to every sample and the nonce; drives W0 and a reproducible data order."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import blake3
import pytest
import torch

from computewatch.crypto.errors import FormatError
from computewatch.formats.dataset import DatasetCommitment
from computewatch.formats.seed import (
    batches,
    data_order,
    derive_run_seed,
    init_generator,
    new_nonce,
    steps_per_epoch,
    substream,
)

SAMPLES = [bytes([i]) * 17 for i in range(9)]
NONCE = b"fixed test nonce"


def _seed(samples: list[bytes] = SAMPLES, nonce: bytes = NONCE) -> bytes:
    return derive_run_seed(DatasetCommitment.from_samples(samples).root, nonce)


def test_seed_is_32_bytes_and_deterministic() -> None:
    assert len(_seed()) == 32 and _seed() == _seed()


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_seed_changes_when_any_sample_changes(index: int) -> None:
    changed = list(SAMPLES)
    changed[index] = changed[index] + b"x"
    assert _seed(changed) != _seed()


def test_seed_changes_with_nonce_and_order() -> None:
    assert _seed(nonce=NONCE + b"!") != _seed()
    assert _seed(nonce=new_nonce()) != _seed(nonce=new_nonce())
    assert _seed([SAMPLES[1], SAMPLES[0], *SAMPLES[2:]]) != _seed()


def test_seed_rejects_bad_input() -> None:
    root = DatasetCommitment.from_samples(SAMPLES).root
    with pytest.raises(FormatError, match="dataset root"):
        derive_run_seed(root[:31], NONCE)
    with pytest.raises(FormatError, match="nonce"):
        derive_run_seed(root, b"")
    with pytest.raises(FormatError, match="run seed"):
        substream(b"short", "init")
    with pytest.raises(FormatError, match="purpose"):
        substream(_seed(), "")


def test_substreams_are_63_bit_and_separate() -> None:
    seed = _seed()
    values = {p: substream(seed, p) for p in ("init", "order", "dropout")}
    assert len(set(values.values())) == 3
    assert all(0 <= v < 2**63 for v in values.values())
    assert substream(seed, "init") == values["init"]
    assert substream(_seed(nonce=b"other"), "init") != values["init"]


def test_init_generator_reproduces_w0() -> None:
    a = torch.randn(64, generator=init_generator(_seed()))
    b = torch.randn(64, generator=init_generator(_seed()))
    c = torch.randn(64, generator=init_generator(_seed(nonce=b"other")))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_data_order_is_a_reproducible_permutation() -> None:
    seed = _seed()
    for n in (0, 1, 2, 7, 1000, 20_000):  # 20 000 crosses XOF read chunks
        order = data_order(seed, n, 0)
        assert sorted(order) == list(range(n))
        assert data_order(seed, n, 0) == order
    assert data_order(seed, 1000, 0) != data_order(seed, 1000, 1)
    assert data_order(seed, 1000, 0) != data_order(_seed(nonce=b"other"), 1000, 0)
    assert data_order(seed, 1000, 0) != list(range(1000))


def test_data_order_is_roughly_uniform() -> None:
    # Position-0 counts over many seeds: a biased shuffle would favour some ids.
    counts = [0] * 4
    for k in range(800):
        counts[data_order(derive_run_seed(bytes(32), k.to_bytes(4, "little")), 4, 0)[0]] += 1
    assert all(140 < c < 260 for c in counts), counts


def test_batches_cover_each_epoch_and_resume_anywhere() -> None:
    seed, n, bs = _seed(), 10, 3
    assert steps_per_epoch(n, bs) == 3
    run = list(batches(seed, n, bs, steps=7))
    assert [step for step, _ in run] == list(range(7))
    assert all(len(ids) == bs for _, ids in run)
    epoch0 = [i for _, ids in run[:3] for i in ids]
    assert epoch0 == data_order(seed, n, 0)[:9]  # the 10th id is dropped
    assert [i for _, ids in run[3:6] for i in ids] == data_order(seed, n, 1)[:9]
    # A Verifier replaying steps 4..6 needs only the seed.
    assert list(batches(seed, n, bs, steps=3, start_step=4)) == run[4:7]


def test_batches_reject_bad_shapes() -> None:
    with pytest.raises(FormatError, match="exceeds"):
        batches(_seed(), 4, 5, steps=1)
    with pytest.raises(FormatError, match="batch_size"):
        batches(_seed(), 4, 0, steps=1)
    with pytest.raises(FormatError, match="start_step"):
        batches(_seed(), 4, 2, steps=1, start_step=-1)


# --- test vector: recomputed from the definitions in docs/formats.md with blake3/hashlib ---

_VECTOR = Path(__file__).parent / "vectors" / "computewatch" / "dataset.json"


def _spec_order(seed: bytes, n: int, epoch: int) -> list[int]:
    # Written from the format text, not from seed.py: XOF read in one piece, words consumed in order.
    stream = blake3.blake3(b"computewatch/v1/data-order\x00" + epoch.to_bytes(8, "little"), key=seed)
    data = stream.digest(length=8 * 4 * max(n, 1))
    words = iter(int.from_bytes(data[k : k + 8], "little") for k in range(0, len(data), 8))
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        word = next(words)
        while word >= 2**64 - 2**64 % (i + 1):
            word = next(words)
        j = word % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def test_dataset_vector() -> None:
    vec = json.loads(_VECTOR.read_text())
    samples = [bytes.fromhex(s) for s in vec["samples_hex"]]
    hashes = [blake3.blake3(s).digest() for s in samples]
    assert [h.hex() for h in hashes] == vec["sample_hashes"]

    def leaf(h: bytes) -> bytes:
        return hashlib.sha256(b"\x00" + h).digest()

    def node(a: bytes, b: bytes) -> bytes:
        return hashlib.sha256(b"\x01" + a + b).digest()

    root = node(node(leaf(hashes[0]), leaf(hashes[1])), node(leaf(hashes[2]), leaf(hashes[3])))
    assert root.hex() == vec["root"]
    commitment = DatasetCommitment.from_samples(samples)
    assert commitment.root == root
    assert [p.hex() for p in commitment.inclusion_proof(2)] == vec["inclusion_proof_2"]
    assert vec["inclusion_proof_2"] == [leaf(hashes[3]).hex(), node(leaf(hashes[0]), leaf(hashes[1])).hex()]

    nonce = bytes.fromhex(vec["nonce"])
    seed = blake3.blake3(root + nonce, derive_key_context="computewatch v1 2026-11 PoTD run seed").digest()
    assert seed.hex() == vec["seed"] == derive_run_seed(root, nonce).hex()
    for purpose, value in vec["substream"].items():
        word = blake3.blake3(b"computewatch/v1/substream\x00" + purpose.encode(), key=seed).digest(length=8)
        assert int(value) == int.from_bytes(word, "little") & (2**63 - 1) == substream(seed, purpose)

    for epoch in range(3):
        expected = vec["data_order"][f"epoch_{epoch}"]
        assert _spec_order(seed, 4, epoch) == expected == data_order(seed, 4, epoch)
    assert _spec_order(seed, 10, 0) == vec["data_order_10"]["epoch_0"] == data_order(seed, 10, 0)
    assert _spec_order(seed, 3000, 5) == data_order(seed, 3000, 5)
    b = vec["batches"]
    assert [[s, ids] for s, ids in batches(seed, b["n_samples"], b["batch_size"], len(b["steps"]))] == b["steps"]
