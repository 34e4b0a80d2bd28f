"""Issue 12: the demo path needs only the core dependencies (`pip install -e .`), never an extra
(Triton alone is about 290 MB): the whole command line and the modules the demo runs import
with every extra blocked."""

from __future__ import annotations

import subprocess
import sys

_BLOCKED = r"""
import importlib.abc, sys
EXTRAS = {"triton", "scipy", "psycopg", "ray", "fastapi", "uvicorn", "httpx", "jinja2", "playwright",
          "transformers", "lightning", "pytest"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in EXTRAS:
            raise ImportError(f"{name} is an optional extra")
        return None

sys.meta_path.insert(0, Block())
import computewatch.cli, computewatch.cli.demo
import computewatch.chip, computewatch.analysis.plots, computewatch.prover.runner
import computewatch.prover.transcript, computewatch.prover.replay, computewatch.prover.export
from typer.testing import CliRunner
result = CliRunner().invoke(computewatch.cli.app, ["sampling", "plan", "--flops", "5.76e23", "--chips", "1e5"])
assert result.exit_code == 0, result.output
print("core only")
"""


def test_the_demo_path_imports_without_any_extra() -> None:
    proc = subprocess.run([sys.executable, "-c", _BLOCKED], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "core only"
