"""The chip-log audit's native fast path (computewatch._native._chiplog, issue 24).

The Python LogVerifier is the reference: the native path only accepts ordinary snapshot entries
that the verifier would accept with no problem, and hands every other line back. These tests
run both over honest logs and over every tampered log the attack suite's edits and the v2 tests
make (plus field-by-field forgeries and byte mutations, rechained or not) and require identical
reports; they also require the extension to be built and in use, and check its hashes against
the published vectors."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from computewatch import _native
from computewatch.adversary import chiplog as attacks
from computewatch.chip import Chip, audit_log, provision_chips, verify_chip_certificate
from computewatch.chip.exercise import run_steps, small_shard
from computewatch.crypto.canonical import canonical_json_v2
from computewatch.crypto.digest import blake3_bytes
from computewatch.crypto.merkle import leaf_hash, root_from_leaves
from computewatch.formats import _audit_prescan, chip_audit, schedule
from computewatch.formats.chip_audit import LogVerifier
from computewatch.formats.chip_entry import split_log
from _chips import TEST_SECRET_SEED

# The published BLAKE3 vectors where this machine has them (the `blake3` package otherwise).
VECTORS = Path("/work/shared/vectors/blake3/test_vectors.json")


@contextmanager
def _native_off() -> Iterator[None]:
    old = os.environ.get("COMPUTEWATCH_NATIVE")
    os.environ["COMPUTEWATCH_NATIVE"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["COMPUTEWATCH_NATIVE"]
        else:
            os.environ["COMPUTEWATCH_NATIVE"] = old


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two chips of one chipmaker (checkpoint every 4 entries, f = 200/day, several triggers a
    snapshot). Chip 0: two boots, an attestation (checkpoint) in the first; chip 1: one boot."""
    root = tmp_path_factory.mktemp("native")
    dirs = provision_chips(root, 2, snapshots_per_day=200.0, checkpoint_every=4, secret_seed=TEST_SECRET_SEED)
    logs, head_sizes = [], []
    for i, state in enumerate(dirs):
        for boot in range(2 - i):
            chip = Chip.open(state)
            chip.boot()
            chip.attach(small_shard(i), root / f"storage-{i}")
            run_steps(chip, 8, 3600.0, start=10 * boot)
            if boot == 0 and i == 0:
                chip.attest(bytes(16))
                head_sizes.append(len(chip.log))
                run_steps(chip, 4, 3600.0, start=8)
            chip.close()
        logs.append(split_log(chip.log_path.read_bytes())[0])
    certs = [verify_chip_certificate(Chip.open(d).certificate, chip.chipmaker_root) for d in dirs]
    return {"logs": logs, "certs": certs, "root": chip.chipmaker_root, "size": head_sizes[0]}


def _join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


@contextmanager
def _chunks_of(lines_log2: int) -> Iterator[None]:
    """The prescan reads chunks of 2**lines_log2 lines (a small log then spans many chunks)."""
    old = _audit_prescan.CHUNK_LOG
    _audit_prescan.CHUNK_LOG = lines_log2
    try:
        yield
    finally:
        _audit_prescan.CHUNK_LOG = old


@contextmanager
def _no_prescan() -> Iterator[None]:
    """The native path without the read-ahead (each snapshot line read and hashed in order)."""
    old = chip_audit.prescan
    chip_audit.prescan = lambda lines, threads=None: None
    try:
        yield
    finally:
        chip_audit.prescan = old


def _same(world: dict[str, Any], data: bytes | list[bytes], chip: int = 0, *, parallel: bool = True) -> dict[str, Any]:
    """Audit with and without the native path (and, with `parallel`, with the signatures
    verified ahead in a worker process, and the native path read ahead by 3 threads in chunks
    of 2 lines, or not read ahead at all); the reports must be identical."""
    raw = _join(data) if isinstance(data, list) else data
    native = audit_log(raw, world["certs"][chip], world["root"], workers=0).to_json()
    with _native_off():
        reference = audit_log(raw, world["certs"][chip], world["root"], workers=0).to_json()
    assert native == reference
    if parallel:
        assert audit_log(raw, world["certs"][chip], world["root"], workers=1).to_json() == reference
        with _chunks_of(1):
            assert audit_log(raw, world["certs"][chip], world["root"], workers=0, threads=3).to_json() == reference
        with _no_prescan():
            assert audit_log(raw, world["certs"][chip], world["root"], workers=0).to_json() == reference
    return native


