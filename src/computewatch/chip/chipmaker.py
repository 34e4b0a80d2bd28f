"""The chipmaker: root key, chip certificates, firmware signing, manufacture of chips.

Folder layout: `chipmaker.key` (Ed25519 PEM, 0600), `chipmaker.pub` (PEM), `firmware/` (signed
images it issued).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from computewatch.chip.errors import ChipError
from computewatch.chip.state import NVState, SealedIdentity, save_identity, save_nv
from computewatch.crypto.atomic import atomic_write
from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.dsse import Envelope
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.formats.firmware import FirmwareImage, FirmwarePolicy, build_image
from computewatch.formats.identity import issue_chip_certificate
from computewatch.formats.lot import LotProof, check_lot_id, issue_lot

__all__ = ["DEFAULT_MODEL", "DEFAULT_PEAK_FLOPS", "LOGGING_FIRMWARE_CODE", "MAX_SERIAL_LENGTH", "Chipmaker", "check_serial"]

DEFAULT_MODEL = "computewatch-sim-h100"
DEFAULT_PEAK_FLOPS = 989 * 10**12  # H100 SXM dense BF16 tensor-core peak, FLOP/s
# The simulated firmware's "code": its behaviour lives in this package; the bytes give the image
# a code digest to measure, as a real blob would.
LOGGING_FIRMWARE_CODE = b"computewatch logging firmware: Poisson snapshot trigger, shard hash, signed log\n"
MAX_SERIAL_LENGTH = 64


def check_serial(serial: str) -> str:
    """A serial to burn in: 1 to 64 ASCII letters, digits, '-' and '_' (it names files and URLs)."""
    if not isinstance(serial, str) or not serial:
        raise ChipError("a serial cannot be empty (leave it out to get a random one)")
    if len(serial) > MAX_SERIAL_LENGTH or not serial.isascii() or not serial.replace("-", "").replace("_", "").isalnum():
        raise ChipError(f"serial {serial!r}: 1 to {MAX_SERIAL_LENGTH} ASCII letters, digits, '-' and '_' only")
    return serial


class Chipmaker:
    """Holds the root key; certifies chips at manufacture and signs firmware images."""

    def __init__(self, key: SigningKey, folder: Path | None = None) -> None:
        self._key = key
        self.folder = folder

    @classmethod
    def create(cls, folder: str | os.PathLike[str]) -> Chipmaker:
        folder = Path(folder)
        if (folder / "chipmaker.key").exists():
            raise ChipError(f"{str(folder)!r} already holds a chipmaker key; load it instead")
        folder.mkdir(parents=True, exist_ok=True)
        key = SigningKey.generate()
        key.save(folder / "chipmaker.key")
        key.public_key.save(folder / "chipmaker.pub")
        return cls(key, folder)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Chipmaker:
        folder = Path(folder)
        return cls(SigningKey.load(folder / "chipmaker.key"), folder)

    @classmethod
    def load_or_create(cls, folder: str | os.PathLike[str]) -> Chipmaker:
        return cls.load(folder) if (Path(folder) / "chipmaker.key").exists() else cls.create(folder)

    @property
    def public_key(self) -> VerifyKey:
        return self._key.public_key

    def certify(self, serial: str, device_key: VerifyKey, model: str, peak_flops: int) -> Envelope:
        return issue_chip_certificate(self._key, serial, device_key, model, peak_flops)

    def sign_firmware(
        self,
        policy: FirmwarePolicy,
        *,
        name: str = "computewatch-logging",
        version: str = "1.0.0",
        security_version: int = 1,
        code: bytes = LOGGING_FIRMWARE_CODE,
    ) -> FirmwareImage:
        image = build_image(self._key, name, version, security_version, code, policy)
        if self.folder is not None:
            out = self.folder / "firmware"
            out.mkdir(exist_ok=True)
            image.save(out / f"{name}-{version}-sv{security_version}-{image.measurement.hex()[:12]}.json")
        return image

    def issue_lot(self, lot: str, certificates: list[bytes], *, name: str = "chipmaker") -> tuple[Envelope, list[LotProof]]:
        """Sign the manifest of a lot of chip certificates (their exact bytes, in order) and
        return it with every chip's inclusion proof (docs/formats.md, "Lot certificate")."""
        return issue_lot(self._key, lot, name, certificates)

    def manufacture_lot(
        self,
        folder: str | os.PathLike[str],
        count: int,
        lot: str,
        *,
        name: str = "chipmaker",
        model: str = DEFAULT_MODEL,
        peak_flops: int = DEFAULT_PEAK_FLOPS,
    ) -> Path:
        """Manufacture `count` chips into `folder/<serial>/`, each with its own certificate and
        its `lot-proof.json`; write the signed manifest `folder/lot-<lot>.dsse.json` and the
        certificates in lot order, one per line, `folder/lot-<lot>-certificates.jsonl`.
        Returns the manifest's path."""
        check_lot_id(lot)
        if not isinstance(count, int) or not 1 <= count <= 1_000_000:
            raise ChipError(f"a manufactured lot holds 1 to 1000000 chips, got {count!r}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        chips = []
        for _ in range(count):
            serial = check_serial(f"CW-{secrets.token_hex(6).upper()}")
            chips.append(self.manufacture(folder / serial, serial=serial, model=model, peak_flops=peak_flops))
        certs = [(d / "certificate.json").read_bytes() for d in chips]
        manifest, proofs = self.issue_lot(lot, certs, name=name)
        for d, proof in zip(chips, proofs, strict=True):
            atomic_write(d / "lot-proof.json", proof.to_json(), mode=0o644)
        atomic_write(folder / f"lot-{lot}-certificates.jsonl", b"".join(c + b"\n" for c in certs), mode=0o644)
        path = folder / f"lot-{lot}.dsse.json"
        atomic_write(path, manifest.to_json(), mode=0o644)
        return path

    def manufacture(
        self,
        state_dir: str | os.PathLike[str],
        *,
        serial: str | None = None,
        model: str = DEFAULT_MODEL,
        peak_flops: int = DEFAULT_PEAK_FLOPS,
        device_secret: bytes | None = None,
        device_key: SigningKey | None = None,
    ) -> Path:
        """Burn in a serial and device secret, create the device key, certify it; returns the dir.
        `device_secret`/`device_key` are fixed only for test vectors; chips get fresh randomness.
        An empty serial is refused (None draws a random one)."""
        state_dir = Path(state_dir)
        serial = check_serial(f"CW-{secrets.token_hex(6).upper()}" if serial is None else serial)
        state_dir.mkdir(parents=True, exist_ok=True)
        device_key = device_key or SigningKey.generate()
        secret = device_secret if device_secret is not None else secrets.token_bytes(32)
        ident = SealedIdentity(serial, model, int(peak_flops), secret, device_key, self.public_key)
        save_identity(state_dir, ident)
        save_nv(state_dir, NVState())
        cert = self.certify(serial, device_key.public_key, model, int(peak_flops))
        atomic_write(state_dir / "certificate.json", cert.to_json(), mode=0o644)
        self.public_key.save(state_dir / "chipmaker.pub")
        info = {"v": 1, "serial": serial, "model": model, "peak_flops": str(int(peak_flops))}
        atomic_write(state_dir / "chip.json", canonical_json(info), mode=0o644)
        return state_dir
