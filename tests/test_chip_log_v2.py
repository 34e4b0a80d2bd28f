"""Chip log version 2 (issue 24): the chip signs checkpoints, not entries; an entry is attributed
to the chip only through a signed checkpoint of its own boot that hash-chains to it. Each attack
on what a per-entry signature used to stop is caught here by the check that names it."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from computewatch.adversary.chiplog import rechain
from computewatch.chip import Chip, audit_log, provision_chips, verify_chip_certificate
from computewatch.chip.exercise import run_steps, small_shard
from computewatch.crypto.canonical import canonical_json_v2, parse_canonical_json_v2
from computewatch.crypto.errors import FormatError
from computewatch.crypto.merkle import MerkleTree
from computewatch.formats.attestation import verify_attestation
from computewatch.formats.chip_audit import AuditReport, verify_covered_entry
from computewatch.formats.chip_entry import (
    LogEntry,
    _parse_line,
    b64,
    entry_signing_input,
    parse_entry_line,
    split_log,
)
from _chips import TEST_SECRET_SEED, leak_boot_key

_rechain = rechain  # the forger's repair of the chain (adversary/chiplog.py)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two chips of one chipmaker (checkpoint every 4 entries, f = 200/day). Chip 0 runs two
    boots with an attestation in the first; chip 1 one boot."""
    root = tmp_path_factory.mktemp("v2")
    dirs = provision_chips(root, 2, snapshots_per_day=200.0, checkpoint_every=4, secret_seed=TEST_SECRET_SEED)
    logs, keys, heads = [], [], []
    for i, state in enumerate(dirs):
        for boot in range(2 - i):
            chip = Chip.open(state)
            chip.boot()
            chip.attach(small_shard(i), root / f"storage-{i}")
            keys.append(leak_boot_key(chip))
            run_steps(chip, 6, 3600.0, start=10 * boot)
            if boot == 0 and i == 0:
                nonce = bytes(16)
                claims = verify_attestation(chip.attest(nonce), nonce, chip.chipmaker_root)
                heads.append((claims.log_size, claims.log_root))
                run_steps(chip, 4, 3600.0, start=6)
            chip.close()
        logs.append(chip.log_path.read_bytes())
    certs = [verify_chip_certificate(Chip.open(d).certificate, chip.chipmaker_root) for d in dirs]
    return {"logs": logs, "certs": certs, "root": chip.chipmaker_root, "key": keys[0], "head": heads[0], "dirs": dirs}


def _lines(data: bytes) -> list[bytes]:
    return split_log(data)[0]


def _join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _audit(world: dict[str, Any], lines: list[bytes], chip: int = 0, **kw: Any) -> AuditReport:
    return audit_log(_join(lines), world["certs"][chip], world["root"], **kw)


def _text(report: AuditReport) -> str:
    return " | ".join(p.problem for p in report.problems)


def _kinds(lines: list[bytes]) -> list[str]:
    return [json.loads(x)["kind"] for x in lines]


# ----------------------------------------------------------------------------- round trip
def test_v2_round_trip_audits_clean_and_attributes_every_entry(world: dict[str, Any]) -> None:
    lines = _lines(world["logs"][0])
    report = _audit(world, lines, known_heads=[world["head"]])
    assert report.ok, report.problems[:3]
    assert report.attributed == report.entries == len(lines) and report.end == "clean-stop"
    kinds = _kinds(lines)
    assert report.checkpoints_verified == kinds.count("checkpoint") >= 6
    assert kinds.count("boot") == 2
    for line in lines:
        e = parse_canonical_json_v2(line)
        assert canonical_json_v2(e) == line and e["v"] == 2
        assert ("sig" in e) == (e["kind"] == "checkpoint")  # on-chip firmware signs checkpoints only
        assert LogEntry.from_line(line).counter == e["counter"]
    # The chip checkpoints at the attestation: the evidence's head is a signed checkpoint's.
    size, _root = world["head"]
    assert json.loads(lines[size - 1])["kind"] == "checkpoint"


