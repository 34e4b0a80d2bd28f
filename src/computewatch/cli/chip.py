"""`computewatch chip ...`: manufacture chips, attest them, show and audit their logs.

Exit status (docs/cli.md): 1 when evidence or a log fails a check or the chip itself reports
tampering or log damage, 2 for unusable input (bad option, missing or malformed file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from computewatch.chip import (
    AttestationClaims,
    AuditReport,
    Chipmaker,
    FirmwarePolicy,
    audit_log,
    verify_attestation,
)
from computewatch.chip.chipmaker import check_serial
from computewatch.chip.errors import BootError
from computewatch.cli._common import (
    EXIT_FINDING,
    EXIT_UNUSABLE,
    FLAG,
    Command,
    Group,
    check_output_dir,
    check_output_file,
    fail,
    guard,
    print_json,
    write_output,
)
from computewatch.cli._common import (
    err as _err,
)
from computewatch.cli._common import (
    out as _out,
)
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.formats.attestation import BundleFormatError
from computewatch.formats.chip_entry import LogEntry, envelope_from_obj, split_log
from computewatch.formats.firmware import MAX_SNAPSHOTS_PER_DAY
from computewatch.formats.identity import verify_chip_certificate

__all__ = ["app", "print_audit_report"]

app = typer.Typer(no_args_is_help=True, cls=Group)

JsonOption = Annotated[bool, typer.Option("--json", metavar=FLAG, help="Machine-readable output (also on failure).")]
_TRUST_CHIP_COPY_NOTE = (
    "the chipmaker root was taken from the chip's own folder (--trust-chip-copy): whoever holds the chip can "
    "replace it, so this audit shows internal consistency, not that a genuine chipmaker made the chip"
)


def _nonce(text: str, as_json: bool = False) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        fail(f"--nonce {text!r} is not hex", as_json=as_json)
    if len(raw) < 8:
        fail("--nonce must be at least 8 bytes (16 hex digits) of fresh randomness", as_json=as_json)
    return raw


def _chip_dir(state_dir: Path, as_json: bool = False) -> Path:
    if not state_dir.is_dir():
        fail(f"{state_dir} is not a folder (a chip state directory holds certificate.json and sealed/)", as_json=as_json)
    if not (state_dir / "certificate.json").is_file():
        fail(f"{state_dir} is not a chip state directory: it has no certificate.json", as_json=as_json)
    return state_dir


@app.command(cls=Command)
def manufacture(
    out: Annotated[Path, typer.Option("--out", help="State directory of the new chip (must not exist yet, or be empty).")],
    serial: Annotated[
        str | None, typer.Option(help="Serial to burn in: 1-64 letters, digits, '-', '_' (default: random).")
    ] = None,
    chipmaker_key: Annotated[
        Path | None,
        typer.Option(help="Chipmaker private key (PEM); default: OUT's sibling chipmaker/ folder, created if missing."),
    ] = None,
    snapshots_per_day: Annotated[
        float,
        typer.Option(
            min=0.0, max=MAX_SNAPSHOTS_PER_DAY, help="Snapshot rate f in the signed firmware policy (per busy day)."
        ),
    ] = 0.1,
) -> None:
    """Manufacture a chip: burn in serial and device key, certify, install logging firmware.

    All or nothing: the chip appears at OUT complete, or not at all."""
    with guard():
        # Every option first: nothing (key, folder) is made for a command that would fail.
        if serial is not None:
            check_serial(serial)
        policy = FirmwarePolicy(snapshots_per_day=snapshots_per_day)
    check_output_dir(out, may_exist=False)
    with guard():
        if chipmaker_key is not None:
            maker = Chipmaker(SigningKey.load(chipmaker_key))
        else:
            folder = out.resolve().parent / "chipmaker"
            existed = (folder / "chipmaker.key").exists()
            maker = Chipmaker.load_or_create(folder)
            verb = "using the existing" if existed else "created a new"
            _out.print(f"{verb} chipmaker key in {folder}/chipmaker.key (public key: {folder}/chipmaker.pub)")
        from computewatch.chip.chip import Chip, manufacture_chip  # the simulator loads torch: only here

        state = manufacture_chip(maker, out, maker.sign_firmware(policy), serial=serial)
        chip = Chip.open(state)
    _out.print(f"chip {chip.serial} manufactured in {state}")


@app.command(cls=Command)
def attest(
    state_dir: Annotated[Path, typer.Argument(help="Chip state directory.")],
    nonce: Annotated[str, typer.Option(help="Verifier's fresh challenge, hex (at least 16 digits).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the evidence bundle (JSON); never overwritten.")],
    force: Annotated[bool, typer.Option("--force", metavar=FLAG, help="Replace an existing --out file.")] = False,
) -> None:
    """Boot the chip, write attestation evidence answering NONCE, and stop the chip cleanly.

    This changes the chip: its log gains the boot, a schedule epoch and the clean stop
    (shutdown and a final checkpoint), and its boot counter goes up."""
    raw = _nonce(nonce)
    _chip_dir(state_dir)
    check_output_file(out, overwrite=force, force="--force")
    with guard():
        from computewatch.chip.chip import Chip

        chip = Chip.open(state_dir)
        try:
            chip.boot()
        except BootError as exc:  # verified boot refused the firmware: a finding about the chip
            fail(f"chip {chip.serial} refuses to boot: {exc}", EXIT_FINDING)
        try:
            bundle = chip.attest(raw)
        finally:
            chip.close()
    write_output(out, bundle)
    _out.print(f"evidence for chip {chip.serial} written to {out}")
    for problem in chip.log_damage:
        _err.print(f"[yellow]the chip reports log damage:[/yellow] {escape(problem)}")


def _print_claims(claims: AttestationClaims) -> None:
    concerns = claims.concerns
    status = "[green]ok[/green]" if not concerns else "[red]FAILED[/red]"
    _out.print(
        f"{status}: chip {claims.serial} ({claims.model}), firmware {claims.firmware_version} "
        f"(security version {claims.security_version}), boot {claims.boot}, log size {claims.log_size}, "
        f"tamper {'SET' if claims.tamper else 'clear'}, log damage {'REPORTED' if claims.log_damage else 'none'}"
    )
    for concern in concerns:
        _out.print(f"  [red]the chip reports[/red]: {escape(concern)}")


@app.command("verify-attestation", cls=Command)
def verify_attestation_cmd(
    evidence: Annotated[Path, typer.Argument(help="Evidence bundle written by `chip attest`.")],
    nonce: Annotated[str, typer.Option(help="The challenge you issued, hex.")],
    chipmaker_pub: Annotated[Path, typer.Option(help="Chipmaker root public key (PEM) you trust.")],
    serial: Annotated[
        str | None, typer.Option(help="The chip you expect: evidence from any other chip is refused.")
    ] = None,
    min_security_version: Annotated[int | None, typer.Option(min=0, help="Refuse older firmware.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Verify evidence: chain to the chipmaker root, nonce, firmware measurement, chip serial.

    Exit status 1 when the evidence fails a check, or verifies but the chip reports tampering
    or damage to its log."""
    raw = _nonce(nonce, as_json)
    with guard(as_json=as_json):
        if serial is not None:
            check_serial(serial)
        root = VerifyKey.load(chipmaker_pub)
        data = evidence.read_bytes()
    try:
        claims = verify_attestation(data, raw, root, min_security_version=min_security_version, expected_serial=serial)
    except BundleFormatError as exc:
        fail(f"{evidence}: {exc}", EXIT_UNUSABLE, as_json=as_json, doc={"ok": False})
    except ComputewatchError as exc:
        fail(str(exc), EXIT_FINDING, as_json=as_json, doc={"ok": False})
    ok = not claims.concerns
    if as_json:
        print_json({"ok": ok, "claims": claims.to_json(), "concerns": claims.concerns})
    else:
        _print_claims(claims)
    if not ok:
        fail(f"the evidence verifies, but chip {claims.serial} reports: {'; '.join(claims.concerns)}", EXIT_FINDING)


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
    if e.kind == "tamper":
        return str(b["reason"])
    return ""


