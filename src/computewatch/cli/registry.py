"""`computewatch registry ...`: the supply-chain register and chip-owner directory (docs/registry.md).

Every command takes `--db URL` (or $COMPUTEWATCH_DB; default: the SQLite file `computewatch.db`
in the working directory) and `--json`. Exit status: 0 done; 1 a refusal the register decided
(a transfer or report whose signatures or sequence do not hold); 2 unusable input.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from computewatch.cli._common import (
    EXIT_FINDING,
    FLAG,
    Command,
    Group,
    check_register,
    fail,
    out,
    print_json,
)

if TYPE_CHECKING:
    from computewatch.registry import Registry

__all__ = ["DbOption", "JsonOption", "app", "open_registry", "registry_guard", "with_registry"]

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, cls=Group)

DbOption = Annotated[
    str | None,
    typer.Option("--db", envvar="COMPUTEWATCH_DB", help="Register database: a SQLite file or a postgresql:// URL "
                 "(default: computewatch.db in the working directory)."),
]
JsonOption = Annotated[bool, typer.Option("--json", metavar=FLAG, help="Print JSON (also on failure).")]
PubOption = Annotated[Path, typer.Option("--pub", help="Ed25519 public key, PEM (as `openssl pkey -pubout` writes it).")]
FromKeyOption = Annotated[Path, typer.Option("--from-key", help="Private key (PEM) of the current holder, who signs.")]
ToKeyOption = Annotated[Path, typer.Option("--to-key", help="Private key (PEM) of the receiver, who countersigns.")]
FacilityOption = Annotated[str | None, typer.Option("--facility", help="The receiver's facility the item goes to.")]


@contextlib.contextmanager
def registry_guard(as_json: bool) -> Iterator[None]:
    """The register's errors as one line: a refusal (custody, conflict) exits 1, the rest 2."""
    from computewatch.crypto.errors import ComputewatchError
    from computewatch.registry.errors import CustodyError

    try:
        yield
    except CustodyError as exc:
        fail(str(exc), EXIT_FINDING, as_json=as_json)
    except ComputewatchError as exc:
        fail(str(exc), as_json=as_json)
    # OS, database and encoding errors: the command line's one guard (Command) says them.


def open_registry(db: str | None, *, create: bool = False, as_json: bool = False) -> Registry:
    """Open (and migrate) the register; call inside `registry_guard`. Only `create` (registry
    init) makes a new one: see `check_register`."""
    from computewatch.registry import Registry

    check_register(db, create=create, as_json=as_json)
    return Registry.open(db)


def with_registry(db: str | None, as_json: bool, action: Callable[[Registry], T]) -> T:
    """Run `action` on the opened register; its errors become `registry_guard`'s one line."""
    with registry_guard(as_json), open_registry(db, as_json=as_json) as reg:
        return action(reg)


def _signing_key(path: Path) -> Any:
    from computewatch.crypto.signing import SigningKey

    return SigningKey.load(path)


def _done(doc: Any, as_json: bool, line: str) -> None:
    if as_json:
        print_json(doc)
    else:
        out.print(line)