def test_the_fast_line_parse_agrees_with_rfc_8785(world: dict[str, Any]) -> None:
    rng = random.Random(24)
    lines = _lines(world["logs"][0])[:6]
    samples = [b'{"a":1.5}', b'{"a":1e400}', b'{"b":1,"a":2}', b'{"a":1,"a":1}', b'{"a":9007199254740993}',
               '{"é":1}'.encode(), b'{"a":"\\u00e9"}', b'{"a":NaN}', b'{"\xf0\x9f\x98\x80":1,"\xef\xbf\xbf":2}']
    for raw in [*samples, *lines]:
        cases = [raw, raw + b" ", raw.replace(b":", b": ", 1)]
        for _ in range(8):
            i = rng.randrange(len(raw))
            cases += [raw[:i] + raw[i + 1 :], raw[:i] + bytes([rng.choice(b'0123456789e.-"\\,:{}[]a ')]) + raw[i:]]
        for m in cases:
            try:
                careful: object = parse_canonical_json_v2(m)
                if "float" in repr(type(careful)) or any(isinstance(v, float) for v in _walk(careful)):
                    careful = "error"
            except FormatError:
                careful = "error"
            try:
                fast: object = _parse_line(m)
            except FormatError:
                fast = "error"
            assert fast == careful, m[:80]


