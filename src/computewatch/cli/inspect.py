"""`computewatch inspect ...`: plan inspections per monitoring period, record them (§3.1, §3.2).

`commit` fixes a period's plan before it starts (the seed stays in a private file), `plan`
derives the chips to inspect (with the seed, or by anyone once it is revealed), `reveal`
publishes the seed after the period, `record` inspects a presented chip, `refuse` records
non-compliance, `status` shows how a plan went. Exit status: `record` and `refuse` exit 1 on a
finding or refusal; 2 for unusable input.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from computewatch.cli._common import (
    EXIT_FINDING,
    FLAG,
    Command,
    Group,
    check_output_file,
    err,
    fail,
    out,
    print_json,
    write_output,
)
from computewatch.cli.registry import (
    DbOption,
    JsonOption,
    open_registry,
    registry_guard,
    with_registry,
)

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, cls=Group)

SeedFileOption = Annotated[Path | None, typer.Option("--seed-file", help="The Verifier's private seed file (hex).")]


def _read_seed(path: Path | None, as_json: bool) -> bytes | None:
    if path is None:
        return None
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError as exc:
        fail(f"--seed-file {path}: {exc.strerror}", as_json=as_json)
    except UnicodeDecodeError:
        fail(f"--seed-file {path} is not a text seed file (binary data)", as_json=as_json)
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        fail(f"--seed-file {path} does not hold a hex seed", as_json=as_json)
    if len(seed) != 32:
        fail(f"--seed-file {path}: a seed is 32 bytes (64 hex digits)", as_json=as_json)
    return seed


def _start(text: str | None, as_json: bool) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--start {text!r} is not an ISO-8601 date or time", as_json=as_json)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@app.command(cls=Command)
def commit(
    period: Annotated[str, typer.Option(help="Label of the monitoring period, e.g. 2026-Q3.")],
    flops: Annotated[float, typer.Option("--flops", help="H: FLOPs of the run to catch.")],
    seed_out: Annotated[Path, typer.Option("--seed-out", help="Where to keep the private seed (written 0600; never overwritten).")],
    owner: Annotated[list[str] | None, typer.Option("--owner", help="An owner of the stockpile (repeat to pool owners: collusion mode); none: every owner.")] = None,
    start: Annotated[str | None, typer.Option(help="Start of the period, ISO-8601 (default: now).")] = None,
    run_days: Annotated[float, typer.Option("--run-days", help="T: length of the run to catch, days.")] = 30.0,
    period_days: Annotated[float, typer.Option("--period-days", help="T_m: monitoring period, days.")] = 30.0,
    probability: Annotated[float, typer.Option("--probability", help="p: detection probability.")] = 0.9,
    snapshots_per_day: Annotated[float, typer.Option("--snapshots-per-day", help="f: snapshots per chip per day.")] = 0.1,
    chip_flops_per_day: Annotated[float | None, typer.Option("--chip-flops-per-day", help="a (default: the largest certified peak FLOP/s in the stockpile x 86400).")] = None,
    formula: Annotated[Literal["exact", "linear"], typer.Option(help="Eq. 1 form.")] = "exact",
    group_by_facility: Annotated[bool, typer.Option("--group-by-facility", metavar=FLAG, help="Group drawn chips into facility visits.")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Commit to a period's inspection plan: publish its commitment, keep the seed private.
    A commit interrupted after its seed file was written is resumed by the same command: a
    seed file that no committed plan uses is taken up again."""
    when = _start(start, as_json)
    from computewatch.registry.planning import new_seed

    # The seed is on disk before the commitment exists: a committed plan whose seed was lost
    # could never be revealed (and blocks its period). The write is atomic (temp file, fsync,
    # rename), so a killed commit leaves a whole seed file or none.
    fresh = not seed_out.exists()
    if fresh:
        check_output_file(seed_out, "--seed-out", overwrite=False)
        seed = new_seed()
        write_output(seed_out, (seed.hex() + "\n").encode(), "--seed-out", mode=0o600)
    else:
        seed = _unused_seed(seed_out, db, as_json)
    try:
        doc, _ = with_registry(db, as_json, lambda reg: reg.commit_plan(
            period, owner or None, flops=flops, start=when, T=run_days, T_m=period_days, p=probability,
            f=snapshots_per_day, a=chip_flops_per_day, formula=formula, group_by_facility=group_by_facility, seed=seed,
        ))
    except BaseException:
        if fresh:
            seed_out.unlink(missing_ok=True)  # nothing was committed with it
        raise
    doc["seed_file"] = str(seed_out)
    if as_json:
        print_json(doc)
        return
    out.print(f"plan {doc['plan']} for {escape(doc['period'])} ({doc['start']} to {doc['end']}): "
              f"{doc['samples']} of {doc['population']} chips; commitment {doc['commitment']}")
    if doc["reason"]:
        out.print(f"[yellow]note[/yellow]: {escape(doc['reason'])}")
    out.print(f"seed kept in {seed_out}: reveal it only after {doc['end']}")


