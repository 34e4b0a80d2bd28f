"""Transcript storage: a run directory (local path or any fsspec URL) and its content-addressed objects.

`RunStorage` is the run directory: small named files (manifest, step segments, indexes) written
atomically, so a reader sees the old file or the new one, never a torn one. Locally that is a
temp file in the same folder, fsync, rename, fsync of the folder; on other fsspec filesystems it
is a write to a temp name followed by a move (as atomic as that filesystem's rename).

`ObjectStore` keeps immutable blobs (checkpoints, snapshot shards, sample-hash lists) under
``objects/<2 hex>/<64 hex>``, named by their BLAKE3-256 digest. `get` re-hashes every object it
reads, so a corrupted or swapped file is reported with its digest and path instead of being
used. Temp files left by a crash (``.*.tmp``) are never mistaken for objects; rank 0's
Recorder deletes them before a resumed run writes again.
"""

from __future__ import annotations

import os
import stat
import posixpath
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import fsspec

from computewatch.crypto.atomic import append_durable, atomic_write, fsync_dir
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.hashing import blake3_bytes

__all__ = ["CorruptObjectError", "ObjectStore", "RunStorage", "StoreError"]

_TMP_SUFFIX = ".tmp"
_HEX = frozenset("0123456789abcdef")


class StoreError(ComputewatchError):
    """A transcript file or object is missing, unreadable or malformed."""


class CorruptObjectError(StoreError):
    """An object's bytes do not hash to the digest it is stored under."""


