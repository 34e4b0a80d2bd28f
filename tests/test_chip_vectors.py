"""The chip's format test vectors regenerate byte for byte and verify as documented."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import rfc8785

from computewatch.chip import audit_log, verify_attestation, verify_chip_certificate
from computewatch.chip.vectors import VECTOR_INPUTS, generate
from computewatch.crypto.signing import SigningKey
from computewatch.formats.firmware import FirmwareImage, verify_image

VECTORS = Path(__file__).parent / "vectors" / "computewatch" / "chip"


def test_vectors_regenerate_identically(tmp_path) -> None:
    produced = generate(tmp_path)
    stored = {p.name: p.read_bytes() for p in VECTORS.iterdir()}
    assert set(produced) == set(stored)
    for name, data in produced.items():
        assert data == stored[name], f"{name} differs from the stored vector"


def test_vectors_verify_with_only_the_published_inputs() -> None:
    root = SigningKey.from_seed(bytes.fromhex(VECTOR_INPUTS["chipmaker_seed"])).public_key
    cert = verify_chip_certificate(json.loads((VECTORS / "certificate.json").read_bytes()), root)
    assert cert.serial == VECTOR_INPUTS["serial"]
    report = audit_log((VECTORS / "chip.log").read_bytes(), cert, root)
    assert report.ok and report.snapshots > 0 and report.epochs_checked == 2  # epoch end at 24 h, then stop
    nonce = bytes.fromhex(VECTOR_INPUTS["nonce"])
    claims = verify_attestation((VECTORS / "evidence.json").read_bytes(), nonce, root)
    assert claims.serial == cert.serial
    fw = verify_image(FirmwareImage.load(VECTORS / "firmware.json"), root, 1)
    assert fw.policy.snapshots_per_day == VECTOR_INPUTS["snapshots_per_day"]


def test_format_page_quotes_the_vector_values() -> None:
    page = (Path(__file__).parents[1] / "docs" / "formats.md").read_text()
    entries = [json.loads(x) for x in (VECTORS / "chip.log").read_bytes().split(b"\n")[:-1]]
    schedule = json.loads((VECTORS / "schedule.json").read_bytes())[0]
    first_snapshot = next(e for e in entries if e["kind"] == "snapshot")
    quoted = [
        FirmwareImage.load(VECTORS / "firmware.json").measurement.hex(),
        entries[-1]["body"]["root"],
        f"log has {len(entries)} entries",
        f"covers {entries[-1]['body']['tree_size']} with",
        schedule["seed"],
        schedule["commitment"],
        *schedule["first_arrivals_ns_from_0"][:2],
        first_snapshot["body"]["shard_digest"],
        f"entry {first_snapshot['counter']}, step {first_snapshot['body']['step']}, "
        f"{len(first_snapshot['body']['triggers'])} triggers",
    ]
    for value in quoted:
        assert value in page, value


V1 = Path(__file__).parent / "vectors" / "computewatch" / "chip-log-v1"
LEGACY = Path(__file__).parent / "vectors" / "computewatch" / "chip-formats-v1"


def test_legacy_v1_format_vectors_still_verify() -> None:
    """Chips certified and evidence made before format version 2: certificate, firmware manifest,
    boot certificates and evidence at their v1 predicate types (canonical JSON version 1)."""
    root = SigningKey.from_seed(bytes.fromhex(VECTOR_INPUTS["chipmaker_seed"])).public_key
    cert = verify_chip_certificate(json.loads((LEGACY / "certificate.json").read_bytes()), root)
    assert cert.serial == VECTOR_INPUTS["serial"] and b"chip-certificate:v1" in cert.envelope.payload
    fw = verify_image(FirmwareImage.load(LEGACY / "firmware.json"), root, 1)
    assert b"firmware:v1" in fw.manifest.payload
    page = (Path(__file__).parents[1] / "docs" / "formats.md").read_text()
    assert fw.measurement.hex() in page
    nonce = bytes.fromhex(VECTOR_INPUTS["nonce"])
    for log, evidence in (("chip.log", "evidence.json"), ("chip-log-v1.log", "chip-log-v1-evidence.json")):
        report = audit_log((LEGACY / log).read_bytes(), cert, root)
        assert report.ok and report.epochs_checked == 2 and report.attributed == report.entries
        last = json.loads((LEGACY / log).read_bytes().split(b"\n")[-2])
        assert last["kind"] == "checkpoint" and last["body"]["root"] in page
        claims = verify_attestation((LEGACY / evidence).read_bytes(), nonce, root)
        assert claims.serial == cert.serial and claims.rot_counter is not None
        payload = base64.b64decode(json.loads((LEGACY / evidence).read_bytes())["evidence"]["payload"])
        assert json.loads(payload)["predicateType"] == "urn:computewatch:attestation:v3"


def test_current_vectors_are_rfc8785() -> None:
    """Certificate, firmware manifest and evidence are written at v2 / v4 in RFC 8785, checked
    with the `rfc8785` package (not ours)."""
    evidence = json.loads((VECTORS / "evidence.json").read_bytes())
    envelopes = [json.loads((VECTORS / "certificate.json").read_bytes()),
                 json.loads((VECTORS / "firmware.json").read_bytes())["manifest"],
                 evidence["evidence"], evidence["boot_certificate"]]
    kinds = []
    for env in envelopes:
        payload = base64.b64decode(env["payload"])
        assert rfc8785.dumps(json.loads(payload)) == payload
        kinds.append(json.loads(payload)["predicateType"].rsplit(":", 2)[1:])
    assert kinds == [["chip-certificate", "v2"], ["firmware", "v2"], ["attestation", "v4"], ["boot-certificate", "v2"]]


def test_log_v1_vectors_regenerate_and_still_audit(tmp_path) -> None:
    """The same run in log version 1 (every entry signed) regenerates byte for byte, and the
    audit still reads it: one signature per entry, each checked."""
    produced = generate(tmp_path, log_version=1)
    assert produced == {p.name: p.read_bytes() for p in V1.iterdir()}
    root = SigningKey.from_seed(bytes.fromhex(VECTOR_INPUTS["chipmaker_seed"])).public_key
    cert = verify_chip_certificate(json.loads((VECTORS / "certificate.json").read_bytes()), root)
    data = (V1 / "chip.log").read_bytes()
    report = audit_log(data, cert, root)
    assert report.ok and report.epochs_checked == 2 and report.attributed == report.entries
    assert report.checkpoints_verified == 0  # v1 checkpoints are plain signed entries
    lines = data.split(b"\n")[:-1]
    assert all(json.loads(x)["v"] == 1 and "sig" in json.loads(x) for x in lines)
    v2 = audit_log((VECTORS / "chip.log").read_bytes(), cert, root)
    assert v2.ok and v2.checkpoints_verified >= 4 and v2.attributed == v2.entries
    nonce = bytes.fromhex(VECTOR_INPUTS["nonce"])
    assert verify_attestation((V1 / "evidence.json").read_bytes(), nonce, root).serial == cert.serial
