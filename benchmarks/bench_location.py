"""Location by signed round trips: the false-reject rate of honest chips under network jitter,
the detection of a chip abroad behind a relay, and real round trips on loopback (issue 22).

Simulated part (no network). An honest chip sits at its declared facility; landmarks sit at
fixed distances d_i from it. Each measurement is `rounds` round trips; round j to landmark i takes

    rtt = 2 * stretch * d_i / 200 km/ms  +  processing  +  jitter,   jitter ~ Gamma(k=2, mean mu)

(fibre at 2/3 c along a route `stretch` times the great-circle distance; a fixed processing time
for the landmark and the chip's signature; Gamma(2) queueing jitter: non-negative, right-skewed,
mean mu, sd mu/sqrt(2)). The register keeps the shortest round trip per landmark, bounds the
distance by rtt * 149.9 km/ms (vacuum: sound) and rejects when min_i(bound_i + d_i) exceeds the
radius R (registry.locating). A false reject is an honest chip rejected; the table gives its rate
per jitter mean and radius, with a 95% Wilson interval. The same model with the chip `abroad_km`
away behind a relay at the facility (the relay adds the real distance's delay) gives the
detection rate. The fibre bound (100 km/ms) is reported beside it: tighter, but a relay over a
faster medium (microwave) could beat it.

Measured part: `loopback` measurements against a real landmark on 127.0.0.1 (the CLI's code
path), directly and through a relay that adds 10 ms each way: the measured round trip never
falls below the injected delay.

    python benchmarks/bench_location.py [--trials 200000] [--seed 0] [--loopback 20]

Prints JSON and writes benchmarks/results/bench_location.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from _results import publish  # benchmarks/_results.py (this script's folder is on sys.path)
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from computewatch.analysis.montecarlo import wilson_interval  # noqa: E402
from computewatch.landmark.geo import FIBRE_KM_PER_MS, VACUUM_KM_PER_MS  # noqa: E402

LANDMARKS_KM = (80.0, 300.0, 700.0)  # distances of three landmarks from the facility
STRETCH = 1.5  # route length over great-circle distance
PROCESSING_MS = 0.3
ROUNDS = 5
JITTER_MEANS_MS = (0.5, 2.0, 5.0, 20.0)
RADII_KM = (250.0, 500.0, 1000.0)
ABROAD_KM = 2000.0


def _proven_km(rng: np.random.Generator, trials: int, mu_ms: float, chip_extra_km: float, speed: float) -> np.ndarray:
    """min over landmarks of (distance bound + landmark-to-facility distance), per trial."""
    best = np.full(trials, np.inf)
    for d in LANDMARKS_KM:
        path_km = d + chip_extra_km  # via the facility (a relay there) when the chip is abroad
        base = 2 * STRETCH * path_km / (FIBRE_KM_PER_MS * 2) + PROCESSING_MS
        jitter = rng.gamma(2.0, mu_ms / 2.0, size=(trials, ROUNDS))
        rtt = base + jitter.min(axis=1)
        best = np.minimum(best, rtt * speed + d)
    return best


def simulate(trials: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for mu in JITTER_MEANS_MS:
        honest = {s: _proven_km(rng, trials, mu, 0.0, v) for s, v in (("vacuum", VACUUM_KM_PER_MS), ("fibre", FIBRE_KM_PER_MS))}
        abroad = _proven_km(rng, trials, mu, ABROAD_KM, VACUUM_KM_PER_MS)
        for radius in RADII_KM:
            rejects = int((honest["vacuum"] > radius).sum())
            rows.append({
                "jitter_mean_ms": mu,
                "radius_km": radius,
                "false_reject_rate": rejects / trials,
                "false_reject_ci95": list(wilson_interval(rejects, trials)),
                "false_reject_rate_fibre_bound": float((honest["fibre"] > radius).mean()),
                "abroad_detection_rate": float((abroad > radius).mean()),
                "honest_proven_km_median": round(float(np.median(honest["vacuum"])), 1),
            })
    return rows


def loopback(n: int) -> dict[str, Any]:
    from computewatch.adversary.location import DelayingRelay
    from computewatch.chip import provision_chips
    from computewatch.crypto.signing import SigningKey
    from computewatch.formats.location import parse_evidence, read_record
    from computewatch.landmark import LandmarkServer
    from computewatch.landmark.locate import locate_chip

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, LandmarkServer(SigningKey.generate(), rounds=ROUNDS) as server:
        [chip] = provision_chips(Path(tmp) / "chips", 1, snapshots_per_day=1.0)
        relay = DelayingRelay(server.url, 0.010)
        try:
            for name, url, count in (("direct", server.url, n), ("relay_10ms_each_way", relay.url, max(3, n // 4))):
                rtts = []
                t0 = time.perf_counter()
                for _ in range(count):
                    _serial, _cert, [env] = parse_evidence(locate_chip(chip, [url]))
                    rtts.append(read_record(env).rtt_ns / 1e6)
                out[name] = {"measurements": count, "rounds": ROUNDS, "min_rtt_ms": round(min(rtts), 4),
                             "median_rtt_ms": round(float(np.median(rtts)), 4), "max_rtt_ms": round(max(rtts), 4),
                             "vacuum_bound_km_median": round(float(np.median(rtts)) * VACUUM_KM_PER_MS, 2),
                             "seconds_per_measurement": round((time.perf_counter() - t0) / count, 4)}
        finally:
            relay.close()
    out["relay_never_faster_than_injected"] = out["relay_10ms_each_way"]["min_rtt_ms"] >= 20.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loopback", type=int, default=20, help="real measurements on 127.0.0.1 (0: none)")
    args = ap.parse_args()
    doc = {
        "benchmark": "location",
        "method": {
            "landmarks_km_from_facility": list(LANDMARKS_KM), "route_stretch": STRETCH, "processing_ms": PROCESSING_MS,
            "rounds": ROUNDS, "jitter": "Gamma(shape 2, mean mu) per round, non-negative; the shortest round counts",
            "speed_km_per_ms_of_rtt": {"vacuum": round(VACUUM_KM_PER_MS, 3), "fibre": FIBRE_KM_PER_MS},
            "rule": "reject when min_i(rtt_i * vacuum speed + d_i) > radius", "abroad_km": ABROAD_KM,
            "trials": args.trials, "seed": args.seed,
        },
        "simulated": simulate(args.trials, args.seed),
        "loopback": loopback(args.loopback) if args.loopback else None,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    publish("bench_location", doc)


if __name__ == "__main__":
    main()
