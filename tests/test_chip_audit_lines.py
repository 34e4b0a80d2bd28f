"""The audit over the log's own buffer (issue 24): the native LogLines.

`audit_log` no longer splits the log into a bytes object per line (formats.chip_entry.split_log)
before it starts: the native module indexes the newlines (`log_lines`), the prescan and the fast
path read the lines where they lie, and the Python verifier makes a bytes object only for the
lines it checks itself. These tests hold LogLines to split_log's lines and torn tail exactly,
and the audit's reports to those of the list path and of the Python-only audit, over honest,
torn and tampered logs, with 0, 1 and 3 read-ahead threads and small chunks."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any
from unittest import mock

import pytest

from computewatch import _native
from computewatch.adversary import chiplog as attacks
from computewatch.chip import Chip, audit_log, provision_chips, verify_chip_certificate
from computewatch.chip.exercise import run_steps, small_shard
from computewatch.formats import _audit_ahead, _audit_prescan, chip_audit
from computewatch.formats.chip_audit import LogVerifier
from computewatch.formats.chip_entry import split_log
from _chips import TEST_SECRET_SEED


def _module() -> Any:
    module = _native.chiplog()
    assert module is not None, "the native extension is not built"
    return module


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One chip (checkpoint every 4 entries, f = 200/day), two boots."""
    root = tmp_path_factory.mktemp("lines")
    (state,) = provision_chips(root, 1, snapshots_per_day=200.0, checkpoint_every=4, secret_seed=TEST_SECRET_SEED)
    for boot in range(2):
        chip = Chip.open(state)
        chip.boot()
        chip.attach(small_shard(0), root / "storage")
        run_steps(chip, 8, 3600.0, start=10 * boot)
        chip.close()
    data = chip.log_path.read_bytes()
    cert = verify_chip_certificate(Chip.open(state).certificate, chip.chipmaker_root)
    return {"data": data, "lines": split_log(data)[0], "cert": cert, "root": chip.chipmaker_root}