@app.command("show-log", cls=Command)
def show_log(state_dir: Annotated[Path, typer.Argument(help="Chip state directory.")]) -> None:
    """List the entries of a chip's log (read-only; nothing is verified here: see verify-log)."""
    _chip_dir(state_dir)
    path = state_dir / "log" / "chip.log"
    try:
        lines, torn = split_log(path.read_bytes()) if path.exists() else ([], 0)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    table = Table(title=f"chip log {path} (not verified)")
    for col in ("#", "boot", "kind", "clock s", "busy s", "detail"):
        table.add_column(col)
    for i, line in enumerate(lines):
        try:
            e = LogEntry.from_line(line)
        except ComputewatchError as exc:
            table.add_row(str(i), "", "[red]malformed[/red]", "", "", escape(str(exc)))
            continue
        try:
            detail = escape(_summary(e))
        except (KeyError, TypeError, IndexError):
            detail = "[red](body malformed)[/red]"
        table.add_row(str(e.counter), str(e.boot), e.kind, _seconds(e.clock_ns), _seconds(e.busy_ns), detail)
    _out.print(table)
    if not lines:
        _out.print("[yellow]the log holds no entries[/yellow]")
    if torn:
        _out.print(f"[yellow]torn tail: {torn} bytes after the last complete entry[/yellow]")


