"""Dataset commitment: an RFC 9162 Merkle root over the per-sample BLAKE3 hashes.

The transcript's 𝔻 names samples by index into a committed dataset. Each sample's hash H(di)
is BLAKE3-256 of its raw bytes; the leaves of the tree are those 32-byte hashes, in dataset
order (so reordering the dataset changes the root, as changing any sample does). The root is
what the run seed is derived from (`computewatch.formats.seed`) and what the chip's
precommitment binds; an inclusion proof lets the Prover show one sample belongs to the dataset
without revealing the others. Formats and a test vector: docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from computewatch.crypto.errors import FormatError, ProofError
from computewatch.crypto.digest import blake3_bytes
from computewatch.crypto.merkle import MerkleTree, leaf_hash, verify_inclusion

__all__ = [
    "COMMITMENT_VERSION",
    "SAMPLE_HASH",
    "SAMPLE_HASH_SIZE",
    "TREE_HASH",
    "DatasetCommitment",
    "sample_hash",
    "verify_sample",
    "verify_sample_hash",
]

COMMITMENT_VERSION = 1
SAMPLE_HASH = "blake3-256"
TREE_HASH = "rfc9162-sha256"
SAMPLE_HASH_SIZE = 32
_FIELDS = frozenset({"v", "sample_hash", "tree", "size", "root", "sample_hashes"})


def _as_bytes(sample: object, what: str) -> bytes | bytearray | memoryview:
    if not isinstance(sample, (bytes, bytearray, memoryview)):
        raise FormatError(f"{what} must be bytes, got {type(sample).__name__}")
    return sample


def sample_hash(sample: bytes | bytearray | memoryview) -> bytes:
    """H(d): BLAKE3-256 of the sample's raw bytes."""
    return blake3_bytes(_as_bytes(sample, "sample"))


def _check_hash(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != SAMPLE_HASH_SIZE:
        raise FormatError(f"{what} must be a {SAMPLE_HASH_SIZE}-byte hash")
    return bytes(value)


def _parse_hex(value: object, what: str) -> bytes:
    # Lowercase only, so every commitment has exactly one JSON spelling.
    if not isinstance(value, str) or len(value) != 2 * SAMPLE_HASH_SIZE or value != value.lower():
        raise FormatError(f"{what} must be {2 * SAMPLE_HASH_SIZE} lowercase hex characters")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise FormatError(f"{what} is not valid hex") from None


class DatasetCommitment:
    """The ordered per-sample hashes of a dataset and the Merkle root over them."""

    def __init__(self, sample_hashes: Sequence[bytes]) -> None:
        hashes = [_check_hash(h, f"sample hash {i}") for i, h in enumerate(sample_hashes)]
        if not hashes:
            raise FormatError("a dataset commitment needs at least one sample")
        self._hashes = hashes
        self._tree = MerkleTree(hashes)
        self._root = self._tree.root()

    @classmethod
    def from_sample_hashes(cls, hashes: Sequence[bytes]) -> DatasetCommitment:
        return cls(hashes)

    @classmethod
    def from_samples(cls, samples: Iterable[bytes]) -> DatasetCommitment:
        return cls([sample_hash(_as_bytes(s, f"sample {i}")) for i, s in enumerate(samples)])

    @property
    def root(self) -> bytes:
        """RFC 9162 root over the leaves H(d1), ..., H(dn)."""
        return self._root

    @property
    def size(self) -> int:
        return len(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    @property
    def sample_hashes(self) -> list[bytes]:
        return list(self._hashes)

    def sample_hash_at(self, index: int) -> bytes:
        self._check_index(index)
        return self._hashes[index]

    def _check_index(self, index: int) -> None:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self._hashes):
            raise FormatError(f"sample index {index!r} outside 0..{len(self._hashes) - 1}")

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The audit path showing sample ``index`` under `root` (RFC 9162 §2.1.3.1)."""
        self._check_index(index)
        return self._tree.inclusion_proof(index, len(self._hashes))

    def summary_json(self) -> dict[str, Any]:
        """The commitment without the per-sample hashes: what a manifest or precommitment binds."""
        return {
            "v": COMMITMENT_VERSION,
            "sample_hash": SAMPLE_HASH,
            "tree": TREE_HASH,
            "size": len(self._hashes),
            "root": self._root.hex(),
        }

    def to_json(self) -> dict[str, Any]:
        doc = self.summary_json()
        doc["sample_hashes"] = [h.hex() for h in self._hashes]
        return doc

    @classmethod
    def from_json(cls, obj: Any) -> DatasetCommitment:
        """Parse `to_json` output; the root and size are recomputed and must match."""
        if not isinstance(obj, dict):
            raise FormatError(f"dataset commitment must be a JSON object, got {type(obj).__name__}")
        if set(obj) != _FIELDS:
            raise FormatError(
                f"dataset commitment fields must be exactly {sorted(_FIELDS)}; missing "
                f"{sorted(_FIELDS - set(obj))}, unexpected {sorted(set(obj) - _FIELDS)}"
            )
        if obj["v"] != COMMITMENT_VERSION:
            raise FormatError(f"unsupported dataset commitment version {obj['v']!r}")
        if obj["sample_hash"] != SAMPLE_HASH or obj["tree"] != TREE_HASH:
            raise FormatError(f"dataset commitment must use {SAMPLE_HASH} samples in a {TREE_HASH} tree")
        hashes = obj["sample_hashes"]
        if not isinstance(hashes, list):
            raise FormatError("sample_hashes must be a JSON list")
        commitment = cls([_parse_hex(h, f"sample hash {i}") for i, h in enumerate(hashes)])
        if obj["size"] != commitment.size:
            raise FormatError(f"size {obj['size']!r} does not match the {commitment.size} sample hashes listed")
        if _parse_hex(obj["root"], "root") != commitment.root:
            raise FormatError("root does not match the Merkle root of the listed sample hashes")
        return commitment

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatasetCommitment) and self._hashes == other._hashes

    def __hash__(self) -> int:
        return hash(self._root)

    def __repr__(self) -> str:
        return f"DatasetCommitment(size={len(self._hashes)}, root={self._root.hex()[:16]}...)"


def verify_sample_hash(
    digest: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless ``digest`` is sample ``index`` of the ``size``-sample dataset ``root``."""
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != SAMPLE_HASH_SIZE:
        raise ProofError(f"sample hash must be {SAMPLE_HASH_SIZE} bytes")
    for name, value in (("index", index), ("size", size)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProofError(f"sample {name} must be an integer, got {value!r}")
    verify_inclusion(leaf_hash(bytes(digest)), index, size, proof, root)


def verify_sample(sample: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless ``sample`` is sample ``index`` of the ``size``-sample dataset ``root``."""
    if not isinstance(sample, (bytes, bytearray, memoryview)):
        raise ProofError(f"sample must be bytes, got {type(sample).__name__}")
    verify_sample_hash(sample_hash(sample), index, size, proof, root)
