"""Sealed state: the chip's non-volatile memory that only firmware reads or writes.

Modelled as files with mode 0600 in a 0700 `sealed/` folder, each written atomically, so a
crash leaves the old or the new value, never a torn one. `identity.json` is written once at
manufacture (serial, device secret, device key, the chipmaker root the boot ROM trusts);
`nv.json` holds the fuse-like anti-rollback counter, boot counters, the next schedule epoch,
the tamper flag, the "running" marker that reveals an unclean stop, and the log's size and
RFC 9162 root at every write (the firmware's own record of how far the log reached: a log cut
or edited behind its back no longer extends it) with the sticky list of damage found, and the
root-of-trust counter value the write is bound to (chip.rot: a restored copy is behind it).
In software anyone with the owner's file permissions can read these files; on a real chip they
sit behind the hardware root of trust (the paper's §6.2 assumption).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from computewatch.chip.errors import ChipError
from computewatch.crypto.atomic import atomic_write
from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.signing import SigningKey, VerifyKey

EMPTY_LOG_ROOT = hashlib.sha256(b"").hexdigest()  # RFC 9162 root of the empty tree

__all__ = ["EMPTY_LOG_ROOT", "NVState", "SealedIdentity", "load_identity", "load_nv", "save_identity", "save_nv", "sealed_dir"]


def sealed_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "sealed"


@dataclass(frozen=True)
class SealedIdentity:
    serial: str
    model: str
    peak_flops: int
    device_secret: bytes  # 32 bytes: root of the boot key and of the snapshot schedule
    device_key: SigningKey
    chipmaker_root: VerifyKey  # the key the boot ROM trusts for firmware


@dataclass
class NVState:
    security_version: int = 0  # anti-rollback fuse: only ever raised
    reset_count: int = 0
    restart_count: int = 0
    next_epoch: int = 0
    running: bool = False  # set at boot, cleared at a clean stop
    tamper: dict[str, Any] | None = field(default=None)  # sticky once tripped
    # Busy time (ns) reached when a snapshot trigger last fired, written before the snapshot
    # starts: an unclean stop during the snapshot cannot rewind busy time to before the trigger.
    trigger_busy_ns: int = 0
    # The log's entry count and RFC 9162 root (hex) when this state was last written: every
    # later log must extend that tree head. State written before these fields existed reads
    # as the empty log, which every log extends.
    log_size: int = 0
    log_root: str = EMPTY_LOG_ROOT
    log_damage: list[str] = field(default_factory=list)  # sticky: damage the firmware found
    # The root-of-trust counter value this state is bound to (chip.rot): raised at every write,
    # so a copy of this state put back later is behind the hardware counter. State written
    # before the field existed reads as 0, bound to a counter never raised.
    rot_counter: int = 0

    def to_json(self) -> dict[str, Any]:
        # Busy time in ns passes 2**53 after about 104 days: a decimal string, as in the log.
        return {"v": 1, **asdict(self), "trigger_busy_ns": str(self.trigger_busy_ns)}


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    atomic_write(path, canonical_json(doc), mode=0o600)


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ChipError(f"sealed state {str(path)!r} is missing: not a chip state directory") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ChipError(f"sealed state {str(path)!r} is unreadable or malformed: {exc}") from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise ChipError(f"sealed state {str(path)!r} has an unknown version")
    return doc


def save_identity(state_dir: Path, ident: SealedIdentity) -> None:
    path = sealed_dir(state_dir) / "identity.json"
    if path.exists():
        # The serial and device key are burned in once; never overwrite them.
        raise ChipError(f"{str(path)!r} exists: a chip's identity is written once, at manufacture")
    doc = {
        "v": 1,
        "serial": ident.serial,
        "model": ident.model,
        "peak_flops": str(ident.peak_flops),
        "device_secret": ident.device_secret.hex(),
        "device_key": ident.device_key.to_pem().decode("ascii"),
        "chipmaker_root": ident.chipmaker_root.to_pem().decode("ascii"),
    }
    _write(path, doc)


def load_identity(state_dir: Path) -> SealedIdentity:
    path = sealed_dir(state_dir) / "identity.json"
    doc = _read(path)
    try:
        return SealedIdentity(
            serial=doc["serial"],
            model=doc["model"],
            peak_flops=int(doc["peak_flops"]),
            device_secret=bytes.fromhex(doc["device_secret"]),
            device_key=SigningKey.from_pem(doc["device_key"].encode("ascii")),
            chipmaker_root=VerifyKey.from_pem(doc["chipmaker_root"].encode("ascii")),
        )
    except (KeyError, ValueError, AttributeError) as exc:
        raise ChipError(f"sealed identity {str(path)!r} is malformed: {exc}") from None


def save_nv(state_dir: Path, nv: NVState) -> None:
    _write(sealed_dir(state_dir) / "nv.json", nv.to_json())


def load_nv(state_dir: Path) -> NVState:
    path = sealed_dir(state_dir) / "nv.json"
    doc = _read(path)
    doc.pop("v")
    try:
        busy = doc.get("trigger_busy_ns", "0")
        if not isinstance(busy, str) or not busy.isascii() or not busy.isdigit():
            raise ValueError(f"trigger_busy_ns must be a decimal string, got {busy!r}")
        doc["trigger_busy_ns"] = int(busy)
        nv = NVState(**doc)
        if not isinstance(nv.log_size, int) or nv.log_size < 0 or not isinstance(nv.log_damage, list):
            raise ValueError("log_size must be a whole number >= 0 and log_damage a list")
        if not isinstance(nv.rot_counter, int) or isinstance(nv.rot_counter, bool) or nv.rot_counter < 0:
            raise ValueError("rot_counter must be a whole number >= 0")
        return nv
    except (TypeError, ValueError) as exc:
        raise ChipError(f"sealed state {str(path)!r} is malformed: {exc}") from None