def print_audit_report(console: Console, report: AuditReport) -> None:
    """One status line for a chip-log audit, then every problem, note and unchecked matter."""
    status = "[green]ok[/green]" if report.ok else "[red]FAILED[/red]"
    console.print(
        f"{status}: chip {report.serial}, {report.entries} entries (ends: {report.end}), {report.snapshots} snapshots, "
        f"{report.epochs_checked} schedule epochs checked against their reveals"
    )
    for p in report.problems:
        where = "log" if p.entry is None else f"entry {p.entry}"
        console.print(f"  [red]{where}[/red]: {escape(p.problem)}")
    for w in report.warnings:
        where = "log" if w.entry is None else f"entry {w.entry}"
        console.print(f"  [yellow]note ({where})[/yellow]: {escape(w.problem)}")
    for n in report.not_checked:
        console.print(f"  [yellow]not checked[/yellow]: {escape(n)}")


def _evidence_head(path: Path, serial: str, root: VerifyKey, as_json: bool) -> tuple[int, bytes]:
    """The signed log head of an evidence bundle (its chain verified; freshness does not matter
    here: an old head is exactly what the log must still extend)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read --evidence {path}: {exc.strerror}", as_json=as_json)
    try:
        env = envelope_from_obj(json.loads(data)["evidence"], "evidence")
        claimed = bytes.fromhex(json.loads(env.payload)["predicate"]["nonce"])
    except (ComputewatchError, ValueError, KeyError, TypeError, RecursionError):
        fail(f"--evidence {path}: not an evidence bundle", as_json=as_json)
    try:
        claims = verify_attestation(data, claimed, root, expected_serial=serial)
    except BundleFormatError as exc:
        fail(f"--evidence {path}: {exc}", as_json=as_json)
    except ComputewatchError as exc:
        fail(f"--evidence {path}: {exc}", EXIT_FINDING, as_json=as_json)
    return claims.log_size, claims.log_root


@app.command("verify-log", cls=Command)
def verify_log(
    state_dir: Annotated[Path, typer.Argument(help="Chip state directory (certificate.json, log/chip.log).")],
    chipmaker_pub: Annotated[
        Path | None, typer.Option(help="Chipmaker root public key (PEM) you trust; required unless --trust-chip-copy.")
    ] = None,
    trust_chip_copy: Annotated[
        bool,
        typer.Option(
            "--trust-chip-copy",
            metavar=FLAG,
            help="Trust the chipmaker key found in the chip's own folder (whoever holds the chip can replace it).",
        ),
    ] = False,
    log: Annotated[Path | None, typer.Option(help="Audit this log file instead (e.g. a receiver's copy).")] = None,
    evidence: Annotated[
        list[Path] | None,
        typer.Option(help="Evidence bundle seen earlier (repeatable): the log must extend its signed tree head."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Audit a chip log offline against the chipmaker root you pin.

    The log must verify entry by entry and end in a checkpoint over all its entries (a clean
    stop, or an inspection); exit status 1 otherwise. What the audit cannot see without a tree
    head seen earlier (--evidence) is listed as "not checked"."""
    if chipmaker_pub is None and not trust_chip_copy:
        fail(
            "give the chipmaker root you trust (--chipmaker-pub FILE); --trust-chip-copy would trust the copy in "
            f"{state_dir / 'chipmaker.pub'}, which whoever holds the chip can replace",
            as_json=as_json,
        )
    if chipmaker_pub is not None and trust_chip_copy:
        fail("--chipmaker-pub and --trust-chip-copy exclude each other: choose one root", as_json=as_json)
    _chip_dir(state_dir, as_json)
    if log is not None and not log.is_file():
        fail(f"--log {log}: no such file", as_json=as_json)
    with guard(as_json=as_json):
        root = VerifyKey.load(chipmaker_pub if chipmaker_pub is not None else state_dir / "chipmaker.pub")
        from computewatch.chip.chip import load_certificate

        cert_envelope = load_certificate(state_dir)
    try:
        cert = verify_chip_certificate(cert_envelope, root)
    except ComputewatchError as exc:
        fail(f"the chip certificate does not verify under the given chipmaker root: {exc}", EXIT_FINDING, as_json=as_json)
    heads = [_evidence_head(path, cert.serial, root, as_json) for path in evidence or []]
    with guard(as_json=as_json):
        path = log if log is not None else state_dir / "log" / "chip.log"
        # A chip's missing log and an empty one get the same answer: no entry vouches for the chip.
        data = path.read_bytes() if log is not None or path.exists() else b""
    report = audit_log(data, cert, root, known_heads=heads, require_end=True)
    if trust_chip_copy:
        report.not_checked.append(_TRUST_CHIP_COPY_NOTE)
    if as_json:
        print_json(report.to_json())
    else:
        print_audit_report(_out, report)
    if not report.ok:
        first = report.problems[0]
        where = "log" if first.entry is None else f"entry {first.entry}"
        fail(f"chip {cert.serial}: the log fails the audit ({len(report.problems)} problem(s); first, {where}: {first.problem})", EXIT_FINDING)
