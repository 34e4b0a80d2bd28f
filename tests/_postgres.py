"""A private, throw-away PostgreSQL server for tests and benchmarks.

`PostgresServer().start()` runs `initdb` into a fresh temporary folder and starts `postgres`
listening only on a Unix socket in that folder (no TCP port, so nothing else on the machine can
reach it or collide with it); `stop()` shuts it down and deletes the folder. As root (initdb
refuses root) the server runs as the `postgres` system user, which the Debian package creates.
Binaries are taken from PATH, else from /usr/lib/postgresql/<version>/bin (Debian's layout).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

__all__ = ["INSTALL_HINT", "PostgresServer", "PostgresUnavailable", "find_binaries"]

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or in "
    "/usr/lib/postgresql/*/bin: install them (Debian/Ubuntu: apt-get install -y postgresql)"
)
_BINARIES = ("initdb", "pg_ctl", "postgres")


class PostgresUnavailable(RuntimeError):
    """The server cannot be started here; the message says why and what to install."""


def find_binaries() -> dict[str, str]:
    found = {name: shutil.which(name) for name in _BINARIES}
    if all(found.values()):
        return {k: str(v) for k, v in found.items()}
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        paths = {name: os.path.join(folder, name) for name in _BINARIES}
        if all(os.access(p, os.X_OK) for p in paths.values()):
            return paths
    raise PostgresUnavailable(INSTALL_HINT)


class PostgresServer:
    """One private server; `url(database)` gives SQLAlchemy URLs (psycopg 3, Unix socket)."""

    def __init__(self, *, durable: bool = False, port: int = 5432) -> None:
        self.durable = durable  # False: fsync off (tests); True: a production-like server (benchmarks)
        self.port = port  # only names the socket file; the server listens on no TCP port
        self.folder: Path | None = None
        self._bin = find_binaries()
        self._user: str | None = None

    # ------------------------------------------------------------------ helpers
    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    @property
    def socket_dir(self) -> Path:
        assert self.folder is not None, "server not started"
        return self.folder / "socket"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> PostgresServer:
        self.folder = Path(tempfile.mkdtemp(prefix="computewatch-pg-"))
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root needs the 'postgres' system user: " + INSTALL_HINT) from None
            self._user = "postgres"
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        data, sock = self.folder / "data", self.socket_dir
        try:
            self._run("mkdir", "-p", str(sock))
            self._run(self._bin["initdb"], "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--locale=C", "--no-sync")
            options = [
                "-c", "listen_addresses=", "-c", f"unix_socket_directories={sock}", "-c", f"port={self.port}",
                "-c", "max_connections=50",
            ]
            if not self.durable:
                options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
            self._run(self._bin["pg_ctl"], "-D", str(data), "-l", str(self.folder / "server.log"), "-w", "-t", "60",
                      "-o", " ".join(options), "start")
        except BaseException:
            self._cleanup()
            raise
        return self

    def stop(self) -> None:
        if self.folder is None:
            return
        with contextlib.suppress(PostgresUnavailable):
            self._run(self._bin["pg_ctl"], "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        self._cleanup()

    def _cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    # ------------------------------------------------------------------ databases
    def create_database(self, name: str | None = None) -> str:
        """A fresh empty database; returns its URL."""
        import sqlalchemy

        name = name or f"t_{uuid.uuid4().hex[:16]}"
        engine = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import sqlalchemy

        name = sqlalchemy.engine.make_url(url).database
        engine = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            engine.dispose()

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
