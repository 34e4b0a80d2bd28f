"""Firmware images signed by the chipmaker, their policy, and the checks of verified boot.

An image is a code blob plus a manifest: an in-toto statement in a DSSE envelope signed by the
chipmaker, naming the code's SHA-256, a version, an anti-rollback security version and the
policy the firmware enforces (snapshot rate f, epoch length, checkpoint interval, log mode).
The measurement of an image is SHA-256 of the signed manifest payload, so it covers the code
digest and the policy alike. Manifests are written at predicate type
`urn:computewatch:firmware:v2` (RFC 8785 canonical JSON); the legacy `:v1` (canonical JSON
version 1, the same predicate) stays readable, so images signed before still boot and measure
to what they always measured.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from computewatch.crypto.atomic import atomic_write
from computewatch.crypto.canonical import canonical_json, canonical_json_v2
from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    Envelope,
    parse_statement,
    predicate_type,
    sign_envelope,
    statement,
    verify_envelope,
)
from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.formats.chip_entry import (
    PRED_FIRMWARE,
    b64,
    envelope_from_obj,
    envelope_to_obj,
    from_b64,
    from_hex,
    uint,
)
from computewatch.formats.errors import BootError

__all__ = ["LOG_MODES", "MAX_SNAPSHOTS_PER_DAY", "PRED_FIRMWARE_V2", "FirmwareImage", "FirmwarePolicy", "VerifiedFirmware", "build_image", "read_manifest", "verify_image"]

LOG_MODES = ("on-chip", "report")
PRED_FIRMWARE_V2 = predicate_type("firmware", 2)
_MANIFEST_VERSIONS = {PRED_FIRMWARE: 1, PRED_FIRMWARE_V2: 2}  # predicate type -> canonical JSON version
# One snapshot per busy second on average: above it the chip would spend its time snapshotting,
# and one epoch's schedule (every arrival is drawn and logged) would not fit in memory.
MAX_SNAPSHOTS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class FirmwarePolicy:
    """What the firmware enforces; part of the signed manifest, so the owner cannot change it."""

    logging: bool = True  # False only for legacy images that predate the monitoring firmware
    snapshots_per_day: float = 0.1  # f: Poisson rate per day of busy time (the paper's Table 1)
    epoch_busy_s: int = 86_400  # a schedule epoch ends after this much busy time (or at a stop)
    checkpoint_every: int = 16  # sign a checkpoint after this many entries
    log_mode: str = "on-chip"  # "on-chip" NVRAM log, or "report": each entry acked by a server

    def __post_init__(self) -> None:
        if not (0 <= self.snapshots_per_day <= MAX_SNAPSHOTS_PER_DAY):
            raise FormatError(
                f"policy snapshots_per_day must be a number from 0 to {MAX_SNAPSHOTS_PER_DAY:g} (one per busy second), "
                f"got {self.snapshots_per_day!r}"
            )
        if self.epoch_busy_s <= 0 or self.checkpoint_every <= 0:
            raise FormatError("policy epoch_busy_s and checkpoint_every must be positive")
        if self.log_mode not in LOG_MODES:
            raise FormatError(f"policy log_mode must be one of {LOG_MODES}, got {self.log_mode!r}")

    def to_json(self) -> dict[str, Any]:
        # The rate travels as a decimal string: float text differs between languages.
        return {
            "logging": self.logging,
            "snapshots_per_day": repr(float(self.snapshots_per_day)),
            "epoch_busy_s": self.epoch_busy_s,
            "checkpoint_every": self.checkpoint_every,
            "log_mode": self.log_mode,
        }

    @classmethod
    def from_json(cls, obj: Any) -> FirmwarePolicy:
        try:
            return cls(
                logging=bool(obj["logging"]),
                snapshots_per_day=float(obj["snapshots_per_day"]),
                epoch_busy_s=int(obj["epoch_busy_s"]),
                checkpoint_every=int(obj["checkpoint_every"]),
                log_mode=str(obj["log_mode"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"firmware policy malformed ({exc})") from None


@dataclass(frozen=True)
class FirmwareImage:
    """A firmware image as shipped: signed manifest + code. File: {"v":1,"manifest":..,"code":b64}."""

    manifest: Envelope
    code: bytes

    @property
    def measurement(self) -> bytes:
        return hashlib.sha256(self.manifest.payload).digest()

    def to_json(self) -> bytes:
        return canonical_json({"v": 1, "manifest": envelope_to_obj(self.manifest), "code": b64(self.code)})

    @classmethod
    def from_json(cls, data: bytes) -> FirmwareImage:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge ints
            raise FormatError(f"firmware image is not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("v") != 1 or "manifest" not in doc or "code" not in doc:
            raise FormatError("firmware image must be {'v': 1, 'manifest': ..., 'code': ...}")
        return cls(envelope_from_obj(doc["manifest"], "firmware manifest"), from_b64(doc["code"], "firmware code"))

    def save(self, path: str | Path) -> None:
        atomic_write(path, self.to_json(), mode=0o644)

    @classmethod
    def load(cls, path: str | Path) -> FirmwareImage:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise FormatError(f"cannot read firmware image {str(path)!r}: {exc.strerror}") from None
        return cls.from_json(data)


def build_image(
    chipmaker_key: SigningKey, name: str, version: str, security_version: int, code: bytes, policy: FirmwarePolicy
) -> FirmwareImage:
    """The chipmaker's signing step (Chipmaker.sign_firmware wraps this)."""
    code_sha = hashlib.sha256(code).hexdigest()
    predicate = {
        "name": name,
        "version": version,
        "security_version": int(security_version),
        "code_sha256": code_sha,
        "policy": policy.to_json(),
    }
    stmt = statement([(f"firmware/{name}", {"sha256": code_sha})], PRED_FIRMWARE_V2, predicate)
    return FirmwareImage(sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json_v2(stmt), chipmaker_key), bytes(code))


