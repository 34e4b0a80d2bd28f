"""Verification wall time against training wall time, and the speed-up of a second worker (issue 24).

Everything is timed as a user runs it: `computewatch train` and `computewatch verify ...
--segments all --json` as subprocesses of this script (no in-process shortcut: the command pays
its own start-up, the judge's imports, the sandboxed executors' start and every replay). Per
preset and round: one `computewatch train --preset P --steps S --checkpoint-every K --threads 1`
(a fresh run), then the first round's run verified with `--workers 1` and `--workers 2`, in
alternating order so that the machine's load falls on both alike. With `--pair`, two runs of
the first preset are also verified together (one executor each, or both at once); with
`--before-src DIR` each round also verifies the run with that source tree (main's, say).

With `--ray` the first preset's run is also verified on a local Ray cluster that the command
starts (`--ray-address local`: a real `ray.init()`, each run one Ray task whose executor is still
the bubblewrap sandbox).

Figures are medians over the rounds and ratios within this run:
  verify_over_train_w1 / _w2   verify wall time over training wall time (target <= 1.5)
  verify_over_train_cpu_w1     the same in CPU seconds (what load does not distort)
  speedup_total                verify --workers 1 over --workers 2, whole command (target >= 1.7)
  executors                    per run, the sandboxed executors that replayed its segments
  cpu_seconds                  CPU by role, read from /proc while the command runs: the judge (the
                               command's process), the executors, the rest (bubblewrap, Ray)
  cpu_ratio_w2_over_w1         the CPU a second executor adds (its start-up)
  replay_cpu                   the replay jobs' CPU seconds (the verdict's runs[].compute.measured)
  serial_fraction_w1_cpu       1 - replay CPU / all CPU of --workers 1 (load-independent, an upper bound)
  serial_fraction_w1_wall      1 - replay CPU / --workers 1 wall time (idle cores only)
  ideal_speedup_2_cpu / _wall  Amdahl's 2-worker speed-up for that serial fraction
Load averages are recorded beside each figure: the machine is shared.

The default workload is replay-dominated: the `small` preset (a 4-layer character transformer),
128 steps, a checkpoint every 8, `--segments all` (16 segments of 8 steps).

    python benchmarks/bench_verify_wall.py [--presets small] [--steps 128] [--checkpoint-every 8]
        [--rounds 1] [--pair] [--before-src DIR] [--ray]

Prints JSON and writes benchmarks/results/bench_verify_wall.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _results import publish  # benchmarks/_results.py (this script's folder is on sys.path)

_SEED = "00" * 32  # the same segment and data choice in every verification


_TICK = os.sysconf("SC_CLK_TCK")


class TreeCpu(threading.Thread):
    """CPU seconds of a process and everything it starts, by role, read from /proc every `every`
    seconds while it runs: the judge (the command's own process), the executors (the sandboxed
    `computewatch.verifier.executor` processes and their ranks) and the rest (bubblewrap). A
    process's last reading before it ends is what counts (at most `every` of its CPU is missed)."""

    def __init__(self, root: int, every: float = 0.1) -> None:
        super().__init__(name="bench-tree-cpu", daemon=True)
        self.root, self.every = root, every
        self.cpu: dict[int, float] = {}
        self.role: dict[int, str] = {}
        self.seen: dict[int, tuple[float, float]] = {}  # first and last reading, seconds after the start
        self._done = threading.Event()
        self._start = time.monotonic()

    def _children(self, pid: int) -> list[int]:
        out: list[int] = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    out += [int(c) for c in fh.read().split()]
        except OSError:
            pass
        return out

    def _read(self, pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime (all threads)

    def _role(self, pid: int) -> str:
        if pid == self.root:
            return "judge"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            return "other"
        if os.path.basename(argv[0]) == b"bwrap":
            return "other"  # bubblewrap itself (its argv names the executor it starts)
        return "executors" if b"computewatch.verifier.executor" in argv else "other"

    def sample(self) -> None:
        now = time.monotonic() - self._start
        todo, seen = [self.root], set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            cpu = self._read(pid)
            if cpu is None:
                continue
            if pid not in self.role or self.role[pid] == "other":  # a fork execs its program a moment later
                self.role[pid] = self._role(pid)
            self.cpu[pid] = max(cpu, self.cpu.get(pid, 0.0))
            self.seen[pid] = (self.seen.get(pid, (now, now))[0], now)
            todo += self._children(pid)

    def run(self) -> None:
        while not self._done.wait(self.every):
            self.sample()

    def stop(self) -> dict[str, Any]:
        self._done.set()
        self.join()
        self.sample()  # the judge, ended but not yet reaped, one last time
        by_role = {role: round(sum(c for p, c in self.cpu.items() if self.role[p] == role), 2) for role in ("judge", "executors", "other")}
        executors = sorted((self.seen[p][0], self.seen[p][1], c) for p, c in self.cpu.items() if self.role[p] == "executors")
        return {**by_role, "total": round(sum(self.cpu.values()), 2),
                "per_executor": [{"cpu": round(c, 2), "from_s": round(a, 1), "to_s": round(b, 1)} for a, b, c in executors]}


def _timed(cmd: list[str], *, env: dict[str, str], cpu: bool = False) -> tuple[float, int, str, dict[str, Any] | None]:
    """(wall seconds, exit status, stdout, CPU by role when asked); stderr (progress lines) is not kept."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env)
        tree = TreeCpu(proc.pid) if cpu else None
        if tree is not None:
            tree.start()
        # Wait without reaping: the judge's own CPU is read once more as it ends, from its zombie.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - start
        usage = tree.stop() if tree is not None else None
        code = proc.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
    return wall, code, text, usage


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "computewatch", *args]


def train(out: Path, preset: str, steps: int, every: int, env: dict[str, str]) -> tuple[float, float | None]:
    """(wall seconds, CPU seconds of the command and everything it started)."""
    wall, code, text, cpu = _timed(_cli("train", "--preset", preset, "--steps", str(steps), "--checkpoint-every", str(every),
                                      "--threads", "1", "--out", str(out)), env=env, cpu=True)
    if code != 0:
        raise SystemExit(f"computewatch train failed ({code}): {text[-500:]}")
    return wall, (cpu or {}).get("total")


def verify(runs: list[Path], workers: int, env: dict[str, str], before: str | None = None, ray: bool = False) -> dict[str, Any]:
    """One `computewatch verify` (with `before`: another source tree's, e.g. main's, via PYTHONPATH;
    with `ray`: on a local Ray cluster the command starts, `--ray-address local`)."""
    if before is not None:
        env = {**env, "PYTHONPATH": before}
    where = ("--ray-address", "local") if ray else ("--workers", str(workers))
    cmd = _cli("verify", *map(str, runs), "--chips", *[str(r / "chips") for r in runs],
               "--chipmaker-pub", str(runs[0] / "chips" / "chipmaker" / "chipmaker.pub"),
               *[a for r in runs[1:] for a in ("--chipmaker-pub", str(r / "chips" / "chipmaker" / "chipmaker.pub"))],
               "--prover-pub", str(runs[0] / "keys" / "prover.pub"),
               *[a for r in runs[1:] for a in ("--prover-pub", str(r / "keys" / "prover.pub"))],
               "--segments", "all", "--seed", _SEED, *where, "--json")
    load = os.getloadavg()[0]
    wall, code, text, cpu = _timed(cmd, env=env, cpu=True)
    try:
        doc = json.loads(text)
    except ValueError:
        raise SystemExit(f"computewatch verify printed no JSON (exit {code}): {text[-500:]}") from None
    if doc.get("verdict") != "compliant":  # the honest run verifies, or the figure means nothing
        raise SystemExit(f"the honest run is not compliant: {[c for c in doc.get('checks', []) if c.get('passed') is False]}")
    replay_cpu = sum((r.get("compute") or {}).get("measured", {}).get("cpu_seconds") or 0.0 for r in doc["runs"])
    return {"wall": wall, "load": load, "cpu": cpu, "replay_cpu": replay_cpu,
            "segments": doc["selection"]["segments_replayed"], "executors": [r.get("executors") for r in doc["runs"]]}


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _cpu_median(entries: list[dict[str, Any]]) -> dict[str, float | None]:
    return {role: _median([(v["cpu"] or {}).get(role) for v in entries]) for role in ("judge", "executors", "other", "total")}


def amdahl(cpu_w1: float | None, replay_cpu_w1: float | None, wall_w1: float | None) -> dict[str, float | None]:
    """The serial fraction of `--workers 1`: everything but the replay jobs' own CPU time (the
    judge's start, staging and audits, the executor's start, W0, samples, the loss evaluations,
    the verdict), as a share of the command's CPU seconds (load-independent; an upper bound, as
    the judge's start overlaps the executor's) and of its wall time (what idle cores show; on a
    loaded machine the replays' wall time exceeds their CPU time, so it is far too high); and
    Amdahl's 2-worker speed-up for each, were the replays split perfectly."""
    out: dict[str, float | None] = {}
    for name, total in (("cpu", cpu_w1), ("wall", wall_w1)):
        serial = max(0.0, 1 - replay_cpu_w1 / total) if total and replay_cpu_w1 is not None else None
        out[f"serial_fraction_w1_{name}"] = serial
        out[f"ideal_speedup_2_{name}"] = 1 / (serial + (1 - serial) / 2) if serial is not None else None
    return out


def measure_preset(preset: str, steps: int, every: int, rounds: int, tmp: Path, env: dict[str, str],
                   before: str | None = None) -> dict[str, Any]:
    trains: list[float] = []
    train_cpu: list[float | None] = []
    loads: list[float] = []
    ver: dict[int, list[dict[str, Any]]] = {1: [], 2: [], 0: []}  # 0: the `before` source tree, --workers 1
    first = tmp / f"{preset}-0"
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        wall, cpu = train(tmp / f"{preset}-{r}", preset, steps, every, env)
        trains.append(wall)
        train_cpu.append(cpu)
        for workers in ((1, 2, 0) if r % 2 == 0 else (0, 2, 1)):
            if workers or before:
                ver[workers].append(verify([first], workers or 1, env, before if workers == 0 else None))
        print(f"{preset} round {r + 1}/{rounds}: train {trains[-1]:.1f} s, verify w1 {ver[1][-1]['wall']:.1f} s, "
              f"w2 {ver[2][-1]['wall']:.1f} s (load {loads[-1]:.1f})", file=sys.stderr)
    t = statistics.median(trains)
    b = _median([v["wall"] for v in ver[0]])
    w1, w2 = _median([v["wall"] for v in ver[1]]), _median([v["wall"] for v in ver[2]])
    return {
        "preset": preset, "steps": steps, "checkpoint_every": every, "segments": ver[1][0]["segments"], "rounds": rounds,
        "train_seconds": trains, "verify_seconds": {str(k): [v["wall"] for v in vs] for k, vs in ver.items()},
        "executors": {str(k): [v["executors"] for v in vs] for k, vs in ver.items()},
        "load_average": {"train": loads, "verify": {str(k): [v["load"] for v in vs] for k, vs in ver.items()}},
        "median_seconds": {"train": t, "verify_w1": w1, "verify_w2": w2},
        "verify_over_train_w1": _ratio(w1, t), "verify_over_train_w2": _ratio(w2, t),
        # CPU seconds, which the machine's load does not inflate as it does wall time
        "train_cpu_seconds": train_cpu, "verify_over_train_cpu_w1": _ratio(_cpu_median(ver[1])["total"], _median(train_cpu)),
        "before": {"src": before, "median_seconds": b, "verify_over_train": _ratio(b, t), "before_over_after_w1": _ratio(b, w1)}
        if before else None,
        "speedup_total": _ratio(w1, w2),
        # CPU seconds by role (medians; /proc), what a second executor costs in CPU, and the
        # speed-up the serial part of --workers 1 allows (Amdahl).
        "cpu_seconds": {"w1": _cpu_median(ver[1]), "w2": _cpu_median(ver[2])},
        "cpu_ratio_w2_over_w1": _ratio(_cpu_median(ver[2])["total"], _cpu_median(ver[1])["total"]),
        "replay_cpu": {"w1": _median([v["replay_cpu"] for v in ver[1]]), "w2": _median([v["replay_cpu"] for v in ver[2]])},
        **amdahl(_cpu_median(ver[1])["total"], _median([v["replay_cpu"] for v in ver[1]]), w1),
        "verifications": {str(k): vs for k, vs in ver.items() if vs},
    }


def measure_pair(preset: str, tmp: Path, rounds: int, env: dict[str, str]) -> dict[str, Any]:
    """Two runs in one verification: each its own executor, one at a time or both at once."""
    runs = [tmp / f"{preset}-0", tmp / f"{preset}-1"]
    ver: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for r in range(rounds):
        for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
            ver[workers].append(verify(runs, workers, env))
    w1, w2 = _median([v["wall"] for v in ver[1]]), _median([v["wall"] for v in ver[2]])
    return {"preset": preset, "runs": 2, "verify_seconds": {str(k): [v["wall"] for v in vs] for k, vs in ver.items()},
            "executors": {str(k): [v["executors"] for v in vs] for k, vs in ver.items()},
            "load_average": {str(k): [v["load"] for v in vs] for k, vs in ver.items()},
            "speedup_total": _ratio(w1, w2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="small")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--checkpoint-every", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pair", action="store_true", help="also verify two runs of the first preset together")
    parser.add_argument("--before-src", help="also verify each run with this source tree (e.g. main's src/), --workers 1")
    parser.add_argument("--ray", action="store_true", help="also verify the first preset's run on a local Ray cluster (--ray-address local)")
    args = parser.parse_args()
    env = dict(os.environ)
    result: dict[str, Any] = {"cores": len(os.sched_getaffinity(0)), "command": " ".join(sys.argv), "presets": [],
                              "targets": {"verify_over_train": 1.5, "speedup_total": 1.7}}
    with tempfile.TemporaryDirectory(prefix="bench-verify-wall-") as tmp:
        presets = [p for p in args.presets.split(",") if p]
        for preset in presets:
            result["presets"].append(measure_preset(preset, args.steps, args.checkpoint_every, max(2 if args.pair else 1, args.rounds),
                                                    Path(tmp), env, args.before_src))
        if args.pair and presets:
            result["pair"] = measure_pair(presets[0], Path(tmp), args.rounds, env)
        if args.ray and presets:
            on_ray = verify([Path(tmp) / f"{presets[0]}-0"], 1, env, ray=True)
            w1 = result["presets"][0]["median_seconds"]["verify_w1"]
            result["ray"] = {**on_ray, "verdict": "compliant", "ray_over_w1": _ratio(on_ray["wall"], w1)}
            print(f"ray: verify {on_ray['wall']:.1f} s, compliant, executors {on_ray['executors']}", file=sys.stderr)
    publish("bench_verify_wall", result)


if __name__ == "__main__":
    main()
