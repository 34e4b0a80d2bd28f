"""The native fast path over the schedule's own lines and checkpoints (issue 24).

`LogVerifier.fast_forward` hands runs of snapshot, schedule-commit, schedule-reveal and
checkpoint lines to the C scan (`_chiplog.scan_entries`), which takes a commit or reveal only
when the Python verifier would accept it with no problem and the same state change, and a
checkpoint only when everything but its signature passes (the verifier's own `_check_sig_v2`
then decides, through `_take_checkpoint`). These tests audit honest and tampered logs with and
without the native path (read ahead in chunks of 2 lines by 3 threads, or not read ahead) and
require identical reports; each tampering is also re-signed with the chip's leaked boot key, so
that the schedule or tree check alone has to catch it."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from contextlib import suppress
from typing import Any
from unittest import mock

import pytest

from computewatch.adversary import chiplog as attacks
from computewatch.chip import Chip, audit_log, provision_chips, verify_chip_certificate
from computewatch.chip.exercise import run_steps, small_shard
from computewatch.crypto.canonical import canonical_json_v2
from computewatch.crypto.digest import blake3_bytes
from computewatch.crypto.regions import SHARD_VERSION
from computewatch.crypto.signing import SigningKey
from computewatch.formats import _audit_prescan, chip_audit
from computewatch.formats.chip_audit import LogVerifier
from computewatch.formats.chip_entry import b64, entry_signing_input, split_log
from _chips import TEST_SECRET_SEED, leak_boot_key


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One chip at f = 48/day, steps of 4 busy hours, checkpoint every 8 entries: one boot of 3
    schedule epochs (the last revealed at shutdown), then a second boot of 2 epochs."""
    root = tmp_path_factory.mktemp("schedule")
    (state,) = provision_chips(root, 1, snapshots_per_day=48.0, checkpoint_every=8, secret_seed=TEST_SECRET_SEED)
    keys, sizes = [], []
    for boot, steps in enumerate((14, 9)):
        chip = Chip.open(state)
        chip.boot()
        chip.attach(small_shard(0), root / "storage")
        keys.append(leak_boot_key(chip))
        run_steps(chip, steps, 4 * 3600.0, start=20 * boot)
        chip.close()
        sizes.append(len(split_log(chip.log_path.read_bytes())[0]))
    lines = split_log(chip.log_path.read_bytes())[0]
    cert = verify_chip_certificate(chip.certificate, chip.chipmaker_root)
    return {"lines": lines, "cert": cert, "root": chip.chipmaker_root, "key": keys[0], "boot1": sizes[0]}


def _join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _audit(world: dict[str, Any], raw: bytes, **kw: Any) -> dict[str, Any]:
    return audit_log(raw, world["cert"], world["root"], workers=0, **kw).to_json()


def _same(world: dict[str, Any], lines: list[bytes], *, all_ways: bool = True) -> dict[str, Any]:
    """The report with the native path, which must equal the Python verifier's (and, with
    `all_ways`, the native path's with small chunks read by 3 threads, and with no read-ahead)."""
    raw = _join(lines)
    native = _audit(world, raw)
    with mock.patch.dict(os.environ, {"COMPUTEWATCH_NATIVE": "0"}):
        assert native == _audit(world, raw)
    if all_ways:
        with mock.patch.object(_audit_prescan, "CHUNK_LOG", 1):
            assert _audit(world, raw, threads=3) == native
        with mock.patch.object(chip_audit, "prescan", lambda lines, threads=None: None):
            assert _audit(world, raw) == native
    return native


def _kind(line: bytes) -> str:
    return str(json.loads(line)["kind"])


def _at(lines: list[bytes], kind: str) -> list[int]:
    return [i for i, line in enumerate(lines) if _kind(line) == kind]


def _forge(world: dict[str, Any], lines: list[bytes], i: int, change: Callable[[dict[str, Any]], Any]) -> list[bytes]:
    """Line i changed, the chain and checkpoints after it repaired and re-signed (stolen key)."""
    e = json.loads(lines[i])
    change(e)
    return attacks.rechain([*lines[:i], canonical_json_v2(e), *lines[i + 1 :]], i, key=world["key"])