def _snapshots(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if b'"kind":"snapshot"' in line]


# ------------------------------------------------------------------- the module is in use
def test_the_native_module_is_built_and_in_use(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """CI builds the extension (`pip install -e .`); a missing build fails here rather than
    leaving the audit silently on the slow path."""
    monkeypatch.delenv("COMPUTEWATCH_NATIVE", raising=False)
    module = _native.chiplog()
    assert module is not None and module.__name__ == "computewatch._native._chiplog"
    taken = []
    real = LogVerifier.fast_forward

    def spy(self: LogVerifier, lines: list[bytes], start: int) -> int:
        end = real(self, lines, start)
        taken.append(end - start)
        return end

    monkeypatch.setattr(LogVerifier, "fast_forward", spy)
    lines = world["logs"][0]
    assert _same(world, lines)["ok"]
    # Every snapshot but the first of each boot (its region layout is checked in Python first).
    assert sum(taken) >= len(_snapshots(lines)) - 2 >= 15
    monkeypatch.setenv("COMPUTEWATCH_NATIVE", "0")
    assert _native.chiplog() is None


def test_native_hashes_match_the_vectors_and_hashlib() -> None:
    module = _native.chiplog()
    assert module is not None
    if VECTORS.exists():
        cases = json.loads(VECTORS.read_text())["cases"]
    else:  # the published vectors are not in this checkout: the `blake3` package is the oracle
        import blake3

        cases = [{"input_len": n, "hash": blake3.blake3(bytes(i % 251 for i in range(n))).hexdigest()}
                 for n in (0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 3073, 31744, 102400)]
    for case in cases:
        data = bytes(i % 251 for i in range(case["input_len"]))
        assert module.blake3(data).hex() == case["hash"][:64], case["input_len"]
    backends = ["builtin"] + ([module.sha256_backend()] if module.sha256_backend() != "builtin" else [])
    rng = random.Random(1)
    try:
        for backend in backends:
            module.set_sha256_backend(backend)
            for n in [*range(130), 830, 1000, 4096, 65537]:
                data = rng.randbytes(n)
                assert module.sha256(data) == hashlib.sha256(data).digest(), (backend, n)
    finally:
        module.set_sha256_backend(backends[-1])
    with pytest.raises(ValueError):
        module.set_sha256_backend("md5")


# ------------------------------------------------------------------ honest and attacked logs
def test_honest_logs_give_the_same_reports(world: dict[str, Any]) -> None:
    assert _same(world, world["logs"][0])["ok"] and _same(world, world["logs"][1], chip=1)["ok"]
    module = _native.chiplog()
    assert module is not None
    backend = module.sha256_backend()
    module.set_sha256_backend("builtin")  # the extension's own SHA-256 gives the same audit
    try:
        assert _same(world, world["logs"][0])["ok"]
    finally:
        module.set_sha256_backend(backend)
    # Chip 0's log under chip 1's certificate (a wrong key and serial throughout).
    assert not _same(world, world["logs"][0], chip=1)["ok"]


@pytest.mark.parametrize(
    "edit",
    ["_flip", "_truncate", "_drop", "_rechained", "_uncovered_tail", "_replayed_checkpoint"],
)
def test_the_attack_suite_s_log_edits_give_the_same_reports(world: dict[str, Any], edit: str) -> None:
    change: Callable[..., list[bytes]] = getattr(attacks, edit)
    for seed in range(4):
        lines = change(list(world["logs"][0]), random.Random(seed), {"size": world["size"]})
        _same(world, lines)  # (some are caught only by the inspection's further checks)


def test_spliced_reordered_duplicated_torn_and_cut_logs_give_the_same_reports(world: dict[str, Any]) -> None:
    lines, other = world["logs"][0], world["logs"][1]
    snaps = _snapshots(lines)
    i, j = snaps[3], snaps[4]
    cases = {
        "spliced": lines[:i] + other[i:],
        "swapped": [*lines[:i], lines[j], *lines[i + 1 : j], lines[i], *lines[j + 1 :]],
        "reordered": attacks.rechain([*lines[:i], lines[j], *lines[i + 1 : j], lines[i], *lines[j + 1 :]], i, renumber=True),
        "duplicated": [*lines[: i + 1], lines[i], *lines[i + 1 :]],
        "dropped": attacks.rechain(lines[:i] + lines[i + 1 :], i, renumber=True),
    }
    for name, case in cases.items():
        assert not _same(world, case)["ok"], name
    data = _join(lines)
    for cut in (len(data) - 7, len(_join(lines[: i + 1])) - 300):
        _same(world, data[:cut])  # a torn tail
    for k in range(1, len(lines), 5):
        _same(world, lines[:k])  # cut anywhere
    _same(world, b"")


def _forge(lines: list[bytes], i: int, change: Callable[[dict[str, Any]], Any]) -> list[bytes]:
    e = json.loads(lines[i])
    change(e)
    return attacks.rechain([*lines[:i], canonical_json_v2(e), *lines[i + 1 :]], i)


def _inner_shard_digest_key(e: dict[str, Any]) -> None:
    """A region ending in an array and then a `shard_digest` key, the entry's shard digest
    recomputed over all its regions: the verifier cuts the regions at the first `],"shard_digest":"`
    (inside them), so the digest it recomputes differs; the native reader must find that cut too."""
    e["body"]["regions"][0].update(shape=[[1]], shard_digest="x")
    doc = chip_audit._SHARD_DOC_HEAD + canonical_json_v2(e["body"]["regions"]) + chip_audit._SHARD_DOC_TAIL
    e["body"]["shard_digest"] = blake3_bytes(doc).hex()


_FORGERIES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "trigger outside step": lambda e: e["body"].update(triggers=[e["busy_ns"] + "0"]),
    "trigger at step start": lambda e: e["body"].update(triggers=[e["body"]["step_start_busy_ns"]]),
    "trigger twice": lambda e: e["body"].update(triggers=e["body"]["triggers"] * 2),
    "no trigger": lambda e: e["body"].update(triggers=[]),
    "trigger number": lambda e: e["body"].update(triggers=[int(e["body"]["triggers"][0])]),
    "trigger leading zero": lambda e: e["body"].update(triggers=["0" + e["body"]["triggers"][0]]),
    "huge trigger": lambda e: e["body"].update(triggers=["9" * 30]),
    "busy back": lambda e: e.update(busy_ns="1"),
    "busy huge": lambda e: e.update(busy_ns="9" * 25),
    "clock back": lambda e: e.update(clock_ns="0"),
    "epoch": lambda e: e["body"].update(epoch=e["body"]["epoch"] + 1),
    "epoch true": lambda e: e["body"].update(epoch=True),
    "step string": lambda e: e["body"].update(step="1"),
    "step negative": lambda e: e["body"].update(step=-1),
    "step 16 digits": lambda e: e["body"].update(step=2**52 + 1),
    "counter": lambda e: e.update(counter=e["counter"] + 1),
    "boot": lambda e: e.update(boot=e["boot"] + 1),
    "serial": lambda e: e.update(serial=e["serial"] + "X"),
    "serial unicode": lambda e: e.update(serial=e["serial"] + "\u00e9"),
    "signed": lambda e: e.update(sig="AAAA"),
    "version 1": lambda e: e.update(v=1),
    "kind": lambda e: e.update(kind="precommitment"),
    "hash name": lambda e: e["body"].update(hash="sha256"),
    "shard digest": lambda e: e["body"].update(shard_digest="ab" * 32),
    "copy_out null": lambda e: e["body"].update(copy_out=None),
    "copy_out nested": lambda e: e["body"].update(copy_out={"a": 1, "regions": [{"offset": 0}]}),
    "copy_out escaped": lambda e: e["body"].update(copy_out='a"b\\c\n'),
    "extra body field": lambda e: e["body"].update(zzz=1),
    "missing body field": lambda e: e["body"].pop("copy_out"),
    "region digest upper": lambda e: e["body"]["regions"][0].update(digest=e["body"]["regions"][0]["digest"].upper()),
    "region digest short": lambda e: e["body"]["regions"][0].update(digest="ab" * 31),
    "region offset": lambda e: e["body"]["regions"][-1].update(offset=e["body"]["regions"][-1]["offset"] + 8),
    "region extra": lambda e: e["body"]["regions"][0].update(name="x"),
    "region float": lambda e: e["body"]["regions"][0].update(nbytes=1.5),
    "region shard_digest key": lambda e: e["body"]["regions"][0].update(shape=[[1]], shard_digest="x"),
    "region shard_digest key, digest repaired": _inner_shard_digest_key,
    "no regions": lambda e: e["body"].update(regions=[]),
    "region dtype": lambda e: e["body"]["regions"][0].update(dtype="F33"),
}


