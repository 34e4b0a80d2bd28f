"""computewatch.crypto: canonical JSON, BLAKE3/SHA-256 hashing over tensors, Ed25519, DSSE, RFC 9162 Merkle trees.

Formats and test vectors: docs/formats.md. The GPU kernel (`blake3_triton`) is imported
lazily by `hash_regions` only when a CUDA tensor is hashed.
"""

from computewatch.crypto.atomic import append_durable, atomic_write
from computewatch.crypto.canonical import canonical_json, parse_canonical_json
from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    STATEMENT_TYPE,
    Envelope,
    pae,
    predicate_type,
    sign_envelope,
    statement,
    verify_envelope,
)
from computewatch.crypto.errors import ComputewatchError, FormatError, KeyFileError, ProofError, SignatureError
from computewatch.crypto.hashing import (
    Region,
    blake3_bytes,
    blake3_tensor,
    dtype_name,
    hash_regions,
    sha256_bytes,
    shard_digest,
    tensor_memory,
)
from computewatch.crypto.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from computewatch.crypto.signing import SigningKey, VerifyKey

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
    "verify_inclusion",
    "verify_envelope",
]
