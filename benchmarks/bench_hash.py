"""Hash throughput benchmark: computewatch blake3_tensor vs the raw blake3 package vs SHA-256.

Same measurement as `computewatch bench hash --json` (computewatch.crypto._bench); writes JSON.
Usage: python benchmarks/bench_hash.py [--mib 1024] [--repeats 3] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from computewatch.crypto._bench import measure_hash_throughput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)
    text = json.dumps(measure_hash_throughput(args.mib, args.repeats), sort_keys=True, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