@app.command(cls=Command)
def init(
    db: DbOption = None,
    loss_threshold: Annotated[int | None, typer.Option(min=1, help="Losses by one holder that open an investigation.")] = None,
    individual_max: Annotated[int | None, typer.Option(min=1, help="Most chips a holder may have for an individual exemption.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create the register (or migrate it to the newest schema) and show its id and settings."""
    with registry_guard(as_json):
        reg = open_registry(db, create=True, as_json=as_json)
        with reg:
            if loss_threshold is not None:
                reg.set_setting("loss_investigation_threshold", loss_threshold)
            if individual_max is not None:
                reg.set_setting("individual_exemption_max", individual_max)
            doc: dict[str, Any] = {"register": reg.register_id, "db": reg.url, "settings": reg.settings()}
    _done(doc, as_json, f"register {doc['register']} ready at {escape(doc['db'])}")


def _add_party(db: str | None, as_json: bool, add: Any) -> None:
    doc = with_registry(db, as_json, add)
    _done(doc, as_json, f"{doc['role']} {escape(doc['name'])} registered (key {doc['keyid'][:16]}...)")


@app.command("add-chipmaker", cls=Command)
def add_chipmaker(name: str, pub: PubOption, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Pin a chipmaker's root key: the chips it certifies can then be registered."""
    _add_party(db, as_json, lambda reg: reg.add_chipmaker(name, pub))


@app.command("add-owner", cls=Command)
def add_owner(
    name: str,
    pub: PubOption,
    role: Annotated[Literal["owner", "inspector"], typer.Option(help="owner (a Prover) or inspector.")] = "owner",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a chip owner (or an inspector) and its public key."""
    _add_party(db, as_json, lambda reg: reg.add_owner(name, pub, role))


@app.command("add-fab", cls=Command)
def add_fab(
    name: str,
    pub: PubOption,
    node_nm: Annotated[int | None, typer.Option(min=1, help="Process node in nanometres.")] = None,
    site: Annotated[str | None, typer.Option(help="Where the fab is.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a fab and the key it signs its shipments with."""
    _add_party(db, as_json, lambda reg: reg.add_fab(name, pub, node_nm=node_nm, site=site))


@app.command(cls=Command)
def produce(
    fab: str,
    lot: Annotated[str, typer.Option(help="Label of the production lot.")],
    wafers: Annotated[int, typer.Option(min=1, max=10_000, help="Wafers in the lot.")],
    dies_per_wafer: Annotated[int, typer.Option(min=0, max=100_000, help="Dies recorded on each wafer (0: none yet).")] = 0,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record a fab's production lot: its wafers (and dies), held by the fab. At most
    1,000,000 dies per lot (wafers x dies per wafer)."""
    if wafers * dies_per_wafer > _MAX_DIES_PER_LOT:
        fail(f"--wafers {wafers} x --dies-per-wafer {dies_per_wafer} = {wafers * dies_per_wafer:,} dies: at most "
             f"{_MAX_DIES_PER_LOT:,} per lot (record a large lot as several)", as_json=as_json)
    doc = with_registry(db, as_json, lambda reg: reg.produce(fab, lot, wafers, dies_per_wafer))
    _done(doc, as_json, f"lot {escape(lot)}: {len(doc['wafers'])} wafers, {doc['dies']} dies, held by {escape(fab)}")


@app.command("register-lot", cls=Command)
def register_lot(
    manifest: Annotated[Path, typer.Argument(help="The chipmaker's signed lot manifest (lot-LOT.dsse.json).")],
    chip_dirs: Annotated[list[Path] | None, typer.Argument(
        help="Chip state directories of the lot, each with its lot-proof.json (or give --certificates).")] = None,
    certificates: Annotated[Path | None, typer.Option(
        help="The whole lot: every certificate in lot order, one per line (lot-LOT-certificates.jsonl).")] = None,
    fab: Annotated[str | None, typer.Option(help="The fab that made the chips.")] = None,
    workers: Annotated[int | None, typer.Option(min=0, help="Processes reading certificates (default: one per core).")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register chips by signed lot: one chipmaker signature per lot, one Merkle inclusion check per chip."""
    if (certificates is None) == (not chip_dirs):
        fail("give the whole lot with --certificates FILE, or chip directories with their lot-proof.json (not both)",
             as_json=as_json)

    def run(reg: Registry) -> dict[str, Any]:
        data = manifest.read_bytes()
        if certificates is not None:
            with certificates.open("rb") as fh:
                return reg.register_lot(data, (line.rstrip(b"\n") for line in fh), fab=fab, workers=workers)
        chips = [reg.register_lot_chip_dir(data, d, fab=fab)["serial"] for d in chip_dirs or []]
        return {"chips": len(chips), "serials": chips}

    doc = with_registry(db, as_json, run)
    _done(doc, as_json, f"{doc['chips']} chip(s) registered by lot")


@app.command("register-chip", cls=Command)
def register_chip(
    chip_dir: Annotated[Path, typer.Argument(help="The chip's state directory (its certificate.json is read).")],
    fab: Annotated[str | None, typer.Option(help="The fab that made the chip.")] = None,
    die: Annotated[str | None, typer.Option(help="The registered die it was packaged from.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a chip from its chipmaker certificate, checked against the registered chipmaker roots."""
    doc = with_registry(db, as_json, lambda reg: reg.register_chip(chip_dir, fab=fab, die=die))
    _done(doc, as_json, f"chip {doc['serial']} ({escape(doc['model'])}) registered; holder {escape(doc['holder'])}")


def _transfer(serial: str, to: str, from_key: Path, to_key: Path, facility: str | None, db: str | None,
              as_json: bool, first: bool) -> None:
    with registry_guard(as_json):
        giver, receiver = _signing_key(from_key), _signing_key(to_key)
        with open_registry(db, as_json=as_json) as reg:
            move = reg.ship if first else reg.transfer_with_keys
            doc = move(serial, to, giver, receiver, facility=facility)
    where = f" ({escape(facility)})" if facility else ""
    _done(doc, as_json, f"{serial}: {escape(doc['from'])} -> {escape(doc['to'])}{where}, custody record {doc['seq']}")


@app.command(cls=Command)
def ship(
    serial: str,
    to: Annotated[str, typer.Option("--to", help="The first owner.")],
    from_key: FromKeyOption,
    to_key: ToKeyOption,
    facility: FacilityOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The chipmaker's first transfer of a chip, signed by it and countersigned by the owner."""
    _transfer(serial, to, from_key, to_key, facility, db, as_json, first=True)


@app.command(cls=Command)
def transfer(
    serial: str,
    to: Annotated[str | None, typer.Option("--to", help="The receiving party.")] = None,
    from_key: Annotated[Path | None, typer.Option("--from-key", help="Private key (PEM) of the current holder.")] = None,
    to_key: Annotated[Path | None, typer.Option("--to-key", help="Private key (PEM) of the receiver.")] = None,
    envelope: Annotated[Path | None, typer.Option(help="A transfer statement both parties already signed (DSSE JSON).")] = None,
    facility: FacilityOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move an item to another holder: signed by the holder, countersigned by the receiver.
    Refused (exit 1) when a signature does not belong to the holder or the receiver."""
    if envelope is None and (to is None or from_key is None or to_key is None):
        fail("give --to, --from-key and --to-key, or --envelope", as_json=as_json)
    if envelope is not None and (to or from_key or to_key or facility):
        fail("--envelope carries everything: do not combine it with --to, --from-key, --to-key or --facility",
             as_json=as_json)
    if envelope is None:
        assert to is not None and from_key is not None and to_key is not None
        _transfer(serial, to, from_key, to_key, facility, db, as_json, first=False)
        return
    with registry_guard(as_json):
        data = envelope.read_bytes()
        with open_registry(db, as_json=as_json) as reg:
            from computewatch.registry import parse_statement

            if parse_statement(data).label != serial:
                fail(f"the statement in {envelope} is not about {serial}", as_json=as_json)
            doc = reg.transfer(data)
    _done(doc, as_json, f"{serial}: {escape(doc['from'])} -> {escape(doc['to'])}, custody record {doc['seq']}")


@app.command("report-loss", cls=Command)
def report_loss(
    serial: str,
    key: Annotated[Path, typer.Option("--key", help="Private key (PEM) of the holder, who signs the report.")],
    kind: Annotated[Literal["lost", "damaged", "destroyed"], typer.Option("--kind", help="What happened.")] = "lost",
    reason: Annotated[str, typer.Option(help="What the holder says happened.")] = "",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The holder reports an item lost, damaged or destroyed (it stays responsible for it)."""
    with registry_guard(as_json):
        signer = _signing_key(key)
        with open_registry(db, as_json=as_json) as reg:
            doc = reg.report_with_key(serial, kind, signer, reason=reason)
    line = f"{serial} reported {kind} by {escape(doc['holder'])}"
    if doc["investigation"] is not None:
        line += f"; investigation {doc['investigation']} of {escape(doc['holder'])} is open (many losses)"
    _done(doc, as_json, line)


@app.command(cls=Command)
def exempt(
    serial: str,
    category: Annotated[Literal["education", "research", "individual"], typer.Option(help="Exemption category.")],
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    revoke: Annotated[bool, typer.Option("--revoke", metavar=FLAG, help="Revoke this exemption.")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Exempt a chip from inspection sampling (education, research, small individual purchases)."""
    doc = with_registry(db, as_json, lambda reg: reg.exempt(serial, category, reason=reason, revoke=revoke))
    _done(doc, as_json, f"{serial}: {category} exemption {'revoked' if revoke else 'granted'}")


@app.command(cls=Command)
def found(
    serial: str,
    at: Annotated[str, typer.Option("--at", help="The party where the chip turned up.")],
    chip_dir: Annotated[Path | None, typer.Option(help="The chip's state directory (registers an unknown chip).")] = None,
    note: Annotated[str, typer.Option(help="Circumstances.")] = "",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """A chip turned up at a party: flagged unless the register agrees that party holds it."""
    doc = with_registry(db, as_json, lambda reg: reg.report_found(serial, at, chip_dir=chip_dir, note=note))
    flag = doc["flag"]
    line = f"{serial} is where the register says" if flag is None else f"[yellow]flagged[/yellow] {serial}: {escape(flag['detail'])}"
    _done(doc, as_json, line)


ListWhat = Literal["chips", "wafers", "dies", "parties", "lots", "investigations", "flags", "plans", "queue", "runs"]


@app.command("list", cls=Command)
def list_cmd(
    what: Annotated[ListWhat, typer.Argument(help="What to list.")] = "chips",
    owner: Annotated[str | None, typer.Option(help="Only this holder's (or party's) records.")] = None,
    status: Annotated[str | None, typer.Option(help="Only records with this status.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows.")] = None,
    wide: Annotated[bool, typer.Option("--wide", metavar=FLAG, help="Every column, digests and times in full (wider than 80 columns).")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List chips (or wafers, dies), parties, lots, investigations, flags, plans, the
    explanation queue or declared runs. --status takes, by what is listed: chips, wafers,
    dies: active|packaged|lost|damaged|destroyed; parties: a role
    (chipmaker|owner|inspector|fab); investigations: open|closed; queue:
    pending|explained|unexplained. The table keeps to the terminal's width (the main
    columns, digests and times shortened); --wide shows every column in full, --json everything."""
    choices = _STATUSES.get(what, ())
    if status is not None and status not in choices:
        allowed = f"one of {'|'.join(choices)}" if choices else "not a filter here"
        fail(f"--status {status!r} for {what}: {allowed}", as_json=as_json)
    with registry_guard(as_json), open_registry(db, as_json=as_json) as reg:
        rows = _listing(reg, what, owner, status, limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        which = status or ("pending" if what == "queue" else None)
        out.print(f"{what}: none" + (f" with status {escape(which)}" if which else ""))
        return
    columns = list(rows[0]) if wide else [c for c in _NARROW.get(what, list(rows[0])) if c in rows[0]]
    table = Table(title=f"{what} ({len(rows)})" + ("" if wide else "; --wide for every column"))
    for col in columns:
        table.add_column(col.replace("_", " "), overflow="fold", no_wrap=wide)
    for r in rows:
        table.add_row(*(escape(_cell(r[c] if wide or c != "verdict_ref" else str(r[c] or "").split("#")[0], wide))
                        for c in columns))
    if wide:  # every column at its natural width, whatever the terminal's
        Console(width=100_000, soft_wrap=True, highlight=False).print(table)
    else:
        out.print(table)


# The columns a listing shows by default (in this order): what fits 80 columns and says most.
_NARROW: dict[str, list[str]] = {
    "chips": ["serial", "holder", "status", "facility", "exempt"],
    "wafers": ["serial", "holder", "status", "facility"],
    "dies": ["serial", "holder", "status", "facility"],
    "parties": ["name", "role", "keyid", "created_at"],
    "lots": ["lot", "fab", "wafers", "dies_per_wafer", "produced_at"],
    "investigations": ["id", "party", "status", "reason", "opened_at"],
    "flags": ["id", "serial", "kind", "responsible", "detail"],
    "plans": ["plan", "period", "stockpile", "samples", "population", "revealed", "end"],
    "queue": ["serial", "counter", "step", "owner", "status", "verdict_ref"],
    "runs": ["owner", "run_id", "chips", "declared_at"],
}


_ITEM = ("active", "packaged", "lost", "damaged", "destroyed")
_STATUSES: dict[str, tuple[str, ...]] = {
    "chips": _ITEM, "wafers": _ITEM, "dies": _ITEM, "parties": ("chipmaker", "owner", "inspector", "fab"),
    "investigations": ("open", "closed"), "queue": ("pending", "explained", "unexplained"),
}
_MAX_DIES_PER_LOT = 1_000_000  # a lot is recorded in one transaction: 10^9 rows would never finish


def _listing(reg: Registry, what: str, owner: str | None, status: str | None, limit: int | None) -> list[dict[str, Any]]:
    if what in ("chips", "wafers", "dies"):
        return reg.items(kind=what[:-1] if what != "dies" else "die", holder=owner, status=status, limit=limit)
    rows: list[dict[str, Any]]
    if what == "parties":
        rows = [{k: p[k] for k in ("name", "role", "keyid", "created_at")} for p in reg.parties(role=status)]
    elif what == "lots":
        rows = reg.lots()
    elif what == "investigations":
        rows = reg.investigations(party=owner, status=status)
    elif what == "flags":
        rows = reg.flags(party=owner)
    elif what == "plans":
        rows = reg.plans()
    elif what == "queue":
        rows = reg.explanation_queue(owner=owner, status=status or "pending")
    else:
        rows = reg.runs(owner=owner)
    return rows[:limit] if limit is not None else rows


def _cell(value: Any, wide: bool = True) -> str:
    """A value as plain text: no Python reprs, no "None"; narrow tables shorten digests to 12
    hex digits and times to the second."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(v, wide) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v, wide)}" for k, v in value.items())
    text = str(value)
    if not wide:
        text = _HEX.sub(lambda m: m.group(0)[:12] + "…", text)
        text = _TIME.sub(lambda m: f"{m.group(1)} {m.group(2)}Z", text)
    return text


_HEX = re.compile(r"\b[0-9a-f]{32,}\b")
_TIME = re.compile(r"\b(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?Z\b")


@app.command(cls=Command)
def show(serial: str, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Everything the register holds on a chip: holder, custody history, inspections, tree heads."""
    doc = with_registry(db, as_json, lambda reg: reg.chip(serial))
    if as_json:
        print_json(doc)
        return
    out.print(f"[bold]{escape(doc['serial'])}[/bold] ({doc['kind']}): held by {escape(doc['holder'])}, {doc['status']}"
              + (f", exempt ({doc['exempt']})" if doc["exempt"] else "")
              + (f", facility {escape(doc['facility'])}" if doc["facility"] else ""))
    if doc["kind"] == "chip":
        out.print(f"  {escape(doc['model'])}, peak {doc['peak_flops']:.3g} FLOP/s, certified by "
                  f"{escape(doc['chipmaker'])}, device key {doc['device_key'][:16]}...")
    for c in doc["custody"]:
        who = f"{c['from'] or '-'} -> {c['to'] or '-'}"
        out.print(f"  custody {c['seq']}: {c['kind']:<9} {escape(who)}  {c['recorded_at']}"
                  + (" (signed)" if c["signed"] else "") + (f"  {escape(c['note'])}" if c["note"] else ""))
    for i in doc.get("inspections", []):
        out.print(f"  inspection {i['id']}: {i['outcome']} at {i['recorded_at']}, log size {i['tree_size']}")
        for p in i["problems"]:
            out.print(f"    [red]{p['check']}[/red]: {escape(p['problem'])}")


@app.command(cls=Command)
def verify(serial: str, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Re-check an item's custody history: sequence, record hash chain, every signature."""
    doc = with_registry(db, as_json, lambda reg: reg.verify_custody(serial))
    if as_json:
        print_json(doc)
    elif doc["ok"]:
        out.print(f"[green]ok[/green]: {serial}, {doc['records']} custody records, chain head {doc['head'][:16]}...")
    else:
        for p in doc["problems"]:
            out.print(f"[red]{escape(p)}[/red]")
    if not doc["ok"]:
        raise typer.Exit(EXIT_FINDING)


# `registry exposure` lives in its own module; importing it here keeps it beside the other register
# commands whichever command group (chip, landmark, registry) is loaded first.
from computewatch.cli import exposure as _exposure  # noqa: E402,F401
