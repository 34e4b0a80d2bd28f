"""The chip-log audit's speed: `audit_log` over a 10,000-entry log, against raw Ed25519
verification and SHA-256 over the same bytes, measured in the same process.

Setup (not timed; cached in benchmarks/results/): one chip (fixed device secret) trains with a
small shard at f = 48/day, 30 busy minutes a step, until its log holds --entries entries; it then
stops cleanly. The log mixes what a real one holds: snapshot entries (with their triggers,
regions and shard digests), schedule commits and reveals every busy day, checkpoints every 16
entries, the boot entry. Timed, --rounds times each, interleaved:
- audit: `formats.chip_audit.audit_log(log, certificate, chipmaker root)` (every check);
- ed25519: verifying each entry's signature over its signing input (`cryptography`, the same
  library the audit uses), nothing else;
- sha256: SHA-256 of each entry's line (`hashlib`), nothing else.
Reported: entries/s of each (median round) and the audit's rate as a ratio of each baseline.
With --before-src DIR the audit round also runs, interleaved, in child processes importing
computewatch from DIR (e.g. the main branch's src/) and from this tree, each child with its own
baselines, so before/after ratios come from the same machine state.

Usage: python benchmarks/bench_chip_audit.py [--entries 10000] [--rounds 5] [--before-src DIR]
       [--out result.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def make_log(entries: int) -> Path:
    """A chip state directory whose log holds at least `entries` entries (cached)."""
    from computewatch.chip.testing import booted_chip, run_steps

    folder = RESULTS / f"chip-audit-{entries}"
    if (folder / "done").exists():
        return folder
    scratch = Path(tempfile.mkdtemp(prefix="chip-audit-", dir=RESULTS))
    chip = booted_chip(scratch, rate=48.0)
    step = 0
    log = Path(chip.state_dir) / "log" / "chip.log"
    while log.read_bytes().count(b"\n") < entries - 3:
        run_steps(chip, 50, 1800.0, start=step)
        step += 50
    chip.close()
    state = Path(chip.state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("certificate.json", "chipmaker.pub"):
        (folder / name).write_bytes((state / name).read_bytes())
    (folder / "chip.log").write_bytes(log.read_bytes())
    (folder / "done").write_text("")
    return folder


def _median_rate(fn, n: int, rounds: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def measure(folder: Path, rounds: int) -> dict[str, object]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from computewatch.crypto.dsse import Envelope
    from computewatch.crypto.signing import VerifyKey
    from computewatch.formats.chip_audit import audit_log
    from computewatch.formats.chip_entry import entry_signing_input, from_b64, parse_entry_line, split_log
    from computewatch.formats.identity import verify_boot_certificate, verify_chip_certificate

    data = (folder / "chip.log").read_bytes()
    root = VerifyKey.load(folder / "chipmaker.pub")
    cert = verify_chip_certificate(Envelope.from_json((folder / "certificate.json").read_bytes()), root)
    lines, _ = split_log(data)
    n = len(lines)
    report = audit_log(data, cert, root)
    assert report.ok, report.problems[:3]
    # The baselines' inputs, prepared outside the timing: (boot key, signature, signed bytes).
    work = []
    boot_key = None
    for line in lines:
        e = parse_entry_line(line)
        if e["kind"] == "boot":
            boot_key = verify_boot_certificate(e["body"]["boot_certificate"], cert.device_key).boot_key
        assert boot_key is not None
        work.append((Ed25519PublicKey.from_public_bytes(boot_key.raw), from_b64(e["sig"], "sig"), entry_signing_input(e)))

    def ed25519() -> None:
        for key, sig, msg in work:
            key.verify(sig, msg)

    def sha256() -> None:
        for line in lines:
            hashlib.sha256(line).digest()

    rates: dict[str, list[float]] = {"audit": [], "ed25519": [], "sha256": []}
    for _ in range(rounds):  # interleaved, one round each, so load swings hit all three alike
        rates["audit"].append(_median_rate(lambda: audit_log(data, cert, root), n, 1))
        rates["ed25519"].append(_median_rate(ed25519, n, 1))
        rates["sha256"].append(_median_rate(sha256, n, 3))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "entries": n,
        "log_bytes": len(data),
        "entries_per_s": med,
        "rounds": {k: [round(x) for x in v] for k, v in rates.items()},
        "audit_vs_ed25519": med["audit"] / med["ed25519"],
        "audit_vs_sha256": med["audit"] / med["sha256"],
        "sha256_log_mb_per_s": len(data) / 1e6 * med["sha256"] / n,
    }


def _child(src: str, folder: Path, rounds: int) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, __file__, "--child", str(folder), "--rounds", str(rounds)],
                         env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before-src", default=None, help="a src/ folder to compare against (child processes)")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.rounds)))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    folder = make_log(args.entries)
    result: dict[str, object] = {
        "benchmark": "chip_audit",
        "machine": {"python": platform.python_version(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_at_start": os.getloadavg()},
        "setup_s": time.perf_counter() - t0,
        "target": {"entries_per_s": 30_000, "vs_sha256": 0.5},
    }
    if args.before_src:
        here = str(Path(__file__).resolve().parents[1] / "src")
        before, after = [], []
        for _ in range(args.rounds):
            before.append(_child(args.before_src, folder, 1))
            after.append(_child(here, folder, 1))

        def summary(runs: list[dict[str, object]]) -> dict[str, object]:
            keys = ("audit_vs_ed25519", "audit_vs_sha256")
            out = {k: statistics.median(float(r[k]) for r in runs) for k in keys}  # type: ignore[arg-type]
            out["audit_entries_per_s"] = statistics.median(r["entries_per_s"]["audit"] for r in runs)  # type: ignore[index]
            out["ed25519_entries_per_s"] = statistics.median(r["entries_per_s"]["ed25519"] for r in runs)  # type: ignore[index]
            out["sha256_entries_per_s"] = statistics.median(r["entries_per_s"]["sha256"] for r in runs)  # type: ignore[index]
            return out

        result["before"], result["after"] = summary(before), summary(after)
        result["speedup_vs_before"] = result["after"]["audit_vs_ed25519"] / result["before"]["audit_vs_ed25519"]  # type: ignore[index]
        result["entries"] = before[0]["entries"]
    else:
        result.update(measure(folder, args.rounds))
    result["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    out = args.out or RESULTS / f"bench_chip_audit-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
