"""Chip certificates as the register takes them: verified against the chipmaker roots it pinned.

A chip enters the register only with its chipmaker certificate; the serial, device key, model
and certified peak FLOP/s come from the verified certificate, never from typed-in fields. The
key beside the chip (`chipmaker.pub`) is never consulted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from computewatch.crypto.dsse import Envelope
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.identity import verify_chip_certificate
from computewatch.registry.errors import RegistryError

__all__ = ["MAX_PEAK_FLOPS", "CertifiedChip", "check_batch", "check_certificate", "read_certificate"]

MAX_PEAK_FLOPS = 2**63 - 1  # the register stores peak FLOP/s as a signed 64-bit integer


@dataclass(frozen=True)
class CertifiedChip:
    """What a verified certificate says, and which pinned root said it."""

    serial: str
    model: str
    peak_flops: int
    device_key: bytes  # raw 32 bytes
    certificate: bytes  # the envelope, as the chip carries it
    chipmaker_keyid: str


def read_certificate(chip_dir: str | os.PathLike[str]) -> bytes:
    path = Path(chip_dir) / "certificate.json"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RegistryError(f"{str(path)!r} does not exist: not a chip state directory") from None
    except OSError as exc:
        raise RegistryError(f"cannot read {str(path)!r}: {exc.strerror}") from None


def check_certificate(data: bytes, roots: Mapping[str, VerifyKey]) -> CertifiedChip:
    """Verify certificate bytes against the pinned chipmaker roots (keyid -> key).

    The signature's keyid picks the root to try first (it is only a hint); a certificate that
    verifies under none of them is refused.
    """
    try:
        env = Envelope.from_json(data)
    except ComputewatchError as exc:
        raise RegistryError(f"chip certificate is malformed: {exc}") from None
    hinted = [roots[k] for k, _ in env.signatures if k in roots]
    candidates = hinted + [r for r in roots.values() if r not in hinted]
    if not candidates:
        raise RegistryError("no chipmaker is registered: add the chipmaker's root key first")
    errors = []
    for root in candidates:
        try:
            cert = verify_chip_certificate(env, root)
        except ComputewatchError as exc:
            errors.append(str(exc))
            continue
        if cert.peak_flops > MAX_PEAK_FLOPS:
            raise RegistryError(f"chip {cert.serial}: certified peak FLOP/s {cert.peak_flops} exceeds {MAX_PEAK_FLOPS}")
        if not cert.serial or len(cert.serial) > 200 or "\n" in cert.serial or "/" in cert.serial:
            raise RegistryError(f"certified serial {cert.serial!r} is not a usable serial")
        return CertifiedChip(cert.serial, cert.model, cert.peak_flops, cert.device_key.raw, bytes(data), root.keyid)
    raise RegistryError(
        "chip certificate does not verify under any registered chipmaker root "
        f"({len(candidates)} tried; first error: {errors[0]})"
    )


def check_batch(datas: Sequence[bytes], roots: Mapping[str, bytes]) -> list[CertifiedChip | str]:
    """Worker entry point for bulk registration: each certificate checked, or the error text.
    Roots travel as raw bytes (picklable)."""
    keys = {k: VerifyKey.from_raw(raw) for k, raw in roots.items()}
    out: list[CertifiedChip | str] = []
    for data in datas:
        try:
            out.append(check_certificate(data, keys))
        except RegistryError as exc:
            out.append(str(exc))
    return out
