"""`computewatch demo`: the whole chain in one command, fab to verdict (docs/demo.md).

A thin layer over `computewatch.demo.run_demo`: it checks the options, shows the narrative
(steps on stdout, progress on stderr; with --json everything but the JSON goes to stderr),
prints a verdict per Prover with its evidence and the commands that inspect the world it leaves.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from computewatch.cli._common import (
    EXIT_FINDING,
    EXIT_OK,
    FLAG,
    err,
    fail,
    guard,
    out,
    print_json,
    progress,
)

__all__ = ["demo"]


class _Hooks:
    """The demo's narrative on a console; progress bars always on stderr."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def step(self, title: str) -> None:
        self.console.print(f"\n[bold cyan]{escape(title)}[/bold cyan]", highlight=False)

    def say(self, text: str) -> None:
        self.console.print(escape(text), highlight=False)

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        with progress(description, total) as update:
            yield update


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first(detail: str) -> str:
    """The first finding of a check's detail (the Verifier joins up to six with '; ')."""
    items = detail.split("; ")
    more = len(items) - 1
    if items[-1].startswith("and ") and items[-1].endswith(" more"):
        more = len(items) - 2 + int(items[-1].split()[1])
    return _short(items[0], 200) + (f" (and {more} more)" if more > 0 else "")


def _print_verdicts(console: Console, result: Any) -> None:
    table = Table(title="Verdict per Prover")
    for col in ("Prover", "verdict", "failed checks", "snapshots unexplained", "explained / logged"):
        table.add_column(col, overflow="fold")
    colour = {"compliant": "green", "violation": "red", "inconclusive": "yellow"}
    for p in result.provers:
        failed = ", ".join(v["check"] for v in p.violations) or "none"
        c = colour.get(p.verdict, "white")
        missing = p.snapshots_logged - p.snapshots_explained
        table.add_row(p.name, f"[bold {c}]{escape(p.verdict)}[/bold {c}]", escape(failed),
                      f"[red]{missing}[/red]" if missing else "0", f"{p.snapshots_explained} / {p.snapshots_logged}")
    console.print(table)
    for p in result.provers:
        flops = "unknown" if p.total_flops is None else f"{p.total_flops:.2e} FLOPs = {p.total_flops / result.policy_threshold:.2f} H"
        console.print(f"{escape(p.name)}: runs handed over {flops}; the register's queue: {p.queue['explained']} "
                      f"explained, {p.queue['unexplained']} unexplained", highlight=False)
    for p in result.provers:
        for v in p.violations:
            console.print(f"{escape(p.name)} [red]{escape(v['check'])}[/red]: {escape(_first(v['detail']))}", highlight=False)
        for v in p.undecided:  # memorization is advisory (docs/verifier.md): not shown here
            if v["check"] != "memorization" and not v["detail"].startswith("not run"):
                console.print(f"{escape(p.name)} [yellow]{escape(v['check'])} (undecided)[/yellow]: {escape(_first(v['detail']))}", highlight=False)


def _print_hidden(console: Console, result: Any) -> None:
    for p in result.provers:
        for r in p.runs:
            if not r.submitted:
                console.print(
                    f"What {escape(p.name)} hid (the Verifier never saw it): run {escape(r.run_id)}, {r.size.steps} steps "
                    f"of the {escape(r.size.preset)} model on {escape(', '.join(r.serials))}, transcript in "
                    f"{escape(str(r.run_dir))}. {'Its chip' if len(r.serials) == 1 else 'Its chips'} logged the run's "
                    "precommitment and snapshots anyway.",
                    highlight=False,
                )


