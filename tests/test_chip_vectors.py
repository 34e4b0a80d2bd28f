"""The chip's format test vectors regenerate byte for byte and verify as documented."""

from __future__ import annotations

import json
from pathlib import Path

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