def test_the_schedule_s_lines_take_the_native_path(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """On an honest log every commit, reveal and checkpoint is taken natively (boots and
    shutdowns are not), and the report is the verifier's."""
    taken: list[str] = []
    real = LogVerifier.fast_forward

    def spy(self: LogVerifier, lines: list[bytes], start: int) -> int:
        end = real(self, lines, start)
        taken.extend(_kind(line) for line in lines[start:end])
        return end

    monkeypatch.delenv("COMPUTEWATCH_NATIVE", raising=False)
    monkeypatch.setattr(LogVerifier, "fast_forward", spy)
    lines = world["lines"]
    report = _audit(world, _join(lines))
    assert report["ok"] and report["epochs_checked"] == len(_at(lines, "schedule-reveal")) >= 5
    assert taken.count("schedule-commit") == len(_at(lines, "schedule-commit")) >= 5
    assert taken.count("schedule-reveal") == len(_at(lines, "schedule-reveal"))
    assert taken.count("checkpoint") == len(_at(lines, "checkpoint")) >= 4
    # Every snapshot but the log's first (whose region layout the verifier checks first) and
    # those with more triggers than the native reader holds (16).
    snaps = _at(lines, "snapshot")
    small = [k for k in snaps[1:] if len(json.loads(lines[k])["body"]["triggers"]) <= 16]
    assert taken.count("snapshot") == len(small) >= 10
    assert _same(world, lines) == report


def test_logs_cut_anywhere_give_the_same_reports(world: dict[str, Any]) -> None:
    """Cut inside an epoch (not revealed yet: a warning), at a commit, at a reveal."""
    lines = world["lines"]
    for k in range(1, len(lines) + 1):
        _same(world, lines[:k], all_ways=k % 4 == 0)


_COMMIT: dict[str, Callable[[dict[str, Any]], Any]] = {
    "epoch skipped": lambda e: e["body"].update(epoch=e["body"]["epoch"] + 1),
    "epoch reused": lambda e: e["body"].update(epoch=e["body"]["epoch"] - 1),
    "epoch string": lambda e: e["body"].update(epoch=str(e["body"]["epoch"])),
    "rate": lambda e: e["body"].update(snapshots_per_day="48.5"),
    "rate as integer text": lambda e: e["body"].update(snapshots_per_day="48"),
    "rate as number": lambda e: e["body"].update(snapshots_per_day=48),
    "rate with exponent": lambda e: e["body"].update(snapshots_per_day="4.8e1"),
    "rate with leading zeros": lambda e: e["body"].update(snapshots_per_day="0048.000"),
    "rate not a number": lambda e: e["body"].update(snapshots_per_day="fast"),
    "start": lambda e: e["body"].update(start_busy_ns=str(int(e["body"]["start_busy_ns"]) + 1)),
    "busy moved": lambda e: (
        e.update(busy_ns=str(int(e["busy_ns"]) + 1)),
        e["body"].update(start_busy_ns=str(int(e["busy_ns"]))),
    ),
    "commitment": lambda e: e["body"].update(commitment="ab" * 32),
    "commitment upper": lambda e: e["body"].update(commitment=e["body"]["commitment"].upper()),
    "extra field": lambda e: e["body"].update(zzz="1"),
    "missing field": lambda e: e["body"].pop("start_busy_ns"),
}
_REVEAL: dict[str, Callable[[dict[str, Any]], Any]] = {
    "seed": lambda e: e["body"].update(seed="00" * 32),
    "end": lambda e: e["body"].update(end_busy_ns=str(int(e["body"]["end_busy_ns"]) - 1)),
    "end and busy": lambda e: (
        e.update(busy_ns=str(int(e["busy_ns"]) + 7)),
        e["body"].update(end_busy_ns=e["busy_ns"]),
    ),
    "epoch": lambda e: e["body"].update(epoch=e["body"]["epoch"] + 1),
    "no reason": lambda e: e["body"].pop("reason"),
    "reason number": lambda e: e["body"].update(reason=1),
    "reason escaped": lambda e: e["body"].update(reason='a"b\n'),
    "extra field": lambda e: e["body"].update(zzz="1"),
}
_EITHER: dict[str, Callable[[dict[str, Any]], Any]] = {
    "counter": lambda e: e.update(counter=e["counter"] + 1),
    "boot": lambda e: e.update(boot=e["boot"] + 1),
    "serial": lambda e: e.update(serial=e["serial"] + "X"),
    "clock back": lambda e: e.update(clock_ns="0"),
    "busy back": lambda e: e.update(busy_ns="1"),
    "busy huge": lambda e: e.update(busy_ns="9" * 25),
    "signed": lambda e: e.update(sig="AAAA"),
    "version 1": lambda e: e.update(v=1),
    "kind": lambda e: e.update(kind="precommitment"),
}


# Changes the verifier lets through (the same values, or fields it does not read).
_HARMLESS_COMMIT = {
    "rate as integer text",
    "rate as number",
    "rate with exponent",
    "rate with leading zeros",
    "extra field",
}
_HARMLESS_REVEAL = {"no reason", "reason number", "reason escaped", "extra field"}


def _cases(kind: str, table: dict[str, Callable[[dict[str, Any]], Any]]) -> list[tuple[str, str]]:
    return [(kind, name) for name in sorted(table)]


@pytest.mark.parametrize(
    ("kind", "name"),
    _cases("schedule-commit", _COMMIT)
    + _cases("schedule-reveal", _REVEAL)
    + _cases("schedule-commit", _EITHER)
    + _cases("schedule-reveal", _EITHER),
)
def test_each_forged_schedule_field_gives_the_same_report(world: dict[str, Any], kind: str, name: str) -> None:
    """A commit or reveal changed field by field, the log rechained and re-signed after it (in the
    first boot, whose key leaked), at the first and a middle epoch."""
    change = (_COMMIT if kind == "schedule-commit" else _REVEAL).get(name) or _EITHER[name]
    lines = world["lines"]
    places = [i for i in _at(lines, kind) if i < world["boot1"]]
    for i in (places[0], places[1]):
        forged = _forge(world, lines, i, change)
        if forged[i] == lines[i] or (name == "epoch reused" and json.loads(lines[i])["body"]["epoch"] == 0):
            continue  # (no change there: the clock already at 0, no epoch below 0)
        report = _same(world, forged)
        harmless = name in (_HARMLESS_COMMIT if kind == "schedule-commit" else _HARMLESS_REVEAL)
        assert report["ok"] == harmless, (name, report["problems"][:2])


def test_dropped_duplicated_and_reordered_schedule_lines_give_the_same_reports(world: dict[str, Any]) -> None:
    """A skipped or duplicated arrival (a snapshot dropped or repeated inside an epoch), an epoch
    cut out, commits and reveals swapped: rechained, renumbered and re-signed."""
    lines = world["lines"]
    boot1 = world["boot1"]
    commits, reveals = _at(lines, "schedule-commit"), _at(lines, "schedule-reveal")
    snaps = [i for i in _at(lines, "snapshot") if commits[1] < i < reveals[1]]
    c, r = commits[1], reveals[1]

    def forged(new: list[bytes], at: int) -> list[bytes]:
        return attacks.rechain(new, at, renumber=True, key=world["key"])

    cases = {
        "snapshot dropped": forged(lines[: snaps[1]] + lines[snaps[1] + 1 :], snaps[1]),
        "snapshot repeated": forged([*lines[: snaps[1] + 1], lines[snaps[1]], *lines[snaps[1] + 1 :]], snaps[1]),
        "epoch cut out": forged(lines[:c] + lines[r + 1 :], c),
        "reveal dropped": forged(lines[:r] + lines[r + 1 :], r),
        "commit dropped": forged(lines[:c] + lines[c + 1 :], c),
        "commit repeated": forged([*lines[: c + 1], lines[c], *lines[c + 1 :]], c),
        "reveal moved early": forged([*lines[: snaps[1]], lines[r], *lines[snaps[1] : r], *lines[r + 1 :]], snaps[1]),
        "epochs swapped": forged(
            lines[: commits[0]] + lines[c : r + 1] + lines[commits[0] : c] + lines[r + 1 :], commits[0]
        ),
    }
    assert r < boot1
    for name, case in cases.items():
        assert not _same(world, case)["ok"], name


_CHECKPOINT: dict[str, Callable[[dict[str, Any]], Any]] = {
    "size down": lambda e: e["body"].update(tree_size=e["body"]["tree_size"] - 1),
    "size up": lambda e: e["body"].update(tree_size=e["body"]["tree_size"] + 1),
    "size string": lambda e: e["body"].update(tree_size=str(e["body"]["tree_size"])),
    "root": lambda e: e["body"].update(root="00" * 32),
    "root upper": lambda e: e["body"].update(root=e["body"]["root"].upper()),
    "extra field": lambda e: e["body"].update(zzz=1),
    "busy moved": lambda e: e.update(busy_ns=str(int(e["busy_ns"]) + 1)),
    "clock back": lambda e: e.update(clock_ns="0"),
    "counter": lambda e: e.update(counter=e["counter"] + 1),
    "serial": lambda e: e.update(serial=e["serial"] + "X"),
    "boot": lambda e: e.update(boot=e["boot"] + 1),
}


def _signed(world: dict[str, Any], e: dict[str, Any], sig: str | None = None) -> bytes:
    e.pop("sig", None)
    e["sig"] = b64(world["key"].sign(entry_signing_input(e))) if sig is None else sig
    return canonical_json_v2(e)


@pytest.mark.parametrize("name", sorted(_CHECKPOINT))
def test_forged_checkpoints_give_the_same_reports(world: dict[str, Any], name: str) -> None:
    """A checkpoint changed and re-signed with the leaked key (and, for the harmless change, the
    log after it rechained): the scan hands it to the verifier, or takes it when nothing is wrong."""
    lines = world["lines"]
    for i in _at(lines, "checkpoint")[1:3]:
        e = json.loads(lines[i])
        _CHECKPOINT[name](e)
        report = _same(
            world, attacks.rechain([*lines[:i], _signed(world, e), *lines[i + 1 :]], i + 1, key=world["key"])
        )
        if name != "busy moved":  # (busy time may move while an epoch is open)
            assert report["ok"] == (name == "extra field"), (name, report["problems"][:2])


def test_checkpoint_signatures_are_checked_on_the_fast_path(world: dict[str, Any]) -> None:
    """A checkpoint whose shape, chain and root are right but whose signature is not: forged
    bytes, not base64, another checkpoint's, none at all, made by another key."""
    lines = world["lines"]
    cps = _at(lines, "checkpoint")
    i, other = cps[1], json.loads(lines[cps[2]])["sig"]
    e = json.loads(lines[i])
    cases = {
        "forged": _signed(world, dict(e), "A" * 86 + "=="),
        "not base64": _signed(world, dict(e), "!" * 88),
        "another checkpoint's": _signed(world, dict(e), other),
        "unsigned": canonical_json_v2({k: v for k, v in e.items() if k != "sig"}),
        "another key": canonical_json_v2({**e, "sig": b64(SigningKey.generate().sign(entry_signing_input(e)))}),
    }
    for name, line in cases.items():
        report = _same(world, [*lines[:i], line, *lines[i + 1 :]])
        assert not report["ok"], name
        # The log after it rechained and re-signed with the leaked key: a malformed line is
        # still named (an audit that checks only each boot's last checkpoint signature may
        # take the others as the bytes the firmware signed over; the reports still agree).
        report = _same(world, attacks.rechain([*lines[:i], line, *lines[i + 1 :]], i + 1, key=world["key"]))
        if name in ("not base64", "unsigned"):
            assert not report["ok"], name


def test_region_digests_that_are_not_lowercase_hex_give_the_same_reports(world: dict[str, Any]) -> None:
    """A region digest with one character just outside 0-9 and a-f (the layout check's hex test),
    its shard digest recomputed and the log re-signed after it: the verifier rejects the region."""
    lines = world["lines"]
    # A snapshot the native path takes (its layout known from the boot's first snapshot, at most
    # 16 triggers): checked by taking it from the position before it.
    i = next(k for k in _at(lines, "snapshot")[1:] if len(json.loads(lines[k])["body"]["triggers"]) <= 16)
    v = LogVerifier(world["cert"], world["root"])
    for line in lines[:i]:
        assert v.feed(line) == []
    assert v.fast_forward(lines, i) > i
    for pos in (0, 9, 15, 16, 40, 63):
        for ch in "/:`gF\x7f":
            e = json.loads(lines[i])
            digest = e["body"]["regions"][1]["digest"]
            e["body"]["regions"][1]["digest"] = digest[:pos] + ch + digest[pos + 1 :]
            doc = {"hash": e["body"]["hash"], "regions": e["body"]["regions"], "v": SHARD_VERSION}
            e["body"]["shard_digest"] = blake3_bytes(canonical_json_v2(doc)).hex()
            report = _same(
                world,
                attacks.rechain([*lines[:i], canonical_json_v2(e), *lines[i + 1 :]], i + 1, key=world["key"]),
                all_ways=pos == 0,
            )
            assert not report["ok"]


def test_byte_mutations_of_schedule_lines_give_the_same_reports(world: dict[str, Any]) -> None:
    """Random one-byte changes in commit and reveal lines (characters that matter to a JSON
    reader), with and without the chain repaired after them."""
    lines = world["lines"]
    places = _at(lines, "schedule-commit") + _at(lines, "schedule-reveal")
    rng = random.Random(2424)
    alphabet = b'0123456789abcdefABCDEF"\\,:{}[]-. e\x00\x7f\xc3'
    for k in range(120):
        i = rng.choice(places)
        pos = rng.randrange(len(lines[i]))
        line = lines[i][:pos] + bytes([rng.choice(alphabet)]) + lines[i][pos + 1 :]
        changed = [*lines[:i], line, *lines[i + 1 :]]
        if k % 2:
            with suppress(ValueError, KeyError, TypeError):  # a line json cannot read stays as it is
                changed = attacks.rechain(changed, i + 1, key=world["key"] if i < world["boot1"] else None)
        _same(world, changed, all_ways=k % 8 == 0)


def test_non_canonical_schedule_lines_give_the_same_reports(world: dict[str, Any]) -> None:
    lines = world["lines"]
    for i in _at(lines, "schedule-commit")[:2] + _at(lines, "schedule-reveal")[:2]:
        e = json.loads(lines[i])
        for text in (
            json.dumps(e, sort_keys=True).encode(),  # spaces
            json.dumps(e).encode(),  # key order
            lines[i].replace(b'"epoch":', b'"epoch":0', 1)
            if b'"epoch":0,' not in lines[i]
            else lines[i].replace(b'"epoch":0,', b'"epoch":-0,', 1),
        ):
            assert not _same(world, attacks.rechain([*lines[:i], text, *lines[i + 1 :]], i + 1, key=world["key"]))["ok"]


@pytest.mark.parametrize("read_ahead", [False, True])
def test_the_fast_path_leaves_the_verifier_as_feed_does(world: dict[str, Any], read_ahead: bool) -> None:
    """Entry by entry (a receiver's `feed`) and by runs (`fast_forward`; with the log read ahead,
    checkpoints too): the same state after each run."""
    lines = world["lines"]
    a, b = LogVerifier(world["cert"], world["root"]), LogVerifier(world["cert"], world["root"])
    if read_ahead:
        b._pre, b._pre_lines = _audit_prescan.prescan(lines, 1), lines
        b.tree = _audit_prescan.PrescannedTree(b._pre)
    names = ["position", "_prev", "_counter", "_clock", "_busy", "_next_epoch", "snapshots", "epochs_checked"]
    names += ["_pending", "_unclean_since_commit", "_checkpoints", "attributed", "checkpoints_verified"]
    i, runs = 0, 0
    while i < len(lines):
        j = b.fast_forward(lines, i)
        for k in range(i, max(j, i + 1)):
            assert a.feed(lines[k]) == []
        if j == i:
            assert b.feed(lines[i]) == []
            j = i + 1
        runs += j > i + 1
        i = j
        for name in names:
            assert getattr(a, name) == getattr(b, name), (i, name)
        assert (a._epoch is None) == (b._epoch is None)
        if a._epoch is not None and b._epoch is not None:
            assert vars(a._epoch) == vars(b._epoch)
            assert type(b._epoch.rate) is float
        assert a.tree.root() == b.tree.root()
    # The runs end at boots and shutdowns, and (not read ahead) at every checkpoint.
    assert runs <= 3 if read_ahead else runs > len(_at(lines, "checkpoint"))


@pytest.mark.parametrize("change", ["repeat first", "drop last", "extra", "as bools"])
def test_a_schedule_drawn_otherwise_gives_the_same_reports(world: dict[str, Any], change: str) -> None:
    """The reveal's check on the native path compares the drawn arrivals with the epoch's triggers
    without building a set: with the arrivals function changed (a repeated arrival in place of the
    last, one missing, one more, ints made bools) for the verifier and the native scan alike, the
    reports must still be the Python verifier's (each a problem: these are not the triggers)."""
    real = chip_audit._arrivals

    def drawn(seed: bytes, rate: float, start: int, end: int) -> list[Any]:
        out: list[Any] = real(seed, rate, start, end)
        if change == "repeat first" and len(out) > 1:
            out[-1] = out[0]
        elif change == "drop last":
            out = out[:-1]
        elif change == "extra":
            out = [*out, end]
        elif change == "as bools":
            out = [bool(t) for t in out]
        return out

    with mock.patch.object(chip_audit, "_arrivals", drawn):
        assert not _same(world, world["lines"], all_ways=False)["ok"]


# ------------------------------------------------------------------ the arrivals' logarithm in C
def _chiplog() -> Any:
    from computewatch import _native

    module = _native.chiplog()
    assert module is not None
    return module


def test_the_logl_logarithm_is_the_50_digit_one_rounded_where_it_decides() -> None:
    """ln_rounded (the C arrivals' settling of the draws the window test leaves) equals float of
    the 50-digit logarithm wherever it gives a value, leaves some draws undecided (those whose
    logl interval holds a rounding midpoint), and decides nearly all."""
    from decimal import Decimal

    from computewatch.formats import schedule

    module = _chiplog()
    rng = random.Random(58)
    draws = [(rng.getrandbits(64) + 1) / 2.0**64 for _ in range(1500)]
    draws += [1.0, 2.0**-64, 0.5, 1.0 - 2.0**-53, 2.0**-1074]
    undecided = 0
    for u in draws:
        got = module.ln_rounded(u)
        if got is None:
            undecided += 1
        else:
            assert got == float(schedule._LN.ln(Decimal(u))), u.hex()
    assert 0 < undecided < len(draws) // 10
    assert module.ln_rounded(0.0) is None and module.ln_rounded(1.5) is None and module.ln_rounded(-1.0) is None


def test_the_native_arrivals_are_the_same_with_and_without_logl_and_call_the_exact_logarithm_less() -> None:
    from computewatch.formats import schedule

    module = _chiplog()
    rng = random.Random(59)
    cases = [(rng.randbytes(32), rng.choice([48.0, 200.0, 1000.0]), rng.randrange(0, 10**15)) for _ in range(100)]
    calls = {True: 0, False: 0}
    results: dict[bool, list[list[int]]] = {True: [], False: []}
    real_gap = schedule.gap_ns
    for on in (False, True):

        def counting(u: float, mean_ns: float, on: bool = on) -> int:
            calls[on] += 1
            return real_gap(u, mean_ns)

        was = module.use_logl(on)
        schedule.gap_ns = counting
        try:
            for seed, rate, start in cases:
                results[on].append(_audit_prescan.arrivals(seed, rate, start, start + int(86_400e9 * 1000 / rate)))
        finally:
            schedule.gap_ns = real_gap
            module.use_logl(was)
    reference = [schedule.arrivals(s, r, t, t + int(86_400e9 * 1000 / r)) for s, r, t in cases]
    assert results[True] == results[False] == reference
    assert calls[False] >= 20 and 5 * calls[True] < calls[False]  # the window test left these; logl settled most
