"""atomic_write survives SIGKILL mid-write: the file is the old version or a new one, never torn."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import computewatch.crypto.atomic as atomic_mod
from computewatch.crypto import append_durable, atomic_write

_SIZE = 4 << 20

# The writer loads atomic.py by path so it starts in milliseconds (no torch import), then
# rewrites the target forever with whole-file payloads made of one repeated version byte.
_WRITER = textwrap.dedent(
    """
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    print("ready", flush=True)
    i = 1
    while True:
        mod.atomic_write(sys.argv[2], bytes([i % 256]) * int(sys.argv[3]))
        i += 1
    """
)


def _assert_whole(path: Path) -> int:
    data = path.read_bytes()
    assert len(data) == _SIZE, f"torn file: {len(data)} bytes"
    assert data.count(data[:1]) == _SIZE, "torn file: mixed versions"
    return data[0]


def test_sigkill_mid_write_never_tears(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    atomic_write(target, b"\x00" * _SIZE)
    seen = set()
    for delay in (0.05, 0.13, 0.29, 0.41):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, atomic_mod.__file__, str(target), str(_SIZE)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        seen.add(_assert_whole(target))
    # The writer made progress (so kills landed during writes, not before the first one).
    assert seen - {0}


def test_atomic_write_replaces_and_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"old")
    atomic_write(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["f"]


def test_failed_write_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"old")
    try:
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        raise AssertionError("writing str should fail")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_append_durable(tmp_path: Path) -> None:
    log = tmp_path / "log"
    append_durable(log, b"a\n")
    append_durable(log, b"bc\n")
    assert log.read_bytes() == b"a\nbc\n"
