"""Attestation evidence in the shape of an SPDM measurement report / TPM 2.0 quote.

The evidence statement carries the verifier's nonce, the firmware measurement, version and
security version, the anti-rollback fuse, any staged (not yet booted) firmware, the secure clock
with its reset/restart counters and safe flag, the log's tree head and the tamper flag. It is
signed by the boot key; the bundle carries the certificate chain that makes it checkable:
chipmaker root -> chip certificate (device key) -> boot certificate (boot key + measurement).
Bundle file: canonical JSON {"v":1,"certificate","boot_certificate","firmware","evidence"}, each a
DSSE envelope object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from computewatch.crypto.canonical import canonical_json, parse_canonical_json
from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    Envelope,
    sign_envelope,
    statement,
    verify_envelope,
)
from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.formats.chip_entry import (
    PRED_ATTESTATION,
    envelope_from_obj,
    envelope_to_obj,
    from_hex,
    uint,
)
from computewatch.formats.errors import AttestationError
from computewatch.formats.firmware import read_manifest
from computewatch.formats.identity import (
    verify_boot_certificate,
    verify_chip_certificate,
)

__all__ = ["AttestationClaims", "make_evidence", "verify_attestation"]


def make_evidence(
    boot_key: SigningKey,
    *,
    serial: str,
    claims: dict[str, Any],
    certificate: Envelope,
    boot_certificate: Envelope,
    firmware: Envelope,
) -> bytes:
    """Sign `claims` (which include the nonce) and bundle the chain; returns the bundle bytes."""
    subject_digest = {"sha256": claims["log"]["root"]}
    stmt = statement([(f"chip/{serial}", subject_digest)], PRED_ATTESTATION, claims)
    evidence = sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(stmt), boot_key)
    return canonical_json(
        {
            "v": 1,
            "certificate": envelope_to_obj(certificate),
            "boot_certificate": envelope_to_obj(boot_certificate),
            "firmware": envelope_to_obj(firmware),
            "evidence": envelope_to_obj(evidence),
        }
    )


@dataclass(frozen=True)
class AttestationClaims:
    """What a verified attestation says about the chip."""

    serial: str
    model: str
    peak_flops: int
    boot: int
    firmware_measurement: str
    firmware_version: str
    security_version: int
    fuse_security_version: int
    staged_firmware: dict[str, Any] | None
    clock: dict[str, Any]
    log_size: int
    log_root: bytes
    tamper: bool
    raw: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw, model=self.model, peak_flops=str(self.peak_flops))


def _step(what: str, fn: Any) -> Any:
    try:
        return fn()
    except (ComputewatchError, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise AttestationError(f"{what}: {exc}") from None


def verify_attestation(
    bundle: bytes | dict[str, Any],
    nonce: bytes,
    chipmaker_root: VerifyKey,
    *,
    min_security_version: int | None = None,
) -> AttestationClaims:
    """Check the chain and the claims; raises AttestationError naming the first failed check."""
    doc = _step("bundle", lambda: json.loads(bundle) if not isinstance(bundle, dict) else bundle)
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise AttestationError("bundle: not a version-1 attestation bundle")
    cert = _step(
        "chip certificate does not verify under the given chipmaker key",
        lambda: verify_chip_certificate(envelope_from_obj(doc["certificate"], "certificate"), chipmaker_root),
    )
    boot = _step(
        "boot certificate does not verify under the certified device key",
        lambda: verify_boot_certificate(envelope_from_obj(doc["boot_certificate"], "boot"), cert.device_key),
    )
    fw = _step(
        "firmware manifest is not signed by the chipmaker root",
        lambda: read_manifest(envelope_from_obj(doc["firmware"], "firmware"), chipmaker_root),
    )
    payload = _step(
        "evidence signature does not verify under the boot key",
        lambda: verify_envelope(envelope_from_obj(doc["evidence"], "evidence"), [boot.boot_key]),
    )
    stmt = _step("evidence payload", lambda: parse_canonical_json(payload))
    if not isinstance(stmt, dict) or stmt.get("predicateType") != PRED_ATTESTATION:
        raise AttestationError(f"evidence: predicate type is not {PRED_ATTESTATION}")
    c = stmt.get("predicate")
    if not isinstance(c, dict):
        raise AttestationError("evidence: predicate is not a JSON object")
    got_nonce = _step("evidence nonce", lambda: from_hex(c.get("nonce"), "nonce"))
    if got_nonce != nonce:
        raise AttestationError("nonce mismatch: the evidence answers another (stale or replayed) challenge")
    claims = _step(
        "evidence claims malformed",
        lambda: AttestationClaims(
            serial=cert.serial,
            model=cert.model,
            peak_flops=cert.peak_flops,
            boot=uint(c["boot"], "boot"),
            firmware_measurement=boot.measurement.hex(),
            firmware_version=fw.version,
            security_version=fw.security_version,
            fuse_security_version=uint(c["fuse_security_version"], "fuse_security_version"),
            staged_firmware=c["staged_firmware"],
            clock=dict(c["clock"]),
            log_size=uint(c["log"]["size"], "log size"),
            log_root=from_hex(c["log"]["root"], "log root", 32),
            tamper=_bool(c["tamper"]),
            raw=c,
        ),
    )
    if c.get("serial") != cert.serial or boot.serial != cert.serial:
        raise AttestationError("serial in the evidence or boot certificate differs from the certificate")
    subject = [{"name": f"chip/{cert.serial}", "digest": {"sha256": claims.log_root.hex()}}]
    if stmt.get("subject") != subject:
        raise AttestationError("evidence subject is not the chip with its log root as digest")
    if claims.boot != boot.boot:
        raise AttestationError(f"evidence claims boot {claims.boot} but its boot certificate is for boot {boot.boot}")
    fw_claim = c.get("firmware")
    if (
        fw.measurement != boot.measurement
        or not isinstance(fw_claim, dict)
        or fw_claim.get("measurement") != boot.measurement.hex()
    ):
        raise AttestationError("firmware measurement differs between evidence, boot certificate and manifest")
    if claims.fuse_security_version < fw.security_version:
        raise AttestationError(
            f"anti-rollback fuse {claims.fuse_security_version} is below the running firmware's "
            f"security version {fw.security_version}"
        )
    if min_security_version is not None and fw.security_version < min_security_version:
        raise AttestationError(
            f"firmware security version {fw.security_version} is below the required {min_security_version}"
        )
    return claims


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise FormatError(f"tamper must be true or false, got {value!r}")
    return value