def _unused_seed(seed_out: Path, db: str | None, as_json: bool) -> bytes:
    """The seed of an interrupted commit: a whole seed file whose seed no committed plan uses
    (a used one is never reused: its plan would be predictable)."""
    check_output_file(seed_out, "--seed-out")  # a folder, a link: refused as for a new file
    try:
        text = seed_out.read_text(encoding="ascii").strip()
        seed = bytes.fromhex(text)
    except (OSError, ValueError):
        seed = b""
    if len(seed) != 32:
        fail(f"--seed-out {seed_out} exists and is not a seed file; choose another name", as_json=as_json)
    from computewatch.registry.planning import seed_commitment

    mine = seed_commitment(seed)
    used = with_registry(db, as_json, lambda reg: [p["plan"] for p in reg.plans() if p.get("seed_commitment") == mine])
    if used:
        fail(f"--seed-out {seed_out} exists and holds the seed of plan {used[0]}; choose another name", as_json=as_json)
    err.print(f"resuming an interrupted commit with the unused seed in {seed_out}")
    return seed


def _show_plan(doc: dict, as_json: bool) -> None:
    if as_json:
        print_json(doc)
        return
    state = "revealed" if doc["revealed"] else "secret until the reveal"
    out.print(f"plan {doc['plan']} ({escape(doc['period'])}, {state}): {doc['samples']} of {doc['population']} chips")
    for visit in doc.get("visits", []):
        where = escape(f"{visit['holder']} / {visit['facility'] or '(no facility)'}")
        out.print(f"  visit {where}: {', '.join(visit['chips'])}")
    if "visits" not in doc:
        for serial in doc["chips"]:
            out.print(f"  {serial}")


