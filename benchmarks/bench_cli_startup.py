"""The command line's start-up: wall time of light commands (`sampling table1`, `--help`,
`attack list`, `registry --help`) as a ratio of `python -c pass` measured in the same run, and
what `python -X importtime` says they import (total import time, torch's share).

Every round runs each command once per source tree, interleaved with the baseline, in fresh
interpreters; reported are medians. With --before-src DIR the same commands also run importing
computewatch from DIR (e.g. a checkout of the main branch's src/), so before/after come from
the same machine state.

Usage: python benchmarks/bench_cli_startup.py [--rounds 5] [--before-src DIR] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
HERE_SRC = Path(__file__).resolve().parents[1] / "src"
COMMANDS = (("sampling", "table1"), ("--help",), ("attack", "list"), ("registry", "--help"))
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def _env(src: Path | None) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "100"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def _wall(argv: list[str], src: Path | None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=_env(src), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _imports(command: tuple[str, ...], src: Path) -> dict[str, float | bool]:
    """Total import time of the command (top-level imports' cumulative µs) and torch's part."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "computewatch", *command],
        env=_env(src),
        capture_output=True,
        text=True,
        check=True,
    )
    total = torch = 0
    for line in done.stderr.splitlines():
        m = _LINE.match(line)
        if m and not m.group(3):  # a top-level import: its cumulative time counts once
            total += int(m.group(2))
        if m and m.group(4) == "torch":
            torch = int(m.group(2))
    return {"import_s": total / 1e6, "torch_import_s": torch / 1e6, "imports_torch": torch > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before-src", type=Path, default=None, help="a src/ folder to compare against")
    parser.add_argument("--out", type=Path, default=RESULTS / "cli_startup.json")
    args = parser.parse_args()
    trees = {"after": HERE_SRC}
    if args.before_src is not None:
        trees = {"before": args.before_src.resolve(), **trees}
    baseline: list[float] = []
    walls: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        baseline.append(_wall([sys.executable, "-c", "pass"], None))
        for tree, src in trees.items():
            for command in COMMANDS:
                walls.setdefault((tree, " ".join(command)), []).append(
                    _wall([sys.executable, "-m", "computewatch", *command], src)
                )
    base = statistics.median(baseline)
    rows = []
    for (tree, command), times in walls.items():
        wall = statistics.median(times)
        rows.append(
            {
                "tree": tree,
                "command": command,
                "wall_s": round(wall, 3),
                "ratio_to_python_pass": round(wall / base, 1),
                **_imports(tuple(command.split()), trees[tree]),
            }
        )
    doc = {
        "benchmark": "cli_startup",
        "python_pass_s": round(base, 4),
        "rounds": args.rounds,
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
