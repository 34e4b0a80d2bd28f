"""The register at scale: register 10^6 chips from their certificates and draw an inspection
plan, on SQLite and on PostgreSQL.

Setup (not timed): N chip certificates from one chipmaker (device keys from fixed seeds, so the
file is cached in benchmarks/results/ and reused by later runs). Timed, per database:
- registration: `Registry.register_certificates` (every certificate verified against the pinned
  chipmaker root in --workers processes, inserted in transactions of --batch chips: one item
  row and one custody record per chip);
- planning: `commit_plan` over the whole stockpile (query, sort, population digest, Eq. 1,
  commitment) and `plan` (re-derive: population check, draw);
- signed transfers: --transfers chips shipped one by one (two signatures made and checked each).
Baseline in the same run: verifying the same certificates without any database, same worker
count; `register_vs_verify_only` is the registration rate over that baseline rate.
Target (issue 9): 10^6 chips registered in under 2 minutes on SQLite on 2 cores.

Lot path (issue 24, `--paths ...,lot`): the same certificates as one signed lot (the manifest is
signed in setup, its root computed over the certificate file) registered with
`Registry.register_lot` into a fresh database: one manifest signature, the root recomputed,
rows inserted through the driver in one transaction. Reported beside the per-chip path of the
same run: `lot.chips_per_s`, `lot.lot_vs_per_chip` (rate over the per-chip rate),
`lot.lot_vs_verify_only`, `lot.lot_vs_hash` (rate over SHA-256 leaf hashing of the same
certificate bytes in one process, `baseline_hash`), and the CPU seconds of this process and its
workers (`cpu_s`, split into `cpu_main_s` and `cpu_workers_s`: on a shared machine wall time
also counts other people's work; the main process inserts every row, so its CPU per chip bounds
the wall time from below however many cores read certificates; each also scaled to 10^6 chips,
`cpu_main_s_per_1e6` and `cpu_workers_s_per_1e6`; on PostgreSQL `cpu_server_s`, the CPU of the
local processes named postgres over the same interval). Target: 10^6 chips in at most 30 s on
SQLite, PostgreSQL within 2x of SQLite. `--per-chip-chips N` registers only the first N
certificates by the per-chip path (its rate is the baseline; 10^6 of them take minutes).

PostgreSQL: --pg-url URL, or a private server started for the run (tests/_postgres.py, durable
settings: fsync on).
Usage: python benchmarks/bench_registry.py [--chips 1000000] [--db sqlite,postgresql]
       [--workers 2] [--batch 10000] [--transfers 1000] [--pg-url URL] [--out result.json]
       [--paths per-chip,lot] [--per-chip-chips N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import blake3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _databases import database

from computewatch.cli._common import available_cores, progress
from computewatch.crypto.signing import SigningKey
from computewatch.formats.identity import issue_chip_certificate
from computewatch.formats.lot import PRED_CHIP_LOT
from computewatch.registry import Registry
from computewatch.registry.certificates import check_batch

RESULTS = Path(__file__).resolve().parent / "results"
_MAKER_SEED = b"computewatch bench registry chipmaker v1".ljust(32, b"\0")[:32]
_CHINCHILLA_H = 5.76e23
_PEAK = 989 * 10**12


def _device_key(i: int) -> SigningKey:
    return SigningKey.from_seed(blake3.blake3(b"bench device %d" % i).digest())


def _make_certs(start: int, stop: int) -> list[bytes]:
    maker = SigningKey.from_seed(_MAKER_SEED)
    return [
        issue_chip_certificate(maker, f"CW-B{i:09d}", _device_key(i).public_key, "computewatch-sim-h100", _PEAK).to_json()
        for i in range(start, stop)
    ]


def certificates(n: int, workers: int) -> tuple[Path, float]:
    """The cached certificate file (one canonical envelope per line) and the seconds it took."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"certs-{n}.jsonl"
    if path.exists():
        return path, 0.0
    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    step = 5000
    with open(tmp, "wb") as fh, ProcessPoolExecutor(max(1, workers), mp_context=get_context("spawn")) as pool, \
            progress("generating chip certificates (setup)", n) as update:
        done = 0
        for chunk in pool.map(_make_certs, range(0, n, step), [min(n, k + step) for k in range(0, n, step)]):
            fh.write(b"".join(c + b"\n" for c in chunk))
            done += len(chunk)
            update(done)
    os.replace(tmp, path)
    return path, time.perf_counter() - t0


def _stream(path: Path, limit: int | None = None) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        for k, line in enumerate(fh):
            if limit is not None and k >= limit:
                return
            yield line.rstrip(b"\n")


