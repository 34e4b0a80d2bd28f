"""Dataset commitment: roots bind every sample and their order; inclusion proofs verify."""

from __future__ import annotations

import pytest

from computewatch.crypto.errors import FormatError, ProofError
from computewatch.crypto.hashing import blake3_bytes
from computewatch.formats.dataset import (
    DatasetCommitment,
    sample_hash,
    verify_sample,
    verify_sample_hash,
)

SAMPLES = [f"sample number {i}".encode() * (i + 1) for i in range(11)]


def test_sample_hash_is_blake3_of_the_bytes() -> None:
    assert sample_hash(b"abc") == blake3_bytes(b"abc")
    assert len(sample_hash(b"")) == 32


def test_from_samples_equals_from_hashes() -> None:
    a = DatasetCommitment.from_samples(SAMPLES)
    b = DatasetCommitment.from_sample_hashes([sample_hash(s) for s in SAMPLES])
    assert a.root == b.root and a == b
    assert a.size == len(a) == len(SAMPLES)
    assert a.sample_hashes == [sample_hash(s) for s in SAMPLES]


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_root_changes_when_any_sample_changes(index: int) -> None:
    base = DatasetCommitment.from_samples(SAMPLES).root
    changed = list(SAMPLES)
    changed[index] = changed[index][:-1] + bytes([changed[index][-1] ^ 1])
    assert DatasetCommitment.from_samples(changed).root != base


def test_root_changes_with_order_insertion_and_deletion() -> None:
    base = DatasetCommitment.from_samples(SAMPLES).root
    swapped = [SAMPLES[1], SAMPLES[0], *SAMPLES[2:]]
    assert DatasetCommitment.from_samples(swapped).root != base
    assert DatasetCommitment.from_samples(SAMPLES[:-1]).root != base
    assert DatasetCommitment.from_samples([*SAMPLES, b"extra"]).root != base


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 11])
def test_every_inclusion_proof_verifies(size: int) -> None:
    commitment = DatasetCommitment.from_samples(SAMPLES[:size])
    for i in range(size):
        verify_sample(SAMPLES[i], i, size, commitment.inclusion_proof(i), commitment.root)
        verify_sample_hash(sample_hash(SAMPLES[i]), i, size, commitment.inclusion_proof(i), commitment.root)


def test_tampered_inclusion_proofs_fail() -> None:
    commitment = DatasetCommitment.from_samples(SAMPLES)
    n, root = commitment.size, commitment.root
    proof = commitment.inclusion_proof(4)
    with pytest.raises(ProofError):
        verify_sample(SAMPLES[4] + b"!", 4, n, proof, root)  # another sample
    with pytest.raises(ProofError):
        verify_sample(SAMPLES[4], 5, n, proof, root)  # another position
    # The size shapes the path only where the leaf sits on the tree's right edge.
    last = commitment.inclusion_proof(n - 1)
    verify_sample(SAMPLES[n - 1], n - 1, n, last, root)
    with pytest.raises(ProofError):
        verify_sample(SAMPLES[n - 1], n - 1, n + 1, last, root)  # another size
    with pytest.raises(ProofError):
        verify_sample(SAMPLES[4], 4, n, proof[:-1], root)  # truncated
    with pytest.raises(ProofError):
        verify_sample(SAMPLES[4], 4, n, [*proof, proof[0]], root)  # padded
    flipped = [bytes([proof[0][0] ^ 0x80]) + proof[0][1:], *proof[1:]]
    with pytest.raises(ProofError):
        verify_sample(SAMPLES[4], 4, n, flipped, root)
    with pytest.raises(ProofError):
        verify_sample(SAMPLES[4], 4, n, proof, bytes(32))  # another root
    with pytest.raises(ProofError):
        verify_sample("text", 4, n, proof, root)  # type: ignore[arg-type]


def test_json_round_trip_and_tamper_detection() -> None:
    commitment = DatasetCommitment.from_samples(SAMPLES)
    doc = commitment.to_json()
    assert doc["root"] == commitment.root.hex() and doc["size"] == len(SAMPLES)
    assert DatasetCommitment.from_json(doc) == commitment
    summary = commitment.summary_json()
    assert "sample_hashes" not in summary and summary["root"] == doc["root"]

    tampered = dict(doc, sample_hashes=[doc["sample_hashes"][1], doc["sample_hashes"][0], *doc["sample_hashes"][2:]])
    with pytest.raises(FormatError, match="root does not match"):
        DatasetCommitment.from_json(tampered)
    with pytest.raises(FormatError, match="size"):
        DatasetCommitment.from_json(dict(doc, size=3))
    with pytest.raises(FormatError, match="missing"):
        DatasetCommitment.from_json({k: v for k, v in doc.items() if k != "tree"})
    with pytest.raises(FormatError, match="hex"):
        DatasetCommitment.from_json(dict(doc, root=doc["root"].upper()))


def test_bad_input_is_rejected_clearly() -> None:
    with pytest.raises(FormatError, match="at least one sample"):
        DatasetCommitment.from_samples([])
    with pytest.raises(FormatError, match="32-byte"):
        DatasetCommitment.from_sample_hashes([b"short"])
    with pytest.raises(FormatError, match="must be bytes"):
        DatasetCommitment.from_samples(["text"])  # type: ignore[list-item]
    commitment = DatasetCommitment.from_samples(SAMPLES)
    with pytest.raises(FormatError, match="outside"):
        commitment.inclusion_proof(len(SAMPLES))
