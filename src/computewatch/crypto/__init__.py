"""computewatch.crypto: canonical JSON, BLAKE3/SHA-256 hashing over tensors, Ed25519, DSSE, RFC 9162 Merkle trees."""

from computewatch.crypto.atomic import append_durable, atomic_write
from computewatch.crypto.canonical import canonical_json, parse_canonical_json
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

__all__ = [
    "ComputewatchError",
    "FormatError",
    "KeyFileError",
    "ProofError",
    "Region",
    "SignatureError",
    "append_durable",
    "atomic_write",
    "blake3_bytes",
    "blake3_tensor",
    "canonical_json",
    "dtype_name",
    "hash_regions",
    "parse_canonical_json",
    "sha256_bytes",
    "shard_digest",
    "tensor_memory",
]
