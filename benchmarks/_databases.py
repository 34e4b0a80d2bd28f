"""The databases a benchmark runs on: a SQLite file in its scratch folder, the PostgreSQL server
at --pg-url, or a private durable PostgreSQL server started for the run (tests/_postgres.py)."""

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
        yield server.create_database("bench")
    finally:
        server.stop()
