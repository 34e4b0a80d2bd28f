"""The service under load: at least 200 simulated chips report their log entries concurrently to
a real `computewatch serve` (uvicorn) on 127.0.0.1.

Setup (not timed): --chips report-mode chips are manufactured and registered (shipped to one
owner); each runs --steps training steps against a local acking transport, which records the
exact signed entry lines the chip emits. Warm-up (not timed): every chip sends its first entry
(the server loads the chip then). Timed: every chip sends the rest of its lines to the service over
HTTP, one at a time, each only after the previous one was acknowledged (a report-mode chip is
frozen until its ack arrives), all chips at once (asyncio, one kept-alive HTTP/1.1 connection
per chip, a minimal client so that the load generator costs little). Reported:
entries accepted per second, p50/p99/max acknowledgement latency, and a check that every
acknowledged entry is in the database afterwards, byte for byte (`all_acked_stored`).
Baseline in the same run: the same lines checked in this process by the auditor's incremental
checker (`LogVerifier`) with no HTTP and no database; `service_vs_check_only` is the service's
rate over that rate. CPU per acknowledged entry (Linux /proc: the server's processes, the
private PostgreSQL server's, the load generator's) does not depend on what else the machine
runs; `cpu_bound_per_s_idle_cores` is the rate idle cores would give if the CPU stays the limit
(each server process on at most one core). Bounded: --chips <= 2000, --steps <= 200, --max-seconds for the timed phase.

--workers 1,2 runs the server as 1 and as 2 processes (`serve --workers N`), each on a fresh
database (key `<db>_workers<N>` for N > 1). --rates 0,800 runs each closed loop (0: every chip
sends as soon as its previous entry is acked: the throughput) and open loop at 800 entries/s
offered by the fleet (key suffix `_rate800`: the latency at that load, counted from each
entry's due time).

Usage: python benchmarks/bench_service_load.py [--chips 200] [--steps 4] [--mode entry,batch] [--db sqlite,postgresql]
       [--workers 1,2] [--rates 0,800] [--max-seconds 120] [--cache DIR] [--profile DIR] [--out result.json]

--mode entry,batch: `entry` (default) as above; `batch`: on-chip chips (log v2, a signed checkpoint
every 16 entries, lines read from the chip's log file) upload their log as batches ending in a
checkpoint (`POST /v1/chips/{serial}/batches`), a batch due with its last entry (key suffix
`_batch`). Open loop also reports `steady`: entries acked per second in the window where every
chip is inside its schedule (the offered rate is exact there; short runs ramp up and down).

--profile DIR: py-spy (`pip install py-spy`) samples the server's processes during the timed phase
(raw folded stacks, one file per pass).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _databases import database

RESULTS = Path(__file__).resolve().parent / "results"


class _Recorder:
    """A transport that acks locally and keeps every line (setup only)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def send(self, line: bytes) -> bytes:
        from computewatch.chip.transport import expected_ack

        entry = json.loads(line)
        self.lines.append(line)
        return expected_ack(entry["serial"], entry["counter"], line)


def make_chips(root: Path, count: int, steps: int, mode: str = "entry") -> tuple[Path, list[tuple[str, Path, list[bytes]]]]:
    """Chips that ran `steps` steps and their log lines: report-mode chips (every entry signed,
    recorded off the transport) for `entry`; on-chip chips (log v2, a signed checkpoint every 16
    entries, read from the log file) for `batch`."""
    from computewatch.chip import Chip, provision_chips
    from computewatch.chip.exercise import small_shard
    from computewatch.formats.chip_entry import split_log

    log_mode = "report" if mode == "entry" else "on-chip"
    states = provision_chips(root / "chips", count, snapshots_per_day=50.0, log_mode=log_mode, secret_seed=b"bench service load")
    out = []
    for state in states:
        rec = _Recorder()
        chip = Chip.open(state, transport=rec if mode == "entry" else None)
        chip.boot()
        chip.attach(small_shard(), root / "storage" / state.name)
        for s in range(steps):
            chip._tensors[0].add_(0.5)
            chip.step_boundary(s, 3600.0)
        chip.close()
        out.append((chip.serial, state, rec.lines if mode == "entry" else split_log(chip.log_path.read_bytes())[0]))
    return root / "chips" / "chipmaker", out


