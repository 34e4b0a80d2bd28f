"""A Monte Carlo model of the world, to check the closed forms rather than restate them.

Per trial: the Prover's run occupies c = ceil(b*C) of the C chips for D days, starting at a
uniform offset inside a monitoring period (or a fixed one). Each run chip logs snapshots at the
times of a Poisson process of rate f over the run; logs persist after the run. At the end of
every monitoring period the Verifier draws s distinct chips uniformly from the whole stockpile;
the run is detected when a drawn chip holds a snapshot taken during the run, at any inspection
up to the first period end at or after the run's end.

Nothing here allocates C chips: for each trial and inspection only the number of drawn chips
that are run chips matters (hypergeometric), then which run chips they are (so that a chip
drawn twice keeps its snapshot history) and when each one's first snapshot fell (exponential
with rate f: the first point of its Poisson process; later points cannot change the outcome).
Trials are vectorised with numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from computewatch.analysis.detection import detection_probability, run_shape
from computewatch.analysis.errors import InfeasibleSettingError, InvalidParameterError
from computewatch.analysis.params import Setting, ceil_tolerant

__all__ = ["MAX_TRIALS", "MonteCarloResult", "simulate", "simulate_enumerating", "wilson_interval"]

_Z95 = 1.959963984540054
_CHUNK = 1 << 15
# Bound on the expected sampled run chips held in memory at once: plans that sample a large
# share of the run's chips get smaller chunks instead of gigabytes of arrays.
_HITS_PER_CHUNK = 1 << 21
# Drawn run chips per trial at most this share of c: rejection sampling of distinct ids (each
# pass redraws at most this share); above it, random permutations (_DENSE_CELLS keys at a time).
_SPARSE_SHARE = 0.05
_MAX_REDRAWS = 200
_DENSE_CELLS = 1 << 22
_MAX_CHIPS = 10**9
# About three million trials a second on one core for Table 1 settings: 10^8 is minutes of work
# and a 95% interval of +-1e-4; more buys nothing a plan needs and could run for days.
MAX_TRIALS = 10**8

Progress = Callable[[int], None]


@dataclass(frozen=True)
class MonteCarloResult:
    """Outcome of `simulate`; `closed_form` is Appendix B's value for the same plan."""

    trials: int
    detected: int
    estimate: float
    ci95: tuple[float, float]
    closed_form: float

    def to_json(self) -> dict[str, object]:
        return {
            "trials": self.trials,
            "detected": self.detected,
            "estimate": self.estimate,
            "ci95": list(self.ci95),
            "closed_form": self.closed_form,
        }

    @classmethod
    def of(cls, detected: int, trials: int, closed_form: float) -> MonteCarloResult:
        return cls(int(trials), int(detected), detected / trials, wilson_interval(detected, trials), closed_form)

    def agrees(self, value: float) -> bool:
        """Whether `value` lies inside the 95% interval."""
        return self.ci95[0] <= value <= self.ci95[1]