def verify_only(path: Path, n: int, workers: int) -> dict[str, float]:
    """Baseline: the certificates checked (as registration checks them), no database."""
    maker = SigningKey.from_seed(_MAKER_SEED).public_key
    roots = {maker.keyid: maker.raw}
    certs = list(_stream(path, n))
    chunks = [certs[k : k + 2500] for k in range(0, len(certs), 2500)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max(1, workers), mp_context=get_context("spawn")) as pool:
        list(pool.map(check_batch, chunks, [roots] * len(chunks)))
    seconds = time.perf_counter() - t0
    return {"certificates": len(certs), "seconds": seconds, "per_s": len(certs) / seconds}


def hash_only(path: Path, n: int) -> dict[str, float]:
    """Baseline: the RFC 9162 leaf hash of every certificate, in this process, no database."""
    import hashlib

    certs = list(_stream(path, n))
    t0 = time.perf_counter()
    for c in certs:
        hashlib.sha256(b"\x00" + c).digest()
    seconds = time.perf_counter() - t0
    return {"certificates": len(certs), "seconds": seconds, "per_s": len(certs) / seconds}


def lot_manifest(path: Path, n: int) -> bytes:
    """The signed manifest of the first n certificates as one lot (setup; cached beside them)."""
    from computewatch.crypto.canonical import canonical_json
    from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, sign_envelope, statement
    from computewatch.crypto.merkle import RootBuilder, leaf_hash

    cached = RESULTS / f"lot-{n}.dsse.json"
    if cached.exists():
        return cached.read_bytes()
    maker = SigningKey.from_seed(_MAKER_SEED)
    tree = RootBuilder()
    for cert in _stream(path, n):
        tree.add(leaf_hash(cert))
    root = tree.root().hex()
    predicate = {"lot": f"BENCH-{n}", "chipmaker": {"name": "maker", "keyid": maker.public_key.keyid}, "count": n,
                 "tree": "rfc9162-sha256", "leaf": "chip-certificate", "root": root}
    stmt = statement([(f"lot/BENCH-{n}", {"sha256": root})], PRED_CHIP_LOT, predicate)
    data = sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(stmt), maker).to_json()
    cached.write_bytes(data)
    return data