@app.command(cls=Command)
def plan(
    plan_id: Annotated[int, typer.Argument(help="The plan (as `commit` printed it).")],
    seed_file: SeedFileOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The chips a committed plan draws (needs the seed until the plan is revealed)."""
    seed = _read_seed(seed_file, as_json)
    doc = with_registry(db, as_json, lambda reg: reg.plan(plan_id, seed))
    _show_plan(doc, as_json)


@app.command(cls=Command)
def reveal(
    plan_id: Annotated[int, typer.Argument(help="The plan to reveal.")],
    seed_file: Annotated[Path, typer.Option("--seed-file", help="The seed file `commit` wrote.")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a plan's seed after its period: anyone can then re-derive the plan."""
    seed = _read_seed(seed_file, as_json)
    assert seed is not None
    doc = with_registry(db, as_json, lambda reg: reg.reveal(plan_id, seed))
    _show_plan(doc, as_json)


@app.command(cls=Command)
def record(
    serial: Annotated[str, typer.Argument(help="The chip the Verifier asked for.")],
    chip_dir: Annotated[Path, typer.Option("--chip-dir", help="State directory of the chip presented.")],
    plan_id: Annotated[int | None, typer.Option("--plan", help="The plan this inspection serves.")] = None,
    inspector: Annotated[str | None, typer.Option(help="The registered inspector.")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="The inspector's private key: signs the finding.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Inspect the presented chip (serial, device key, fresh attestation, tamper flag, log audit
    against the chipmaker root registered here and every tree head seen before) and store the
    finding. Boots the chip (its log gains the inspection's entries) and stops it cleanly."""
    if key is not None and inspector is None:
        fail("--key signs for an --inspector: name the inspector", as_json=as_json)
    with registry_guard(as_json):
        signer = None
        if key is not None:
            from computewatch.crypto.signing import SigningKey

            signer = SigningKey.load(key)
        with open_registry(db, as_json=as_json) as reg:
            doc = reg.record_inspection(serial, chip_dir, plan=plan_id, inspector=inspector, inspector_key=signer)
    if as_json:
        print_json(doc)
    else:
        colour = "green" if doc["outcome"] == "clean" else "red"
        out.print(f"[{colour}]{doc['outcome']}[/{colour}]: chip {serial}, log of {doc['tree_size']} entries "
                  f"(root {doc['root'][:16]}...), {doc['queued']} snapshot(s) queued for explanation")
        for p in doc["problems"]:
            entry = f" entry {p['entry']}" if p["entry"] is not None else ""
            out.print(f"  [red]{p['check']}{entry}[/red]: {escape(p['problem'])}")
    if doc["outcome"] != "clean":
        raise typer.Exit(EXIT_FINDING)


@app.command(cls=Command)
def refuse(
    serial: Annotated[str, typer.Argument(help="The chip the Verifier asked for.")],
    reason: Annotated[str, typer.Option(help="What happened (refused, chip not presented, ...).")],
    plan_id: Annotated[int | None, typer.Option("--plan", help="The plan this inspection served.")] = None,
    inspector: Annotated[str | None, typer.Option(help="The registered inspector.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record non-compliance: the inspection was refused or the chip could not be presented."""
    doc = with_registry(db, as_json, lambda reg: reg.refuse(serial, reason, plan=plan_id, inspector=inspector))
    if as_json:
        print_json(doc)
    else:
        out.print(f"[red]refused[/red]: chip {serial}: {escape(reason)} (recorded as non-compliance)")
    raise typer.Exit(EXIT_FINDING)


@app.command(cls=Command)
def status(
    plan_id: Annotated[int | None, typer.Argument(help="A plan (default: a summary of all).")] = None,
    seed_file: SeedFileOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """How a plan's inspections went, or a summary: open findings first (unexplained snapshots,
    inspection findings, refusals, open investigations), where each Prover stands, the plans."""
    seed = _read_seed(seed_file, as_json)
    with registry_guard(as_json), open_registry(db, as_json=as_json) as reg:
        summary = _summary(reg)
        doc = summary if plan_id is None else {**reg.plan_status(plan_id, seed), **{
            k: summary[k] for k in ("findings", "provers", "queue_pending", "queue_unexplained")}}
    if as_json:
        print_json(doc)
        return
    if plan_id is not None:
        counts = doc["counts"]
        out.print(f"plan {doc['plan']} ({escape(doc['period'])}): {counts['clean']} clean, {counts['finding']} with "
                  f"findings, {counts['refused']} refused, {counts['pending']} not yet inspected")
        for c in doc["chips"]:
            out.print(f"  {c['serial']}: {c['outcome']} (holder {escape(c['holder'] or '-')}, {c['status']})")
    _print_summary(doc)


def _summary(reg: Any) -> dict[str, Any]:
    from computewatch.registry.standing import open_findings, standing

    inspections = reg.inspections()
    investigations = reg.investigations()
    provers = standing(reg.explanation_queue(status=None))
    return {
        "findings": open_findings(provers, inspections, investigations, reg.flags()),
        "provers": provers,
        "plans": reg.plans(),
        "queue_pending": sum(p["pending"] for p in provers),
        "queue_unexplained": sum(p["unexplained"] for p in provers),
        "investigations_open": sum(1 for i in investigations if i["status"] == "open"),
        "inspections": {o: sum(1 for i in inspections if i["outcome"] == o) for o in ("clean", "finding", "refused")},
    }


_STATE_STYLE = {"violation": "bold red", "awaiting explanation": "yellow", "all explained": "green"}


def _print_summary(doc: dict[str, Any]) -> None:
    findings = doc["findings"]
    if findings:
        out.print(f"[bold red]open findings ({len(findings)})[/bold red]")
        for f in findings:
            out.print(f"  [red]{escape(f['kind'])}[/red]: {escape(f['party'])}, {escape(f['subject'])}", soft_wrap=False)
            out.print(Padding(escape(f["detail"]), (0, 0, 0, 4)), soft_wrap=False)
    else:
        out.print("[green]no open findings[/green]")
    if doc["provers"]:
        table = Table(title="Provers: logged snapshots the register asked them to explain")
        for col in ("Prover", "standing", "unexplained", "pending", "explained"):
            table.add_column(col, justify="left" if col in ("Prover", "standing") else "right")
        for p in doc["provers"]:
            style = _STATE_STYLE.get(p["state"], "")
            table.add_row(escape(p["owner"]), f"[{style}]{p['state']}[/{style}]", str(p["unexplained"]),
                          str(p["pending"]), str(p["explained"]))
        out.print(table)
    if "plans" not in doc:  # one plan's status: its chips are above
        out.print(f"snapshots unexplained: {doc['queue_unexplained']}, awaiting explanation: {doc['queue_pending']}")
        return
    table = Table(title="inspection plans")
    for col in ("plan", "period", "stockpile", "samples", "population", "revealed"):
        table.add_column(col)
    for p in doc["plans"]:
        table.add_row(str(p["plan"]), escape(p["period"]), escape(p["stockpile"]), str(p["samples"]),
                      str(p["population"]), "yes" if p["revealed"] else "no")
    out.print(table)
    n = doc["inspections"]
    out.print(f"inspections: {n['clean']} clean, {n['finding']} with findings, {n['refused']} refused; "
              f"snapshots unexplained: {doc['queue_unexplained']}, awaiting explanation: {doc['queue_pending']}; "
              f"open investigations: {doc['investigations_open']}")