@pytest.mark.parametrize("name", sorted(_FORGERIES))
def test_each_forged_snapshot_field_gives_the_same_report(world: dict[str, Any], name: str) -> None:
    """A snapshot changed field by field and rechained (the forger repairs every `prev` and
    checkpoint root): the native path must hand each to the verifier, whose report stands."""
    lines = world["logs"][0]
    snaps = _snapshots(lines)
    for i in (snaps[2], snaps[-3]):
        assert not _same(world, _forge(lines, i, _FORGERIES[name]))["ok"]


def test_byte_mutations_of_snapshot_lines_give_the_same_reports(world: dict[str, Any]) -> None:
    """Random one-byte changes in snapshot lines (characters that matter to a JSON reader), with
    and without the chain repaired after them."""
    lines = world["logs"][0]
    snaps = _snapshots(lines)
    rng = random.Random(24)
    alphabet = b'0123456789abcdefABCDEF"\\,:{}[]- .enull\x00\x7f\xc3'
    for k in range(120):
        i = rng.choice(snaps[1:])
        pos = rng.randrange(len(lines[i]))
        line = lines[i][:pos] + bytes([rng.choice(alphabet)]) + lines[i][pos + 1 :]
        if line == lines[i]:
            continue
        changed = [*lines[:i], line, *lines[i + 1 :]]
        if k % 2:
            with suppress(ValueError, KeyError, TypeError):  # a line json cannot read stays as it is
                changed = attacks.rechain(changed, i + 1)
        _same(world, changed, parallel=k % 10 == 0)


