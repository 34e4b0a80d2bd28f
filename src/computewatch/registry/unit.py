"""The register's unit of work: one database, its clock and identity, the transactions every
service runs in (its own, or a caller's joined one), and the lookups and custody-record append
that several services share. The services (parties, chips, lots, custody, witness, inspection,
planning, location, exposure) each hold the one unit of work; `Registry` wires them together."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, UTC
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from computewatch._faults import fault_point
from computewatch.crypto.signing import VerifyKey
from computewatch.registry import db
from computewatch.registry import schema as s
from computewatch.registry._genesis import custody_rows, genesis_row
from computewatch.registry.custody import GENESIS, custody_record, record_digest
from computewatch.registry.errors import ConflictError, NotFoundError, RegistryError

if TYPE_CHECKING:
    from computewatch.registry.registry import Services

__all__ = ["DEFAULT_SETTINGS", "Service", "UnitOfWork", "format_time", "joined", "pause_point"]

# A caller's open write transaction the register's operations join (see `joined`).
_JOINED: ContextVar[Connection | None] = ContextVar("computewatch_registry_joined", default=None)


@contextmanager
def joined(conn: Connection) -> Iterator[None]:
    """Inside the block, the register's operations on `conn`'s database run in `conn`'s open
    write transaction (each in a savepoint) instead of their own: a caller (the service) commits
    a request's record and its effect together, so a crash leaves both or neither."""
    token = _JOINED.set(conn)
    try:
        yield
    finally:
        _JOINED.reset(token)


DEFAULT_SETTINGS = {
    # Footnote 22: this many chips reported lost or destroyed by one holder opens an investigation.
    "loss_investigation_threshold": 5,
    # §6.1: individuals' small purchases may be exempt; "small" means a holder of at most this many chips.
    "individual_exemption_max": 8,
}


