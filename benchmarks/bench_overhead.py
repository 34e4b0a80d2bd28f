"""Monitoring overhead of the Prover's Recorder (issue 4): plain vs monitored training, same process.

Method (details in benchmarks/_overhead.py): the small demo transformer trains twice side by
side, one copy plain and one under a Recorder bound to a chip at f = 0.1 snapshots per busy
day with checkpoints every k = 100 steps; plain and monitored steps alternate one by one, and
the overhead is total monitored time over total plain time minus one, reported with the median
pair ratio, a direct accounting (time inside Recorder.step + background writer time) and the
stall of a forced snapshot. Prints JSON; bad input: one line on stderr, exit 2.

    python benchmarks/bench_overhead.py [--preset small] [--block 1] [--repeats 200]
        [--checkpoint-every 100] [--snapshots-per-day 0.1] [--threads 1] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

MAX_STEPS_PER_MODE = 100_000  # block * repeats: hours of training on the small preset already


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--preset", choices=("mlp", "tiny", "small"), default="small", help="workload preset")
    parser.add_argument("--block", type=int, default=1, help="steps per timed block (1: alternate step by step)")
    parser.add_argument("--repeats", type=int, default=200, help="plain/monitored block pairs")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="checkpoint interval k")
    parser.add_argument("--snapshots-per-day", type=float, default=0.1, help="chip snapshot rate f")
    parser.add_argument("--threads", type=int, default=1, help="training threads (at most the cores)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)
    from computewatch.formats.firmware import MAX_SNAPSHOTS_PER_DAY

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    problem = None
    if args.block < 1 or args.repeats < 1 or args.checkpoint_every < 1:
        problem = "--block, --repeats and --checkpoint-every must be >= 1"
    elif args.block * args.repeats > MAX_STEPS_PER_MODE:
        problem = f"--block x --repeats = {args.block * args.repeats:,} steps per mode; at most {MAX_STEPS_PER_MODE:,}"
    elif not (math.isfinite(args.snapshots_per_day) and 0 <= args.snapshots_per_day <= MAX_SNAPSHOTS_PER_DAY):
        problem = f"--snapshots-per-day must be from 0 to {MAX_SNAPSHOTS_PER_DAY:g}, got {args.snapshots_per_day}"
    elif not 1 <= args.threads <= cores:
        problem = f"--threads must be from 1 to {cores} (this machine's cores), got {args.threads}"
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from _overhead import measure_overhead  # benchmarks/_overhead.py (this script's folder is on sys.path)

    result = measure_overhead(preset=args.preset, block=args.block, repeats=args.repeats,
                              checkpoint_every=args.checkpoint_every, snapshots_per_day=args.snapshots_per_day,
                              threads=args.threads)
    text = json.dumps(result, indent=2) + "\n"
    (args.out.write_text if args.out is not None else sys.stdout.write)(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