def cached_chips(cache: Path, count: int, steps: int, mode: str = "entry") -> tuple[Path, list[tuple[str, Path, list[bytes]]]]:
    """`make_chips` once per (count, steps, mode) in `cache`; later runs read the recorded lines back."""
    folder = cache / (f"chips-{count}x{steps}" + ("" if mode == "entry" else f"-{mode}"))
    index = folder / "lines.json"
    if index.is_file():
        doc = json.loads(index.read_text())
        return folder / "chips" / "chipmaker", [(c["serial"], Path(c["state"]), [x.encode() for x in c["lines"]]) for c in doc]
    shutil.rmtree(folder, ignore_errors=True)
    maker_dir, chips = make_chips(folder, count, steps, mode)
    index.write_text(json.dumps([{"serial": s, "state": str(st), "lines": [x.decode() for x in ls]} for s, st, ls in chips]))
    return maker_dir, chips


def check_only(maker_dir: Path, chips: list[tuple[str, Path, list[bytes]]]) -> dict[str, float]:
    from computewatch.crypto.dsse import Envelope
    from computewatch.crypto.signing import VerifyKey
    from computewatch.formats.chip_audit import LogVerifier
    from computewatch.formats.identity import verify_chip_certificate

    root = VerifyKey.load(maker_dir / "chipmaker.pub")
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _, state, lines in chips:
        v = LogVerifier(verify_chip_certificate(Envelope.from_json((state / "certificate.json").read_bytes()), root), root)
        for line in lines:
            assert not v.feed(line)
            n += 1
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"entries": n, "seconds": dt, "per_s": n / dt, "cpu_ms_per_entry": cpu * 1e3 / n}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, data: Path, port: int, log: Path, workers: int = 1) -> subprocess.Popen[bytes]:
    import httpx

    cmd = [sys.executable, "-m", "computewatch", "serve", "--db", url, "--host", "127.0.0.1", "--port", str(port),
           "--data", str(data), "--no-worker", "--log-level", "warning", *(["--workers", str(workers)] if workers > 1 else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))  # noqa: SIM115
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a kept-alive connection (a minimal client: the load generator
    must cost little next to the server it measures)."""
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/vnd.computewatch.chip-log-entry+json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = next(int(h.split(":", 1)[1]) for h in lines[1:] if h.lower().startswith("content-length:"))
    return status, await reader.readexactly(length)


def units(lines: list[bytes], mode: str) -> list[list[bytes]]:
    """What a chip sends in one request: each entry alone (`entry`), or (`batch`) its log cut
    after each checkpoint (the last unit takes any entries after the last checkpoint)."""
    if mode == "entry":
        return [[line] for line in lines]
    out: list[list[bytes]] = [[]]
    for line in lines:
        out[-1].append(line)
        if json.loads(line)["kind"] == "checkpoint":
            out.append([])
    if not out[-1]:
        out.pop()
    return out


async def load(port: int, chips: list[tuple[str, Path, list[bytes]]], max_seconds: float, rate: float = 0.0,
               sample: Any = None, mode: str = "entry") -> dict[str, Any]:
    """Warm-up (not timed): every chip opens its connection and sends its first unit (its first
    entry, or its first batch: the server loads the chip then: certificate, stored copy). Timed,
    the rest: closed loop (`rate` 0): each chip sends its next unit as soon as the previous one
    is acked; open loop (`rate` > 0 entries/s offered by the whole fleet): each chip's entries
    are due at fixed times, the chips' schedules spread over one unit's worth of entries, and a
    unit is due with its last entry; a
    chip still waits for its previous ack, and latency counts from the unit's due time (a late
    send is latency too, no coordinated omission). `sample()` is called as the timed phase
    starts and ends (CPU counters)."""
    from computewatch.chip.transport import expected_ack

    latencies: list[float] = []
    acked: dict[str, list[bytes]] = {serial: [] for serial, _, _ in chips}
    problems: list[str] = []
    interval = len(chips) / rate if rate > 0 else 0.0
    conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    route = "entries" if mode == "entry" else "batches"
    plan = {serial: units(lines, mode) for serial, _, lines in chips}
    # Chips start their schedules spread over one unit's worth of entries, as a fleet's chips do
    # (not all cutting their batches at the same moment).
    spread = statistics.fmean(len(u) for p in plan.values() for u in p)
    phase = {serial: i / len(chips) * spread for i, (serial, _, _) in enumerate(chips)}
    acks: list[tuple[float, int]] = []  # (ack time, entries acked) of the timed phase

    async def send(serial: str, unit: list[bytes]) -> bool:
        reader, writer = conns[serial]
        body = unit[0] if mode == "entry" else b"".join(line + b"\n" for line in unit)
        status, answer = await _post(reader, writer, f"/v1/chips/{serial}/{route}", body)
        counter = json.loads(unit[-1])["counter"]
        if status != 200 or answer != expected_ack(serial, counter, unit[-1]):
            problems.append(f"{serial}#{counter}: HTTP {status} {answer[:200]!r}")
            return False  # the chip stays frozen
        acked[serial].extend(unit)
        return True

    async def first(serial: str) -> None:
        conns[serial] = await asyncio.open_connection("127.0.0.1", port)
        await send(serial, plan[serial][0])

    async def rest(serial: str) -> None:
        if len(acked[serial]) != len(plan[serial][0]):
            return
        m = -1  # the timed entries of this chip sent so far, less one
        for unit in plan[serial][1:]:
            if time.monotonic() > deadline:
                return
            m += len(unit)
            due = start + (phase[serial] + m) * interval
            if interval:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            t0 = min(due, time.perf_counter()) if interval else time.perf_counter()
            if not await send(serial, unit):
                return
            now = time.perf_counter()
            latencies.append(now - t0)
            acks.append((now, len(unit)))

    w0 = time.perf_counter()
    try:
        await asyncio.gather(*(first(serial) for serial, _, _ in chips))
        warmup = sum(len(acked[serial]) for serial in acked)
        warmup_s = time.perf_counter() - w0
        deadline = time.monotonic() + max_seconds
        if sample:
            sample()
        start = t0 = time.perf_counter()
        await asyncio.gather(*(rest(serial) for serial, _, _ in chips))
        wall = time.perf_counter() - t0
        if sample:
            sample()
    finally:
        for _, writer in conns.values():
            writer.close()
    lat = sorted(latencies)

    def q(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    n = sum(len(a) for a in acked.values()) - warmup
    steady = None
    if interval:
        # The window in which every chip is inside its schedule (all started, none done): the
        # fleet offers exactly `rate` there, so the entries acked in it over its length is the
        # acked rate, free of the ramps at the start and end of a short run.
        lo = start + spread * interval
        hi = min(start + max_seconds, start + min(phase[s] + sum(map(len, plan[s][1:])) - 1 for s in plan) * interval)
        if hi > lo:
            got = sum(k for t, k in acks if lo <= t < hi)
            steady = {"window_s": hi - lo, "offered_per_s": rate, "acked_per_s": got / (hi - lo)}
    return {"entries_acked": n, "requests_acked": len(lat), "seconds": wall, "entries_per_s": n / wall if wall else 0.0,
            "steady": steady,
            "warmup": {"entries": warmup, "seconds": warmup_s},
            "ack_latency_ms": {"p50": q(0.50) * 1e3, "p99": q(0.99) * 1e3, "max": lat[-1] * 1e3 if lat else None,
                               "mean": statistics.fmean(lat) * 1e3 if lat else None},
            "problems": problems[:20], "acked": acked}


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` and its live descendants (Linux /proc; 0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            pass
    return total


def database_pid(url: str) -> int | None:
    """The postmaster of the private PostgreSQL server the URL's socket folder belongs to (None: SQLite or elsewhere)."""
    if "host=/" not in url:
        return None
    root = url.split("host=", 1)[1].split("&", 1)[0].rsplit("/", 1)[0]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"{root}/data".encode() in cmd:
                return int(entry.name)
    return None


