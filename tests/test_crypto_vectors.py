"""The vectors in tests/vectors/computewatch/crypto.json match the code, and the format doc quotes them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from computewatch.crypto import (
    Envelope,
    MerkleTree,
    Region,
    SigningKey,
    canonical_json,
    hash_regions,
    pae,
    parse_canonical_json,
    shard_digest,
    statement,
    verify_consistency,
    verify_envelope,
    verify_inclusion,
)

_ROOT = Path(__file__).resolve().parent.parent
_VEC = json.loads((_ROOT / "tests" / "vectors" / "computewatch" / "crypto.json").read_text(encoding="utf-8"))
_DOC = (_ROOT / "docs" / "formats.md").read_text(encoding="utf-8")

_TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "I64": torch.int64}


def test_canonical_vector() -> None:
    v = _VEC["canonical_json"]
    assert canonical_json(v["input"]).hex() == v["canonical_hex"]
    assert parse_canonical_json(bytes.fromhex(v["canonical_hex"])) == v["input"]
    assert v["canonical_text"] in _DOC and v["canonical_hex"] in _DOC


def test_shard_vector() -> None:
    v = _VEC["shard"]
    tensors = []
    for spec in v["tensors"]:
        raw = bytearray.fromhex(spec["data_hex"])
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        tensors.append(flat.view(_TORCH_DTYPES[spec["dtype"]]).reshape(spec["shape"]))
    regions = hash_regions(tensors)
    assert [r.to_json() for r in regions] == v["regions"]
    assert canonical_json({"v": 1, "hash": "blake3-256", "regions": v["regions"]}).decode() == v["shard_json"]
    assert shard_digest([Region.from_json(r) for r in v["regions"]]).hex() == v["shard_digest"]
    assert v["shard_digest"] in _DOC
    for r in v["regions"]:
        assert r["digest"] in _DOC


def test_dsse_vector() -> None:
    v = _VEC["dsse"]
    key = SigningKey.from_seed(bytes.fromhex(v["seed_hex"]))
    assert key.public_key.raw.hex() == v["public_key_hex"] and key.public_key.keyid == v["keyid"]
    st = v["statement"]
    assert statement([(s["name"], s["digest"]) for s in st["subject"]], st["predicateType"], st["predicate"]) == st
    payload = canonical_json(st)
    assert payload.decode() == v["payload_text"]
    assert pae(v["payload_type"], payload).hex() == v["pae_hex"]
    # Ed25519 is deterministic, so the signature itself is a vector.
    assert key.sign(pae(v["payload_type"], payload)).hex() == v["sig_hex"]
    env = Envelope.from_json(v["envelope"])
    assert env.to_json().decode() == v["envelope"]
    assert verify_envelope(env, [key.public_key]) == payload
    for field in ("public_key_hex", "keyid", "sig_hex", "payload_text", "envelope", "seed_hex"):
        assert v[field] in _DOC, field


def test_merkle_vector() -> None:
    v = _VEC["merkle"]
    tree = MerkleTree(bytes.fromhex(x) for x in v["leaves_hex"])
    assert tree.leaf(0).hex() == v["leaf_hash_0"]
    for size, root in v["roots"].items():
        assert tree.root(int(size)).hex() == root
        assert root in _DOC
    inc, con = v["inclusion"], v["consistency"]
    assert [p.hex() for p in tree.inclusion_proof(inc["index"], inc["size"])] == inc["proof"]
    assert [p.hex() for p in tree.consistency_proof(con["old_size"], con["new_size"])] == con["proof"]
    verify_inclusion(tree.leaf(inc["index"]), inc["index"], inc["size"], [bytes.fromhex(p) for p in inc["proof"]],
                     bytes.fromhex(v["roots"][str(inc["size"])]))
    verify_consistency(con["old_size"], con["new_size"], bytes.fromhex(v["roots"][str(con["old_size"])]),
                       bytes.fromhex(v["roots"][str(con["new_size"])]), [bytes.fromhex(p) for p in con["proof"]])
    for p in inc["proof"] + con["proof"]:
        assert p in _DOC
