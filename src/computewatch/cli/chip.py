"""`computewatch chip ...`: manufacture chips, attest them, show and audit their logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from computewatch.chip import (
    AuditReport,
    Chip,
    Chipmaker,
    FirmwarePolicy,
    audit_log,
    load_certificate,
    verify_attestation,
)
from computewatch.crypto.atomic import atomic_write
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.formats.chip_entry import LogEntry, envelope_from_obj, split_log
from computewatch.formats.identity import verify_chip_certificate

__all__ = ["app", "print_audit_report"]

app = typer.Typer(no_args_is_help=True)
# soft_wrap: paths and digests stay on one line, so they can be copied (and grepped).
_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)


def _fail(msg: str, code: int = 2) -> typer.Exit:
    _err.print(f"[red]error:[/red] {escape(msg)}")
    return typer.Exit(code)


def _nonce(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise _fail(f"--nonce {text!r} is not hex") from None
    if len(raw) < 8:
        raise _fail("--nonce must be at least 8 bytes (16 hex digits) of fresh randomness")
    return raw


@app.command()
def manufacture(
    out: Annotated[Path, typer.Option("--out", help="State directory of the new chip.")],
    serial: Annotated[Optional[str], typer.Option(help="Serial to burn in (default: random).")] = None,
    chipmaker_key: Annotated[Optional[Path], typer.Option(help="Chipmaker private key (PEM).")] = None,
    snapshots_per_day: Annotated[float, typer.Option(help="Snapshot rate f in the signed firmware policy.")] = 0.1,
) -> None:
    """Manufacture a chip: burn in serial and device key, certify, install logging firmware."""
    try:
        if chipmaker_key is not None:
            maker = Chipmaker(SigningKey.load(chipmaker_key))
        else:
            folder = out.resolve().parent / "chipmaker"
            existed = (folder / "chipmaker.key").exists()
            maker = Chipmaker.load_or_create(folder)
            verb = "using the existing" if existed else "created a new"
            _out.print(f"{verb} chipmaker key in {folder}/chipmaker.key (public key: {folder}/chipmaker.pub)")
        state = maker.manufacture(out, serial=serial)
        chip = Chip.open(state)
        chip.install_firmware(maker.sign_firmware(FirmwarePolicy(snapshots_per_day=snapshots_per_day)))
    except ComputewatchError as exc:
        raise _fail(str(exc)) from None
    _out.print(f"chip {chip.serial} manufactured in {state}")


@app.command()
def attest(
    state_dir: Annotated[Path, typer.Argument(help="Chip state directory.")],
    nonce: Annotated[str, typer.Option(help="Verifier's fresh challenge, hex.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the evidence bundle (JSON).")],
) -> None:
    """Boot the chip and write attestation evidence answering NONCE."""
    raw = _nonce(nonce)
    try:
        chip = Chip.open(state_dir)
        chip.boot()
        try:
            bundle = chip.attest(raw)
        finally:
            chip.close()
        atomic_write(out, bundle, mode=0o644)
    except ComputewatchError as exc:
        raise _fail(str(exc)) from None
    _out.print(f"evidence for chip {chip.serial} written to {out}")


@app.command("verify-attestation")
def verify_attestation_cmd(
    evidence: Annotated[Path, typer.Argument(help="Evidence bundle written by `chip attest`.")],
    nonce: Annotated[str, typer.Option(help="The challenge you issued, hex.")],
    chipmaker_pub: Annotated[Path, typer.Option(help="Chipmaker root public key (PEM) you trust.")],
    min_security_version: Annotated[Optional[int], typer.Option(help="Refuse older firmware.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Verify evidence: chain to the chipmaker root, nonce, firmware measurement."""
    raw = _nonce(nonce)
    try:
        root = VerifyKey.load(chipmaker_pub)
        claims = verify_attestation(evidence.read_bytes(), raw, root, min_security_version=min_security_version)
    except OSError as exc:
        raise _fail(f"cannot read {evidence}: {exc.strerror}") from None
    except ComputewatchError as exc:
        if as_json:
            print(json.dumps({"ok": False, "error": str(exc)}))
            raise typer.Exit(1) from None
        raise _fail(str(exc), 1) from None
    if as_json:
        print(json.dumps({"ok": True, "claims": claims.to_json()}, sort_keys=True))
        return
    _out.print(
        f"[green]ok[/green]: chip {claims.serial} ({claims.model}), firmware {claims.firmware_version} "
        f"(security version {claims.security_version}), boot {claims.boot}, log size {claims.log_size}, "
        f"tamper {'SET' if claims.tamper else 'clear'}"
    )


def _seconds(ns: int) -> str:
    # Integer arithmetic: a decimal-string field may be too large for a float.
    return f"{ns // 10**9}.{ns % 10**9 // 10**6:03d}"


