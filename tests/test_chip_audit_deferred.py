"""The audit's deferred checkpoint signatures (formats.chip_audit.audit_log, issue 24).

A first pass verifies only the last checkpoint of each boot; any problem, or a failing last
signature, sends the audit to a pass that verifies every signature. These tests hold it to
that: the same report as verifying every signature on honest and on tampered logs, one
Ed25519 verification per boot on an honest log, and each boot's own last checkpoint verified
(not only the log's last), so that a later boot's genuine signatures over edited earlier
entries do not pass.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from computewatch.adversary import chiplog as attacks
from computewatch.chip import Chip, audit_log, provision_chips, verify_chip_certificate
from computewatch.chip.exercise import run_steps, small_shard
from computewatch.crypto.canonical import canonical_json_v2
from computewatch.crypto.merkle import MerkleTree
from computewatch.formats.chip_entry import b64, entry_signing_input, split_log
from _chips import TEST_SECRET_SEED, leak_boot_key


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One chip (checkpoint every 4 entries, f = 200/day): boot 1 with an attestation, a clean
    stop, boot 2 ending in an attestation and an unclean stop (no shutdown), boot 3 and a clean
    stop; the boot key each boot signed with."""
    root = tmp_path_factory.mktemp("deferred")
    (state,) = provision_chips(root, 1, snapshots_per_day=200.0, checkpoint_every=4, secret_seed=TEST_SECRET_SEED)
    keys = []
    for boot in range(3):
        chip = Chip.open(state)
        chip.boot()
        keys.append(leak_boot_key(chip))
        chip.attach(small_shard(0), root / "storage")
        run_steps(chip, 6, 3600.0, start=10 * boot)
        if boot == 0:
            chip.attest(bytes(16))
            run_steps(chip, 3, 3600.0, start=6)
        if boot == 1:
            chip.attest(bytes(16))  # its checkpoint is boot 2's last entry: no clean stop follows
        else:
            chip.close()
    lines = split_log(chip.log_path.read_bytes())[0]
    cert = verify_chip_certificate(chip.certificate, chip.chipmaker_root)
    return {"lines": lines, "cert": cert, "root": chip.chipmaker_root, "keys": keys}


