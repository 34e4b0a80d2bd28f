"""`computewatch verify`: the Verifier's verdict on runs, from the logs of inspected chips."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from computewatch.cli._common import (
    EXIT_FINDING,
    EXIT_UNUSABLE,
    Command,
    available_cores,
    check_register,
    fail,
    out,
    print_json,
    stage_progress,
)
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import VerifyKey

__all__ = ["EXIT_INCONCLUSIVE", "VerifyCommand", "verify"]

EXIT_INCONCLUSIVE = 3
_EXIT = {"compliant": 0, "violation": EXIT_FINDING, "inconclusive": EXIT_INCONCLUSIVE}
_GREEDY = ("--chips",)


class _Mode(str, enum.Enum):  # noqa: UP042 (StrEnum would change how the members format)
    exact = "exact"
    tolerance = "tolerance"


class VerifyCommand(Command):
    """Lets `--chips DIR [DIR ...]` take every value up to the next option."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's or click's Context
        out_args: list[str] = []
        greedy: str | None = None
        for arg in args:
            if arg.startswith("-"):
                greedy = arg if arg in _GREEDY else None
                if greedy is None:
                    out_args.append(arg)
                continue
            if greedy is not None:
                out_args.extend([greedy, arg])
                continue
            out_args.append(arg)
        return super().parse_args(ctx, out_args)


def _key(path: Path, what: str, as_json: bool) -> VerifyKey:
    try:
        return VerifyKey.load(path)
    except ComputewatchError as exc:
        fail(f"{what} {path}: {exc}", as_json=as_json)


def _seed(text: str | None, as_json: bool) -> bytes:
    from computewatch.verifier.selection import parse_seed

    if text is None:
        return os.urandom(32)
    try:
        return parse_seed(text)
    except ValueError as exc:
        fail(f"--seed: {exc}", as_json=as_json)


def _segments(text: str, as_json: bool) -> int | str | None:
    """None for `auto`: as many random segments as reach the default forgery-detection target."""
    if text == "auto":
        return None
    if text == "all":
        return "all"
    if text.isdigit() and int(text) <= 1_000_000:
        return int(text)
    fail(f"--segments must be 'auto', a number of random segments (0..1000000) or 'all', got {text!r}", as_json=as_json)


def _from_registry(url: str, as_json: bool) -> dict[str, Any]:
    """Prover keys, chipmaker roots and witnessed tree heads from the register."""
    try:
        from computewatch.registry import Registry

        check_register(url, as_json=as_json)
        from computewatch.verifier.binding import register_bindings

        reg = Registry.open(url)
        # The register's declared runs bind (owner key, run id, precommitment): a run whose id
        # another owner holds is a finding (issue 18).
        return {**reg.verifier_trust(), "held_runs": register_bindings(reg)}
    except ComputewatchError as exc:
        fail(f"--db {url}: {exc}", as_json=as_json)