def _summary(e: LogEntry) -> str:
    b = e.body
    if e.kind == "snapshot":
        return f"step {b['step']}, {len(b['triggers'])} trigger(s), shard {b['shard_digest'][:16]}..."
    if e.kind in ("schedule-commit", "schedule-reveal"):
        return f"epoch {b['epoch']}" + (f" ({b['reason']})" if "reason" in b else "")
    if e.kind in ("precommitment", "memory-map"):
        return f"run {b['run_id']}: {b['digest'][:16]}..."
    if e.kind == "checkpoint":
        return f"tree size {b['tree_size']}, root {b['root'][:16]}..."
    if e.kind == "boot":
        return f"previous stop {b['previous_stop']}"
    return ""


@app.command("show-log")
def show_log(state_dir: Annotated[Path, typer.Argument(help="Chip state directory.")]) -> None:
    """List the entries of a chip's log (read-only; nothing is verified here)."""
    path = state_dir / "log" / "chip.log"
    try:
        lines, torn = split_log(path.read_bytes())
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}") from None
    table = Table(title=f"chip log {path}")
    for col in ("#", "boot", "kind", "clock s", "busy s", "detail"):
        table.add_column(col)
    for i, line in enumerate(lines):
        try:
            e = LogEntry.from_line(line)
        except ComputewatchError as exc:
            table.add_row(str(i), "", "[red]malformed[/red]", "", "", str(exc))
            continue
        try:
            detail = _summary(e)
        except (KeyError, TypeError, IndexError):
            detail = "[red](body malformed)[/red]"
        table.add_row(str(e.counter), str(e.boot), e.kind, _seconds(e.clock_ns), _seconds(e.busy_ns), detail)
    _out.print(table)
    if torn:
        _out.print(f"[yellow]torn tail: {torn} bytes after the last complete entry[/yellow]")


def print_audit_report(console: Console, report: AuditReport) -> None:
    """One status line for a chip-log audit, then every problem and note, each naming its entry."""
    status = "[green]ok[/green]" if report.ok else "[red]FAILED[/red]"
    console.print(
        f"{status}: chip {report.serial}, {report.entries} entries, {report.snapshots} snapshots, "
        f"{report.epochs_checked} schedule epochs checked against their reveals"
    )
    for p in report.problems:
        console.print(f"  [red]entry {p.entry}[/red]: {escape(p.problem)}")
    for w in report.warnings:
        console.print(f"  [yellow]note (entry {w.entry})[/yellow]: {escape(w.problem)}")


def _evidence_head(path: Path, serial: str, root: VerifyKey) -> tuple[int, bytes]:
    """The signed log head of an evidence bundle (its chain verified; freshness does not matter
    here: an old head is exactly what the log must still extend)."""
    data = path.read_bytes()
    try:
        env = envelope_from_obj(json.loads(data)["evidence"], "evidence")
        claimed = bytes.fromhex(json.loads(env.payload)["predicate"]["nonce"])
    except (ComputewatchError, ValueError, KeyError, TypeError, RecursionError):
        raise ComputewatchError(f"{path}: not an evidence bundle") from None
    try:
        claims = verify_attestation(data, claimed, root)
    except ComputewatchError as exc:
        raise ComputewatchError(f"{path}: {exc}") from None
    if claims.serial != serial:
        raise ComputewatchError(f"{path}: evidence is for chip {claims.serial}, not {serial}")
    return claims.log_size, claims.log_root


@app.command("verify-log")
def verify_log(
    state_dir: Annotated[Path, typer.Argument(help="Chip state directory (certificate.json, log/chip.log).")],
    chipmaker_pub: Annotated[Optional[Path], typer.Option(help="Chipmaker root public key (PEM).")] = None,
    log: Annotated[Optional[Path], typer.Option(help="Audit this log file instead (e.g. a receiver's copy).")] = None,
    evidence: Annotated[
        Optional[list[Path]],
        typer.Option(help="Evidence bundle seen earlier (repeatable): the log must extend its signed tree head."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Audit a chip log offline; exit status 1 when any problem is found."""
    heads: list[tuple[int, bytes]] = []
    try:
        if chipmaker_pub is None:
            chipmaker_pub = state_dir / "chipmaker.pub"
            _err.print(f"[yellow]warning:[/yellow] trusting the chipmaker key found in the chip dir ({chipmaker_pub})")
        root = VerifyKey.load(chipmaker_pub)
        cert = verify_chip_certificate(load_certificate(state_dir), root)
        for path in evidence or []:
            heads.append(_evidence_head(path, cert.serial, root))
        data = (log or state_dir / "log" / "chip.log").read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read {exc.filename}: {exc.strerror}") from None
    except ComputewatchError as exc:
        raise _fail(str(exc)) from None
    report = audit_log(data, cert, root, known_heads=heads)
    if as_json:
        print(json.dumps(report.to_json(), sort_keys=True))
    else:
        print_audit_report(_out, report)
    if not report.ok:
        raise typer.Exit(1)
