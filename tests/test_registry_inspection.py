"""Inspections (§3.1) and the witness of chip logs, on SQLite and PostgreSQL: a clean chip is
clean, every snapshot since the last inspection is queued, a log restored from a backup is
caught, a wrong chip, a set tamper flag, a failed boot and a refusal are findings, and a stored
inspection re-verifies from its stored inputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from computewatch.chip import Chip, Chipmaker, FirmwarePolicy
from computewatch.chip.exercise import run_steps, small_shard
from computewatch.crypto.signing import SigningKey
from computewatch.formats.chip_entry import LogEntry, split_log
from computewatch.registry import RegistryError


def _use(chip_dir: Path, steps: int, start: int = 0) -> None:
    """The owner trains on the chip for `steps` steps of half an hour (snapshots get logged)."""
    chip = Chip.open(chip_dir)
    chip.boot()
    chip.attach(small_shard(), chip_dir.parent / f"{chip_dir.name}-storage")
    run_steps(chip, steps, 1800.0, start)
    chip.close()


def _snapshots(chip_dir: Path) -> list[tuple[int, int, str]]:
    lines, _ = split_log((chip_dir / "log" / "chip.log").read_bytes())
    out = []
    for line in lines:
        e = LogEntry.from_line(line)
        if e.kind == "snapshot":
            out.append((e.counter, e.body["step"], e.body["shard_digest"]))
    return out


@pytest.fixture
def owned_chip(registry):
    """A chip of acme that has trained: (world, serial, state dir)."""
    chip_dir = registry.fresh_chip(0)
    serial = registry.register(0, to="acme")
    _use(chip_dir, 4)
    return registry, serial, chip_dir


def _checks(result: dict) -> set[str]:
    return {p["check"] for p in result["problems"]}


def test_clean_inspection_keeps_the_head_and_queues_every_new_snapshot(owned_chip) -> None:
    world, serial, chip_dir = owned_chip
    reg = world.reg
    first_snaps = _snapshots(chip_dir)
    assert first_snaps, "the chip should have logged snapshots"
    one = reg.record_inspection(serial, chip_dir)
    assert one["outcome"] == "clean" and one["problems"] == [], one["problems"]
    assert one["attested"] == {"size": one["tree_size"], "root": one["root"]}
    queue = reg.explanation_queue("acme")
    assert [(q["counter"], q["step"], q["shard_digest"]) for q in queue] == first_snaps
    assert all(q["owner"] == "acme" and q["inspection"] == one["inspection"] for q in queue)
    _use(chip_dir, 3, start=4)
    two = reg.record_inspection(serial, chip_dir)
    assert two["outcome"] == "clean" and two["tree_size"] > one["tree_size"]
    new = [s for s in _snapshots(chip_dir) if s[0] >= one["tree_size"]]
    assert two["queued"] == len(new) > 0
    assert len(reg.explanation_queue("acme")) == len(first_snaps) + len(new)
    heads = reg.tree_heads(serial)
    assert [(h["size"], h["source"]) for h in heads] == [(one["tree_size"], "inspection"), (two["tree_size"], "inspection")]
    doc = reg.chip(serial)
    assert [i["outcome"] for i in doc["inspections"]] == ["clean", "clean"]
    assert reg.verify_inspection(one["inspection"])["ok"] and reg.verify_inspection(two["inspection"])["ok"]
    counter = first_snaps[0][0]
    assert reg.mark_explained(serial, counter, "verdict-7") == 1
    assert [q["counter"] for q in reg.explanation_queue(status="explained")] == [counter]
    assert reg.explanation_queue(status="explained")[0]["verdict_ref"] == "verdict-7"


def test_log_rolled_back_to_a_backup_taken_before_the_first_inspection_is_caught(owned_chip) -> None:
    world, serial, chip_dir = owned_chip
    backup = chip_dir.parent / "backup"
    shutil.copytree(chip_dir, backup)
    assert world.reg.record_inspection(serial, chip_dir)["outcome"] == "clean"
    shutil.rmtree(chip_dir)
    shutil.copytree(backup, chip_dir)  # whole state: the chip's own checks see a consistent log
    _use(chip_dir, 2, start=4)
    two = world.reg.record_inspection(serial, chip_dir)
    assert two["outcome"] == "finding"
    [problem] = [p for p in two["problems"] if p["check"] == "witness"]
    assert "does not extend the tree head" in problem["problem"] and "fork" in problem["problem"]
    # The forked log audits clean on its own; the root of trust's counter (outside the chip
    # folder the owner restored) is what the chip itself reports: tamper flag and log damage.
    assert _checks(two) == {"witness", "tamper", "log"}, two["problems"]
    assert any("root-of-trust counter" in p["problem"] for p in two["problems"] if p["check"] == "log")


def test_log_restored_after_a_remote_attestation_is_caught(owned_chip) -> None:
    world, serial, chip_dir = owned_chip
    reg = world.reg
    assert reg.record_inspection(serial, chip_dir)["outcome"] == "clean"
    backup = chip_dir.parent / "backup"
    shutil.copytree(chip_dir, backup)
    chip = Chip.open(chip_dir)  # the owner trains on; a remote attestation reaches the Verifier
    chip.boot()
    chip.attach(small_shard(), chip_dir.parent / "storage")
    run_steps(chip, 3, 1800.0, 10)
    evidence = chip.attest(b"remote-check-001")
    chip.close()
    head = reg.record_tree_head(serial, evidence)
    assert head["problems"] == [] and head["size"] > 0
    shutil.rmtree(chip_dir)
    shutil.copytree(backup, chip_dir)  # ...then the log (and all chip state) is restored
    two = reg.record_inspection(serial, chip_dir)
    assert two["outcome"] == "finding" and _checks(two) == {"witness", "tamper", "log"}
    problem = next(p["problem"] for p in two["problems"] if p["check"] == "witness")
    assert f"size {head['size']}" in problem and "(attestation)" in problem


def test_a_tree_head_going_backwards_is_a_finding(owned_chip) -> None:
    world, serial, chip_dir = owned_chip
    reg = world.reg
    backup = chip_dir.parent / "backup"
    shutil.copytree(chip_dir, backup)
    _use(chip_dir, 6, start=4)
    big = reg.record_inspection(serial, chip_dir)
    shutil.rmtree(chip_dir)
    shutil.copytree(backup, chip_dir)
    small = reg.record_inspection(serial, chip_dir)
    assert small["tree_size"] < big["tree_size"]
    assert small["outcome"] == "finding"
    assert any("went backwards" in p["problem"] for p in small["problems"])
    # The same holds for heads from remote attestation.
    chip = Chip.open(backup)
    chip.boot()
    evidence = chip.attest(b"old-state-000001")
    chip.close()
    assert "went backwards" in reg.record_tree_head(serial, evidence)["problems"][0]
    assert {f["kind"] for f in reg.flags("acme")} == {"witness"}


def test_the_presented_chip_must_be_the_requested_one(registry, tmp_path) -> None:
    reg = registry.reg
    a = registry.register(0, to="acme")
    registry.register(1, to="acme")
    other = registry.fresh_chip(1)
    wrong = reg.record_inspection(a, other)
    assert wrong["outcome"] == "finding" and _checks(wrong) == {"identity", "log"}
    assert "not the requested" in wrong["problems"][0]["problem"]
    assert wrong["queued"] == 0 and reg.tree_heads(a) == []
    # A second chip certified under the same serial (another device key): a counterfeit.
    maker = Chipmaker.load(registry.chips[0].parent / "chipmaker")
    clone = maker.manufacture(tmp_path / "clone", serial=a)
    Chip.open(clone).install_firmware(maker.sign_firmware(FirmwarePolicy(snapshots_per_day=1.0)))
    fake = reg.record_inspection(a, clone)
    assert fake["outcome"] == "finding" and "another chip carrying its serial" in fake["problems"][0]["problem"]


def test_tamper_flag_and_failed_boot_are_findings(registry) -> None:
    reg = registry.reg
    serial = registry.register(0, to="acme")
    chip_dir = registry.fresh_chip(0)
    chip = Chip.open(chip_dir)
    chip.boot()
    chip.trip_tamper("package opened")
    chip.close()
    tampered = reg.record_inspection(serial, chip_dir)
    assert tampered["outcome"] == "finding" and "tamper" in _checks(tampered)
    assert any("tamper" in n["note"] for n in tampered["notes"])
    # Firmware whose code was altered fails verified boot: no attestation, a finding.
    serial2 = registry.register(1, to="acme")
    chip2 = registry.fresh_chip(1)
    _use(chip2, 1)
    active = chip2 / "firmware" / "active.json"
    image = json.loads(active.read_text())
    image["code"] = "ZXZpbCBmaXJtd2FyZQ=="  # "evil firmware"
    active.write_text(json.dumps(image))
    broken = reg.record_inspection(serial2, chip2)
    assert broken["outcome"] == "finding" and {"boot", "attestation"} <= _checks(broken)
    assert reg.verify_inspection(broken["inspection"])["ok"]


def test_a_chip_whose_log_no_longer_parses_is_a_finding_not_an_aborted_inspection(owned_chip) -> None:
    world, serial, chip_dir = owned_chip
    log = chip_dir / "log" / "chip.log"
    raw = bytearray(log.read_bytes())
    raw[raw.index(b"{", 10)] = ord("[")  # an entry that is no longer JSON: the chip will not power on
    log.write_bytes(bytes(raw))
    out = world.reg.record_inspection(serial, chip_dir)
    assert out["outcome"] == "finding" and {"boot", "attestation", "log"} <= _checks(out), out["problems"]
    assert any("does not power on" in p["problem"] for p in out["problems"])


def test_inspection_statements_are_rfc8785_and_legacy_ones_still_read() -> None:
    """v2 statements are RFC 8785 (checked with the `rfc8785` package); a v1 statement is read
    in the legacy encoding; bytes not in their tag's encoding are refused."""
    import rfc8785

    from computewatch.crypto.canonical import canonical_json
    from computewatch.crypto.dsse import statement
    from computewatch.crypto.errors import FormatError
    from computewatch.registry.inspection_record import (
        PRED_INSPECTION_V1,
        encode_inspection,
        parse_inspection,
    )

    predicate = {"outcome": "clean", "score": 1e-05, "ratio": 2.0}  # floats: the encodings differ
    body = encode_inspection("CW-1", {"sha256": "00" * 32}, predicate)
    assert body == rfc8785.dumps(json.loads(body)) and b'"score":0.00001' in body
    assert parse_inspection(body)["predicate"]["ratio"] == 2
    legacy = statement([("chip/CW-1", {"sha256": "00" * 32})], PRED_INSPECTION_V1, predicate)
    assert parse_inspection(canonical_json(legacy))["predicate"] == predicate
    with pytest.raises(FormatError):  # a legacy tag over RFC 8785 bytes
        parse_inspection(rfc8785.dumps(legacy))
    with pytest.raises(FormatError):  # a v2 tag over legacy bytes
        parse_inspection(canonical_json(json.loads(body)))


