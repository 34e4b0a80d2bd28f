"""Step challenges and the Prover's responses (issue 19): the documents of the exchange.

A challenge (Verifier -> Prover, ``CHALLENGE.json``, canonical JSON)::

    {"v": 1, "kind": "computewatch/step-challenge", "run_id", "precommitment_digest",
     "records_root", "steps_count", "mode": "exact" | "tolerance", "issued_ns": "<dec>",
     "deadline_s": int, "steps": [{"step": t, "reasons": ["random" | "top-q" | "bisection", ...]}],
     "tag": hex}

``records_root`` and ``steps_count`` pin the step records (commitments included) the Verifier
drew from: answers are judged against exactly those. ``tag`` is HMAC-SHA256, keyed by the
Verifier's secret, over the canonical JSON of the document without ``tag``: the Prover cannot
alter the drawn steps, the deadline or the pinned records without the judge noticing.

A response (Prover -> Verifier) is a folder: ``response.json`` (canonical JSON)::

    {"v": 1, "kind": "computewatch/step-response", "challenge": <the challenge, verbatim>,
     "answers": [{"step": t, "rank": r, "before": digest | null, "after": digest | null,
                  "ops": digest | null, "refused": str | null}]}

and ``objects/<digest>``: files named by the BLAKE3 of their bytes. ``before`` is the rank's
state before step t (a checkpoint file, docs/formats.md "Checkpoints", with ``step`` = t),
recomputed from the nearest checkpoint; ``after`` the state after step t (asked in tolerance
mode, where a replay is compared by distance); ``ops`` the canonical JSON list ``[[operator
name, BLAKE3 of its outputs], ...]`` of the step as the Prover's program dispatched it, for
bisection to one operator. A missing answer or ``refused`` is a refusal.

Format version 2 (docs/formats.md): challenges and responses are written at ``"v": 2``, the same
fields in canonical JSON version 2 (RFC 8785), and the tag of a v2 challenge is over the RFC 8785
encoding of the document without ``tag``; ``"v": 1`` challenges (tag over canonical JSON version
1) and responses stay readable. A response is not signed or hashed: it is read as any JSON and
judged by its contents (the challenge inside by its tag, the objects by their digests).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from computewatch.crypto.atomic import atomic_write
from computewatch.crypto.canonical import canonical_json_at, canonical_json_v2, parse_canonical_json_tagged
from computewatch.crypto.errors import FormatError
from computewatch.crypto.digest import blake3_bytes

__all__ = [
    "CHALLENGE_KIND",
    "CHALLENGE_VERSION",
    "RESPONSE_FILE",
    "RESPONSE_KIND",
    "challenge_tag",
    "check_challenge",
    "encode_challenge",
    "read_response",
    "response_object",
    "write_response",
]

CHALLENGE_KIND = "computewatch/step-challenge"
RESPONSE_KIND = "computewatch/step-response"
RESPONSE_FILE = "response.json"
CHALLENGE_VERSION = 2  # written; 1 (legacy canonical JSON) is still read
_VERSIONS = (1, 2)  # a document's "v" is also its canonical JSON version
_TAG_CONTEXT = b"computewatch step challenge v1\x00"
_CHALLENGE_FIELDS = {"v", "kind", "run_id", "precommitment_digest", "records_root", "steps_count", "mode", "issued_ns", "deadline_s", "steps", "tag"}
_ANSWER_FIELDS = {"step", "rank", "before", "after", "ops", "refused"}


def _version(doc: Any) -> int:
    v = doc.get("v") if isinstance(doc, dict) else None
    if isinstance(v, bool) or v not in _VERSIONS:
        raise FormatError(f"version {v!r}: this reader knows versions {list(_VERSIONS)}")
    return int(v)


def challenge_tag(doc: dict[str, Any], secret: bytes) -> str:
    """HMAC over the document without ``tag``, in the canonical JSON its ``"v"`` names."""
    body = {k: v for k, v in doc.items() if k != "tag"}
    encoded = canonical_json_at(_version(doc), body)
    return hmac.new(hashlib.sha256(_TAG_CONTEXT + secret).digest(), encoded, hashlib.sha256).hexdigest()


def encode_challenge(doc: dict[str, Any]) -> bytes:
    """A challenge's file bytes (``CHALLENGE.json``): the canonical JSON its ``"v"`` names."""
    return canonical_json_at(_version(doc), doc)


