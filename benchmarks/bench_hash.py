"""Hash throughput benchmark: computewatch blake3_tensor vs the raw blake3 package vs SHA-256.

Method in benchmarks/_hash.py; writes JSON. Bad input: one line on stderr, exit 2.
Usage: python benchmarks/bench_hash.py [--mib 1024] [--repeats 3] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _hash import max_buffer_mib, measure_hash_throughput  # benchmarks/_hash.py (this script's folder is on sys.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="buffer size in MiB (at most a quarter of this machine's memory)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the best of each is kept (1 to 100)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)
    problem = None
    if not 1 <= args.mib <= max_buffer_mib():
        problem = f"--mib must be from 1 to {max_buffer_mib():,} (a quarter of this machine's memory), got {args.mib:,}"
    elif not 1 <= args.repeats <= 100:
        problem = f"--repeats must be from 1 to 100, got {args.repeats}"
    if problem is not None:  # refused before any buffer is allocated
        print(f"error: {problem}", file=sys.stderr)
        return 2
    text = json.dumps(measure_hash_throughput(args.mib, args.repeats), sort_keys=True, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
