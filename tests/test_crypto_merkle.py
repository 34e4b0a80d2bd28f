"""RFC 9162 Merkle trees: reference roots, the transparency-dev proof vectors, and a property test."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from computewatch.crypto import (
    EMPTY_ROOT,
    FormatError,
    MerkleTree,
    ProofError,
    leaf_hash,
    node_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

_VECTORS = Path(__file__).parent / "vectors" / "rfc6962-proofs"
_INCLUSION = sorted((_VECTORS / "inclusion").rglob("*.json"))
_CONSISTENCY = sorted((_VECTORS / "consistency").rglob("*.json"))

# The RFC 6962 reference test tree (certificate-transparency test data) and its roots per size.
_LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f"]]
_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _b64(s: str) -> bytes:
    return base64.b64decode(s)


def test_vector_files_present() -> None:
    assert len(_INCLUSION) > 50 and len(_CONSISTENCY) > 50


def test_reference_roots() -> None:
    assert MerkleTree().root() == EMPTY_ROOT == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    tree = MerkleTree(_LEAVES)
    for size, want in enumerate(_ROOTS, start=1):
        assert tree.root(size).hex() == want
        assert root_from_leaves(_LEAVES[:size]).hex() == want


def test_hash_prefixes() -> None:
    assert leaf_hash(b"").hex() == _ROOTS[0]
    assert node_hash(leaf_hash(b""), leaf_hash(b"\x00")).hex() == _ROOTS[1]


@pytest.mark.parametrize("path", _INCLUSION, ids=lambda p: str(p.relative_to(_VECTORS)))
def test_inclusion_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (_b64(case["leafHash"]), case["leafIdx"], case["treeSize"], [_b64(p) for p in case["proof"] or []],
            _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _CONSISTENCY, ids=lambda p: str(p.relative_to(_VECTORS)))
def test_consistency_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (case["size1"], case["size2"], _b64(case["root1"]), _b64(case["root2"]),
            [_b64(p) for p in case["proof"] or []])
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def _flips(proof: list[bytes]) -> list[list[bytes]]:
    # One corrupted copy per proof element (first and last byte), plus truncation and padding.
    out = []
    for i, p in enumerate(proof):
        for j in (0, len(p) - 1):
            bad = bytearray(p)
            bad[j] ^= 0x01
            out.append([*proof[:i], bytes(bad), *proof[i + 1:]])
    if proof:
        out.append(proof[:-1])
    out.append([*proof, EMPTY_ROOT])
    return out


def test_generated_proofs_verify_and_corruptions_fail() -> None:
    n_max = 40
    tree = MerkleTree(i.to_bytes(4, "big") for i in range(n_max))
    roots = [tree.root(n) for n in range(n_max + 1)]
    for size in range(1, n_max + 1):
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            verify_inclusion(tree.leaf(index), index, size, proof, roots[size])
            for bad in _flips(proof):
                with pytest.raises(ProofError):
                    verify_inclusion(tree.leaf(index), index, size, bad, roots[size])
            with pytest.raises(ProofError):
                verify_inclusion(tree.leaf(index), index, size, proof, bytes([roots[size][0] ^ 1]) + roots[size][1:])
        for old in range(1, size + 1):
            proof = tree.consistency_proof(old, size)
            verify_consistency(old, size, roots[old], roots[size], proof)
            for bad in _flips(proof):
                with pytest.raises(ProofError):
                    verify_consistency(old, size, roots[old], roots[size], bad)
            if old < size:
                with pytest.raises(ProofError):
                    verify_consistency(old, size, roots[old], roots[size - 1], proof)


def test_tree_api_errors() -> None:
    tree = MerkleTree([b"a", b"b"])
    assert tree.size == len(tree) == 2
    assert tree.append(b"c") == 2
    with pytest.raises(FormatError, match="leaf index"):
        tree.inclusion_proof(3, 3)
    with pytest.raises(FormatError, match="tree size"):
        tree.root(4)
    with pytest.raises(FormatError, match="old size"):
        tree.consistency_proof(0, 3)
    with pytest.raises(FormatError, match="32 bytes"):
        tree.append_hash(b"short")