def wilson_interval(detected: int, trials: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sound near 0 and 1, unlike Wald's)."""
    if trials <= 0 or not (0 <= detected <= trials):
        raise InvalidParameterError(f"need 0 <= detected <= trials and trials > 0, got {detected}/{trials}")
    phat = detected / trials
    denom = 1.0 + z * z / trials
    centre = (phat + z * z / (2 * trials)) / denom
    half = z * math.sqrt(phat * (1 - phat) / trials + z * z / (4 * trials * trials)) / denom
    # At 0 or all detections the bound is exactly 0 or 1; clamp rounding residue.
    lo = 0.0 if detected == 0 else max(0.0, centre - half)
    hi = 1.0 if detected == trials else min(1.0, centre + half)
    return lo, hi


@dataclass(frozen=True)
class _World:
    C: int
    c: int
    days: float
    f: float
    T_m: float
    s: int
    offset: float | None
    inspections_max: int


def _rng(seed: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidParameterError(f"the random seed must be a whole number >= 0, got {seed!r}")
    return np.random.default_rng(int(seed))


def _world(setting: Setting, s: int, trials: int, strategy: str, k: float, offset: float | None) -> _World:
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials <= 0:
        raise InvalidParameterError(f"trials must be a positive whole number, got {trials!r}")
    if trials > MAX_TRIALS:
        raise InvalidParameterError(f"trials must be at most {MAX_TRIALS:.0e} (a 95% interval of about 1e-4), got {trials:,}")
    if setting.C != int(setting.C):
        raise InvalidParameterError(f"the simulator needs a whole number of chips, got C = {setting.C!r}")
    C = int(setting.C)
    if C >= _MAX_CHIPS:
        # numpy's hypergeometric draw (the run chips among the sampled ones) stops there.
        raise InvalidParameterError(f"the simulator handles stockpiles below {_MAX_CHIPS:.0e} chips, got C = {C:,}")
    if not isinstance(s, (int, np.integer)) or s < 0 or s > C:
        raise InvalidParameterError(f"samples per period must be a whole number in [0, C = {C}], got {s!r}")
    if offset is not None and not (0.0 <= offset < setting.T_m):
        raise InvalidParameterError(f"the start offset must lie in [0, T_m), got {offset!r}")
    shape = run_shape(setting, strategy, k)
    c = ceil_tolerant(shape.b * C)
    if c > C:
        raise InfeasibleSettingError(f"the run needs {c} chips, more than the stockpile of {C}")
    inspections_max = ceil_tolerant((setting.T_m + shape.days) / setting.T_m)
    return _World(C, c, shape.days, setting.f, setting.T_m, int(s), offset, inspections_max)


def _distinct_ids_sparse(rng: np.random.Generator, hits: np.ndarray, c: int) -> np.ndarray:
    """Draw with replacement, then redraw duplicates within a row, rechecking only the rows
    that clashed: few passes when rows hold a small share of the c run chips."""
    rows = np.repeat(np.arange(hits.size), hits)
    ids = rng.integers(0, c, size=rows.size)
    pending = np.arange(rows.size)
    for _ in range(_MAX_REDRAWS):
        order = np.lexsort((ids[pending], rows[pending]))
        sorted_rows, sorted_ids = rows[pending][order], ids[pending][order]
        same = (sorted_rows[1:] == sorted_rows[:-1]) & (sorted_ids[1:] == sorted_ids[:-1])
        if not same.any():
            return ids
        clash = pending[order[1:][same]]
        ids[clash] = rng.integers(0, c, size=clash.size)
        pending = pending[np.isin(rows[pending], rows[clash])]
    raise AssertionError("duplicate redraws did not converge")  # pragma: no cover - ~impossible at <= 5% density


def _distinct_ids_dense(rng: np.random.Generator, hits: np.ndarray, c: int) -> np.ndarray:
    """The first hits[r] entries of a uniform random permutation of the c run chips, per row;
    in batches of rows so that at most _DENSE_CELLS ids exist at once."""
    parts = []
    batch = max(1, _DENSE_CELLS // c)
    for first in range(0, hits.size, batch):
        rows_hits = hits[first : first + batch]
        permutations = rng.permuted(np.broadcast_to(np.arange(c), (rows_hits.size, c)), axis=1)
        parts.append(permutations[np.arange(c)[None, :] < rows_hits[:, None]])
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _distinct_chip_ids(rng: np.random.Generator, hits: np.ndarray, c: int) -> np.ndarray:
    """Uniform run-chip ids for one inspection: hits[r] distinct ids for trial r, in row order.

    Rejection is fast when a trial draws a small share of the run's chips (the usual case);
    plans that draw a large share use random permutations instead.
    """
    if hits.sum() == 0:
        return np.zeros(0, np.int64)
    if hits.max() <= _SPARSE_SHARE * c:
        return _distinct_ids_sparse(rng, hits, c)
    return _distinct_ids_dense(rng, hits, c)


def _simulate_chunk(world: _World, trials: int, rng: np.random.Generator) -> int:
    offsets = (
        rng.uniform(0.0, world.T_m, size=trials)
        if world.offset is None
        else np.full(trials, world.offset)
    )
    run_end = offsets + world.days
    counted = np.ceil((run_end / world.T_m) * (1 - 1e-12)).astype(np.int64)
    hit_trial: list[np.ndarray] = []
    hit_chip: list[np.ndarray] = []
    hit_window: list[np.ndarray] = []
    for j in range(1, world.inspections_max + 1):
        active = counted >= j
        hits = rng.hypergeometric(world.c, world.C - world.c, world.s, size=trials) if world.s else np.zeros(trials, np.int64)
        hits = np.where(active, hits, 0)
        trial_ids = np.repeat(np.arange(trials), hits)
        window = np.minimum(j * world.T_m, run_end) - offsets
        hit_trial.append(trial_ids)
        hit_chip.append(_distinct_chip_ids(rng, hits, world.c))
        hit_window.append(window[trial_ids])
    trial_ids = np.concatenate(hit_trial)
    if trial_ids.size == 0:
        return 0
    chip_ids = np.concatenate(hit_chip)
    # One first-snapshot time per (trial, chip), shared by every inspection that drew that chip.
    chip_keys, inverse = np.unique(trial_ids.astype(np.int64) * world.c + chip_ids, return_inverse=True)
    first_snapshot = rng.exponential(1.0 / world.f, size=chip_keys.size)[inverse]
    seen = first_snapshot <= np.concatenate(hit_window)
    return int(np.unique(trial_ids[seen]).size)


def simulate(
    setting: Setting,
    s: int,
    trials: int,
    *,
    strategy: str = "minimum",
    k: float = 1.0,
    seed: int = 0,
    offset: float | None = None,
    progress: Progress | None = None,
) -> MonteCarloResult:
    """Estimate the detection probability of sampling s chips per period, with a 95% interval.

    `offset` fixes the run's start (days into a period); None draws it uniformly per trial.
    `progress` is called with the number of trials finished after each chunk.
    """
    world = _world(setting, s, trials, strategy, k, offset)
    rng = _rng(seed)
    hits_per_trial = world.s * world.c / world.C * world.inspections_max
    chunk = int(max(1, min(_CHUNK, _HITS_PER_CHUNK // max(hits_per_trial, 1.0))))
    detected = done = 0
    while done < trials:
        n = min(chunk, trials - done)
        detected += _simulate_chunk(world, n, rng)
        done += n
        if progress is not None:
            progress(done)
    return MonteCarloResult.of(detected, trials, detection_probability(setting, s, strategy, k))


def simulate_enumerating(
    setting: Setting,
    s: int,
    trials: int,
    *,
    strategy: str = "minimum",
    k: float = 1.0,
    seed: int = 0,
    offset: float | None = None,
) -> MonteCarloResult:
    """The same world, simulated the naive way: every chip of the stockpile, every trial.

    A reference for `simulate` (tests check they agree) and the benchmark's baseline; its cost
    grows with C, so keep C small.
    """
    world = _world(setting, s, trials, strategy, k, offset)
    rng = _rng(seed)
    detected = 0
    for _ in range(trials):
        t0 = rng.uniform(0.0, world.T_m) if world.offset is None else world.offset
        run_end = t0 + world.days
        first_snapshot = np.full(world.C, np.inf)
        run_chips = rng.choice(world.C, size=world.c, replace=False)
        first_snapshot[run_chips] = t0 + rng.exponential(1.0 / world.f, size=world.c)
        first_snapshot[first_snapshot > run_end] = np.inf  # a snapshot after the run is not the run's
        j = 1
        while True:
            inspection = j * world.T_m
            sampled = rng.choice(world.C, size=world.s, replace=False)
            if np.any(first_snapshot[sampled] <= inspection):
                detected += 1
                break
            if inspection >= run_end * (1 - 1e-12):
                break
            j += 1
    return MonteCarloResult.of(detected, trials, detection_probability(setting, s, strategy, k))