def format_time(t: datetime) -> str:
    """ISO-8601 UTC with microseconds and a Z: sorts as text, compares the same everywhere."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def pause_point(name: str) -> None:
    """Inside an open write transaction: crash tests stop or kill the process here (they kill it,
    or race another writer against it; computewatch._faults, point `registry.transaction`)."""
    fault_point("registry.transaction", name=name)


class UnitOfWork:
    """One register database: transactions (`write`, `read`), the clock, settings and the row
    lookups the services share. Thread-safe as its engine is; one per open register."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._clock = clock or _utcnow
        with db.read(engine) as conn:
            meta = dict(conn.execute(select(s.register_meta.c.key, s.register_meta.c.value)).all())
        self.register_id: str = meta["register_id"]

    @classmethod
    def open(cls, url: str | None = None, *, clock: Callable[[], datetime] | None = None) -> UnitOfWork:
        """Open (creating if needed) the register at `url` and migrate it to the newest schema.

        `url`: a SQLite file path or URL, or a postgresql:// URL; default $COMPUTEWATCH_DB, else
        `computewatch.db` in the working directory.
        """
        engine = db.make_engine(url)
        try:
            db.upgrade(engine)
        except OperationalError as exc:
            engine.dispose()
            raise RegistryError(f"cannot open the register at {engine.url!r}: {_db_message(exc)}") from None
        except BaseException:
            engine.dispose()  # a damaged file or an unknown revision: close it before the error goes up
            raise
        return cls(engine, clock=clock)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self._engine.dispose()

    # ------------------------------------------------------------------ time, transactions
    def clock(self) -> datetime:
        """The register's time (a test's simulated clock, else UTC now)."""
        return self._clock()

    def now(self) -> str:
        return format_time(self._clock())

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction; a constraint a concurrent writer won first becomes ConflictError."""
        outer = _JOINED.get()
        # Concurrency tests learn here that a second writer is at the lock, not still starting.
        fault_point("registry.write-requested")
        try:
            if outer is not None and outer.engine is self._engine:
                with outer.begin_nested():
                    yield outer
                return
            with db.write(self._engine) as conn:
                yield conn
        except IntegrityError as exc:
            raise ConflictError(f"the change conflicts with the register's state: {_db_message(exc)}") from None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        outer = _JOINED.get()
        if outer is not None and outer.engine is self._engine:
            yield outer  # the joined transaction sees its own uncommitted writes
            return
        with db.read(self._engine) as conn:
            yield conn

    def settings(self) -> dict[str, int]:
        with self.read() as conn:
            return self.settings_in(conn)

    def settings_in(self, conn: Connection) -> dict[str, int]:
        rows = dict(conn.execute(select(s.register_meta.c.key, s.register_meta.c.value)).all())
        return {k: int(rows.get(k, v)) for k, v in DEFAULT_SETTINGS.items()}

    def set_setting(self, key: str, value: int) -> None:
        if key not in DEFAULT_SETTINGS:
            raise RegistryError(f"unknown setting {key!r}; settings are {', '.join(DEFAULT_SETTINGS)}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RegistryError(f"setting {key} must be an integer >= 1, got {value!r}")
        t = s.register_meta
        with self.write() as conn:
            if conn.execute(select(t.c.key).where(t.c.key == key)).first() is None:
                conn.execute(insert(t).values(key=key, value=str(value)))
            else:
                conn.execute(update(t).where(t.c.key == key).values(value=str(value)))

    # ------------------------------------------------------------------ lookups
    def party_row(self, conn: Connection, name: str, roles: tuple[str, ...] | None = None, *, lock: bool = False) -> Row:
        q = select(s.parties).where(s.parties.c.name == name)
        row = conn.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise NotFoundError(f"no party named {name!r} in the register")
        if roles is not None and row.role not in roles:
            raise RegistryError(f"{name!r} is a {row.role}, not a {' or '.join(roles)}")
        return row

    def party_by_id(self, conn: Connection, party_id: int | None) -> Row | None:
        if party_id is None:
            return None
        return conn.execute(select(s.parties).where(s.parties.c.id == party_id)).first()

    def party_at(self, conn: Connection, party_id: int) -> Row:
        """The party a NOT NULL reference names (a holder, a chip's chipmaker, a signer)."""
        row = self.party_by_id(conn, party_id)
        if row is None:
            raise NotFoundError(f"no party with id {party_id} in the register")
        return row

    def name_of(self, conn: Connection, party_id: int | None) -> str | None:
        row = self.party_by_id(conn, party_id)
        return None if row is None else row.name

    def item_row(self, conn: Connection, label: str, *, lock: bool = False, kind: str | None = None) -> Row:
        """The item row; `lock` takes its row lock (PostgreSQL; SQLite writers already hold the
        database's write lock) so that concurrent changes to one item serialise."""
        q = select(s.items).where(s.items.c.label == label)
        row = conn.execute(q.with_for_update() if lock else q).first()
        if row is None:
            what = "chip" if kind == "chip" else "item"
            raise NotFoundError(f"no {what} {label!r} in the register")
        if kind is not None and row.kind != kind:
            raise RegistryError(f"{label!r} is a {row.kind}, not a {kind}")
        return row

    def facility_row(self, conn: Connection, owner_id: int, name: str | None, *, create: bool = True) -> Row | None:
        if name is None:
            return None
        t = s.facilities
        row = conn.execute(select(t).where(t.c.owner_id == owner_id, t.c.name == name)).first()
        if row is None and create:
            conn.execute(insert(t).values(owner_id=owner_id, name=name, created_at=self.now()))
            row = conn.execute(select(t).where(t.c.owner_id == owner_id, t.c.name == name)).first()
        return row

    def facility_name(self, conn: Connection, facility_id: int | None) -> str | None:
        if facility_id is None:
            return None
        return conn.execute(select(s.facilities.c.name).where(s.facilities.c.id == facility_id)).scalar_one()

    # ------------------------------------------------------------------ custody records
    def last_digest(self, conn: Connection, item: Row) -> str:
        if item.custody_seq == 0:  # a lot chip's creation record is its lot's
            first = genesis_row(conn, self.register_id, self.name_of, item)
            if first is not None:
                return str(first.record_digest)
        c = s.custody
        q = select(c.c.record_digest).where(c.c.item_id == item.id, c.c.seq == item.custody_seq)
        return conn.execute(q).scalar_one_or_none() or GENESIS

    def custody_rows(self, conn: Connection, item: Row) -> list[Any]:
        """The item's custody records, oldest first (a lot chip's creation record included)."""
        return custody_rows(conn, self.register_id, self.name_of, item)

    def append_custody(
        self,
        conn: Connection,
        item: Row,
        kind: str,
        *,
        from_id: int | None,
        to_id: int | None,
        facility_id: int | None = None,
        statement: bytes | None = None,
        note: str = "",
        item_changes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append the item's next custody record and apply `item_changes` to its cached state,
        in the caller's transaction. The sequence number is the item's next; the unique
        (item, seq) constraint refuses a second record racing for it."""
        seq = item.custody_seq + 1
        now = self.now()
        record = custody_record(
            register=self.register_id,
            label=item.label,
            seq=seq,
            kind=kind,
            from_name=self.name_of(conn, from_id),
            to_name=self.name_of(conn, to_id),
            facility=self.facility_name(conn, facility_id),
            statement=statement,
            note=note,
            recorded_at=now,
            prev=self.last_digest(conn, item),
        )
        digest = record_digest(record)
        conn.execute(
            insert(s.custody).values(
                item_id=item.id,
                seq=seq,
                kind=kind,
                from_id=from_id,
                to_id=to_id,
                facility_id=facility_id,
                statement=statement,
                note=note,
                recorded_at=now,
                record_digest=digest,
            )
        )
        changes = {"custody_seq": seq, **(item_changes or {})}
        done = conn.execute(
            update(s.items).where(s.items.c.id == item.id, s.items.c.custody_seq == item.custody_seq).values(**changes)
        )
        if done.rowcount != 1:
            raise ConflictError(f"{item.label}: another change committed first; nothing was recorded")
        return {"item": item.label, "seq": seq, "kind": kind, "record_digest": digest, "recorded_at": now}

    def insert_id(self, conn: Connection, stmt: Any) -> int:
        """Run an INSERT of one row in the caller's transaction; its new primary key."""
        key = conn.execute(stmt).inserted_primary_key
        if key is None:
            raise RegistryError("the database gave no key for the new row")
        return int(key[0])

    def count(self, conn: Connection, table: Any, *where: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())

    @staticmethod
    def key_of(row: Row) -> VerifyKey:
        return VerifyKey.from_raw(bytes(row.public_key))


def _db_message(exc: Exception) -> str:
    # The driver's first line names the problem; SQL and parameters follow it.
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


class Service:
    """A register service: one concept's operations over the shared unit of work. `services`
    reaches the others (a chip's record shows its inspections, an inspection flags a holder)."""

    def __init__(self, uow: UnitOfWork, services: Services) -> None:
        self._uow = uow
        self._svc = services