def stored_lines(url: str) -> dict[str, list[bytes]]:
    from sqlalchemy import select

    from computewatch.registry import db as reg_db
    from computewatch.service import schema as ss

    engine = reg_db.make_engine(url)
    try:
        t = ss.log_entries
        out: dict[str, list[bytes]] = {}
        with reg_db.read(engine) as conn:
            for r in conn.execute(select(t.c.serial, t.c.line).order_by(t.c.serial, t.c.counter)):
                out.setdefault(r.serial, []).append(bytes(r.line))
        return out
    finally:
        engine.dispose()


def run_db(name: str, url: str, scratch: Path, maker_dir: Path, chips: list[tuple[str, Path, list[bytes]]], max_seconds: float,
           workers: int = 1, rate: float = 0.0, profile: Path | None = None, mode: str = "entry") -> dict[str, Any]:
    from computewatch.crypto.signing import SigningKey
    from computewatch.registry import Registry

    reg = Registry.open(url)
    maker = SigningKey.load(maker_dir / "chipmaker.key")
    owner = SigningKey.from_seed(b"\x05" * 32)
    reg.add_chipmaker("maker", maker.public_key)
    reg.add_owner("lab", owner.public_key)
    t0 = time.perf_counter()
    for _, state, _ in chips:
        serial = reg.register_chip(state)["serial"]
        reg.ship(serial, "lab", maker, owner)
    register_s = time.perf_counter() - t0
    reg.close()
    port = free_port()
    proc = start_server(url, scratch / f"data-{name}-{workers}", port, scratch / f"server-{name}-{workers}.log", workers)
    db_pid = database_pid(url)
    samples: list[tuple[float, float, float]] = []

    spy: list[subprocess.Popen[bytes]] = []

    def sample() -> None:
        samples.append((cpu_seconds(proc.pid), cpu_seconds(db_pid) if db_pid else 0.0, time.process_time()))
        if profile is not None and not spy:  # the timed phase starts: sample the server's processes
            out = profile / f"{name}-{mode}-w{workers}-r{rate:g}.txt"
            spy.append(subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--subprocesses", "--threads", "--nonblocking",
                                         "--rate", "250", "--format", "raw", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        elif spy:
            spy[0].send_signal(signal.SIGINT)
            spy[0].wait(timeout=60)

    try:
        res = asyncio.run(load(port, chips, max_seconds, rate, sample, mode))
        cpu0, cpu1 = samples
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    acked = res.pop("acked")
    stored = stored_lines(url)
    missing = sum(1 for serial, lines in acked.items() for i, line in enumerate(lines)
                  if i >= len(stored.get(serial, [])) or stored[serial][i] != line)
    n = max(1, res["entries_acked"])
    cpu = {part: (b - a) * 1e3 / n for part, a, b in zip(("server", "database", "load_generator"), cpu0, cpu1, strict=True)}
    cores = os.cpu_count() or 1
    # Where the CPU is the limit (it is, on a shared 2-core machine): what idle cores would give,
    # the server's processes each using at most one core (the GIL).
    res["cpu_ms_per_entry"] = cpu
    res["cpu_bound_per_s_idle_cores"] = min(min(workers, cores) * 1e3 / cpu["server"] if cpu["server"] else float("inf"),
                                            cores * 1e3 / sum(cpu.values()) if sum(cpu.values()) else float("inf"))
    res.update({"database": name, "mode": mode, "workers": workers, "offered_per_s": rate or None, "setup_register_s": register_s, "all_acked_stored": missing == 0, "acked_missing": missing,
                "stored_entries": sum(map(len, stored.values()))})
    return res


def _numbers(ap: argparse.ArgumentParser, flag: str, text: str, low: float, high: float) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        ap.error(f"{flag} takes comma-separated numbers")
    if not values or any(not low <= v <= high for v in values):
        ap.error(f"{flag}: {low:g}..{high:g}")
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=int, default=200)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--db", default="sqlite", help="comma-separated: sqlite, postgresql")
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--rates", default="0", help="comma-separated offered entries/s of the whole fleet (0: closed loop, as fast as acks come)")
    ap.add_argument("--mode", default="entry", help="comma-separated: entry (report-mode chips, one signed entry a request), "
                    "batch (on-chip log v2 chips, a batch ending in its signed checkpoint a request)")
    ap.add_argument("--workers", default="1", help="comma-separated server process counts (serve --workers), each run on a fresh database")
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--profile", type=Path, default=None, help="sample the server's processes with py-spy during the timed phase (raw stacks here)")
    ap.add_argument("--cache", type=Path, default=None, help="keep the manufactured chips here and reuse them in later runs")
    args = ap.parse_args()
    if not 1 <= args.chips <= 2000 or not 1 <= args.steps <= 200:
        ap.error("--chips 1..2000, --steps 1..200")
    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    if not dbs or any(d not in ("sqlite", "postgresql") for d in dbs):
        ap.error("--db takes sqlite and/or postgresql")
    worker_counts = [int(w) for w in _numbers(ap, "--workers", args.workers, 1, 8)]
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    if not modes or any(m not in ("entry", "batch") for m in modes):
        ap.error("--mode takes entry and/or batch")
    rates = _numbers(ap, "--rates", args.rates, 0, 100_000)
    if args.pg_url and len(worker_counts) * len(rates) * len(modes) > 1:
        ap.error("--pg-url takes one --workers count and one rate (each pass needs a fresh database)")
    from computewatch.cli._common import available_cores

    if args.profile:
        if shutil.which("py-spy") is None:
            ap.error("--profile needs py-spy on PATH: pip install py-spy")
        args.profile.mkdir(parents=True, exist_ok=True)

    scratch = Path(tempfile.mkdtemp(prefix="computewatch-bench-service-"))
    try:
        result: dict[str, Any] = {
            "benchmark": "service_load",
            "machine": {"python": platform.python_version(), "cores": available_cores(), "platform": platform.platform(),
                        "load_avg_at_start": os.getloadavg()},
            "chips": args.chips, "steps": args.steps,
        }
        for mode in modes:
            t0 = time.perf_counter()
            if args.cache:
                maker_dir, chips = cached_chips(args.cache.resolve(), args.chips, args.steps, mode)
            else:
                maker_dir, chips = make_chips(scratch / mode, args.chips, args.steps, mode)
            suffix = "" if mode == "entry" else f"_{mode}"
            result["entries" + suffix] = sum(len(c[2]) for c in chips)
            result["setup_make_chips_s" + suffix] = time.perf_counter() - t0
            base = check_only(maker_dir, chips)
            result["baseline_check_only" + suffix] = base
            for name in dbs:
                for workers in worker_counts:
                    for rate in rates:
                        with database(name, scratch, args.pg_url, f"register-{mode}-{workers}-{rate:g}.db") as url:
                            entry = run_db(name, url, scratch, maker_dir, chips, args.max_seconds, workers, rate, args.profile, mode)
                        entry["service_vs_check_only"] = entry["entries_per_s"] / base["per_s"]
                        entry["load_avg_after"] = os.getloadavg()
                        key = name + suffix + (f"_workers{workers}" if workers > 1 else "") + (f"_rate{rate:g}" if rate else "")
                        result[key] = entry
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"bench_service_load-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
