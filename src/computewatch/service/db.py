"""The service's tables in the register's database: migrated by their own Alembic chain."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Engine, text

from computewatch.registry import db as reg_db

__all__ = ["MIGRATIONS_DIR", "VERSION_TABLE", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "service_alembic_version"
_MIGRATION_LOCK = 0x636F6D7073727663  # "compsrvc": serialises the service's migrations between processes


def _config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Migrate the service's tables to the newest revision (after the register's own chain)."""
    from alembic import command

    want = head_revision()
    with reg_db.read(engine) as conn:
        if current_revision(conn) == want:
            return
    with reg_db.write(engine) as conn:
        if reg_db.is_postgresql(conn):
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        if current_revision(conn) == want:
            return
        cfg = _config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
