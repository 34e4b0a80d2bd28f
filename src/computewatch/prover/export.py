
"""The hashed transcript (Appendix D, step 2): digests only, for periodic reporting to the Verifier.

The Prover reports, per run, hashes of 𝕄, of each checkpoint in 𝕎 and the sequence of hashes
of the training data in 𝔻, linked to the chip-logged snapshots; raw hyperparameters, data,
sample ids and weights stay with the Prover until the trusted cluster asks for them, where
they must match these digests. Canonical JSON::

    {"v": 1, "kind": "computewatch/hashed-transcript", "run_id": ...,
     "manifest_digest": BLAKE3 of manifest.dsse.json, "precommitment_digest": ...,
     "hyperparameters_digest": BLAKE3 of canonical JSON of the hyperparameters,
     "code_digest": ..., "seed_derivation_digest": BLAKE3 of canonical JSON of the derivation,
     "layout_digest": BLAKE3 of canonical JSON of the shard layout,
     "dataset": {"root": hex, "size": n}, "checkpoint_every": k,
     "steps": {"count": n, "records_root": RFC 9162 root over the step-record lines
               (canonical JSON, no newline), "batch_roots": [hex per step]},
     "checkpoints": [{"rank", "step", "digest", "nbytes"}],
     "snapshots": [{"rank", "chip_id", "counter", "step", "shard_digest", "object"}],
     "distances": [{"rank", "from", "to", "l2"}]}

``distances`` (optional metadata of Appendix D) is the L2 norm of the change of the rank's
model tensors between consecutive checkpoints, so the Verifier can pick segments to check.
`sign_export` wraps the document for reporting: a DSSE envelope (Prover key) around an in-toto
Statement whose subject is the precommitment digest (digest set ``{"blake3-256": hex}``),
predicate type ``urn:computewatch:hashed-transcript:v3``, whose payload is canonical JSON
version 2 (RFC 8785); `read_signed_export` verifies one, and v2 (the same statement in the
legacy encoding) too. Predicate type v1 named BLAKE3 ``"blake3"`` in the digest set and is
refused. The document itself is unchanged (``"v": 1``; as a file of its own, legacy canonical JSON).
"""

from __future__ import annotations

import math
import os
from typing import Any

from computewatch.crypto.canonical import canonical_json, canonical_json_v2
from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    STATEMENT_TYPE,
    Envelope,
    parse_statement,
    predicate_type,
    sign_envelope,
    statement,
    verify_envelope,
)
from computewatch.crypto.errors import FormatError
from computewatch.crypto.digest import blake3_bytes
from computewatch.crypto.merkle import root_from_leaves
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.formats.manifest import DIGEST_BLAKE3, MANIFEST_FILE
from computewatch.prover.transcript import Transcript

__all__ = [
    "EXPORT_KIND",
    "EXPORT_PREDICATE",
    "EXPORT_PREDICATE_V2",
    "EXPORT_VERSIONS",
    "export_hashes",
    "read_signed_export",
    "sign_export",
]

EXPORT_KIND = "computewatch/hashed-transcript"
EXPORT_PREDICATE = predicate_type("hashed-transcript", 3)
EXPORT_PREDICATE_V2 = predicate_type("hashed-transcript", 2)
_EXPORT_PREDICATE_V1 = predicate_type("hashed-transcript", 1)
# predicate type -> canonical JSON version of the statement (v1 is read only to refuse it by name)
EXPORT_VERSIONS = {_EXPORT_PREDICATE_V1: 1, EXPORT_PREDICATE_V2: 1, EXPORT_PREDICATE: 2}


def _digest(obj: Any) -> str:
    return blake3_bytes(canonical_json(obj)).hex()


