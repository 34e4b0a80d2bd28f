"""Attestation evidence in the shape of an SPDM measurement report / TPM 2.0 quote.

The evidence statement carries the verifier's nonce, the firmware measurement, version and
security version, the anti-rollback fuse, any staged (not yet booted) firmware, the secure clock
with its reset/restart counters and safe flag, the log's tree head, the tamper flag, (v2)
the damage the firmware found comparing its log against its sealed state and (v3) the
root-of-trust counter value its sealed state is bound to (chip.rot); v4 is v3 in canonical
JSON version 2 (RFC 8785), the version a chip writes now (v2 and v3, in version 1, stay
readable). It is signed by the
boot key; the bundle carries the certificate chain that makes it checkable:
chipmaker root -> chip certificate (device key) -> boot certificate (boot key + measurement).
Bundle file: canonical JSON {"v":1,"certificate","boot_certificate","firmware","evidence"}, each a
DSSE envelope object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from computewatch.crypto.canonical import canonical_json, canonical_json_v2
from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    Envelope,
    parse_statement,
    sign_envelope,
    statement,
    verify_envelope,
)
from computewatch.crypto.errors import ComputewatchError, FormatError, SignatureError
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

__all__ = [
    "PRED_ATTESTATION_V2",
    "PRED_ATTESTATION_V3",
    "PRED_ATTESTATION_V4",
    "AttestationClaims",
    "BundleFormatError",
    "make_evidence",
    "verify_attestation",
]

# v2 adds "log_damage": v1 evidence could say "tamper clear" over a log the firmware's own
# sealed state showed was cut. v1 is refused: it cannot tell the Verifier about such damage.
PRED_ATTESTATION_V2 = PRED_ATTESTATION.removesuffix(":v1") + ":v2"
# v3 adds "root_of_trust": {"counter"}: the monotonic counter value sealed state is bound to, so
# the register can see the counter move (and never back). v2 stays readable (no counter claim).
PRED_ATTESTATION_V3 = PRED_ATTESTATION.removesuffix(":v1") + ":v3"
# v4 is v3 in canonical JSON version 2 (RFC 8785); written now.
PRED_ATTESTATION_V4 = PRED_ATTESTATION.removesuffix(":v1") + ":v4"
_ACCEPTED = (PRED_ATTESTATION_V2, PRED_ATTESTATION_V3, PRED_ATTESTATION_V4)
# predicate type -> canonical JSON version (v1 only so that its refusal can say why)
_VERSIONS = {PRED_ATTESTATION: 1, PRED_ATTESTATION_V2: 1, PRED_ATTESTATION_V3: 1, PRED_ATTESTATION_V4: 2}
_BUNDLE_FIELDS = ("certificate", "boot_certificate", "firmware", "evidence")


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
    stmt = statement([(f"chip/{serial}", subject_digest)], PRED_ATTESTATION_V4, claims)
    evidence = sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json_v2(stmt), boot_key)
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
    log_damage: tuple[str, ...]
    raw: dict[str, Any]
    rot_counter: int | None = None  # v3: the root-of-trust counter; None in v2 evidence

    @property
    def concerns(self) -> list[str]:
        """What the chip itself reports against its state: tamper flag, log damage (empty if none)."""
        return (["the chip's tamper flag is set"] if self.tamper else []) + [f"log damage: {d}" for d in self.log_damage]

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw, model=self.model, peak_flops=str(self.peak_flops))


def _step(what: str, fn: Any, malformed: str | None = None) -> Any:
    """Run one check; a failed signature is reported as `what`, anything else (a missing field,
    a wrong type) as `malformed` when given: a missing field is never called a bad signature."""
    try:
        return fn()
    except SignatureError as exc:
        raise AttestationError(f"{what}: {exc}") from None
    except KeyError as exc:
        raise AttestationError(f"{malformed or what}: missing field {exc.args[0]!r}") from None
    except (ComputewatchError, TypeError, ValueError, RecursionError) as exc:
        raise AttestationError(f"{malformed or what}: {exc}") from None


class BundleFormatError(AttestationError):
    """The input is not an evidence bundle at all (not JSON, wrong version, parts missing or not
    envelopes): unusable input rather than evidence that failed a check."""


def _envelopes(bundle: bytes | dict[str, Any]) -> dict[str, Envelope]:
    """The bundle's four envelopes, parsed; a missing or malformed part is named as such
    (never reported as a signature failure)."""
    try:
        doc = json.loads(bundle) if not isinstance(bundle, dict) else bundle
    except (ValueError, RecursionError):
        raise BundleFormatError("bundle: not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise BundleFormatError("bundle: not a version-1 attestation bundle")
    missing = [name for name in _BUNDLE_FIELDS if name not in doc]
    if missing:
        raise BundleFormatError(f"bundle: lacks the field(s) {', '.join(repr(m) for m in missing)}")
    envelopes = {}
    for name in _BUNDLE_FIELDS:
        try:
            envelopes[name] = envelope_from_obj(doc[name], name)
        except (ComputewatchError, ValueError, TypeError, RecursionError) as exc:
            raise BundleFormatError(f"bundle: its {name!r} is not a DSSE envelope ({exc})") from None
    return envelopes


def verify_attestation(
    bundle: bytes | dict[str, Any],
    nonce: bytes,
    chipmaker_root: VerifyKey,
    *,
    min_security_version: int | None = None,
    expected_serial: str | None = None,
) -> AttestationClaims:
    """Check the chain and the claims; raises AttestationError naming the first failed check.

    `expected_serial` pins the chip: evidence from any other genuine chip is refused. The chip's
    own concerns (tamper flag, log damage) do not fail verification; they are in the claims
    (`AttestationClaims.concerns`), for the caller to act on.
    """
    env = _envelopes(bundle)
    cert = _step(
        "chip certificate does not verify under the given chipmaker key",
        lambda: verify_chip_certificate(env["certificate"], chipmaker_root),
        "chip certificate is malformed",
    )
    if expected_serial is not None and cert.serial != expected_serial:
        raise AttestationError(f"evidence is from chip {cert.serial}, not the expected chip {expected_serial}")
    boot = _step(
        "boot certificate does not verify under the certified device key",
        lambda: verify_boot_certificate(env["boot_certificate"], cert.device_key),
        "boot certificate is malformed",
    )
    try:
        fw = read_manifest(env["firmware"], chipmaker_root)  # its error says signature or shape
    except ComputewatchError as exc:
        raise AttestationError(str(exc)) from None
    payload = _step(
        "evidence signature does not verify under the boot key",
        lambda: verify_envelope(env["evidence"], [boot.boot_key]),
        "evidence envelope is malformed",
    )
    stmt, _version = _step("evidence payload", lambda: parse_statement(payload, _VERSIONS))
    if stmt["predicateType"] == PRED_ATTESTATION:
        raise AttestationError(
            f"evidence: predicate type {PRED_ATTESTATION} predates the firmware's log self-check; "
            f"only {', '.join(_ACCEPTED)} are accepted"
        )
    v3 = stmt["predicateType"] in (PRED_ATTESTATION_V3, PRED_ATTESTATION_V4)  # with the root-of-trust counter
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
            log_damage=_strings(c["log_damage"], "log_damage"),
            raw=c,
            rot_counter=uint(c["root_of_trust"]["counter"], "root_of_trust counter") if v3 else None,
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


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FormatError(f"{what} must be a list of strings")
    return tuple(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise FormatError(f"tamper must be true or false, got {value!r}")
    return value