def _join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _audits(world: dict[str, Any], lines: list[bytes]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(deferred, every signature) reports as JSON; they must agree but for signatures_verified."""
    raw = _join(lines)
    deferred = audit_log(raw, world["cert"], world["root"], workers=0).to_json()
    every = audit_log(raw, world["cert"], world["root"], workers=0, every_signature=True).to_json()
    assert {k: v for k, v in deferred.items() if k != "signatures_verified"} == {
        k: v for k, v in every.items() if k != "signatures_verified"
    }
    return deferred, every


def _kinds(lines: list[bytes]) -> list[tuple[str, int]]:
    return [(e["kind"], e["boot"]) for e in map(json.loads, lines)]


def _b64d(s: str) -> bytes:
    return base64.b64decode(s)


def test_an_honest_log_verifies_one_checkpoint_signature_per_boot(world: dict[str, Any]) -> None:
    lines = world["lines"]
    kinds = _kinds(lines)
    ends = {boot: max(i for i, (_, b) in enumerate(kinds) if b == boot) + 1 for boot in (1, 2, 3)}
    assert kinds[ends[1] - 2 : ends[1]] == [("shutdown", 1), ("checkpoint", 1)]
    assert kinds[ends[3] - 2 : ends[3]] == [("shutdown", 3), ("checkpoint", 3)]
    # Boot 1 alone: its clean stop ends in a checkpoint over everything.
    deferred, every = _audits(world, lines[: ends[1]])
    n1 = sum(1 for kind, _ in kinds[: ends[1]] if kind == "checkpoint")
    assert deferred["ok"] and deferred["end"] == "clean-stop" and deferred["attributed"] == ends[1]
    assert deferred["checkpoints_verified"] == every["checkpoints_verified"] == every["signatures_verified"] == n1 >= 4
    assert deferred["signatures_verified"] == 1
    # The whole log: boot 2 ended uncleanly right after its attestation's checkpoint.
    assert kinds[ends[2] - 1] == ("checkpoint", 2) and ("shutdown", 2) not in kinds
    deferred, every = _audits(world, lines)
    assert deferred["ok"] and deferred["attributed"] == len(lines)
    assert deferred["signatures_verified"] == 3 < every["signatures_verified"] == deferred["checkpoints_verified"]


@pytest.mark.parametrize("edit", ["_flip", "_truncate", "_drop", "_rechained", "_uncovered_tail", "_replayed_checkpoint"])
def test_the_attack_suite_s_log_edits_give_the_same_reports(world: dict[str, Any], edit: str) -> None:
    change: Callable[..., list[bytes]] = getattr(attacks, edit)
    # "Since the last inspection": after boot 1's attestation checkpoint.
    kinds = _kinds(world["lines"])
    size = [i for i, (kind, b) in enumerate(kinds) if kind == "checkpoint" and b == 1][-2] + 1
    for seed in range(3):
        lines = change(list(world["lines"]), random.Random(seed), {"size": size})
        deferred, _ = _audits(world, lines)
        # A cut at a checkpoint is the inspection's to catch (known tree heads), not the log's.
        assert not deferred["ok"] or edit == "_truncate"


def _resign(lines: list[bytes], start: int, key_of: Callable[[dict[str, Any]], Any]) -> list[bytes]:
    """lines[start:] repaired as attacks.rechain does (prevs, counters, checkpoint sizes and
    roots), each checkpoint re-signed with key_of(entry), or kept as it is where that is None."""
    out = list(lines[:start])
    tree = MerkleTree(out)
    for line in lines[start:]:
        e = json.loads(line)
        e["counter"] = len(out)
        e["prev"] = hashlib.sha256(out[-1]).hexdigest()
        if e["kind"] == "checkpoint":
            e["body"] = {"tree_size": e["counter"], "root": tree.root(e["counter"]).hex()}
            key = key_of(e)
            if key is not None:
                e.pop("sig")
                e["sig"] = b64(key.sign(entry_signing_input(e)))
        out.append(canonical_json_v2(e))
        tree.append(out[-1])
    return out


def test_a_later_boot_s_genuine_signatures_over_an_edited_earlier_boot_do_not_pass(world: dict[str, Any]) -> None:
    """Boot 1's entries edited and rechained while the chip was off; boots 2 and 3 then signed
    their checkpoints over the edited log (their firmware reads earlier boots back from storage).
    Only boot 1's own last checkpoint can tell: checking the log's last signature alone would
    accept this log."""
    lines, keys = world["lines"], world["keys"]
    i = next(k for k, (kind, b) in enumerate(_kinds(lines)) if kind == "snapshot" and b == 1)
    e = json.loads(lines[i])
    e["body"]["step"] += 1  # a step the Prover's transcript would explain
    forged = _resign(
        [*lines[:i], canonical_json_v2(e), *lines[i + 1 :]], i, lambda e: keys[e["boot"] - 1] if e["boot"] >= 2 else None
    )
    deferred, every = _audits(world, forged)
    kinds = _kinds(forged)
    bad_sigs = {p["entry"] for p in every["problems"] if "signature does not verify" in p["problem"]}
    assert bad_sigs and all(kinds[k] == ("checkpoint", 1) for k in bad_sigs)  # boots 2, 3: genuine
    assert not deferred["ok"]


def test_a_forged_checkpoint_signature_mid_boot_is_named(world: dict[str, Any]) -> None:
    """An earlier checkpoint's signature replaced and the log after it repaired (prevs, roots):
    the boot's last checkpoint no longer verifies, and the report names the forged one."""
    lines = world["lines"]
    i = [k for k, (kind, b) in enumerate(_kinds(lines)) if kind == "checkpoint" and b == 1][1]
    e = json.loads(lines[i])
    e["sig"] = b64(bytes(64))
    forged = attacks.rechain([*lines[:i], canonical_json_v2(e), *lines[i + 1 :]], i + 1)
    deferred, _ = _audits(world, forged)
    assert any(p["entry"] == i and "signature does not verify" in p["problem"] for p in deferred["problems"])


@pytest.mark.parametrize("boot", [1, 3])
def test_only_the_boot_s_last_checkpoint_signature_forged_is_caught(world: dict[str, Any], boot: int) -> None:
    """The one signature of the boot the first pass verifies, forged (one bit): as the log's last
    line (boot 3), and as the line just before the next boot entry (boot 1; the rest repaired,
    so that only signatures can tell)."""
    lines = world["lines"]
    kinds = _kinds(lines)
    i = max(k for k, (kind, b) in enumerate(kinds) if kind == "checkpoint" and b == boot)
    e = json.loads(lines[i])
    sig = bytearray(_b64d(e["sig"]))
    sig[5] ^= 1
    e["sig"] = b64(bytes(sig))
    forged = attacks.rechain([*lines[:i], canonical_json_v2(e), *lines[i + 1 :]], i + 1)
    deferred, _ = _audits(world, forged)
    assert not deferred["ok"]
    assert any(p["entry"] == i and "signature does not verify" in p["problem"] for p in deferred["problems"])
