"""Lot certificates: a chipmaker signs one manifest over a lot of chip certificates.

The manifest (predicate `urn:computewatch:chip-lot:v2`, RFC 8785 canonical JSON; the legacy
`urn:computewatch:chip-lot:v1` in canonical JSON version 1 stays readable; docs/formats.md) carries the RFC 9162
root whose leaf i is the exact bytes of chip i's certificate (its `certificate.json`). A
register checks one signature per lot and then, per chip, that the certificate is a leaf of
that tree: an inclusion proof, or for a whole lot delivered in order the root recomputed over
every leaf (the same check for all n chips at once). Each chip keeps its own signed
certificate; inspections go on checking it, so a lot adds a path in, never a weaker chip.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from computewatch.crypto.canonical import MAX_SAFE_INTEGER, canonical_json, canonical_json_v2, parse_canonical_json
from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, Envelope, predicate_type, sign_envelope, statement, verify_envelope
from computewatch.crypto.dsse import parse_statement as parse_intoto
from computewatch.crypto.errors import ComputewatchError, FormatError, ProofError, SignatureError
from computewatch.crypto.merkle import HASH_SIZE, MerkleTree, leaf_hash, root_from_leaf_hashes, verify_inclusion
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.formats.chip_entry import PRED_CHIP_CERT, from_hex, int_field
from computewatch.formats.identity import PRED_CHIP_CERT_V2

__all__ = [
    "LOT_PROOF_VERSION",
    "PRED_CHIP_LOT",
    "PRED_CHIP_LOT_V1",
    "CertificateClaims",
    "LotManifest",
    "LotProof",
    "certificate_claims",
    "check_lot_id",
    "issue_lot",
    "lot_root",
    "verify_lot_manifest",
]

PRED_CHIP_LOT = predicate_type("chip-lot", 2)
PRED_CHIP_LOT_V1 = predicate_type("chip-lot", 1)  # legacy: read, never written
_LOT_VERSIONS = {PRED_CHIP_LOT_V1: 1, PRED_CHIP_LOT: 2}  # predicate type -> canonical JSON version
_CHIP_CERT_VERSIONS = {PRED_CHIP_CERT: 1, PRED_CHIP_CERT_V2: 2}
LOT_PROOF_VERSION = 1
_TREE = "rfc9162-sha256"
_LEAF = "chip-certificate"
_LOT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def check_lot_id(lot: Any) -> str:
    """A lot id: 1 to 64 ASCII letters, digits, '-' and '_' (it names files)."""
    if not isinstance(lot, str) or not _LOT_RE.fullmatch(lot):
        raise FormatError(f"lot id {lot!r}: 1 to 64 ASCII letters, digits, '-' and '_' only")
    return lot


@dataclass(frozen=True)
class LotManifest:
    """A verified lot manifest: which root signed it and the tree it commits to."""

    lot: str
    chipmaker_name: str
    chipmaker_keyid: str
    count: int
    root: bytes
    envelope: Envelope

    def to_json(self) -> dict[str, Any]:
        return {"lot": self.lot, "chipmaker": {"name": self.chipmaker_name, "keyid": self.chipmaker_keyid},
                "count": self.count, "root": self.root.hex()}


@dataclass(frozen=True)
class LotProof:
    """Chip `index`'s inclusion proof in lot `lot` (the chip's `lot-proof.json`)."""

    lot: str
    chipmaker_keyid: str
    size: int
    index: int
    root: bytes
    path: tuple[bytes, ...]

    def to_json(self) -> bytes:
        return canonical_json({
            "v": LOT_PROOF_VERSION, "lot": self.lot, "chipmaker_keyid": self.chipmaker_keyid, "size": self.size,
            "index": self.index, "root": self.root.hex(), "path": [p.hex() for p in self.path],
        })

    @classmethod
    def from_json(cls, data: bytes) -> LotProof:
        doc = parse_canonical_json(data)
        fields = {"v", "lot", "chipmaker_keyid", "size", "index", "root", "path"}
        if not isinstance(doc, dict) or set(doc) != fields:
            raise FormatError(f"lot proof: expected an object with fields {sorted(fields)}")
        if doc["v"] != LOT_PROOF_VERSION:
            raise FormatError(f"lot proof: version {doc['v']!r} is not {LOT_PROOF_VERSION}")
        for name in ("size", "index"):
            if not isinstance(doc[name], int) or isinstance(doc[name], bool) or doc[name] < 0:
                raise FormatError(f"lot proof: {name} must be a non-negative integer")
        if not isinstance(doc["path"], list):
            raise FormatError("lot proof: path must be a list of hex hashes")
        return cls(check_lot_id(doc["lot"]), from_hex(doc["chipmaker_keyid"], "lot proof chipmaker_keyid", 32).hex(),
                   doc["size"], doc["index"], from_hex(doc["root"], "lot proof root", HASH_SIZE),
                   tuple(from_hex(p, "lot proof path element", HASH_SIZE) for p in doc["path"]))

    def verify(self, manifest: LotManifest, certificate: bytes) -> None:
        """Raise ProofError unless `certificate` (its exact bytes) is leaf `index` of the manifest's tree."""
        if self.lot != manifest.lot or self.chipmaker_keyid != manifest.chipmaker_keyid:
            raise ProofError(f"the proof is for lot {self.lot!r}, not for lot {manifest.lot!r} of this chipmaker")
        if self.size != manifest.count or self.root != manifest.root:
            raise ProofError(f"the proof's tree (size {self.size}) is not the tree lot {manifest.lot!r} signed")
        try:
            verify_inclusion(leaf_hash(certificate), self.index, self.size, self.path, self.root)
        except ProofError as exc:
            raise ProofError(f"the certificate is not leaf {self.index} of lot {manifest.lot!r}: {exc}") from None