class RunStorage:
    """A run directory addressed by a local path or an fsspec URL (``memory://run``, ``s3://...``)."""

    def __init__(self, url: str | os.PathLike[str], *, create: bool = True) -> None:
        text = os.fspath(url)
        self.url = text
        self.fs, root = fsspec.core.url_to_fs(text)
        self.local = "file" in _protocols(self.fs)
        self.root = os.path.abspath(root) if self.local else root.rstrip("/")
        if not create:
            if not (os.path.isdir(self.root) if self.local else self.fs.isdir(self.root)):
                raise StoreError(f"no run directory at {text}")
            return
        try:
            if self.local:
                os.makedirs(self.root, exist_ok=True)
            else:
                self.fs.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use {text} as a run directory: {exc}") from None

    @property
    def local_path(self) -> Path | None:
        """The run directory as a local Path, or None for remote filesystems."""
        return Path(self.root) if self.local else None

    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if not self.local else os.path.join(self.root, rel)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel)) if self.local else self.fs.exists(self.path(rel))

    def read(self, rel: str) -> bytes:
        target = self.path(rel)
        try:
            if self.local:
                return _read_regular(target)
            with self.fs.open(target, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise StoreError(f"transcript file missing: {target}") from None
        except OSError as exc:
            raise StoreError(f"cannot read transcript file {target}: {exc}") from None

    def write_atomic(self, rel: str, data: bytes, *, _partial_hook: Callable[[], None] | None = None) -> None:
        """Replace `rel` with `data` so that a crash leaves either the old file or the new one.

        `_partial_hook` runs after half the bytes reach the temp file: the crash tests use it to
        kill the process mid-write.
        """
        target = self.path(rel)
        if self.local:
            _write_local(target, data, _partial_hook)
            return
        folder = posixpath.dirname(target)
        self.fs.makedirs(folder, exist_ok=True)
        tmp = posixpath.join(folder, f".{posixpath.basename(target)}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
        try:
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data[: len(data) // 2])
                if _partial_hook is not None:
                    _partial_hook()
                fh.write(data[len(data) // 2 :])
            self.fs.mv(tmp, target)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise

    def append(self, rel: str, data: bytes) -> None:
        """Append durably (local: one write + fsync; remote: atomic rewrite, for rare records)."""
        if self.local:
            os.makedirs(os.path.dirname(self.path(rel)), exist_ok=True)
            append_durable(self.path(rel), data)
            return
        old = self.read(rel) if self.exists(rel) else b""
        self.write_atomic(rel, old + data)

    def remove(self, rel: str) -> None:
        target = self.path(rel)
        if self.local:
            try:
                os.unlink(target)
            except FileNotFoundError:
                return
            fsync_dir(os.path.dirname(target))
        elif self.fs.exists(target):
            self.fs.rm(target)

    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) in folder `rel`, sorted, temp files excluded; [] if it is missing."""
        folder = self.path(rel)
        if self.local:
            names = os.listdir(folder) if os.path.isdir(folder) else []
        else:
            names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(folder, detail=False)] if self.fs.exists(folder) else []
        return sorted(n for n in names if not n.endswith(_TMP_SUFFIX))

    def clean_temp_files(self, rel: str) -> int:
        """Remove temp files a crash left in folder `rel` (and its subfolders); returns how many."""
        removed = 0
        if not self.local:
            return removed  # remote temp names are unique and never read; leave them to the owner
        for folder, _dirs, files in os.walk(self.path(rel)):
            for name in files:
                if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                    os.unlink(os.path.join(folder, name))
                    removed += 1
        return removed


def _read_regular(target: str) -> bytes:
    # O_NONBLOCK + fstat: a FIFO or device planted in a run is refused, never waited on.
    fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"transcript file {target} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def _write_local(target: str, data: bytes, hook: Callable[[], None] | None) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if hook is not None:
        # Crash-test path: leave exactly what a writer killed halfway leaves (half a temp file
        # beside the target), run the hook (which may kill the process), then write for real.
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=_TMP_SUFFIX, dir=os.path.dirname(target))
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(memoryview(data)[: len(data) // 2])
            hook()
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    atomic_write(target, data)


def _check_digest(digest: str) -> str:
    if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
        raise StoreError(f"object digest must be 64 lowercase hex characters, got {digest!r}")
    return digest


class ObjectStore:
    """Immutable blobs named by BLAKE3-256, inside a run directory's ``objects/`` folder."""

    PREFIX = "objects"

    def __init__(self, storage: RunStorage) -> None:
        # Temp files are skipped, not deleted, here: another process of the run may be writing
        # one right now. The Recorder removes a crash's leftovers before the run resumes.
        self.storage = storage

    def _rel(self, digest: str) -> str:
        return f"{self.PREFIX}/{digest[:2]}/{digest}"

    def path_of(self, digest: str) -> str:
        return self.storage.path(self._rel(_check_digest(digest)))

    def put(self, data: bytes, *, _partial_hook: Callable[[], None] | None = None) -> str:
        """Store `data`; returns its hex digest. Storing bytes already present is a no-op."""
        digest = blake3_bytes(data).hex()
        rel = self._rel(digest)
        if not self.storage.exists(rel):
            self.storage.write_atomic(rel, data, _partial_hook=_partial_hook)
        return digest

    def has(self, digest: str) -> bool:
        return self.storage.exists(self._rel(_check_digest(digest)))

    def get(self, digest: str) -> bytes:
        """The object's bytes, after checking they hash to `digest` (CorruptObjectError if not)."""
        rel = self._rel(_check_digest(digest))
        if not self.storage.exists(rel):
            raise StoreError(f"object {digest} is missing from the store (expected at {self.storage.path(rel)})")
        data = self.storage.read(rel)
        actual = blake3_bytes(data).hex()
        if actual != digest:
            raise CorruptObjectError(
                f"object {digest} is corrupted: its file {self.storage.path(rel)} ({len(data)} bytes) hashes to {actual}"
            )
        return data

    def digests(self) -> list[str]:
        """Every object digest present, sorted."""
        out: list[str] = []
        for prefix in self.storage.listdir(self.PREFIX):
            out.extend(n for n in self.storage.listdir(f"{self.PREFIX}/{prefix}") if len(n) == 64)
        return sorted(out)
