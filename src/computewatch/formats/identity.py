"""The chip's hardware root of trust: burned-in serial, device secret, device key, certificates.

DICE-shaped: the device key (DeviceID) is certified by the chipmaker at manufacture; at every
verified boot a boot key (Alias key) is derived from the device secret and the firmware
measurement, and the device key certifies it together with that measurement. Firmware that is
not the measured image therefore cannot hold the boot key that signs the log and the evidence.

Both certificates are written at predicate type v2 (`urn:computewatch:chip-certificate:v2`,
`urn:computewatch:boot-certificate:v2`: canonical JSON version 2, RFC 8785); the legacy v1 types
(canonical JSON version 1, the same predicates) stay readable, so chips certified before keep
their certificates. A certificate's bytes must be exactly the encoding its predicate type names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import blake3

from computewatch.crypto.canonical import canonical_json_v2
from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    Envelope,
    parse_statement,
    predicate_type,
    sign_envelope,
    statement,
    verify_envelope,
)
from computewatch.crypto.errors import FormatError
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.formats.chip_entry import (
    PRED_BOOT_CERT,
    PRED_CHIP_CERT,
    envelope_from_obj,
    from_hex,
    int_field,
    uint,
)

__all__ = [
    "BOOT_KEY_CONTEXT",
    "PRED_BOOT_CERT_V2",
    "PRED_CHIP_CERT_V2",
    "BootCertificate",
    "ChipCertificate",
    "derive_boot_key",
    "issue_boot_certificate",
    "issue_chip_certificate",
    "verify_boot_certificate",
    "verify_chip_certificate",
]

BOOT_KEY_CONTEXT = "computewatch 2026 chip boot key v1"
PRED_CHIP_CERT_V2 = predicate_type("chip-certificate", 2)
PRED_BOOT_CERT_V2 = predicate_type("boot-certificate", 2)
# predicate type -> canonical JSON version of the payload (v1: legacy, read only)
_CHIP_CERT_VERSIONS = {PRED_CHIP_CERT: 1, PRED_CHIP_CERT_V2: 2}
_BOOT_CERT_VERSIONS = {PRED_BOOT_CERT: 1, PRED_BOOT_CERT_V2: 2}


def derive_boot_key(device_secret: bytes, measurement: bytes) -> SigningKey:
    """Boot key seed = BLAKE3 derive_key(context, device_secret || firmware measurement)."""
    if len(device_secret) != 32 or len(measurement) != 32:
        raise FormatError("device secret and firmware measurement are 32 bytes each")
    seed = blake3.blake3(device_secret + measurement, derive_key_context=BOOT_KEY_CONTEXT).digest()
    return SigningKey.from_seed(seed)


def _sign_statement(key: SigningKey, subject: str, subject_key: VerifyKey, pred: str, predicate: dict[str, Any]) -> Envelope:
    """Sign a v2 certificate (`pred` is a v2 predicate type): RFC 8785 payload."""
    stmt = statement([(subject, {"sha256": subject_key.keyid})], pred, predicate)
    return sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json_v2(stmt), key)


def _statement_payload(
    env: Envelope | dict[str, Any], keys: list[VerifyKey], preds: dict[str, int], what: str
) -> tuple[Envelope, dict[str, Any]]:
    if isinstance(env, dict):
        env = envelope_from_obj(env, what)
    payload = verify_envelope(env, keys)
    try:
        doc, _version = parse_statement(payload, preds)
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None
    if not isinstance(doc.get("predicate"), dict):
        raise FormatError(f"{what}: predicate is not a JSON object")
    return env, doc["predicate"]


@dataclass(frozen=True)
class ChipCertificate:
    """The chipmaker's statement binding (serial, device public key, model, peak FLOP/s)."""

    serial: str
    model: str
    peak_flops: int
    device_key: VerifyKey
    envelope: Envelope


def issue_chip_certificate(
    chipmaker_key: SigningKey, serial: str, device_key: VerifyKey, model: str, peak_flops: int
) -> Envelope:
    predicate = {
        "serial": serial,
        "model": model,
        "peak_flops": str(int(peak_flops)),
        "device_public_key": device_key.raw.hex(),
    }
    return _sign_statement(chipmaker_key, f"chip/{serial}", device_key, PRED_CHIP_CERT_V2, predicate)


def verify_chip_certificate(env: Envelope | dict[str, Any], chipmaker_root: VerifyKey) -> ChipCertificate:
    """Check the chipmaker's signature and the fields; raises SignatureError / FormatError."""
    env, p = _statement_payload(env, [chipmaker_root], _CHIP_CERT_VERSIONS, "chip certificate")
    try:
        raw = from_hex(p["device_public_key"], "device_public_key", 32)
        peak = int_field(p, "peak_flops", "chip certificate")
        return ChipCertificate(str(p["serial"]), str(p["model"]), peak, VerifyKey.from_raw(raw), env)
    except (KeyError, ValueError) as exc:
        raise FormatError(f"chip certificate: malformed predicate ({exc})") from None


@dataclass(frozen=True)
class BootCertificate:
    """The device key's statement: this boot runs firmware `measurement` and holds `boot_key`."""

    serial: str
    boot: int
    boot_key: VerifyKey
    measurement: bytes
    firmware_name: str
    firmware_version: str
    security_version: int
    envelope: Envelope


def issue_boot_certificate(
    device_key: SigningKey,
    serial: str,
    boot: int,
    boot_key: VerifyKey,
    measurement: bytes,
    firmware_name: str,
    firmware_version: str,
    security_version: int,
) -> Envelope:
    predicate = {
        "serial": serial,
        "boot": boot,
        "boot_public_key": boot_key.raw.hex(),
        "firmware": {
            "measurement": measurement.hex(),
            "name": firmware_name,
            "version": firmware_version,
            "security_version": security_version,
        },
    }
    return _sign_statement(device_key, f"chip/{serial}/boot/{boot}", boot_key, PRED_BOOT_CERT_V2, predicate)


def verify_boot_certificate(env: Envelope | dict[str, Any], device_key: VerifyKey) -> BootCertificate:
    env, p = _statement_payload(env, [device_key], _BOOT_CERT_VERSIONS, "boot certificate")
    try:
        fw = p["firmware"]
        return BootCertificate(
            serial=str(p["serial"]),
            boot=uint(p["boot"], "boot"),
            boot_key=VerifyKey.from_raw(from_hex(p["boot_public_key"], "boot_public_key", 32)),
            measurement=from_hex(fw["measurement"], "firmware measurement", 32),
            firmware_name=str(fw["name"]),
            firmware_version=str(fw["version"]),
            security_version=uint(fw["security_version"], "security_version"),
            envelope=env,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"boot certificate: malformed predicate ({exc})") from None
