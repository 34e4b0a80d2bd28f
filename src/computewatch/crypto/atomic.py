"""Crash-safe file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["append_durable", "atomic_write", "fsync_dir"]


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename or create inside it survives power loss."""
    fd = os.open(os.fspath(folder), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` atomically and durably.

    The temp file lives in the same folder so os.replace is a same-filesystem rename (atomic on
    POSIX); it is fsynced before the rename and the folder after, so the new name is durable.
    `mode` (e.g. 0o600) is applied before any byte is written, so secrets never sit world-readable.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        # Leave no stray temp file behind; the old target is untouched.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def append_durable(path: str | os.PathLike[str], data: bytes) -> None:
    """Append `data` to `path` (created if missing) and fsync before returning.

    One os.write on an O_APPEND descriptor; callers that need torn-tail detection frame their
    records (length/hash) so a crash mid-append is recognisable on read.
    """
    target = Path(path)
    existed = target.exists()
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if not existed:
        fsync_dir(target.parent if str(target.parent) else Path("."))