def export_hashes(run_dir: str | os.PathLike[str] | Transcript, *, distances: bool = True) -> dict[str, Any]:
    """Build the hashed transcript of a run directory (verifying the manifest on the way)."""
    t = run_dir if isinstance(run_dir, Transcript) else Transcript(run_dir)
    pre = t.manifest.precommitment
    pre_json = pre.to_json()
    steps = t.steps()
    lines = [r.leaf() for r in steps]
    checkpoints = [dict(e, rank=r) for r in range(t.world_size) for e in t.checkpoints(r)]
    snaps = [
        {k: s[k] for k in ("rank", "chip_id", "counter", "step", "shard_digest", "object")} for s in t.snapshots()
    ]
    return {
        "v": 1,
        "kind": EXPORT_KIND,
        "run_id": pre.run_id,
        "manifest_digest": blake3_bytes(t.storage.read(MANIFEST_FILE)).hex(),
        "precommitment_digest": pre.digest().hex(),
        "hyperparameters_digest": _digest(pre.hyperparameters),
        "code_digest": pre.code_digest,
        "seed_derivation_digest": _digest(pre_json["seed_derivation"]),
        "layout_digest": _digest(pre_json["layout"]),
        "dataset": {"root": pre.dataset["root"], "size": pre.dataset["size"]},
        "checkpoint_every": pre.checkpoint_every,
        "steps": {
            "count": len(steps),
            "records_root": root_from_leaves(lines).hex() if lines else None,
            "batch_roots": [r.batch_root for r in steps],
        },
        "checkpoints": checkpoints,
        "snapshots": snaps,
        "distances": _distances(t) if distances else [],
    }


def _distances(t: Transcript) -> list[dict[str, Any]]:
    out = []
    for rank in range(t.world_size):
        entries = t.checkpoints(rank)
        prev = None
        for e in entries:
            model = t.checkpoint(e["step"], rank).model
            if prev is not None:
                sq = sum(float((model[k].double() - prev[1][k].double()).pow(2).sum()) for k in model)
                # 9 significant digits: reductions may add in a thread-dependent order, and the
                # export must be byte-identical whenever it is rebuilt.
                out.append({"rank": rank, "from": prev[0], "to": e["step"], "l2": float(f"{math.sqrt(sq):.9g}")})
            prev = (e["step"], model)
    return out


def sign_export(doc: dict[str, Any], key: SigningKey) -> Envelope:
    """The hashed transcript as a signed report (DSSE around an in-toto Statement)."""
    stmt = statement([("precommitment", {DIGEST_BLAKE3: doc["precommitment_digest"]})], EXPORT_PREDICATE, doc)
    return sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json_v2(stmt), key)


def read_signed_export(data: bytes, keys: list[VerifyKey]) -> dict[str, Any]:
    """Verify a signed hashed transcript (`sign_export`) under `keys`; returns the document.

    Raises SignatureError when no trusted signature verifies, FormatError when the statement is
    not a v2 or v3 hashed transcript (in its version's canonical JSON) whose subject is the
    document's precommitment digest.
    """
    stmt, _ = parse_statement(verify_envelope(Envelope.from_json(data), keys), EXPORT_VERSIONS)
    kind = stmt.get("predicateType")
    if kind == _EXPORT_PREDICATE_V1:
        raise FormatError(
            f"signed hashed transcript is v1 ({_EXPORT_PREDICATE_V1}), whose subject names BLAKE3 'blake3'; this "
            f"version reads only {EXPORT_PREDICATE} (digest sets name it {DIGEST_BLAKE3!r}): export it again"
        )
    if stmt.get("_type") != STATEMENT_TYPE:
        raise FormatError(f"signed hashed transcript is not an in-toto v1 statement ({EXPORT_PREDICATE})")
    doc, subjects = stmt.get("predicate"), stmt.get("subject")
    if not isinstance(doc, dict) or doc.get("v") != 1 or doc.get("kind") != EXPORT_KIND:
        raise FormatError(f"signed hashed transcript: the predicate is not a v1 {EXPORT_KIND} document")
    expected = [{"name": "precommitment", "digest": {DIGEST_BLAKE3: doc.get("precommitment_digest")}}]
    if subjects != expected:
        raise FormatError("signed hashed transcript: the subject is not the document's precommitment digest")
    return doc
