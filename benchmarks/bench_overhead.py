"""Monitoring overhead of the Prover's Recorder (issue 4): plain vs monitored training, same process.

Method (details in computewatch.prover.bench): the small demo transformer trains twice side by
side, one copy plain and one under a Recorder bound to a chip at f = 0.1 snapshots per busy
day with checkpoints every k = 100 steps; plain and monitored steps alternate one by one, and
the overhead is total monitored time over total plain time minus one, reported with the median
pair ratio, a direct accounting (time inside Recorder.step + background writer time) and the
stall of a forced snapshot.

    python benchmarks/bench_overhead.py            # same as: computewatch bench overhead --json
"""

from __future__ import annotations

import json
import sys

from computewatch.prover.bench import measure_overhead


def main(argv: list[str]) -> None:
    preset = argv[1] if len(argv) > 1 else "small"
    print(json.dumps(measure_overhead(preset=preset), indent=2))


if __name__ == "__main__":
    main(sys.argv)
