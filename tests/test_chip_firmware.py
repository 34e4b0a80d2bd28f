"""Identity and verified boot: immutable serial, sealed keys, signed firmware only, anti-rollback,
early attestation of updates."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path

import pytest
import torch

from computewatch.chip import (
    BootError,
    Chip,
    ChipError,
    Chipmaker,
    FirmwareImage,
    FirmwarePolicy,
    provision_chips,
    verify_attestation,
    verify_chip_certificate,
)
from computewatch.crypto.dsse import Envelope
from computewatch.crypto.errors import SignatureError
from computewatch.crypto.signing import SigningKey
from computewatch.formats.firmware import build_image


@pytest.fixture()
def made(tmp_path: Path) -> tuple[Chipmaker, Path]:
    maker = Chipmaker.create(tmp_path / "maker")
    return maker, maker.manufacture(tmp_path / "chip", serial="CW-FW-1")


def test_identity_is_certified_sealed_and_immutable(made, tmp_path) -> None:
    maker, state = made
    chip = Chip.open(state)
    cert = verify_chip_certificate(chip.certificate, maker.public_key)
    assert cert.serial == chip.serial == "CW-FW-1"
    assert cert.peak_flops > 0
    with pytest.raises(SignatureError):
        verify_chip_certificate(chip.certificate, SigningKey.generate().public_key)
    sealed = state / "sealed"
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o700
    for f in sealed.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    # No private key material outside the sealed folder.
    for f in state.rglob("*"):
        if f.is_file() and "sealed" not in f.parts:
            assert b"PRIVATE KEY" not in f.read_bytes(), f
    assert (maker.folder / "chipmaker.key").stat().st_mode & 0o077 == 0
    with pytest.raises(AttributeError):
        chip.serial = "CW-OTHER"  # type: ignore[misc]
    with pytest.raises(ChipError, match="written once"):
        maker.manufacture(state, serial="CW-OTHER")
    assert Chip.open(state).serial == "CW-FW-1"


def test_boot_without_firmware_is_refused(made) -> None:
    with pytest.raises(BootError, match="no firmware"):
        Chip.open(made[1]).boot()


def test_unsigned_firmware_is_refused(made) -> None:
    _, state = made
    rogue = build_image(SigningKey.generate(), "no-logging", "9.9", 99, b"code", FirmwarePolicy(logging=False))
    chip = Chip.open(state)
    with pytest.raises(BootError, match="not signed by the chipmaker root"):
        chip.install_firmware(rogue)
    # Dropped straight into the firmware slot, verified boot still refuses it.
    (state / "firmware").mkdir(exist_ok=True)
    rogue.save(state / "firmware" / "active.json")
    with pytest.raises(BootError, match="not signed by the chipmaker root"):
        chip.boot()
    assert not chip.booted and len(chip.log) == 0


def test_altered_firmware_is_refused(made) -> None:
    maker, state = made
    image = maker.sign_firmware(FirmwarePolicy(snapshots_per_day=1.0))
    chip = Chip.open(state)
    with pytest.raises(BootError, match="code altered"):
        chip.install_firmware(FirmwareImage(image.manifest, image.code + b" patched"))
    # Altering the signed policy (e.g. f = 0) breaks the manifest signature.
    doc = json.loads(image.manifest.payload)
    doc["predicate"]["policy"]["snapshots_per_day"] = "0.0"
    forged = Envelope(image.manifest.payload_type, json.dumps(doc).encode(), image.manifest.signatures)
    with pytest.raises(BootError, match="not signed"):
        chip.install_firmware(FirmwareImage(forged, image.code))
    chip.install_firmware(image)
    path = state / "firmware" / "staged.json"
    doc = json.loads(path.read_bytes())
    doc["code"] = doc["code"][:-4] + "AAAA"
    path.write_text(json.dumps(doc))
    with pytest.raises(BootError, match="altered"):
        chip.boot()


def test_rollback_is_refused_and_the_fuse_never_goes_down(made, tmp_path) -> None:
    maker, state = made
    legacy = maker.sign_firmware(FirmwarePolicy(logging=False), name="legacy", version="0.9", security_version=0)
    logging_v1 = maker.sign_firmware(FirmwarePolicy(snapshots_per_day=1.0), version="1.0", security_version=1)
    logging_v2 = maker.sign_firmware(FirmwarePolicy(snapshots_per_day=1.0), version="2.0", security_version=2)
    chip = Chip.open(state)
    chip.install_firmware(legacy)  # allowed before the logging firmware ever ran
    chip.install_firmware(logging_v1)
    chip.boot()
    assert chip.security_version == 1
    chip.attach([torch.zeros(4)], tmp_path / "s")
    with pytest.raises(BootError, match="rollback"):
        chip.install_firmware(legacy)
    # Early attestation (footnote 11): a staged update is logged and attested before it runs.
    chip.install_firmware(logging_v2)
    assert chip.log.last is not None and chip.log.last.kind == "firmware-staged"
    nonce = b"\x01" * 16
    claims = verify_attestation(chip.attest(nonce), nonce, chip.chipmaker_root)
    assert claims.staged_firmware == {"measurement": logging_v2.measurement.hex()}
    assert claims.security_version == 1
    chip.close()
    chip = Chip.open(state)
    chip.boot()
    assert chip.security_version == 2 and chip.firmware is not None and chip.firmware.version == "2.0"
    chip.close()
    # Smuggling the old image into the active slot does not get past verified boot.
    logging_v1.save(state / "firmware" / "active.json")
    with pytest.raises(BootError, match=r"rollback.*below.*2"):
        Chip.open(state).boot()
    assert Chip.open(state).security_version == 2
    assert Chip.open(state).audit().ok


def test_policy_from_signed_manifest_drives_the_chip(tmp_path) -> None:
    dirs = provision_chips(tmp_path, 2, snapshots_per_day=7.5, checkpoint_every=3)
    serials = set()
    for d in dirs:
        chip = Chip.open(d)
        chip.boot()
        assert dataclasses.asdict(chip.policy)["snapshots_per_day"] == 7.5
        assert chip.policy.checkpoint_every == 3
        serials.add(chip.serial)
        chip.close()
    assert len(serials) == 2
    assert (tmp_path / "chipmaker" / "chipmaker.key").exists()