def _print_human(doc: dict[str, Any], html: Path | None) -> None:
    colour = {"compliant": "green", "violation": "red", "inconclusive": "yellow"}[doc["verdict"]]
    out.print(f"verdict: [bold {colour}]{doc['verdict']}[/bold {colour}]")
    table = Table(show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in doc["checks"]:
        status = c.get("status") or {True: "passed", False: "failed", None: "undecided"}[c["passed"]]
        mark = {"passed": "[green]passed[/green]", "failed": "[red]FAILED[/red]", "undecided": "[yellow]undecided[/yellow]", "not-run": "[dim]not run[/dim]"}[status]
        table.add_row(c["name"], mark, c["detail"])
    out.print(table)
    snaps = doc["snapshots"]
    out.print(f"snapshots explained: {snaps['explained']} of {snaps['logged']} logged")
    if doc["total_flops"] is not None:
        out.print(f"training compute: {doc['total_flops']:.3e} FLOPs; verification replayed {doc['verification_flops']:.3e} FLOPs")
    sel = doc["selection"]
    out.print(f"segments replayed: {sel['segments_replayed']} of {sel['segments_total']} (seed commitment {sel['seed_commitment']}, seed {sel['seed']})")
    for rid, det in (sel.get("forgery_detection") or {}).items():
        out.print(f"run {rid}: a single forged segment among {det['eligible']} eligible is caught with probability {det['one_segment_forgery_detection']:.2f} ({det['random']} random draw(s))")
    spot = doc.get("spot_checks")
    if spot:
        share = f"{spot['cost_share']:.3%}" if spot["cost_share"] is not None else "unknown"
        out.print(f"step challenges: {spot['passed']} of {spot['drawn']} drawn steps passed, {spot['replayed_steps']} replayed ({share} of the training FLOPs)")
    for loc in doc.get("localized") or []:
        out.print(f"localized: run {loc['run']} step {loc['step']} operator {loc.get('operator')} (index {loc.get('operator_index')}, {loc.get('rounds')} rounds)")
    out.print(f"isolation: {doc['isolation']}")
    if html is not None:
        out.print(f"report: {html}")


def verify(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (the Prover's transcripts).", show_default=False)],
    chips: Annotated[list[Path], typer.Option("--chips", help="Inspected chip state directories, or folders of them (DIR [DIR ...]).", show_default=False)],
    chipmaker_pub: Annotated[list[Path] | None, typer.Option("--chipmaker-pub", help="Pinned chipmaker root public key (PEM); repeatable.")] = None,
    prover_pub: Annotated[list[Path] | None, typer.Option("--prover-pub", help="Pinned Prover public key (PEM); repeatable.")] = None,
    db: Annotated[str | None, typer.Option("--db", help="Registry database URL: Prover keys, chipmaker roots and witnessed tree heads come from it.")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="Rules to apply (TOML, docs/rules.md).")] = None,
    mode: Annotated[_Mode, typer.Option("--mode", help="exact (bit-identical CPU replay) or tolerance (calibrated epsilon).")] = _Mode.exact,
    segments: Annotated[str, typer.Option("--segments", help="Random segments to replay besides the snapshot and top-Q ones: 'auto' (enough that a single forged segment is caught with probability 0.5 per verification), N, or 'all'.")] = "auto",
    seed: Annotated[str | None, typer.Option("--seed", help="Verifier's secret for segment and data selection (default: fresh randomness); revealed in the report.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, max=1024, help="Tolerance mode: replay with this many threads.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, max=256, help="Sandboxed executors at once on this machine (runs at once, and a long run's segments); default: this machine's cores.")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Run the cluster jobs on this Ray cluster ('local' starts one here).")] = None,
    data: Annotated[list[str] | None, typer.Option("--data", help="RUN_ID=DIR: the Prover's raw data folder for a run whose program reads files; repeatable.")] = None,
    responses: Annotated[list[Path] | None, typer.Option("--responses", help="A step-challenge response folder (`computewatch respond`); repeatable. Its challenge must carry the tag of --seed's secret.")] = None,
    unsafe_no_sandbox: Annotated[bool, typer.Option("--unsafe-no-sandbox", help="Run the Prover's program without the bubblewrap sandbox (it can then read this machine's files and reach its network); the verdict's isolation says so.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write the self-contained HTML report here.")] = None,
) -> None:
    """Verify runs: explain every snapshot the inspected chips logged, check the transcripts (PoTT)
    in a trusted cluster, count the compute, apply the rules. Exit 0 compliant, 1 violation,
    2 unusable input, 3 inconclusive."""
    # Paths are resolved here, before anything runs elsewhere: relative paths mean this folder.
    runs = [r.resolve() for r in runs]
    chips = [c.resolve() for c in chips]
    for r in runs:
        if not os.path.lexists(r / "manifest.dsse.json"):  # a manifest that is not a regular file is the Prover's finding
            fail(f"{r}: not a transcript (no manifest.dsse.json)", as_json=as_json)
    if html is not None and (html.is_dir() or not html.parent.is_dir()):
        fail(f"--html {html}: not a writable file path (is it a folder, or does its folder not exist?)", as_json=as_json)
    trust: dict[str, Any] = _from_registry(db, as_json) if db else {"prover_keys": [], "chipmaker_roots": [], "known_heads": {}}
    roots = [_key(p, "--chipmaker-pub", as_json) for p in chipmaker_pub or []] + list(trust["chipmaker_roots"])
    provers = [_key(p, "--prover-pub", as_json) for p in prover_pub or []] + list(trust["prover_keys"])
    if not roots:
        fail("no chipmaker root pinned: give --chipmaker-pub FILE (or --db with registered chipmakers)", as_json=as_json)
    if not provers:
        fail("no Prover key pinned: give --prover-pub FILE or --db URL (a key found beside the evidence is never trusted)", as_json=as_json)
    policy_text = None
    if policy is not None:
        try:
            raw = policy.read_bytes()
            from computewatch.verifier.rules import Policy

            Policy.from_bytes(raw, source=str(policy))
            policy_text = raw.decode("utf-8")
        except OSError as exc:
            fail(f"--policy {policy}: cannot read ({exc.strerror})", as_json=as_json)
        except ComputewatchError as exc:
            fail(f"--policy {policy}: {exc}", as_json=as_json)
    data_dirs = {}
    for item in data or []:
        run_id, sep, folder = item.partition("=")
        if not sep or not run_id or not Path(folder).is_dir():
            fail(f"--data {item!r}: expected RUN_ID=DIR with an existing folder", as_json=as_json)
        data_dirs[run_id] = str(Path(folder).resolve())
    if not unsafe_no_sandbox:
        from computewatch.verifier.sandbox import sandbox_problem

        problem = sandbox_problem()
        if problem is not None:
            fail(f"cannot sandbox the Prover's program: {problem}; refusing to replay (--unsafe-no-sandbox runs it unconfined)", EXIT_UNUSABLE, as_json=as_json)
    if responses and seed is None:
        fail("--responses needs --seed: the secret the challenges were drawn with (64 hex digits, as in the --seed-file of `challenge`)", as_json=as_json)
    for answered in responses or []:
        if not (answered / "response.json").is_file():
            fail(f"--responses {answered}: not a response folder (no response.json)", as_json=as_json)
    options: dict[str, Any] = {
        "runs": runs, "chips": chips, "chipmaker_roots": roots, "prover_keys": provers, "seed": _seed(seed, as_json),
        "known_heads": trust["known_heads"], "policy_text": policy_text, "mode": mode.value, "segments": _segments(segments, as_json),
        "threads": threads, "ray_address": ray_address, "workers": workers or available_cores(), "data_dirs": data_dirs,
        "responses": [str(r.resolve()) for r in responses or []], "held_runs": trust.get("held_runs", ()),
        "sandbox": not unsafe_no_sandbox,
    }
    # The executors start now, before the judge loads torch and stages the runs: their start-up
    # (seconds of imports) overlaps the judge's own. Each serves one run only.
    warm = _warm_pool(runs, options["workers"], sandbox=not unsafe_no_sandbox, ray=ray_address is not None, as_json=as_json)
    try:
        _verify_and_print(options, warm, html, as_json)
    finally:
        if warm is not None:
            warm.close()


def _warm_pool(runs: list[Path], workers: int, *, sandbox: bool, ray: bool, as_json: bool) -> Any:
    """The executors every run examined at once may spread its replays over (none for Ray: its
    tasks run elsewhere), started now (`cluster.warm_executors`); more start on demand."""
    if ray:
        return None
    from computewatch.verifier.cluster import ClusterError, WarmPool, segments_hint, warm_executors

    try:
        return WarmPool(warm_executors(len(runs), workers, [segments_hint(r) for r in runs]), sandbox=sandbox)
    except ClusterError as exc:
        fail(str(exc), EXIT_UNUSABLE, as_json=as_json)


def _verify_and_print(options: dict[str, Any], warm: Any, html: Path | None, as_json: bool) -> None:
    from computewatch.verifier import EvidenceError, VerifyRequest
    from computewatch.verifier import verify as run_verify

    request = VerifyRequest(**options, warm=warm)
    report, stages = stage_progress()  # a bar per stage on a terminal, lines (and a heartbeat) elsewhere
    try:
        with stages:
            doc = run_verify(request, report)
    except (EvidenceError, ValueError) as exc:
        fail(str(exc), EXIT_UNUSABLE, as_json=as_json)
    except ComputewatchError as exc:
        fail(str(exc), EXIT_UNUSABLE, as_json=as_json)
    except Exception as exc:  # a bug of ours must still end in one line, and in no verdict
        fail(f"verification stopped on an internal error, nothing was judged: {type(exc).__name__}: {exc}", EXIT_UNUSABLE, as_json=as_json)
    if html is not None:
        from computewatch.verifier.report import write_report

        try:
            write_report(doc, html)
        except OSError as exc:
            fail(f"--html {html}: cannot write the report ({exc.strerror})", EXIT_UNUSABLE, as_json=as_json)
        doc["report"] = str(html)
    if as_json:
        print_json(doc)
    else:
        _print_human(doc, html)
    raise typer.Exit(_EXIT[doc["verdict"]])