def _commands(result: Any) -> list[str]:
    root = result.root
    db = f"sqlite:///{root / 'registry.db'}"
    run = next(p for p in result.provers if p.name == "prover-a").runs[0]
    evidence = [str(root / "verifier" / "evidence" / s) for s in run.serials]
    q = shlex.quote
    return [
        f"computewatch registry list chips --db {q(db)}",
        f"computewatch registry show {q(run.serials[0])} --db {q(db)}",
        f"computewatch registry list runs --db {q(db)}",
        f"computewatch registry list queue --status unexplained --db {q(db)}",
        f"computewatch inspect status {result.plan.get('plan', 1)} --db {q(db)}",
        f"computewatch verify {q(str(run.run_dir))} --chips {' '.join(q(e) for e in evidence)} --db {q(db)} "
        f"--policy {q(str(root / 'verifier' / 'policy.toml'))} --html {q(str(root / 'verifier' / 'again.html'))}",
    ]


def _check_workdir(path: Path, as_json: bool) -> None:
    """A new or empty folder whose nearest existing ancestor is writable (before anything runs)."""
    if path.is_symlink() and not path.is_dir():  # a loop or a dangling link: mkdir would fail later
        fail(f"--workdir {path} is a symbolic link{' that leads nowhere' if not path.exists() else ''}; give a folder", as_json=as_json)
    if path.exists() and not path.is_dir():
        fail(f"--workdir {path} is a file, not a folder", as_json=as_json)
    if path.is_dir() and any(path.iterdir()):
        fail(f"--workdir {path} exists and is not empty; choose a new folder", as_json=as_json)
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        fail(f"--workdir {path}: folder {probe} is not writable", as_json=as_json)


def demo(
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Build the world in this new (or empty) folder and keep it. Default: a new temporary folder, also kept; its path is printed."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", metavar=FLAG, help='Print {"provers": [{"name", "verdict", "violations"}], "report": PATH} on stdout; the narrative goes to stderr.'),
    ] = False,
    steps: Annotated[int, typer.Option("--steps", min=2, max=200, hidden=True, help="Steps of Prover A's run (tests shrink it).")] = 20,
    chip_secret_seed: Annotated[
        str, typer.Option("--chip-secret-seed", hidden=True, help="Derive the chips' secrets from this text (reproducible snapshot schedules; tests).")
    ] = "",
) -> None:
    """Run the whole chain on embedded defaults (SQLite, local files, CPU): a fab and a chipmaker
    make and register chips; custody passes to Provers A and B; A trains honestly on 4 chips
    (torch.distributed, one rank per chip); B hides a covert run; the Verifier commits an
    inspection plan, inspects the chips, demands an explanation of every logged snapshot,
    checks the transcripts in the trusted cluster, applies examples/policies/demo.toml and
    writes an HTML report. Creates files (the world) and runs training. Exit 0 when A is found
    compliant and B in violation, 1 otherwise, 2 on unusable input (e.g. a --workdir that is not
    empty)."""
    from computewatch.demo import DemoOptions, run_demo

    if workdir is not None:
        _check_workdir(workdir, as_json)
        root = workdir.resolve()  # the commands it prints and the Verifier's jobs run elsewhere
    else:
        root = Path(tempfile.mkdtemp(prefix="computewatch-demo-"))
    console = err if as_json else out
    hooks = _Hooks(console)
    console.print(f"computewatch demo: the world is built in {escape(str(root))}", highlight=False)
    with guard(EXIT_FINDING, as_json=as_json):
        result = run_demo(root, DemoOptions(steps=steps, chip_secret_seed=chip_secret_seed.encode() or None), hooks)
    hooks.step("7. Verdicts")
    _print_verdicts(console, result)
    _print_hidden(console, result)
    console.print(f"report: {escape(str(result.report))} (per Prover: "
                  + ", ".join(escape(str(p.report_file)) for p in result.provers) + ")", highlight=False)
    console.print(f"the world stays in {escape(str(root))}; look at it with:", highlight=False)
    for line in _commands(result):
        console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
    console.print("done in " + ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items()), highlight=False)
    if as_json:
        print_json(result.to_json())
    if not result.as_expected:
        got = ", ".join(f"{p.name} {p.verdict}" for p in result.provers)
        line = " ".join(f"the demo's verdicts are not the expected ones (prover-a compliant, prover-b violation): {got}".split())
        err.print(f"[red]error:[/red] {escape(line)}")
        raise typer.Exit(EXIT_FINDING)
    raise typer.Exit(EXIT_OK)
