"""Concurrency and crash safety on SQLite and PostgreSQL: two processes transferring the same chip
at once (exactly one wins, the other gets a clear error), and a process killed inside a
transaction (nothing committed is lost, the half-done change is absent)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from computewatch.registry._base import MARK_ENV, PAUSE_ENV

# One process of the register: transfer SERIAL to TO, signed by the holder FROM. Prints JSON.
_TRANSFER = r"""
import json, sys, time
from pathlib import Path
from computewatch.registry import Registry, RegistryError
from computewatch.crypto.signing import SigningKey
url, serial, to, from_seed, to_seed, start = sys.argv[1:7]
while time.time() < float(start):  # both processes begin together
    time.sleep(0.001)
reg = Registry.open(url)
try:
    out = reg.transfer_with_keys(serial, to, SigningKey.from_seed(bytes.fromhex(from_seed)),
                                 SigningKey.from_seed(bytes.fromhex(to_seed)))
    print(json.dumps({"ok": True, "to": out["to"]}))
except RegistryError as exc:
    print(json.dumps({"ok": False, "error": str(exc)}))
    sys.exit(1)
"""


def _seed(name: str) -> str:
    import hashlib

    return hashlib.sha256(b"computewatch test party " + name.encode()).hexdigest()  # as conftest.registry_key


def _spawn(url: str, serial: str, to: str, start: float, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _TRANSFER, url, serial, to, _seed("acme"), _seed(to), str(start)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )


def _result(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate(timeout=120)
    assert stdout.strip(), stderr
    return json.loads(stdout.strip().splitlines()[-1])


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the process never reached its pause point"
        time.sleep(0.01)


def _third_owner(registry) -> None:
    from conftest import registry_key

    registry.reg.add_owner("gamma", registry_key("gamma").public_key)


def test_two_processes_race_for_one_chip_exactly_one_wins(registry, db_url) -> None:
    _third_owner(registry)
    serial = registry.register(0, to="acme")
    start = time.time() + 1.5
    procs = [_spawn(db_url, serial, to, start) for to in ("beta", "gamma")]
    results = [_result(p) for p in procs]
    winners = [r for r in results if r["ok"]]
    assert len(winners) == 1, results
    [loser] = [r for r in results if not r["ok"]]
    assert "refused" in loser["error"], loser
    assert registry.reg.holder(serial) == winners[0]["to"]
    history = registry.reg.chip(serial)["custody"]
    assert [c["kind"] for c in history] == ["create", "transfer", "transfer"]
    assert registry.reg.verify_custody(serial)["ok"]


def _at_the_lock(registry, second: subprocess.Popen, marks: Path) -> None:
    """Wait for the observable event "the second writer is waiting on the first one's lock":
    on PostgreSQL a backend waiting on a row lock; on SQLite the second writer asking for the
    write lock (its mark) while the database's write lock is held (a probe cannot take it)."""
    _wait_for(marks / "write-requested", second)
    engine = registry.reg.engine
    deadline = time.monotonic() + 60
    if engine.dialect.name == "postgresql":
        while True:
            with engine.connect() as conn:
                waiting = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")).scalar()
            if waiting:
                return
            assert second.poll() is None, second.communicate()
            assert time.monotonic() < deadline, "the second writer never waited on a lock"
            time.sleep(0.01)
    import sqlite3

    probe = sqlite3.connect(engine.url.database, timeout=0, isolation_level=None)
    try:
        try:
            probe.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
        else:
            probe.execute("ROLLBACK")
            raise AssertionError("the first writer does not hold the database's write lock")
    finally:
        probe.close()


def test_the_second_writer_waits_for_the_first_and_then_gets_a_clear_error(registry, db_url, tmp_path) -> None:
    _third_owner(registry)
    serial = registry.register(0, to="acme")
    pause, marks = tmp_path / "pause", tmp_path / "marks"
    pause.mkdir()
    marks.mkdir()
    first = _spawn(db_url, serial, "beta", 0, {PAUSE_ENV: f"transfer:{pause}"})
    _wait_for(pause / "paused", first)  # the first transfer is written, not yet committed
    second = _spawn(db_url, serial, "gamma", 0, {MARK_ENV: str(marks)})
    _at_the_lock(registry, second, marks)
    assert second.poll() is None, "the second writer must wait for the first one's lock"
    assert registry.reg.holder(serial) == "acme", "an uncommitted transfer is invisible"
    (pause / "resume").touch()
    assert _result(first) == {"ok": True, "to": "beta"}
    lost = _result(second)
    assert not lost["ok"] and second.returncode == 1
    assert f"transfer of {serial} refused" in lost["error"]
    # It read the state the first one committed: it waited, it did not race past the lock.
    assert "already used" in lost["error"] or "held by 'beta'" in lost["error"], lost
    assert registry.reg.holder(serial) == "beta"


def test_a_process_killed_inside_a_transaction_loses_nothing_committed(registry, db_url, tmp_path) -> None:
    reg = registry.reg
    serial = registry.register(0, to="acme")
    committed = reg.transfer_with_keys(serial, "beta", registry.keys["acme"], registry.keys["beta"])
    reg.transfer_with_keys(serial, "acme", registry.keys["beta"], registry.keys["acme"])
    before = reg.chip(serial)
    pause = tmp_path / "pause"
    pause.mkdir()
    victim = _spawn(db_url, serial, "beta", 0, {PAUSE_ENV: f"transfer:{pause}"})
    _wait_for(pause / "paused", victim)
    os.kill(victim.pid, signal.SIGKILL)  # mid-transaction: custody row written, item updated, no commit
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    after = reg.chip(serial)
    assert after["custody"] == before["custody"] and after["holder"] == "acme"
    assert after["custody"][2]["record_digest"] == committed["record_digest"]
    assert reg.verify_custody(serial)["ok"]
    if reg.engine.dialect.name == "sqlite":
        with reg.engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    # The dead process's locks are gone: the same change now goes through.
    again = reg.transfer_with_keys(serial, "beta", registry.keys["acme"], registry.keys["beta"])
    assert again["seq"] == 4 and reg.holder(serial) == "beta"