def test_an_unclean_stop_and_a_new_boot_give_the_same_reports(tmp_path: Path) -> None:
    (state,) = provision_chips(tmp_path, 1, snapshots_per_day=200.0, checkpoint_every=5, secret_seed=TEST_SECRET_SEED)
    chip = Chip.open(state)
    chip.boot()
    chip.attach(small_shard(0), tmp_path / "storage")
    run_steps(chip, 5, 3600.0)
    chip2 = Chip.open(state)  # the first session never shut down: an unclean stop
    chip2.boot()
    chip2.attach(small_shard(0), tmp_path / "storage")
    run_steps(chip2, 4, 3600.0, start=5)
    chip2.close()
    world = {"certs": [verify_chip_certificate(chip2.certificate, chip2.chipmaker_root)], "root": chip2.chipmaker_root}
    lines = split_log(chip2.log_path.read_bytes())[0]
    report = _same(world, lines)
    assert report["warnings"]  # the unclean stop is named
    _same(world, attacks.rechain(lines, 1))


def test_signatures_verified_ahead_are_not_verified_again(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """With a worker, the main process of an audit that verifies every signature leaves them to
    it (the reports are compared above); small logs stay in one process by default."""
    from computewatch.crypto.signing import VerifyKey
    from computewatch.formats._audit_ahead import PARALLEL_MIN_ENTRIES, default_workers

    lines = world["logs"][0]
    signed = sum(1 for line in lines if "sig" in json.loads(line))
    calls = []
    real = VerifyKey.verify

    def counting(self: VerifyKey, sig: bytes, data: bytes) -> None:
        calls.append(1)  # counted in this process only: a forked worker counts in its own copy
        real(self, sig, data)

    monkeypatch.setattr(VerifyKey, "verify", counting)
    raw = _join(lines)
    assert audit_log(raw, world["certs"][0], world["root"], workers=0, every_signature=True).ok
    alone = len(calls)
    calls.clear()
    assert audit_log(raw, world["certs"][0], world["root"], workers=1, every_signature=True).ok
    assert alone - len(calls) == signed > 6  # every signed line verified once, in the worker
    assert default_workers(PARALLEL_MIN_ENTRIES - 1) == 0 and default_workers(len(lines)) == 0


# ------------------------------------------------------------------ the read-ahead (prescan)
def test_the_prescan_hashes_and_subtrees_are_hashlib_s_and_the_tree_s(world: dict[str, Any]) -> None:
    """Every line's chain hash (SHA-256) and leaf hash, and every perfect subtree inside a chunk,
    whatever the threads (0: read only when asked) and chunks; nothing outside the lines read."""
    module = _native.chiplog()
    assert module is not None
    lines = world["logs"][0]
    n = len(lines)
    for threads, chunk_log in ((0, 9), (1, 9), (2, 0), (3, 2)):
        pre = module.prescan(lines, threads, chunk_log)
        assert len(pre) == n
        for i, line in enumerate(lines):
            assert pre.chain(i) == hashlib.sha256(line).digest() and pre.leaf(i) == leaf_hash(line)
        size = 1
        while size <= n:
            for lo in range(0, n - size + 1, size):
                want = root_from_leaves(lines[lo : lo + size]) if size <= 1 << chunk_log else None  # in one chunk
                assert pre.node(lo, size) == want, (threads, chunk_log, lo, size)
            size *= 2
        assert pre.node(0, size) is None and pre.node(1, 2) is None and pre.node(0, 3) is None and pre.node(n, 1) is None
        with pytest.raises(IndexError):
            pre.leaf(n)
    with pytest.raises(TypeError):
        module.prescan([b"{}", "not bytes"], 2)


def test_the_audit_reads_the_log_ahead_in_background_threads(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """audit_log makes one prescan of the log's lines (so a lost read-ahead cannot go unnoticed)
    and its tree takes subtrees from it."""
    made: list[tuple[Any, int | None]] = []
    real = chip_audit.prescan

    def recording(lines: list[bytes], threads: int | None = None) -> Any:
        pre = real(lines, threads)
        made.append((pre, threads))
        return pre

    monkeypatch.setattr(chip_audit, "prescan", recording)
    asked: list[tuple[int, int]] = []
    node = _audit_prescan.PrescannedTree._hash

    def hashing(self: Any, lo: int, hi: int) -> bytes:
        asked.append((lo, hi))
        return node(self, lo, hi)

    monkeypatch.setattr(_audit_prescan.PrescannedTree, "_hash", hashing)
    assert audit_log(_join(world["logs"][0]), world["certs"][0], world["root"], workers=0).ok
    assert len(made) == 1 and made[0][0] is not None and len(made[0][0]) == len(world["logs"][0])
    assert asked  # the checkpoints' roots came through the prescanned tree


def test_tampering_at_the_prescan_s_chunk_boundaries_gives_the_same_reports(world: dict[str, Any]) -> None:
    """Chunks of 4 lines read by 2 threads: an altered line opening or closing a chunk, a line
    dropped at a boundary (the chain breaks across it), rechained or not."""
    lines = world["logs"][0]
    with _chunks_of(2):
        for i in (7, 8, 12, 15, 16, len(lines) - 5):
            flipped = lines[i].replace(b'"counter":', b'"counter": ', 1)
            altered = lines[i][:-20] + (b"0" if lines[i][-20:-19] != b"0" else b"1") + lines[i][-19:]
            for case in (
                [*lines[:i], altered, *lines[i + 1 :]],
                [*lines[:i], flipped, *lines[i + 1 :]],
                lines[:i] + lines[i + 1 :],
                attacks.rechain(lines[:i] + lines[i + 1 :], i, renumber=True),
                attacks.rechain([*lines[:i], altered, *lines[i + 1 :]], i + 1),
            ):
                raw = _join(case)
                report = audit_log(raw, world["certs"][0], world["root"], workers=0, threads=2).to_json()
                with _native_off():
                    assert report == audit_log(raw, world["certs"][0], world["root"], workers=0).to_json()
                assert not report["ok"]


def test_the_native_schedule_draws_the_schedule_s_arrivals() -> None:
    """formats.schedule.arrivals and its C twin agree over random seeds, rates and windows,
    including the draws only the exact logarithm settles (handed back to schedule.gap_ns)."""
    rng = random.Random(24)
    exact = []
    real_gap = schedule.gap_ns

    def counting(u: float, mean_ns: float) -> int:
        exact.append(u)
        return real_gap(u, mean_ns)

    total = 0
    for k in range(60):
        seed, rate = rng.randbytes(32), rng.choice([48.0, 0.5, 1000.0, 7.25, 200.0])
        start = rng.randrange(0, 10**15)
        end = start + rng.randrange(0, int(86_400e9 * 200 / rate))
        schedule.gap_ns = counting
        try:
            fast = _audit_prescan.arrivals(seed, rate, start, end)
        finally:
            schedule.gap_ns = real_gap
        assert fast == schedule.arrivals(seed, rate, start, end), k
        total += len(fast)
    assert total > 5000 and exact  # some draws needed the exact logarithm
    assert _audit_prescan.arrivals(bytes(32), 0.0, 0, 10**15) == [] == schedule.arrivals(bytes(32), 0.0, 0, 10**15)