def _join(lines: Sequence[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _same(world: dict[str, Any], raw: bytes, *, all_threads: bool = True) -> dict[str, Any]:
    """The audit over LogLines, with 0, 1 and 3 read-ahead threads (3 in chunks of 2 lines), gives
    the report of the audit over split_log's list and of the Python-only audit."""
    cert, root = world["cert"], world["root"]
    with mock.patch.dict(os.environ, {"COMPUTEWATCH_NATIVE": "0"}):
        reference = audit_log(raw, cert, root, workers=0).to_json()
    with mock.patch.object(chip_audit, "_split", split_log):
        assert audit_log(raw, cert, root, workers=0, threads=1).to_json() == reference
    report = audit_log(raw, cert, root, workers=0, threads=1).to_json()
    assert report == reference
    if all_threads:
        assert audit_log(raw, cert, root, workers=0, threads=0).to_json() == reference
        with mock.patch.object(_audit_prescan, "CHUNK_LOG", 1):
            assert audit_log(raw, cert, root, workers=0, threads=3).to_json() == reference
    return report


# ------------------------------------------------------------------ LogLines is split_log
def _check_lines(data: bytes, rng: random.Random) -> None:
    lines, torn = split_log(data)
    got = _module().log_lines(data)
    assert len(got) == len(lines) and got.torn == torn and got.data is data
    assert list(got) == lines
    assert bool(got) == bool(lines)
    for i in range(-len(lines), len(lines)):
        assert got[i] == lines[i]
    for i in (len(lines), -len(lines) - 1):
        with pytest.raises(IndexError):
            got[i]
    for needle in (b"a", b"ab", b"ba\r", b"\x00a", b"zz"):
        assert got.containing(needle) == [i for i, line in enumerate(lines) if needle in line]
    for _ in range(3):
        a, b = rng.randint(-5, len(lines) + 5), rng.randint(-5, len(lines) + 5)
        step = rng.choice([1, 2, -1, -3])
        assert got[a:b:step] == lines[a:b:step]


def test_log_lines_are_split_log_s_lines_and_torn_tail() -> None:
    rng = random.Random(24)
    edges = [
        b"",
        b"\n",
        b"a",
        b"ab\nab",
        b"abab\nba\rab\n\nab",
        b"\n\n",
        b"x",
        b"x\n",
        b"x\ny",
        b"\r\n",
        b"a\r\nb\r",
        b"\n\nab\n\n\nc",
        b"\x00\n\xff",
    ]
    for data in edges:
        _check_lines(data, rng)
    for _ in range(300):
        data = bytes(rng.choice(b"ab\n\r\x00") for _ in range(rng.randrange(0, 60)))
        _check_lines(data, rng)
    _check_lines(bytes(rng.randrange(256) for _ in range(5000)) + b"\n" * 3000, rng)  # grows its index


def test_log_lines_refuse_what_is_not_bytes() -> None:
    module = _module()
    for data in (bytearray(b"a\n"), memoryview(b"a\n"), "a\n", None):
        with pytest.raises(TypeError):
            module.log_lines(data)
    with pytest.raises(TypeError):
        module.log_lines(b"a\n")["0"]
    for needle in (b"", b"a\nb", "a", None):
        with pytest.raises(ValueError):
            module.log_lines(b"a\n").containing(needle)


# ------------------------------------------------------------------ the audit over LogLines
def test_the_audit_reads_the_log_in_place(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """With the native module, audit_log splits nothing: the prescan reads a LogLines of the very
    bytes given, and the verifier makes bytes objects for fewer lines than the log has."""
    module = _module()
    monkeypatch.setattr(chip_audit, "split_log", lambda data: pytest.fail("split_log called"))
    seen: list[Any] = []
    real = chip_audit.prescan

    def recording(lines: Any, threads: int | None = None) -> Any:
        seen.append(lines)
        return real(lines, threads)

    monkeypatch.setattr(chip_audit, "prescan", recording)
    fed: list[int] = []
    feed = LogVerifier._feed

    def counting(self: LogVerifier, line: bytes, ahead: bool) -> Any:
        fed.append(self.position)
        assert ahead and self._pre is not None  # hashes read ahead for every line fed
        return feed(self, line, ahead)

    monkeypatch.setattr(LogVerifier, "_feed", counting)
    report = audit_log(world["data"], world["cert"], world["root"], workers=0)
    assert report.ok and len(seen) == 1
    assert isinstance(seen[0], module.LogLines) and seen[0].data is world["data"]
    assert len(fed) < len(world["lines"]) // 2  # the native path took the rest from the buffer


def test_honest_and_torn_logs_give_the_same_reports(world: dict[str, Any]) -> None:
    data, lines = world["data"], world["lines"]
    assert _same(world, data)["ok"]
    _same(world, b"")
    _same(world, b"\n")
    _same(world, b"\n\n\n")
    _same(world, data[:-1])  # no final newline: the last line is a torn tail
    _same(world, data[: len(_join(lines[:9])) + 40])  # a partial line after 9 entries
    _same(world, data + b'{"partial')
    _same(world, data + b"\n")  # a blank last line
    for k in (1, 2, 5, 8, len(lines) - 1):
        _same(world, _join(lines[:k]), all_threads=k == 5)


def test_blank_lines_and_carriage_returns_give_the_same_reports(world: dict[str, Any]) -> None:
    lines = world["lines"]
    for i in (0, 3, 6, len(lines) // 2, len(lines) - 1):
        assert not _same(world, _join([*lines[:i], b"", *lines[i:]]), all_threads=i == 6)["ok"]
        assert not _same(world, _join([*lines[:i], lines[i] + b"\r", *lines[i + 1 :]]), all_threads=i == 6)["ok"]
    crlf = world["data"].replace(b"\n", b"\r\n")
    assert not _same(world, crlf)["ok"]


def test_tampered_logs_give_the_same_reports(world: dict[str, Any]) -> None:
    lines = world["lines"]
    snaps = [i for i, line in enumerate(lines) if b'"kind":"snapshot"' in line]
    for k, i in enumerate(snaps[1::3]):
        altered = lines[i][:-20] + (b"0" if lines[i][-20:-19] != b"0" else b"1") + lines[i][-19:]
        for case in (
            [*lines[:i], altered, *lines[i + 1 :]],
            attacks.rechain([*lines[:i], altered, *lines[i + 1 :]], i + 1),
            attacks.rechain(lines[:i] + lines[i + 1 :], i, renumber=True),
            [*lines[: i + 1], lines[i], *lines[i + 1 :]],
        ):
            assert not _same(world, _join(case), all_threads=k == 0)["ok"]
    for edit in ("_flip", "_truncate", "_drop", "_rechained", "_uncovered_tail"):
        change = getattr(attacks, edit)
        _same(world, _join(change(list(lines), random.Random(3), {"size": 4})), all_threads=False)


def test_feed_hashes_a_line_itself_unless_it_is_the_prescanned_one(world: dict[str, Any]) -> None:
    """`feed` (the receiver's entry point) takes a line's hashes from a LogLines prescan only
    through the audit, which knows the line's position: a line given to `feed` from elsewhere, even
    equal bytes or a different line at that position, is hashed by the verifier."""
    module, lines = _module(), world["lines"]
    log = module.log_lines(_join(lines))
    other = list(lines)
    other[0] = lines[0].replace(b'"counter":0', b'"counter":00', 1)
    assert other[0] != lines[0]  # (if feed took the prescan's hashes for it, the chain would differ)
    plain = LogVerifier(world["cert"], world["root"])
    read_ahead = LogVerifier(world["cert"], world["root"])
    read_ahead._pre, read_ahead._pre_lines = _audit_prescan.prescan(log, 1), log
    for line in (other[0], *lines[1:6]):
        assert read_ahead.feed(line) == plain.feed(line)
        assert read_ahead._prev == plain._prev and read_ahead.tree.root() == plain.tree.root()


def test_scan_entries_reads_a_prescan_only_over_its_own_lines(world: dict[str, Any]) -> None:
    """A prescan handed to scan_entries with other lines (a LogLines or list of a log that differs
    in one snapshot line, of the same length) is not read for the lines it did not read: those
    are read and hashed where they are, so the run is the one without a prescan."""
    module, lines = _module(), world["lines"]
    snaps = [i for i, line in enumerate(lines) if b'"kind":"snapshot"' in line]
    start = k = snaps[1]  # (the first snapshot's layout is checked by feed)
    tampered = list(lines)
    tampered[k] = lines[k][:-20] + (b"0" if lines[k][-20:-19] != b"0" else b"1") + lines[k][-19:]
    results = []
    for pre_of in (None, "same", "loglines", "list"):
        for scanned in ("loglines", "list"):
            log: Any = module.log_lines(_join(lines)) if scanned == "loglines" else list(lines)
            sources = {None: None, "same": log, "loglines": module.log_lines(_join(tampered)), "list": tampered}
            source: Any = sources[pre_of]
            v = LogVerifier(world["cert"], world["root"])
            for line in lines[:start]:
                v.feed(line)
            v._pre, v._pre_lines = (None if source is None else module.prescan(source, 1, 1)), log
            end = v.fast_forward(log, start)
            results.append((end, v._prev, v._counter, [v.tree.leaf(j) for j in range(v.tree.size)]))
    assert results[0][0] > k
    assert all(r == results[0] for r in results)


def test_signatures_ahead_find_the_boots_in_the_buffer(world: dict[str, Any]) -> None:
    """The worker processes get the same boot entries from a LogLines (found in the buffer) as
    from a list, and the audit that verifies signatures ahead gives the same report."""
    lines = world["lines"]
    log = _module().log_lines(_join(lines))
    done = []
    for source in (lines, log):
        ahead = _audit_ahead.SignaturesAhead(source, world["cert"].device_key, 1)
        try:
            for i in range(len(lines)):
                ahead.verified(i, world["cert"].device_key)  # (collects every chunk's results)
            done.append(ahead._done)
        finally:
            ahead.close()
    second = [i for i, line in enumerate(lines) if b'"kind":"boot"' in line][1]
    assert done[0] == done[1] and any(i < second for i, _ in done[0]) and any(i > second for i, _ in done[0])
    cert, root, raw = world["cert"], world["root"], _join(lines[:-1])  # (a failing first pass: workers verify)
    with mock.patch.dict(os.environ, {"COMPUTEWATCH_NATIVE": "0"}):
        reference = audit_log(raw, cert, root, workers=0).to_json()
    assert audit_log(raw, cert, root, workers=1).to_json() == reference
