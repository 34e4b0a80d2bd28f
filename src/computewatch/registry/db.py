"""The register's database: URL resolution, SQLite and PostgreSQL set-up, transactions, migrations.

SQLite (the embedded default) runs in WAL mode with `synchronous=FULL`, foreign keys on, and
a write transaction that takes the database's write lock when it begins (`BEGIN IMMEDIATE`), so
two writers never both read a state the other is about to change; the second one waits (busy
timeout) and then reads the first one's result. PostgreSQL (shared deployments) runs at READ
COMMITTED; writers lock the rows they change with `SELECT ... FOR UPDATE`. On both, a unique
(item, custody sequence) constraint is the backstop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from computewatch.registry.errors import RegistryError

__all__ = [
    "DEFAULT_FILE",
    "ENV_VAR",
    "MIGRATIONS_DIR",
    "current_revision",
    "head_revision",
    "is_postgresql",
    "make_engine",
    "read",
    "resolve_url",
    "upgrade",
    "write",
]

DEFAULT_FILE = "computewatch.db"
ENV_VAR = "COMPUTEWATCH_DB"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_BUSY_TIMEOUT_S = 60
# Key of the PostgreSQL advisory lock that serialises migrations between processes.
_MIGRATION_LOCK = 0x636F6D7075746577  # "computew"


def resolve_url(url: str | None = None) -> str:
    """`url`, else $COMPUTEWATCH_DB, else `computewatch.db` in the working directory.

    A bare path means a SQLite file; `postgresql://` and `postgres://` use the psycopg 3 driver.
    """
    url = url or os.environ.get(ENV_VAR) or DEFAULT_FILE
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def connect_timeout_s() -> int:
    """Seconds a PostgreSQL connection may take to open ($COMPUTEWATCH_DB_CONNECT_TIMEOUT, default 10; libpq's minimum is 2)."""
    try:
        return max(2, int(os.environ.get("COMPUTEWATCH_DB_CONNECT_TIMEOUT", "10")))
    except ValueError:
        return 10


def is_postgresql(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def make_engine(url: str | None = None) -> Engine:
    """An engine for `url` (see `resolve_url`), set up as the module docstring says."""
    resolved = resolve_url(url)
    try:
        parsed = make_url(resolved)
    except ArgumentError as exc:
        raise RegistryError(f"database URL {resolved!r} is not valid: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(resolved, parsed.database)
    if backend == "postgresql":
        try:
            # A server that accepts and never answers must not hang the caller forever.
            return create_engine(resolved, connect_args={"connect_timeout": connect_timeout_s()})
        except ModuleNotFoundError as exc:  # the driver is an optional dependency
            raise RegistryError(f"PostgreSQL needs the psycopg driver ({exc}): pip install 'psycopg[binary]'") from None
    raise RegistryError(f"database {backend!r} is not supported: use a SQLite file or a postgresql:// URL")


def _sqlite_engine(url: str, database: str | None) -> Engine:
    memory = not database or database == ":memory:"
    if database and not memory:
        folder = Path(database).parent
        if not folder.is_dir():
            raise RegistryError(f"cannot create the register database {database!r}: folder {str(folder)!r} does not exist")
    kwargs = {"poolclass": StaticPool} if memory else {}
    engine = create_engine(url, connect_args={"timeout": _BUSY_TIMEOUT_S, "check_same_thread": False}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # The driver's own transaction handling is off; SQLAlchemy's begin event below emits BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_S * 1000}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("cw_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed when the block ends, rolled back if it raises."""
    with engine.connect() as conn:
        conn.execution_options(cw_write=True)
        with conn.begin():
            yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """One read transaction (a consistent snapshot on both backends)."""
    with engine.connect() as conn, conn.begin():
        yield conn


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, target: str = "head") -> None:
    """Migrate the database to `target` (all of it in one transaction, one process at a time)."""
    from alembic import command

    want = head_revision() if target == "head" else target
    with read(engine) as conn:
        if current_revision(conn) == want:
            return
    with write(engine) as conn:
        if is_postgresql(conn):
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        if current_revision(conn) == want:  # another process migrated while we waited
            return
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)
