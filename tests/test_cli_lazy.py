"""Start-up without torch: the command line loads a command group only when it runs, and the
light parts of the library (byte hashing, the chip-log auditor, the policy engine, the service)
do not import torch or the chip simulator. Start-up times: benchmarks/cli_startup.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import typer.main
from typer.testing import CliRunner

from computewatch.cli import app
from computewatch.cli._lazy import LazyGroup

_SRC = str(Path(__file__).resolve().parents[1] / "src")

# Each command runs in one fresh interpreter, in order; after each, the child reports whether
# torch (or the chip simulator) is loaded, so a failure names the first command that loaded it.
_CHILD = """
import json, sys
from computewatch.cli import app
seen = []
for args in json.loads(sys.argv[1]):
    try:
        app(args, prog_name="computewatch", standalone_mode=False)
    except SystemExit:
        pass
    seen.append([" ".join(args), "torch" in sys.modules, "computewatch.chip.chip" in sys.modules, "matplotlib" in sys.modules])
print(json.dumps(seen))
"""


def _run_child(code: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_light_commands_start_without_torch(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'register.db'}"
    commands = [
        ["--help"],
        ["sampling", "table1"],
        ["attack", "list"],
        ["registry", "--help"],
        ["registry", "init", "--db", db],
        ["registry", "list", "chips", "--db", db],
        ["chip", "--help"],
        ["landmark", "--help"],
    ]
    seen = json.loads(_run_child(_CHILD, json.dumps(commands)).splitlines()[-1])
    assert [s[0] for s in seen] == [" ".join(c) for c in commands]
    for command, torch_loaded, simulator_loaded, matplotlib_loaded in seen:
        assert not torch_loaded, f"`computewatch {command}` imported torch"
        assert not simulator_loaded, f"`computewatch {command}` imported the chip simulator"
        assert not matplotlib_loaded, f"`computewatch {command}` imported matplotlib"


def test_auditor_policy_engine_and_service_import_neither_torch_nor_the_simulator() -> None:
    code = (
        "import sys\n"
        "import computewatch.crypto as c, computewatch.chip as chip\n"
        "from computewatch.crypto import blake3_bytes, sha256_bytes, Region, shard_digest\n"
        "from computewatch.chip import audit_log, LogEntry, verify_attestation\n"
        "import computewatch.formats.chip_audit, computewatch.verifier.rules, computewatch.service.app\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('computewatch.chip.')))\n"
    )
    assert _run_child(code).strip() == "[]"


def test_the_command_list_without_loading_shows_what_each_command_says_of_itself() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, LazyGroup)
    ctx = root.make_context("computewatch", [], resilient_parsing=True)
    listed = root.list_commands(ctx)
    assert listed == list(LazyGroup.lazy)
    for name in listed:
        command = root.get_command(ctx, name)  # loads it
        assert command is not None and command.name == name
        assert (command.short_help or command.help) == LazyGroup.lazy[name].help, name
    assert root.get_command(ctx, "no-such-command") is None


def test_a_command_runs_the_same_whichever_group_loaded_first() -> None:
    runner = CliRunner()
    text = runner.invoke(app, ["registry", "--help"], env={"COLUMNS": "200"}).stdout
    order = [line.split()[1] for line in text.splitlines() if line.startswith("│ ") and len(line.split()) > 1]
    # `registry exposure` sits before the location commands, as it did when every group was imported up front
    assert order.index("exposure") < order.index("add-landmark") < order.index("locate")
    unknown = runner.invoke(app, ["no-such-command"])
    assert unknown.exit_code == 2 and "No such command" in unknown.output