def _cpu_s() -> tuple[float, float]:
    """CPU seconds of this process and of its (finished) worker processes."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _postgres_cpu_s() -> float:
    """CPU seconds of the local processes named postgres (the server's backends and helpers)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # gone, or not ours to read
            continue
        if stat[stat.index("(") + 1 : stat.rindex(")")] == "postgres":
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def run_lot(name: str, url: str, path: Path, n: int, workers: int, manifest: bytes) -> dict[str, object]:
    reg = Registry.open(url)
    reg.add_chipmaker("maker", SigningKey.from_seed(_MAKER_SEED).public_key)
    load0 = os.getloadavg()
    server = name == "postgresql" and Path("/proc").is_dir()
    with progress(f"{name}: registering one signed lot", n) as update:
        server0 = _postgres_cpu_s() if server else 0.0
        (main0, kids0), t0 = _cpu_s(), time.perf_counter()
        doc = reg.register_lot(manifest, _stream(path, n), workers=workers, progress=update)
        register_s = time.perf_counter() - t0
        main1, kids1 = _cpu_s()
        server_s = _postgres_cpu_s() - server0 if server else None
    assert doc["chips"] == n
    reg.close()
    cpu_s = main1 - main0 + kids1 - kids0
    return {"cpu_server_s": server_s, "cpu_server_s_per_1e6": server_s / n * 1e6 if server_s is not None else None,
            "chips": n, "register_s": register_s, "chips_per_s": n / register_s, "cpu_s": cpu_s,
            "cpu_main_s": main1 - main0, "cpu_workers_s": kids1 - kids0, "cpu_us_per_chip": cpu_s / n * 1e6,
            "cpu_main_us_per_chip": (main1 - main0) / n * 1e6, "cpu_workers_us_per_chip": (kids1 - kids0) / n * 1e6,
            # The split scaled to 10^6 chips: the inserting process bounds the wall time from below.
            "cpu_main_s_per_1e6": (main1 - main0) / n * 1e6, "cpu_workers_s_per_1e6": (kids1 - kids0) / n * 1e6,
            "load_avg_before": load0, "load_avg_after": os.getloadavg()}


def run_db(name: str, url: str, path: Path, n: int, workers: int, batch: int, transfers: int) -> dict[str, object]:
    reg = Registry.open(url)
    maker = SigningKey.from_seed(_MAKER_SEED)
    owner = SigningKey.from_seed(b"\x02" * 32)
    reg.add_chipmaker("maker", maker.public_key)
    reg.add_owner("acme", owner.public_key)
    with progress(f"{name}: registering chips", n) as update:
        t0 = time.perf_counter()
        count = reg.register_certificates(_stream(path, n), batch=batch, workers=workers, progress=update)
        register_s = time.perf_counter() - t0
    assert count == n
    t0 = time.perf_counter()
    committed, seed = reg.commit_plan("bench", ["maker"], flops=_CHINCHILLA_H)
    commit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    drawn = reg.plan(committed["plan"], seed)
    plan_s = time.perf_counter() - t0
    serials = [f"CW-B{i:09d}" for i in range(min(transfers, n))]
    with progress(f"{name}: signed transfers", len(serials)) as update:
        t0 = time.perf_counter()
        for k, serial in enumerate(serials):
            reg.ship(serial, "acme", maker, owner)
            update(k + 1)
        transfer_s = time.perf_counter() - t0
    size = None
    if name == "sqlite":
        db_file = Path(reg.engine.url.database or "")
        size = sum(f.stat().st_size for f in db_file.parent.glob(db_file.name + "*"))
    reg.close()
    return {
        "chips": n,
        "register_s": register_s,
        "chips_per_s": n / register_s,
        "rows_per_s": 2 * n / register_s,  # one item row and one custody record per chip
        "commit_plan_s": commit_s,
        "plan_s": plan_s,
        "samples": committed["samples"],
        "drawn": len(drawn["chips"]),
        "transfers": len(serials),
        "transfer_s": transfer_s,
        "transfers_per_s": len(serials) / transfer_s if serials else None,
        "database_bytes": size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=int, default=1_000_000)
    ap.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    ap.add_argument("--workers", type=int, default=available_cores())
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--transfers", type=int, default=1000)
    ap.add_argument("--baseline-chips", type=int, default=100_000)
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--paths", default="per-chip,lot", help="comma-separated: per-chip, lot")
    ap.add_argument("--per-chip-chips", type=int, default=None, help="certificates the per-chip path registers")
    args = ap.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or any(p not in ("per-chip", "lot") for p in paths):
        ap.error("--paths takes per-chip and/or lot")
    if args.pg_url and len(paths) > 1 and "postgresql" in args.db:
        ap.error("with --pg-url give one path at a time (each path needs an empty database)")
    per_chip_n = min(args.chips, args.per_chip_chips or args.chips)
    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    if not dbs or any(d not in ("sqlite", "postgresql") for d in dbs):
        ap.error("--db takes sqlite and/or postgresql")
    path, generate_s = certificates(args.chips, args.workers)
    result: dict[str, object] = {
        "benchmark": "registry",
        "machine": {"python": platform.python_version(), "cores": available_cores(), "platform": platform.platform(),
                    "load_avg_at_start": os.getloadavg()},
        "chips": args.chips,
        "workers": args.workers,
        "batch": args.batch,
        "setup_generate_certificates_s": generate_s,
    }
    baseline = verify_only(path, min(args.baseline_chips, args.chips), args.workers)
    result["baseline_verify_only"] = baseline
    manifest = lot_manifest(path, args.chips) if "lot" in paths else b""
    hashed = hash_only(path, args.chips) if "lot" in paths else None
    result["baseline_hash"] = hashed
    scratch = Path(tempfile.mkdtemp(prefix="computewatch-bench-registry-"))
    try:
        for name in dbs:
            entry: dict[str, object] = {}
            if "per-chip" in paths:
                with database(name, scratch / "per-chip", args.pg_url, "registry.db") as url:
                    (scratch / "per-chip").mkdir(exist_ok=True)
                    entry = run_db(name, url, path, per_chip_n, args.workers, args.batch, args.transfers)
                entry["register_vs_verify_only"] = entry["chips_per_s"] / baseline["per_s"]  # type: ignore[operator]
            if "lot" in paths:
                (scratch / "lot").mkdir(exist_ok=True)
                with database(name, scratch / "lot", args.pg_url, "registry.db") as url:
                    lot = run_lot(name, url, path, args.chips, args.workers, manifest)
                lot["lot_vs_verify_only"] = lot["chips_per_s"] / baseline["per_s"]  # type: ignore[operator]
                lot["lot_vs_hash"] = lot["chips_per_s"] / hashed["per_s"]  # type: ignore[index,operator]
                if "chips_per_s" in entry:
                    lot["lot_vs_per_chip"] = lot["chips_per_s"] / entry["chips_per_s"]  # type: ignore[operator]
                entry["lot"] = lot
            result[name] = entry
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if "sqlite" in result and "register_s" in result["sqlite"]:  # type: ignore[operator]
        sqlite = result["sqlite"]
        result["target"] = {"chips": 10**6, "seconds": 120, "cores": 2,
                            "met": per_chip_n >= 10**6 and sqlite["register_s"] < 120}  # type: ignore[index]
    lots = {k: result[k]["lot"] for k in dbs if "lot" in result[k]}  # type: ignore[index,operator]
    if "sqlite" in lots:
        pg = lots.get("postgresql")
        result["target_lot"] = {
            "chips": 10**6, "sqlite_seconds": 30, "postgresql_within_x_sqlite": 2, "cores": 2,
            "sqlite_met": args.chips >= 10**6 and lots["sqlite"]["register_s"] <= 30,
            "postgresql_vs_sqlite": pg["register_s"] / lots["sqlite"]["register_s"] if pg else None,
        }
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"bench_registry-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