def test_a_stored_legacy_inspection_still_re_verifies(registry, monkeypatch) -> None:
    """A register written before format version 2 holds v1 statements: they re-verify."""
    from computewatch.crypto.canonical import canonical_json
    from computewatch.crypto.dsse import statement
    from computewatch.registry import _inspections
    from computewatch.registry.inspection_record import PRED_INSPECTION_V1

    def legacy(serial: str, digest: dict, predicate: dict) -> bytes:
        return canonical_json(statement([(f"chip/{serial}", digest)], PRED_INSPECTION_V1, predicate))

    reg = registry.reg
    serial = registry.register(0, to="acme")
    monkeypatch.setattr(_inspections, "encode_inspection", legacy)
    out = reg.refuse(serial, "owner refused access to the hall")
    monkeypatch.undo()
    assert reg.inspection(out["inspection"])["statement"]["predicateType"] == PRED_INSPECTION_V1
    assert reg.verify_inspection(out["inspection"])["ok"]


def test_refusal_is_recorded_as_non_compliance(registry, tmp_path) -> None:
    reg = registry.reg
    serial = registry.register(0, to="acme")
    out = reg.refuse(serial, "owner refused access to the hall")
    assert out["outcome"] == "refused" and out["problems"][0]["problem"] == "owner refused access to the hall"
    assert reg.chip(serial)["inspections"][0]["outcome"] == "refused"
    assert reg.verify_inspection(out["inspection"])["ok"]
    with pytest.raises(RegistryError, match="needs a reason"):
        reg.refuse(serial, "  ")
    with pytest.raises(RegistryError, match="not a chip state directory"):
        reg.record_inspection(serial, tmp_path / "no-chip")
    assert len(reg.inspections()) == 1


