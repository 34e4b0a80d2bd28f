"""The chip's hardware root of trust: burned-in serial, device secret, device key, certificates.

DICE-shaped: the device key (DeviceID) is certified by the chipmaker at manufacture; at every
verified boot a boot key (Alias key) is derived from the device secret and the firmware
measurement, and the device key certifies it together with that measurement. Firmware that is
not the measured image therefore cannot hold the boot key that signs the log and the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import blake3

from computewatch.crypto.canonical import canonical_json, parse_canonical_json
from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    Envelope,
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
    "BootCertificate",
    "ChipCertificate",
    "derive_boot_key",
    "issue_boot_certificate",
    "issue_chip_certificate",
    "verify_boot_certificate",
    "verify_chip_certificate",
]

BOOT_KEY_CONTEXT = "computewatch 2026 chip boot key v1"


def derive_boot_key(device_secret: bytes, measurement: bytes) -> SigningKey:
    """Boot key seed = BLAKE3 derive_key(context, device_secret || firmware measurement)."""
    if len(device_secret) != 32 or len(measurement) != 32:
        raise FormatError("device secret and firmware measurement are 32 bytes each")
    seed = blake3.blake3(device_secret + measurement, derive_key_context=BOOT_KEY_CONTEXT).digest()
    return SigningKey.from_seed(seed)


def _sign_statement(key: SigningKey, subject: str, subject_key: VerifyKey, pred: str, predicate: dict[str, Any]) -> Envelope:
    stmt = statement([(subject, {"sha256": subject_key.keyid})], pred, predicate)
    return sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(stmt), key)


def _statement_payload(
    env: Envelope | dict[str, Any], keys: list[VerifyKey], pred: str, what: str
) -> tuple[Envelope, dict[str, Any]]:
    if isinstance(env, dict):
        env = envelope_from_obj(env, what)
    payload = verify_envelope(env, keys)
    doc = parse_canonical_json(payload)
    if not isinstance(doc, dict) or doc.get("predicateType") != pred or not isinstance(doc.get("predicate"), dict):
        raise FormatError(f"{what}: predicate type is not {pred}")
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
    return _sign_statement(chipmaker_key, f"chip/{serial}", device_key, PRED_CHIP_CERT, predicate)


def verify_chip_certificate(env: Envelope | dict[str, Any], chipmaker_root: VerifyKey) -> ChipCertificate:
    """Check the chipmaker's signature and the fields; raises SignatureError / FormatError."""
    env, p = _statement_payload(env, [chipmaker_root], PRED_CHIP_CERT, "chip certificate")
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
    return _sign_statement(device_key, f"chip/{serial}/boot/{boot}", boot_key, PRED_BOOT_CERT, predicate)


def verify_boot_certificate(env: Envelope | dict[str, Any], device_key: VerifyKey) -> BootCertificate:
    env, p = _statement_payload(env, [device_key], PRED_BOOT_CERT, "boot certificate")
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
