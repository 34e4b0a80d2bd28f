"""computewatch.crypto: canonical JSON, BLAKE3/SHA-256 hashing of bytes and tensors, Ed25519, DSSE, RFC 9162 Merkle trees, the XOF sampler.

Formats and test vectors: docs/formats.md. The GPU kernel (`blake3_triton`) is imported
lazily by `hash_regions` only when a CUDA tensor is hashed.

Names are imported lazily, and bytes are hashed apart from tensors: `digest` (BLAKE3/SHA-256 of
bytes) and `regions` (a shard's regions and digest) need no torch, `hashing` (tensors) does, so
the chip-log auditor, the policy engine and the CLI's start-up do not load torch.
"""

from __future__ import annotations

from computewatch._lazy import lazy_exports

__all__ = [
    "EMPTY_ROOT",
    "PAYLOAD_TYPE_INTOTO",
    "STATEMENT_TYPE",
    "ComputewatchError",
    "Envelope",
    "FormatError",
    "KeyFileError",
    "MerkleTree",
    "ProofError",
    "Region",
    "SignatureError",
    "SigningKey",
    "VerifyKey",
    "XofSampler",
    "append_durable",
    "atomic_write",
    "blake3_bytes",
    "blake3_tensor",
    "canonical_json",
    "dtype_name",
    "hash_regions",
    "leaf_hash",
    "node_hash",
    "pae",
    "parse_canonical_json",
    "predicate_type",
    "root_from_leaves",
    "sha256_bytes",
    "shard_digest",
    "sign_envelope",
    "statement",
    "tensor_memory",
    "verify_consistency",
    "verify_envelope",
    "verify_inclusion",
]

_WHERE = {
    "ComputewatchError": "errors",
    "EMPTY_ROOT": "merkle",
    "Envelope": "dsse",
    "FormatError": "errors",
    "KeyFileError": "errors",
    "MerkleTree": "merkle",
    "PAYLOAD_TYPE_INTOTO": "dsse",
    "ProofError": "errors",
    "Region": "regions",
    "STATEMENT_TYPE": "dsse",
    "SignatureError": "errors",
    "SigningKey": "signing",
    "VerifyKey": "signing",
    "XofSampler": "sampler",
    "append_durable": "atomic",
    "atomic_write": "atomic",
    "blake3_bytes": "digest",
    "blake3_tensor": "hashing",
    "canonical_json": "canonical",
    "dtype_name": "hashing",
    "hash_regions": "hashing",
    "leaf_hash": "merkle",
    "node_hash": "merkle",
    "pae": "dsse",
    "parse_canonical_json": "canonical",
    "predicate_type": "dsse",
    "root_from_leaves": "merkle",
    "sha256_bytes": "digest",
    "shard_digest": "regions",
    "sign_envelope": "dsse",
    "statement": "dsse",
    "tensor_memory": "hashing",
    "verify_consistency": "merkle",
    "verify_envelope": "dsse",
    "verify_inclusion": "merkle",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
