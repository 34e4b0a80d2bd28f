"""False alarms: honest runs with different seeds must all be found compliant (issue 10).

Each run is an honest monitored training run of the demo's model (the "tiny" char-transformer on
a 64 KiB corpus: 8 steps, a checkpoint every 2, fresh chips at 24 snapshots per busy day and an
hour of chip time per step, so about 8 snapshots a chip), verified in exact mode with the demo
policy (examples/policies/demo.toml, whose data rule is written for this model's samples). Run i differs from the others in everything that is random in the
regime: the run nonce (so W0 and the data order), the chips' secrets (so their snapshot
schedules) and the Verifier's seed (so the segments it replays and the data it samples), each
derived from i, so a run that raises an alarm can be repeated alone (`--first i --runs 1`).

A false alarm is any verdict other than "compliant". With zero alarms in N runs the exact
one-sided 95% upper bound on the false-alarm rate is 1 - 0.05^(1/N), about 3/N (the rule of
three), reported as `alarm_rate_upper_95`. Verification cost is reported against training cost measured in the same
run (`verify_over_train`).

By default the trusted-cluster jobs run in this process (`in_process`: the same checks, without
the sandbox's process start per job); `--sandbox` runs them as the Verifier does, one isolated
process per job (several seconds more per run).

    python benchmarks/bench_false_alarm.py [--runs 100] [--nproc 1|2] [--segments 1|all] [--sandbox]

Prints JSON and writes benchmarks/results/bench_false_alarm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import blake3

ROOT = Path(__file__).resolve().parents[1]

# The demo's model (the policy's data rule reads its 65-byte samples), 8 steps, a checkpoint every
# 2, an hour of chip time a step at 24 snapshots per busy day: about 8 snapshots per chip.
RUN = {"preset": "tiny", "steps": 8, "checkpoint_every": 2, "snapshots_per_day": 24.0, "chip_seconds_per_step": 3600.0,
       "overrides": {"corpus_bytes": 1 << 16}, "threads": 1}


def _derive(tag: str, i: int) -> bytes:
    return blake3.blake3(f"computewatch bench false alarm v1/{tag}/{i}".encode()).digest()


def one_run(i: int, folder: Path, *, nproc: int, segments: int | str, sandbox: bool, policy: str) -> dict[str, Any]:
    from computewatch.crypto.signing import VerifyKey
    from computewatch.prover.runner import TrainConfig, train
    from computewatch.verifier import VerifyRequest, verify

    run = folder / f"run-{i:04d}"
    t0 = time.perf_counter()
    train(TrainConfig(out=run, nproc=nproc, strategy="ddp", nonce=_derive("nonce", i), chip_secret_seed=_derive("chips", i), **RUN))
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    doc = verify(VerifyRequest(
        runs=[run],
        chips=[run / "chips"],
        chipmaker_roots=[VerifyKey.load(run / "chips" / "chipmaker" / "chipmaker.pub")],
        prover_keys=[VerifyKey.load(run / "keys" / "prover.pub")],
        seed=_derive("verifier", i),
        policy_text=policy,
        mode="exact",
        segments=segments,
        in_process=not sandbox,
    ))
    verify_s = time.perf_counter() - t0
    return {
        "index": i,
        "verdict": doc["verdict"],
        "failed": {c["name"]: c["detail"] for c in doc["checks"] if c["passed"] is False},
        "undecided": {c["name"]: c["detail"] for c in doc["checks"] if c["passed"] is None and c["name"] != "memorization"},
        "snapshots": doc["snapshots"],
        "segments_replayed": doc["selection"]["segments_replayed"],
        "segments_total": doc["selection"]["segments_total"],
        "train_s": round(train_s, 3),
        "verify_s": round(verify_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100, help="honest runs (1..10000)")
    ap.add_argument("--first", type=int, default=0, help="index of the first run (seeds derive from it)")
    ap.add_argument("--nproc", type=int, choices=(1, 2), default=1, help="ranks (chips) per run")
    ap.add_argument("--segments", default="1", help="random segments besides snapshot and top-Q ones (N), or 'all'")
    ap.add_argument("--sandbox", action="store_true", help="run the trusted-cluster jobs in isolated processes")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_false_alarm.json")
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= 10_000 or args.first < 0:
        ap.error("--runs must be in 1..10000 and --first >= 0")
    segments: int | str = "all" if args.segments == "all" else int(args.segments)
    from computewatch.cli._common import progress

    policy = (ROOT / "examples" / "policies" / "demo.toml").read_text()
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cw-false-alarm-") as tmp, progress("honest runs verified", args.runs) as update:
        for k in range(args.runs):
            i = args.first + k
            folder = Path(tmp) / f"{i}"
            folder.mkdir()
            results.append(one_run(i, folder, nproc=args.nproc, segments=segments, sandbox=args.sandbox, policy=policy))
            _rmtree(folder)  # keep the disk flat over 100 runs
            update(k + 1)
    wall = time.perf_counter() - t0
    verdicts: dict[str, int] = {}
    for r in results:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    alarms = [r for r in results if r["verdict"] != "compliant"]
    train_total = sum(r["train_s"] for r in results)
    verify_total = sum(r["verify_s"] for r in results)
    n = len(results)
    out = {
        "benchmark": "false_alarm",
        "runs": n,
        "first": args.first,
        "false_alarms": len(alarms),
        "verdicts": verdicts,
        "alarm_rate": len(alarms) / n,
        "alarm_rate_upper_95": (1 - 0.05 ** (1 / n)) if not alarms else None,
        "alarms": alarms,
        "snapshots": {"logged": sum(r["snapshots"]["logged"] for r in results),
                      "explained": sum(r["snapshots"]["explained"] for r in results),
                      "runs_without_snapshots": sum(1 for r in results if r["snapshots"]["logged"] == 0)},
        "segments": {"replayed": sum(r["segments_replayed"] for r in results), "total": sum(r["segments_total"] for r in results)},
        "time_s": {"wall": round(wall, 1), "train": round(train_total, 1), "verify": round(verify_total, 1),
                   "per_run": round(wall / n, 2)},
        "verify_over_train": round(verify_total / train_total, 2) if train_total else None,
        "config": {**RUN, "nproc": args.nproc, "segments": args.segments, "mode": "exact",
                   "trusted_cluster": "sandboxed processes" if args.sandbox else "in process",
                   "policy": "examples/policies/demo.toml"},
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0 if not alarms else 1


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