def _walk(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _walk(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in _walk(x)]
    return [obj]


# ------------------------------------------------------------ attacks between checkpoints
def _first(lines: list[bytes], kind: str, after: int = 1) -> int:
    return next(i for i in range(after, len(lines)) if json.loads(lines[i])["kind"] == kind)


def _alter(lines: list[bytes]) -> list[bytes]:
    i = _first(lines, "snapshot")
    e = json.loads(lines[i])
    e["body"]["shard_digest"] = "ab" * 32
    return _rechain([*lines[:i], canonical_json_v2(e), *lines[i + 1 :]], i)


def _insert(lines: list[bytes]) -> list[bytes]:
    i = _first(lines, "snapshot")
    e = json.loads(lines[i - 1])
    forged = dict(e, kind="precommitment", body={"run_id": "innocent", "digest": "cd" * 32})
    forged.pop("sig", None)
    return _rechain([*lines[:i], canonical_json_v2(forged), *lines[i:]], i, renumber=True)


def _drop(lines: list[bytes]) -> list[bytes]:
    i = _first(lines, "snapshot")
    return _rechain(lines[:i] + lines[i + 1 :], i, renumber=True)


def _reorder(lines: list[bytes]) -> list[bytes]:
    i = _first(lines, "snapshot")
    j = next(k for k in range(i + 1, len(lines)) if json.loads(lines[k])["kind"] != "checkpoint")
    swapped = [*lines[:i], lines[j], *lines[i + 1 : j], lines[i], *lines[j + 1 :]]
    return _rechain(swapped, i, renumber=True)


@pytest.mark.parametrize("attack", [_alter, _insert, _drop, _reorder], ids=["altered", "inserted", "dropped", "reordered"])
def test_an_entry_changed_between_checkpoints_and_rechained_is_not_attributed(world: dict[str, Any], attack: Any) -> None:
    """The forger fixes every `prev`, counter and checkpoint root after its change; what it
    cannot make is the checkpoint signature over the new chain."""
    lines = _lines(world["logs"][0])
    report = _audit(world, attack(lines))
    text = _text(report)
    assert not report.ok
    assert "checkpoint signature does not verify" in text
    assert "covered by no signed checkpoint of that boot" in text and "not attributable" in text
    assert report.attributed < report.entries


def test_an_entry_altered_without_rechaining_breaks_chain_and_root(world: dict[str, Any]) -> None:
    lines = _lines(world["logs"][0])
    i = _first(lines, "snapshot")
    lines[i] = lines[i].replace(b'"step":', b'"step":1', 1)
    text = _text(_audit(world, lines))
    assert "prev does not match the hash of entry" in text and "checkpoint root does not match" in text


# ------------------------------------------------------------------ tails and other boots
def test_a_log_cut_after_its_last_checkpoint_is_a_violation(world: dict[str, Any]) -> None:
    lines = _lines(world["logs"][0])
    report = _audit(world, lines[:-1])  # the final checkpoint, after the shutdown, is gone
    assert not report.ok and report.end == "open"
    assert "does not end in a checkpoint" in _text(report) and "not attributable" in _text(report)
    assert report.attributed < report.entries - 1


def test_a_boot_s_entries_after_its_last_checkpoint_are_not_vouched_for_by_the_next_boot(tmp_path: Path) -> None:
    """An unclean stop: the next boot's checkpoints chain over the earlier tail, but that boot's
    firmware only read it back from storage, so the tail stays unattributed (and reported)."""
    (state,) = provision_chips(tmp_path, 1, snapshots_per_day=1.0, checkpoint_every=64, secret_seed=TEST_SECRET_SEED)
    chip = Chip.open(state)
    chip.boot()
    chip.log_precommitment(b"\x01" * 32, "r")  # then the power goes: no checkpoint, no shutdown
    again = Chip.open(state)
    again.boot()
    again.close()
    report = again.audit()
    hits = [p for p in report.problems if "covered by no signed checkpoint of that boot (the next boot began)" in p.problem]
    assert len(hits) == 1 and hits[0].entry == 0 and "entries 0-2 of boot 1" in hits[0].problem


def test_a_checkpoint_replayed_from_another_boot_is_refused(world: dict[str, Any]) -> None:
    """Both boots run the same firmware, so their boot keys are the same key: the replayed line's
    signature is genuine, and what refuses it is its boot, place and chain."""
    lines = _lines(world["logs"][0])
    boot2 = max(i for i, k in enumerate(_kinds(lines)) if k == "boot")
    old = lines[boot2 - 1]  # boot 1's final checkpoint
    assert json.loads(old)["kind"] == "checkpoint"
    report = _audit(world, [*lines[:-1], old])
    text = _text(report)
    assert "entry claims boot 1 during boot 2" in text and "replayed from elsewhere" in text
    assert "does not end in a checkpoint" in text


def test_a_checkpoint_from_another_chip_does_not_verify(world: dict[str, Any]) -> None:
    mine, theirs = _lines(world["logs"][0]), _lines(world["logs"][1])
    foreign = json.loads(theirs[-1])
    foreign["serial"] = world["certs"][0].serial  # re-addressed to this chip, re-chained to fit
    forged = _rechain([*mine[:-1], canonical_json_v2(foreign)], len(mine) - 1, renumber=True)
    text = _text(_audit(world, forged))
    assert "checkpoint signature does not verify under the boot key of this boot" in text
    assert "not attributable" in text
    # Unchanged, it is named as another chip's entry.
    assert "spliced from another chip" in _text(_audit(world, [*mine[:-1], theirs[-1]]))


def test_a_checkpoint_whose_tree_size_goes_backwards_is_refused(world: dict[str, Any]) -> None:
    """Even with the boot key stolen (§6.2), a checkpoint cannot shrink the tree it covers."""
    lines = _lines(world["logs"][0])
    last = json.loads(lines[-1])
    back = dict(last, counter=len(lines), prev=hashlib.sha256(lines[-1]).hexdigest())
    size = last["body"]["tree_size"] - 2
    back["body"] = {"tree_size": size, "root": MerkleTree(lines).root(size).hex()}
    back.pop("sig")
    back["sig"] = b64(world["key"].sign(entry_signing_input(back)))
    text = _text(_audit(world, [*lines, canonical_json_v2(back)]))
    assert f"checkpoint tree size {size} goes backwards from the previous checkpoint's {size + 2}" in text


def test_a_history_rewritten_with_a_stolen_key_fails_the_known_head(world: dict[str, Any]) -> None:
    """A stolen boot key re-signs every checkpoint of a rewritten history: the log then audits
    on its own, and what catches it is the tree head an earlier attestation handed over."""
    lines = _lines(world["logs"][0])
    i = _first(lines, "snapshot")
    e = json.loads(lines[i])
    e["body"]["step"] += 1  # the snapshot now claims another training step
    forged = _rechain([*lines[:i], canonical_json_v2(e), *lines[i + 1 :]], i, key=world["key"])
    assert _audit(world, forged).ok  # the limit of any signature scheme: the key is the chip
    report = _audit(world, forged, known_heads=[world["head"]])
    assert "does not extend the tree head of size" in _text(report)


# ------------------------------------------------------------ one entry, through its checkpoint
def test_one_entry_is_attributed_through_the_checkpoint_that_covers_it(world: dict[str, Any]) -> None:
    lines = _lines(world["logs"][0])
    serial, key = world["certs"][0].serial, world["key"].public_key
    tree = MerkleTree(lines)
    i = _first(lines, "snapshot")
    cp = next(k for k in range(i + 1, len(lines)) if json.loads(lines[k])["kind"] == "checkpoint")
    proof = tree.inclusion_proof(i, cp)
    assert verify_covered_entry(lines[i], i, lines[cp], proof, key, serial)["kind"] == "snapshot"
    altered = lines[i].replace(b'"step":', b'"step":1', 1)
    with pytest.raises(FormatError, match="not in the checkpoint's tree"):
        verify_covered_entry(altered, i, lines[cp], proof, key, serial)
    boot2_cp = len(lines) - 1  # boot 2's final checkpoint covers boot 1's entries in the tree, not by vouching
    with pytest.raises(FormatError, match="is not attributed by a checkpoint of boot 2"):
        verify_covered_entry(lines[i], i, lines[boot2_cp], tree.inclusion_proof(i, boot2_cp), key, serial)
    forged_cp = lines[cp].replace(b'"tree_size":', b'"tree_size":1', 1)
    with pytest.raises(FormatError, match="signature does not verify"):
        verify_covered_entry(lines[i], i, forged_cp, proof, key, serial)


# ------------------------------------------------------------------- versions side by side
def test_a_v1_log_continued_in_v2_audits_and_a_downgrade_is_named(tmp_path: Path) -> None:
    (state,) = provision_chips(tmp_path, 1, snapshots_per_day=1.0, secret_seed=TEST_SECRET_SEED)
    for version in (1, 2, 1):
        chip = Chip.open(state, log_version=version)
        chip.boot()
        chip.log_precommitment(bytes([version]) * 32, "r")
        chip.close()
        lines = _lines(chip.log_path.read_bytes())
        if version == 2:
            assert {json.loads(x)["v"] for x in lines} == {1, 2}
            report = chip.audit()
            assert report.ok and report.attributed == len(lines), report.problems[:3]
    assert "a format downgrade" in _text(chip.audit())


def test_report_mode_firmware_signs_every_entry_and_an_unsigned_one_is_refused(tmp_path: Path) -> None:
    from computewatch.chip.transport import InProcessReceiver

    (state,) = provision_chips(tmp_path, 1, snapshots_per_day=50.0, log_mode="report", secret_seed=TEST_SECRET_SEED)
    chip0 = Chip.open(state)
    receiver = InProcessReceiver(chip0.chipmaker_root, tmp_path / "receiver")
    receiver.register(chip0.certificate)
    chip = Chip.open(state, transport=receiver)
    chip.boot()
    chip.log_precommitment(b"\x02" * 32, "r")
    lines = _lines(chip.log_path.read_bytes())
    assert all("sig" in json.loads(x) for x in lines)
    e = json.loads(lines[-1])
    forged = dict(e, counter=e["counter"] + 1, prev=hashlib.sha256(lines[-1]).hexdigest(), kind="tamper", body={"reason": "x"})
    forged.pop("sig")
    assert receiver.send(canonical_json_v2(forged)) is None
    assert any("unsigned entry under report-mode firmware" in r for r in receiver.rejected)
    chip.close()  # the genuine entries still go through: the refused line moved nothing
    assert audit_log(receiver.log_path(chip.serial).read_bytes(), verify_chip_certificate(chip.certificate, chip.chipmaker_root), chip.chipmaker_root).ok
    assert parse_entry_line(lines[0])["v"] == 2


# ------------------------------------------------------------------------ audit fast paths
def test_regions_cut_from_the_line_are_their_encoding_and_the_layout_cache_refuses_what_region_refuses(
    world: dict[str, Any],
) -> None:
    from computewatch.crypto.canonical import encode_parsed
    from computewatch.crypto.regions import Region
    from computewatch.formats.chip_audit import _regions_bytes

    lines = _lines(world["logs"][0])
    snaps = [i for i, k in enumerate(_kinds(lines)) if k == "snapshot"]
    assert len(snaps) >= 3
    for i in snaps:
        body = parse_entry_line(lines[i])["body"]
        assert _regions_bytes(lines[i], body) == encode_parsed(body["regions"])
    # The layout is cached after the first snapshot; later snapshots with a region Region.from_json
    # refuses must still be refused, and a packing error still named.
    last = snaps[-1]
    e = json.loads(lines[last])
    bads = {
        "bool dim": lambda r: r.update(shape=[True, *r["shape"][1:]]) if r["shape"] else r.update(shape=[True]),
        "upper digest": lambda r: r.update(digest=r["digest"].upper()),
        "short digest": lambda r: r.update(digest=r["digest"][:-2]),
        "bad dtype": lambda r: r.update(dtype="F33"),
        "extra field": lambda r: r.update(name="x"),
        "offset": lambda r: r.update(offset=r["offset"] + 8),
    }
    for what, change in bads.items():
        forged = json.loads(json.dumps(e))
        change(forged["body"]["regions"][-1])
        lines2 = _rechain([*lines[:last], canonical_json_v2(forged), *lines[last + 1 :]], last)
        text = " | ".join(p.problem for p in _audit(world, lines2).problems if p.entry == last)
        try:
            [Region.from_json(r) for r in forged["body"]["regions"]]
            region_ok = True
        except FormatError:
            region_ok = False
        assert ("snapshot entry rejected" in text) == (not region_ok), (what, text)
        if what == "offset":
            assert "regions must be packed in order" in text
        else:
            assert not region_ok, what


def test_the_fast_field_checks_accept_exactly_what_the_careful_ones_do(world: dict[str, Any]) -> None:
    from computewatch.formats.chip_entry import _is_decimal, decimal

    for value in ["0", "7", "10", "007", "-1", "+1", " 1", "1_0", "", "١٢", "²", "9" * 3999, "9" * 5000, 12, None, "0x1"]:
        try:
            decimal(value, "x")
            careful = True
        except FormatError:
            careful = False
        assert _is_decimal(value) == careful or len(str(value)) >= 4000, value
    line = _lines(world["logs"][0])[3]
    e = json.loads(line)
    for field, bad in [("counter", True), ("counter", -1), ("boot", "1"), ("clock_ns", "01"), ("busy_ns", 5),
                       ("prev", "AB" * 32), ("prev", "ab" * 31), ("body", []), ("serial", 7)]:
        with pytest.raises(FormatError):
            parse_entry_line(canonical_json_v2(dict(e, **{field: bad})))


def test_a_decoy_regions_array_inside_copy_out_is_not_what_the_digest_is_checked_over(world: dict[str, Any]) -> None:
    """The audit cuts a snapshot's `regions` from its line rather than encoding them again; a
    nested `copy_out` (sorted before `regions`) holding a decoy `,"regions":[...]` must not move
    the cut: the digest is checked over the real regions, and the nested value is named. Signed
    with the stolen key, so nothing but these checks can fail."""
    lines = _lines(world["logs"][0])
    i = _first(lines, "snapshot")
    e = json.loads(lines[i])
    honest = e["body"]["regions"]
    e["body"]["copy_out"] = {"a": 1, "regions": honest}  # the decoy: the regions the digest was made over
    e["body"]["regions"] = [dict(honest[0], digest="ab" * 32), *honest[1:]]  # what the snapshot now claims
    report = _audit(world, _rechain([*lines[:i], canonical_json_v2(e), *lines[i + 1 :]], i, key=world["key"]))
    text = _text(report)
    assert "copy_out must name the copy-out file" in text
    assert "shard digest does not match the listed regions" in text