@dataclass(frozen=True)
class VerifiedFirmware:
    name: str
    version: str
    security_version: int
    code_sha256: str
    policy: FirmwarePolicy
    measurement: bytes
    manifest: Envelope


def read_manifest(manifest: Envelope, chipmaker_root: VerifyKey) -> VerifiedFirmware:
    """Verify the chipmaker's signature on a manifest and decode it (no code, no fuse check)."""
    try:
        payload = verify_envelope(manifest, [chipmaker_root])
    except ComputewatchError as exc:
        raise BootError(f"firmware manifest is not signed by the chipmaker root: {exc}") from None
    try:
        doc, _version = parse_statement(payload, _MANIFEST_VERSIONS)  # one encoding per predicate type
        p = doc["predicate"]
        return VerifiedFirmware(
            name=str(p["name"]),
            version=str(p["version"]),
            security_version=uint(p["security_version"], "security_version"),
            code_sha256=from_hex(p["code_sha256"], "code_sha256", 32).hex(),
            policy=FirmwarePolicy.from_json(p["policy"]),
            measurement=hashlib.sha256(payload).digest(),
            manifest=manifest,
        )
    except (ComputewatchError, KeyError, TypeError, ValueError) as exc:
        raise BootError(f"firmware manifest is malformed: {exc}") from None


def verify_image(image: FirmwareImage, chipmaker_root: VerifyKey, min_security_version: int) -> VerifiedFirmware:
    """Verified boot: chipmaker signature, code digest, anti-rollback. Raises BootError naming the failure."""
    fw = read_manifest(image.manifest, chipmaker_root)
    code_sha = hashlib.sha256(image.code).hexdigest()
    declared = fw.code_sha256
    if code_sha != declared:
        raise BootError(f"firmware code altered: SHA-256 {code_sha[:16]}... differs from the signed {declared[:16]}...")
    if fw.security_version < min_security_version:
        raise BootError(
            f"firmware rollback refused: security version {fw.security_version} is below the chip's "
            f"anti-rollback counter {min_security_version}"
        )
    return fw