def lot_root(certificates: Iterable[bytes]) -> tuple[bytes, int]:
    """The RFC 9162 root over the certificates' bytes, in order, and their count."""
    hashes = [leaf_hash(c) for c in certificates]
    return root_from_leaf_hashes(hashes), len(hashes)


def issue_lot(
    key: SigningKey, lot: str, chipmaker_name: str, certificates: Sequence[bytes]
) -> tuple[Envelope, list[LotProof]]:
    """The chipmaker's side: the signed lot manifest and every chip's inclusion proof."""
    check_lot_id(lot)
    if not certificates:
        raise FormatError("a lot holds at least one chip certificate")
    if not isinstance(chipmaker_name, str) or not chipmaker_name:
        raise FormatError("the lot manifest names its chipmaker")
    tree = MerkleTree(certificates)
    root, n, keyid = tree.root(), len(certificates), key.public_key.keyid
    predicate = {"lot": lot, "chipmaker": {"name": chipmaker_name, "keyid": keyid}, "count": n, "tree": _TREE,
                 "leaf": _LEAF, "root": root.hex()}
    stmt = statement([(f"lot/{lot}", {"sha256": root.hex()})], PRED_CHIP_LOT, predicate)
    env = sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json_v2(stmt), key)
    proofs = [LotProof(lot, keyid, n, i, root, tuple(tree.inclusion_proof(i))) for i in range(n)]
    return env, proofs


def verify_lot_manifest(data: bytes | Envelope, roots: Mapping[str, VerifyKey]) -> LotManifest:
    """Verify a lot manifest against the pinned chipmaker roots (keyid -> key); raises
    SignatureError (no pinned root signed it) or FormatError (malformed)."""
    env = data if isinstance(data, Envelope) else Envelope.from_json(data)
    if not roots:
        raise SignatureError("no chipmaker root is pinned: add the chipmaker's root key first")
    signer: VerifyKey | None = None
    payload = b""
    hinted = [roots[k] for k, _ in env.signatures if k in roots]
    for candidate in hinted + [r for r in roots.values() if r not in hinted]:
        try:
            payload = verify_envelope(env, [candidate])
        except SignatureError:
            continue
        signer = candidate
        break
    if signer is None:
        raise SignatureError("lot manifest does not verify under any pinned chipmaker root (forged, altered or "
                             "signed by a chipmaker that is not registered)")
    try:
        doc, _version = parse_intoto(payload, _LOT_VERSIONS)
    except FormatError as exc:
        raise FormatError(f"lot manifest: {exc}") from None
    if not isinstance(doc.get("predicate"), dict):
        raise FormatError("lot manifest: predicate is not a JSON object")
    p = doc["predicate"]
    fields = {"lot", "chipmaker", "count", "tree", "leaf", "root"}
    if set(p) != fields:
        raise FormatError(f"lot manifest: predicate fields must be {sorted(fields)}")
    lot = check_lot_id(p["lot"])
    maker = p["chipmaker"]
    if not isinstance(maker, dict) or set(maker) != {"name", "keyid"} or not isinstance(maker["name"], str):
        raise FormatError("lot manifest: chipmaker must be {\"name\", \"keyid\"}")
    if maker["keyid"] != signer.keyid:
        raise FormatError("lot manifest: it names chipmaker key "
                          f"{str(maker['keyid'])[:16]}... but was signed by {signer.keyid[:16]}...")
    count = p["count"]
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_SAFE_INTEGER:
        raise FormatError(f"lot manifest: count must be a positive integer, got {count!r}")
    if p["tree"] != _TREE or p["leaf"] != _LEAF:
        raise FormatError(f"lot manifest: tree must be {_TREE!r} over {_LEAF!r} leaves")
    tree_root = from_hex(p["root"], "lot manifest root", HASH_SIZE)
    if doc.get("subject") != [{"name": f"lot/{lot}", "digest": {"sha256": tree_root.hex()}}]:
        raise FormatError(f"lot manifest: subject must be lot/{lot} with the root as its sha256 digest")
    return LotManifest(lot, maker["name"], signer.keyid, count, tree_root, env)