def check_challenge(doc: Any, secret: bytes | None = None) -> dict[str, Any]:
    """Validate a challenge's shape (and its tag, given the Verifier's secret)."""
    if not isinstance(doc, dict) or doc.get("kind") != CHALLENGE_KIND or isinstance(doc.get("v"), bool) or doc.get("v") not in _VERSIONS:
        raise FormatError(f"not a v1 or v2 {CHALLENGE_KIND} document")
    if set(doc) != _CHALLENGE_FIELDS:
        raise FormatError(f"a step challenge has exactly the fields {sorted(_CHALLENGE_FIELDS)}")
    steps = doc["steps"]
    if not isinstance(steps, list) or not all(isinstance(s, dict) and isinstance(s.get("step"), int) and s["step"] >= 0 for s in steps):
        raise FormatError("challenge steps must be a list of {step, reasons}")
    if doc["mode"] not in ("exact", "tolerance"):
        raise FormatError("challenge mode must be exact or tolerance")
    if secret is not None and not hmac.compare_digest(str(doc["tag"]), challenge_tag(doc, secret)):
        raise FormatError("the challenge's tag does not verify under the Verifier's secret: it was altered, or made with another secret (give `verify` the challenge's secret with --seed)")
    return doc


def response_object(root: str | os.PathLike[str], digest: str) -> bytes:
    """An object of a response folder, re-hashed (a FormatError names a bad or missing one)."""
    if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= set("0123456789abcdef"):
        raise FormatError(f"response object name {digest!r} is not a digest")
    path = Path(root) / "objects" / digest
    try:
        data = path.read_bytes()
    except OSError:
        raise FormatError(f"response object {digest} is missing") from None
    if blake3_bytes(data).hex() != digest:
        raise FormatError(f"response object {digest} does not hash to its name")
    return data


def write_response(root: str | os.PathLike[str], challenge: dict[str, Any], answers: list[dict[str, Any]], objects: dict[str, bytes]) -> Path:
    """Write a response folder: objects first, ``response.json`` last (atomically)."""
    folder = Path(root)
    (folder / "objects").mkdir(parents=True, exist_ok=True)
    for digest, data in objects.items():
        atomic_write(folder / "objects" / digest, data)
    doc = {"v": CHALLENGE_VERSION, "kind": RESPONSE_KIND, "challenge": challenge, "answers": answers}
    atomic_write(folder / RESPONSE_FILE, canonical_json_v2(doc))
    return folder / RESPONSE_FILE


def read_response(root: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(root) / RESPONSE_FILE
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read the response ({exc.strerror})") from None
    try:
        doc, _ = parse_canonical_json_tagged(raw, _version)
    except FormatError:
        try:  # not signed or hashed: any JSON is read, and judged by what it holds
            doc = json.loads(raw)
        except ValueError as exc:
            raise FormatError(f"{path} is not JSON ({exc})") from None
    if (not isinstance(doc, dict) or doc.get("kind") != RESPONSE_KIND or isinstance(doc.get("v"), bool)
            or doc.get("v") not in _VERSIONS or not isinstance(doc.get("answers"), list)):
        raise FormatError(f"{path} is not a v1 or v2 {RESPONSE_KIND}")
    for a in doc["answers"]:
        if not isinstance(a, dict) or set(a) != _ANSWER_FIELDS or not isinstance(a["step"], int) or not isinstance(a["rank"], int):
            raise FormatError(f"{path}: every answer has exactly the fields {sorted(_ANSWER_FIELDS)}")
    return doc