def test_signed_findings_re_verify_and_edits_are_caught(owned_chip) -> None:
    world, serial, chip_dir = owned_chip
    reg = world.reg
    inspector_key = SigningKey.from_seed(b"\x0a" * 32)
    reg.add_owner("ines", inspector_key.public_key, role="inspector")
    with pytest.raises(RegistryError, match="not the registered key of inspector 'ines'"):
        reg.record_inspection(serial, chip_dir, inspector="ines", inspector_key=world.keys["acme"])
    out = reg.record_inspection(serial, chip_dir, inspector="ines", inspector_key=inspector_key)
    doc = reg.inspection(out["inspection"])
    assert doc["signed"] and doc["inspector"] == "ines"
    assert doc["statement"]["predicateType"] == "urn:computewatch:inspection:v2"
    assert doc["statement"]["predicate"]["root"] == out["root"]
    assert reg.verify_inspection(out["inspection"])["ok"]
    with reg.engine.begin() as conn:  # someone with database access rewrites the finding
        if reg.engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE inspections DISABLE TRIGGER inspections_append_only"))
        else:
            conn.execute(text("DROP TRIGGER inspections_append_only_update"))
        conn.execute(text("UPDATE inspections SET problems = '[]', outcome = 'clean', log = evidence"))
    again = reg.verify_inspection(out["inspection"])
    assert not again["ok"]


def test_evidence_for_another_chip_or_garbage_is_refused(owned_chip) -> None:
    world, serial, _chip_dir = owned_chip
    reg = world.reg
    other_dir = world.fresh_chip(2)
    chip = Chip.open(other_dir)
    chip.boot()
    evidence = chip.attest(b"nonce-0123456789")
    chip.close()
    with pytest.raises(RegistryError, match=r"another device key|not "):
        reg.record_tree_head(serial, evidence)
    with pytest.raises(RegistryError, match="refused"):
        reg.record_tree_head(serial, b"{}")
    with pytest.raises(RegistryError, match="refused"):
        reg.record_tree_head(serial, evidence, nonce=os.urandom(16))
