"""The databases a benchmark runs on: a SQLite file in its scratch folder, the PostgreSQL server
at --pg-url, or a private durable PostgreSQL server started for the run (tests/_postgres.py;
new WAL segments not zero-filled, see `_steady_wal`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def database(name: str, scratch: Path, pg_url: str | None, filename: str = "registry.db") -> Iterator[str]:
    """The URL of database `name` ("sqlite" or "postgresql") for one benchmark pass."""
    if name == "sqlite":
        yield f"sqlite:///{scratch / filename}"
        return
    if pg_url:
        yield pg_url
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _postgres import PostgresServer

    server = PostgresServer(durable=True).start()
    try:
        url = server.create_database("bench")
        _steady_wal(server.url())
        yield url
    finally:
        server.stop()


def _steady_wal(url: str) -> None:
    """A fresh cluster has no WAL segments to recycle: each new 16 MB segment was zero-filled
    while commits waited behind it (45-140 ms, both server processes at once, 2-3 times a
    run), a start-up cost a long-running server recycling its segments does not pay.
    `wal_init_zero = off` creates a segment without writing its zeroes. Not a durability
    setting: fsync, synchronous_commit and full_page_writes stay on (a commit still returns
    only once its WAL is flushed)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("ALTER SYSTEM SET wal_init_zero = off")
            conn.exec_driver_sql("SELECT pg_reload_conf()")
    finally:
        engine.dispose()
