"""GPU BLAKE3 benchmark: the Triton kernel in device memory against a plain read of the same bytes.

Method in benchmarks/_gpu_hash.py (`gpu_hash_report`): hash TB/s (best of the launch shapes in
--sweep, all checked against the blake3 package), a plain device read of the same bytes in the
same run, the snapshot stall against the copy-out alone, and 1024 x 4 MiB tensors in one launch.
Needs CUDA; exits 2 without it, or on a size it cannot run (one line on stderr).
Usage: python benchmarks/bench_gpu_hash.py [--gib 8] [--sweep small] [--repeats 5] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--gib", type=float, default=8.0, help="shard size in GiB (1 KiB to 1 TiB)")
    parser.add_argument("--sweep", choices=("none", "small", "full"), default="small", help="launch shapes to try")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement; the best is kept")
    parser.add_argument("--no-many-regions", action="store_true", help="skip 1024 x 4 MiB tensors in one launch")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)
    from _gpu_hash import gpu_hash_report  # benchmarks/_gpu_hash.py (this script's folder is on sys.path)

    try:
        report = gpu_hash_report(args.gib, sweep=args.sweep, repeats=args.repeats,
                                 many_regions=not args.no_many_regions)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, sort_keys=True, indent=2) + "\n"
    (args.out.write_text if args.out is not None else sys.stdout.write)(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
