"""Format version 2 for chip, boot and lot certificates, firmware manifests and attestation
evidence (docs/formats.md, "Format version 2"): each is read at its legacy tag in canonical JSON
version 1 and at its v2 tag in RFC 8785 (checked with the `rfc8785` package, not ours), and
refused when its bytes are the other version's encoding (a float makes them differ)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, Envelope, sign_envelope, statement
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import SigningKey
from computewatch.formats.firmware import FirmwarePolicy, build_image, read_manifest
from computewatch.formats.identity import (
    issue_boot_certificate,
    issue_chip_certificate,
    verify_boot_certificate,
    verify_chip_certificate,
)
from computewatch.formats.lot import certificate_claims, issue_lot, verify_lot_manifest

MAKER = SigningKey.from_seed(b"\x61" * 32)
DEVICE = SigningKey.from_seed(b"\x62" * 32)
BOOT = SigningKey.from_seed(b"\x63" * 32)
V1, V2 = canonical_json, rfc8785.dumps


def _chip() -> Envelope:
    return issue_chip_certificate(MAKER, "CW-V2-0001", DEVICE.public_key, "sim", 10**15)


def _boot() -> Envelope:
    return issue_boot_certificate(DEVICE, "CW-V2-0001", 3, BOOT.public_key, b"\x07" * 32, "fw", "1.0", 2)


def _firmware() -> Envelope:
    return build_image(MAKER, "fw", "1.0", 2, b"code", FirmwarePolicy()).manifest


def _lot() -> Envelope:
    return issue_lot(MAKER, "LOT-V2", "maker", [_chip().to_json()])[0]


# (writer, signer, reader, the kind in the predicate type)
CASES: dict[str, tuple[Callable[[], Envelope], SigningKey, Callable[[Envelope], Any], str]] = {
    "chip certificate": (_chip, MAKER, lambda e: verify_chip_certificate(e, MAKER.public_key), "chip-certificate"),
    "boot certificate": (_boot, DEVICE, lambda e: verify_boot_certificate(e, DEVICE.public_key), "boot-certificate"),
    "firmware manifest": (_firmware, MAKER, lambda e: read_manifest(e, MAKER.public_key), "firmware"),
    "lot manifest": (_lot, MAKER, lambda e: verify_lot_manifest(e, {MAKER.public_key.keyid: MAKER.public_key}), "chip-lot"),
}


def _restated(env: Envelope, version: int, encode: Callable[[Any], bytes], key: SigningKey, extra: Any = None) -> Envelope:
    """The same statement at predicate type `version`, encoded by `encode` (a float added when
    `extra` is given, so that the two encodings differ), signed again."""
    stmt = json.loads(env.payload)
    stmt["predicateType"] = stmt["predicateType"].rsplit(":", 1)[0] + f":v{version}"
    if extra is not None:
        stmt["predicate"]["x_float"] = extra
    return sign_envelope(PAYLOAD_TYPE_INTOTO, encode(statement(
        [(s["name"], s["digest"]) for s in stmt["subject"]], stmt["predicateType"], stmt["predicate"])), key)


@pytest.mark.parametrize("name", sorted(CASES))
def test_written_at_v2_in_rfc8785_and_v1_still_read(name: str) -> None:
    write, key, read, kind = CASES[name]
    env = write()
    assert json.loads(env.payload)["predicateType"] == f"urn:computewatch:{kind}:v2"
    assert rfc8785.dumps(json.loads(env.payload)) == env.payload
    read(env)
    read(_restated(env, 1, V1, key))  # a legacy document, as stored before version 2
    if name != "lot manifest":  # its predicate has exactly its fields: no room for a float
        read(_restated(env, 1, V1, key, 1e-05))
        read(_restated(env, 2, V2, key, 1e-05))


@pytest.mark.parametrize("name", sorted(CASES))
def test_bytes_not_in_their_tags_encoding_are_refused(name: str) -> None:
    write, key, read, _kind = CASES[name]
    env = write()
    for version, encode in ((1, V2), (2, V1)):
        with pytest.raises(ComputewatchError, match=r"canonical JSON|version 1 form|RFC 8785"):
            read(_restated(env, version, encode, key, 1e-05))


def test_lot_reads_both_certificate_versions_without_their_signature() -> None:
    cert = _chip()
    legacy = _restated(cert, 1, V1, MAKER)
    for env in (cert, legacy):
        claims = certificate_claims(env.to_json())
        assert (claims.serial, claims.peak_flops, claims.device_key) == ("CW-V2-0001", 10**15, DEVICE.public_key.raw)
    with pytest.raises(ComputewatchError):
        certificate_claims(_restated(cert, 1, V2, MAKER, 1e-05).to_json())