@dataclass(frozen=True)
class CertificateClaims:
    """What a chip certificate says, read without checking its signature (the lot vouches for
    its bytes; an inspection checks the signature itself)."""

    serial: str
    model: str
    peak_flops: int
    device_key: bytes  # raw 32 bytes
    signer_keyids: tuple[str, ...]


# The exact bytes computewatch writes for a chip certificate (canonical JSON, one signature, strings
# without escapes): a match is the canonical encoding of exactly these fields, so the claims can
# be read from the groups. Anything else, valid or not, takes the general path below. With only
# strings in it, the payload is the same under canonical JSON v1 (certificate v1) and RFC 8785 (v2).
_STR = rb'"([^"\\\x00-\x1f]{0,200})"'
_ENVELOPE_RE = re.compile(
    rb'\{"payload":"([A-Za-z0-9+/]*={0,2})","payloadType":"application/vnd\.in-toto\+json",'
    rb'"signatures":\[\{"keyid":"([0-9a-f]{64})","sig":"[A-Za-z0-9+/]*={0,2}"\}\]\}'
)
_PAYLOAD_RE = re.compile(
    rb'\{"_type":"https://in-toto\.io/Statement/v1","predicate":\{"device_public_key":"([0-9a-f]{64})",'
    rb'"model":' + _STR + rb',"peak_flops":"(0|[1-9][0-9]{0,30})","serial":' + _STR + rb'\},'
    rb'"predicateType":"urn:computewatch:chip-certificate:v[12]","subject":\[\{"digest":\{"sha256":"([0-9a-f]{64})"\},'
    rb'"name":"chip/\4"\}\]\}'
)


def _claims_fast(data: bytes) -> CertificateClaims | None:
    env = _ENVELOPE_RE.fullmatch(data)
    if env is None:
        return None
    try:
        payload = base64.b64decode(env.group(1), validate=True)
    except binascii.Error:
        return None
    m = _PAYLOAD_RE.fullmatch(payload)
    if m is None:
        return None
    raw = bytes.fromhex(m.group(1).decode("ascii"))
    if hashlib.sha256(raw).hexdigest().encode("ascii") != m.group(5):
        return None
    try:
        serial, model = m.group(4).decode("utf-8"), m.group(2).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return CertificateClaims(serial, model, int(m.group(3)), raw, (env.group(2).decode("ascii"),))


def certificate_claims(data: bytes) -> CertificateClaims:
    """Parse a chip certificate's statement: predicate type, subject `chip/<serial>` bound to
    the device key's keyid, the fields' shapes. Raises FormatError; verifies no signature."""
    fast = _claims_fast(data) if isinstance(data, bytes) else None
    return fast if fast is not None else _claims_general(data)


def _claims_general(data: bytes) -> CertificateClaims:
    """The general reader (any valid encoding); the lean path of
    `Envelope.from_json` + `verify_chip_certificate` minus the signature: the same checks on
    the statement (canonical payload, fields, subject), one C parse per layer."""
    try:
        env = json.loads(data)
        if env["payloadType"] != PAYLOAD_TYPE_INTOTO:
            raise FormatError(f"payload type {env['payloadType']!r} is not {PAYLOAD_TYPE_INTOTO}")
        payload = env["payload"]
        if not isinstance(payload, str):
            raise FormatError("payload must be a base64 string")
        doc, _version = parse_intoto(base64.b64decode(payload.encode("ascii"), validate=True), _CHIP_CERT_VERSIONS)
        p = doc["predicate"]
        serial, model, key_hex = p["serial"], p["model"], p["device_public_key"]
        if not isinstance(serial, str) or not isinstance(model, str):
            raise FormatError("serial and model must be strings")
        if not isinstance(key_hex, str) or not _HEX64.fullmatch(key_hex):
            raise FormatError("device_public_key must be 64 lowercase hex digits")
        raw = bytes.fromhex(key_hex)
        peak = int_field(p, "peak_flops", "chip certificate")
        subject = [{"digest": {"sha256": hashlib.sha256(raw).hexdigest()}, "name": f"chip/{serial}"}]
        if doc.get("subject") != subject:
            raise FormatError("subject is not chip/<serial> with the device key's keyid")
        signers = tuple(sig["keyid"] for sig in env["signatures"])
        if not all(isinstance(k, str) for k in signers):
            raise FormatError("signature keyids must be strings")
    except (KeyError, TypeError, AttributeError) as exc:
        raise FormatError(f"chip certificate: malformed statement ({exc!r})") from None
    except RecursionError:
        raise FormatError("chip certificate: nested too deeply") from None
    except (binascii.Error, UnicodeError, ValueError) as exc:
        if isinstance(exc, ComputewatchError):
            raise FormatError(f"chip certificate: {exc}") from None
        raise FormatError(f"chip certificate: not a DSSE envelope ({exc})") from None
    return CertificateClaims(serial, model, peak, raw, signers)
