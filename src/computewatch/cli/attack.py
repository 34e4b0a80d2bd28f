"""`computewatch attack ...`: the attack suite (docs/attacks.md).

`attack list` names every cheating Prover of `computewatch.adversary`; `attack run NAME` (or
`--all`) runs them end to end against the real checks. JSON (`--json`) is a list of
`{"attack", "paper_ref", "detected", "detected_by", "trials", "detection_rate",
"predicted_rate", ...}`. Exit status: 0 every attack behaved as documented (caught by its check,
or its measured rate agrees with the closed form); 1 an attack that must be caught was not (or
a measured rate disagrees with its prediction); 2 unusable input (unknown attack, bad
--trials or --seed).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from computewatch.cli._common import (
    EXIT_FINDING,
    FLAG,
    Command,
    Group,
    err,
    fail,
    guard,
    out,
    print_json,
    progress,
)

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, cls=Group)

JsonOption = Annotated[bool, typer.Option("--json", metavar=FLAG, help="Print JSON (also on failure).")]
_MAX_SEED = 2**63 - 1


@app.command("list", cls=Command)
def list_attacks(as_json: JsonOption = False) -> None:
    """Every attack of the suite: name, paper section, family, the check expected to catch it."""
    from computewatch.adversary.suite import attack_names, get_attack

    attacks = [get_attack(n) for n in attack_names()]
    if as_json:
        print_json([a.to_json() for a in attacks])
        return
    from rich.table import Table

    table = Table(title="computewatch attack suite")
    for col in ("attack", "family", "kind", "caught by", "paper"):
        table.add_column(col, no_wrap=col in ("attack", "caught by"))
    for a in attacks:
        table.add_row(a.name, a.family, a.kind, a.expected or "-", a.paper_ref)
    out.print(table)


@app.command("run", cls=Command)
def run(
    name: Annotated[str | None, typer.Argument(help="The attack to run (see `attack list`).", show_default=False)] = None,
    run_all: Annotated[bool, typer.Option("--all", metavar=FLAG, help="Run every attack of the suite.")] = False,
    trials: Annotated[int | None, typer.Option("--trials", help="Trials per attack (default: each attack's own; with --all capped at each attack's maximum).", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the attacks' randomness (>= 0).")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Run one attack (or --all) end to end and report whether, and by which check, it was caught."""
    from computewatch.adversary.suite import MAX_TRIALS, attack_names, get_attack
    from computewatch.adversary.suite import run_all as run_suite

    if (name is None) == (not run_all):
        fail("give exactly one of an attack NAME or --all", as_json=as_json)
    if not 0 <= seed <= _MAX_SEED:
        fail(f"--seed must be a whole number from 0 to {_MAX_SEED}, got {seed}", as_json=as_json)
    names = attack_names() if run_all else [str(name)]
    if not run_all:
        try:
            attack = get_attack(str(name))
        except KeyError as exc:
            fail(str(exc.args[0]), as_json=as_json)
        if trials is not None and not 1 <= trials <= attack.max_trials:
            fail(f"--trials for {attack.name} must be a whole number from 1 to {attack.max_trials}, got {trials}", as_json=as_json)
    elif trials is not None and not 1 <= trials <= MAX_TRIALS:
        fail(f"--trials must be a whole number from 1 to {MAX_TRIALS}, got {trials}", as_json=as_json)
    results: list[dict[str, Any]] = []
    with guard(as_json=as_json), progress("attacks", len(names)) as update:
        for result in run_suite(trials, seed, names=names, progress=lambda _n, done, _t: update(done)):
            results.append(result.to_json())
    if as_json:
        print_json(results)
    else:
        _print(results)
    bad = [r["attack"] for r in results if not r["ok"]]
    if bad:
        err.print(f"[red]error:[/red] not as documented: {', '.join(bad)}")
        raise typer.Exit(EXIT_FINDING)


def _print(results: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title="attacks", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("attack", "caught by", "trials", "rate", "predicted", "ok"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("trials", "rate", "predicted") else "left")
    for r in results:
        pred = "-" if r["predicted_rate"] is None else f"{r['predicted_rate']:.3f}"
        ok = "[green]ok[/green]" if r["ok"] else "[red]NO[/red]"
        if r["kind"] == "gap" and r["ok"]:
            ok = "[yellow]gap[/yellow]"
        table.add_row(r["attack"], r["detected_by"] or "-", str(r["trials"]), f"{r['detection_rate']:.3f}", pred, ok)
    out.print(table)
