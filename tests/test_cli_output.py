"""What the command line shows a person (docs/cli.md): tables that fit 80 columns (every column
with --wide), no Python reprs or "None" in cells, help without typer's `<bool>`, `<list[...]>`
or `<int range>` placeholders, `--version`, and progress that keeps talking during long work."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any

import pytest
import typer.main
from rich.console import Console
from typer.testing import CliRunner

from computewatch.cli import app
from computewatch.cli._common import progress

runner = CliRunner()
_REPR = re.compile(r"None|\['|\{'|\{\d+:|<bool>|list\[")


def _commands(cmd: Any = None, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    # Through list_commands/get_command: the root loads its command groups on demand (cli/_lazy.py).
    cmd = cmd if cmd is not None else typer.main.get_command(app)
    if hasattr(cmd, "list_commands"):
        ctx = cmd.make_context(path[-1] if path else "computewatch", [], resilient_parsing=True)
        return [p for name in cmd.list_commands(ctx) for p in _commands(cmd.get_command(ctx, name), (*path, name))]
    return [path]


def test_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"computewatch {version('computewatch')}"


def test_every_command_is_walked() -> None:
    # The parametrised help check below must see every command, not just the lazy root.
    from computewatch.cli._lazy import LazyGroup

    commands = _commands()
    assert {c[0] for c in commands} == set(LazyGroup.lazy) and len(commands) > 2 * len(LazyGroup.lazy)


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_help_shows_types_choices_and_flags_as_docs_cli_md_says(command: tuple[str, ...]) -> None:
    text = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).stdout
    assert "Usage:" in text
    assert not re.search(r"<bool>|<list\[|range>|<Path>", text), text
    for line in text.splitlines():
        if re.search(r"--json\b|--help\b|--force\b|--wide\b", line):
            assert not re.search(r"(--json|--help|--force|--wide)\s+<", line), line


def test_command_lists_show_one_sentence_per_command() -> None:
    text = runner.invoke(app, ["--help"], env={"COLUMNS": "80"}).stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    demo = next(line for line in text.splitlines() if "│ demo" in line)
    assert "Run the whole chain" in demo
    assert "Exit 0 when A is found" not in text  # the rest of a docstring stays on the command's own help


@pytest.mark.parametrize("what", ["chips", "parties", "lots", "plans", "queue", "runs", "investigations", "flags"])
def test_registry_listings_fit_80_columns_and_wide_shows_everything(demo_world: dict[str, Any], what: str) -> None:
    db = f"sqlite:///{demo_world['work'] / 'registry.db'}"
    status = ["--status", "unexplained"] if what == "queue" else []
    narrow = runner.invoke(app, ["registry", "list", what, *status, "--db", db], env={"COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 80, narrow.stdout
    assert not _REPR.search(narrow.stdout), narrow.stdout
    rows = runner.invoke(app, ["registry", "list", what, *status, "--db", db, "--json"]).stdout
    import json

    doc = json.loads(rows)
    if not doc:
        assert narrow.stdout.strip().startswith(f"{what}: none")
        return
    wide = runner.invoke(app, ["registry", "list", what, *status, "--db", db, "--wide"], env={"COLUMNS": "80"})
    header = " ".join(wide.stdout.split())
    for column in doc[0]:
        assert column.replace("_", " ") in header, (column, header)
    assert not _REPR.search(wide.stdout), wide.stdout
    for value in (v for row in doc for v in row.values() if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)):
        assert value in wide.stdout  # digests whole with --wide


def test_transcript_show_has_no_python_reprs(demo_world: dict[str, Any]) -> None:
    run = demo_world["work"] / "runs" / "prover-a" / "run-1"
    result = runner.invoke(app, ["transcript", "show", str(run)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert not _REPR.search(result.stdout), result.stdout
    assert "rank 0:" in result.stdout and max(len(line) for line in result.stdout.splitlines()) <= 80


def _wait_for(buffer: io.StringIO, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in buffer.getvalue():
        assert time.monotonic() < deadline, buffer.getvalue()
        time.sleep(0.01)


def test_progress_off_a_terminal_keeps_talking_and_says_when_it_ends() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=80)
    with progress("replay", 1, console=console, heartbeat_s=0.05, quiet_s=0.0) as update:
        _wait_for(buffer, "replay: still working after")  # one long unit of work: not silent
        assert "(0/1)" in buffer.getvalue()
        update(1)
        _wait_for(buffer, "replay: all 1 done, the next step still under way after")
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "replay: started (1 to do)" and lines[-1].startswith("replay: done after")
    buffer = io.StringIO()
    with pytest.raises(RuntimeError), progress("training", None, console=Console(file=buffer, force_terminal=False), quiet_s=0.0):
        raise RuntimeError("boom")
    assert buffer.getvalue().splitlines()[-1].startswith("training: stopped after")


def test_the_demo_world_commands_print_no_reprs(demo_world: dict[str, Any], tmp_path: Path) -> None:
    db = f"sqlite:///{demo_world['work'] / 'registry.db'}"
    serial = next(iter(__import__("json").loads(runner.invoke(app, ["registry", "list", "chips", "--db", db, "--json"]).stdout)))["serial"]
    for args in (["registry", "show", serial], ["inspect", "status"], ["inspect", "status", "1"]):
        result = runner.invoke(app, [*args, "--db", db], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        assert not _REPR.search(result.stdout), (args, result.stdout)
