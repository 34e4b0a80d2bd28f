"""The statement of an inspection's finding (docs/registry.md, "Inspections").

An in-toto Statement with predicate type `urn:computewatch:inspection:v2`, in canonical JSON
version 2 (RFC 8785); the legacy `urn:computewatch:inspection:v1` (version 1 canonical JSON) stays
readable, so inspections the register stored before still re-verify. Kept apart from
`registry.inspection` so that reading a stored finding never loads the chip audit.
"""

from __future__ import annotations

from typing import Any

from computewatch.crypto.canonical import canonical_json_at
from computewatch.crypto.dsse import parse_statement, predicate_type, statement

__all__ = ["PRED_INSPECTION", "PRED_INSPECTION_V1", "encode_inspection", "parse_inspection"]

PRED_INSPECTION = predicate_type("inspection", 2)
PRED_INSPECTION_V1 = predicate_type("inspection", 1)  # legacy: read, never written
_VERSIONS = {PRED_INSPECTION_V1: 1, PRED_INSPECTION: 2}  # predicate type -> canonical JSON version


def encode_inspection(serial: str, subject_digest: dict[str, str], predicate: dict[str, Any]) -> bytes:
    """The statement bytes the register stores (and an inspector signs) for one finding."""
    return canonical_json_at(2, statement([(f"chip/{serial}", subject_digest)], PRED_INSPECTION, predicate))


def parse_inspection(data: bytes) -> dict[str, Any]:
    """A stored inspection statement, v1 or v2; its bytes must be exactly the canonical JSON its
    predicate type names (FormatError otherwise)."""
    stmt, _version = parse_statement(bytes(data), _VERSIONS)
    return stmt
