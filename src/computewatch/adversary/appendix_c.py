"""Appendix C and §3.2: reshaping a covert run to dodge the inspections, measured by sampling.

Each trial is one monitoring history drawn with the regime's own parts: the Verifier's draw of
s chips per period is `registry.planning.draw` (the committed-seed Fisher-Yates draw inspection
plans use, a fresh seed per period), and each run chip's first snapshot is the first arrival of
its own schedule (`formats.schedule`, a fresh chip-secret seed per chip). The run starts at a
period boundary (Appendix B's alignment); a sampled run chip catches the run when it logged a
snapshot during the run before that inspection. The measured rate is compared with the analysis
module's closed form for the same plan (`computewatch.analysis`): C.1's p_d(k), Theorem 1's
p_d(t), and for collusion Appendix B on the pooled stockpile.

The stockpile is small (a few thousand chips) and s/C under 1.5%, so drawing without
replacement (the draw) and the closed forms' independent samples differ by far less than the
interval of the measurement.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from computewatch.adversary.suite import (
    Context,
    Trial,
    get_attack,
    register,
    result_from_trials,
)

__all__ = ["CovertRun", "simulate_inspections"]

_NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(frozen=True)
class CovertRun:
    """A run on `chips` of the stockpile's `C` chips (positions drawn at random per trial) for
    `days` busy days, each run chip snapshotting at `f` a day."""

    C: int
    chips: int
    days: float
    f: float


def _first_snapshot_days(rng: random.Random, f: float) -> float:
    from computewatch.formats.schedule import iter_arrivals

    return next(iter_arrivals(rng.randbytes(32), f, 0)) / _NS_PER_DAY


def simulate_inspections(run: CovertRun, samples: int, T_m: float, trials: int, seed: int, *, populations: Sequence[tuple[int, int, int]] | None = None) -> int:
    """Trials in which some inspection caught the run.

    `populations`: the audited groups as (first position, size, samples per period); default one
    group, the whole stockpile, sampled `samples` times. Inspections happen at T_m, 2*T_m, ...
    up to the first at or after the run's end."""
    from computewatch.registry.planning import draw

    groups = list(populations) if populations is not None else [(0, run.C, samples)]
    rounds = max(1, math.ceil(run.days / T_m - 1e-12))
    rng = random.Random(seed)
    caught = 0
    commitment = hashlib.sha256(repr((run, samples, T_m, groups)).encode()).hexdigest()
    for _ in range(trials):
        run_chips = set(rng.sample(range(run.C), run.chips))
        first: dict[int, float] = {}
        hit = False
        for j in range(1, rounds + 1):
            window = min(j * T_m, run.days)
            for start, size, s in groups:
                if s == 0:
                    continue
                for pos in draw(rng.randbytes(32), commitment, size, s):
                    chip = start + pos
                    if chip not in run_chips:
                        continue
                    if chip not in first:
                        first[chip] = _first_snapshot_days(rng, run.f)
                    if first[chip] <= window:
                        hit = True
                        break
                if hit:
                    break
            if hit:
                break
        caught += hit
    return caught


def _trials(caught: int, trials: int, by: str) -> list[Trial]:
    return [Trial(True, by, (by,)) for _ in range(caught)] + [Trial(False) for _ in range(trials - caught)]


# C.1 on a stockpile of 4,000 chips: the minimum run needs b = 10% of it for T = 30 days; the
# Verifier samples s(0.9) = ceil(ln 0.1 / ln 0.9) = 22 chips a period (T_m = 30); f = 1/day is
# high enough that every sampled run chip holds a snapshot (C.1's assumption).
_C1 = {"C": 4000, "b": 0.1, "T": 30.0, "T_m": 30.0, "f": 1.0, "p": 0.9, "k": 4}


@register(
    "fewer-chips-longer",
    paper_ref="Appendix C.1 (Figure 2), §3.2",
    family="appendix C",
    kind="rate",
    expected="sampling.inspection",
    summary="Trains the same run on a quarter of the chips for four times as long, so each sampled chip is "
    "less likely to be a run chip.",
    default_trials=600,
    max_trials=200_000,
)
def _fewer_longer(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.analysis import (
        H100_FLOPS_PER_DAY,
        Setting,
        p_d_longer,
        samples_for_probability,
        simulate,
    )

    attack = get_attack("fewer-chips-longer")
    c = _C1
    s = math.ceil(float(samples_for_probability(c["p"], c["b"])))
    k = int(c["k"])
    run = CovertRun(int(c["C"]), round(c["b"] * c["C"] / k), c["T"] * k, c["f"])
    caught = simulate_inspections(run, s, c["T_m"], trials, seed)
    minimum = CovertRun(int(c["C"]), round(c["b"] * c["C"]), c["T"], c["f"])
    base_trials = max(50, trials // 2)
    base = simulate_inspections(minimum, s, c["T_m"], base_trials, seed + 1)
    predicted = float(p_d_longer(k, c["b"], s))
    setting = Setting(H=c["b"] * c["C"] * H100_FLOPS_PER_DAY * c["T"], C=c["C"], f=c["f"], T=c["T"], T_m=c["T_m"], p=c["p"])
    mc = simulate(setting, s, trials, strategy="fewer-longer", k=k, seed=seed, offset=0.0)
    return result_from_trials(
        attack,
        _trials(caught, trials, "sampling.inspection"),
        predicted=predicted,
        extra={
            "setting": {**c, "s": s},
            "formula": "C.1: p_d(k) = 1 - (1 - b/k)^(k*s)",
            "minimum_run": {"trials": base_trials, "detection_rate": base / base_trials, "predicted_rate": float(p_d_longer(1, c["b"], s))},
            "ratio_to_minimum_predicted": predicted / float(p_d_longer(1, c["b"], s)),
            "analysis_monte_carlo": mc.to_json(),
        },
    )


# C.2 / Theorem 1: the minimum run needs 100 chips of 4,000 for T = 30 days; the Prover uses
# 400 chips for 7.5 days instead; f = 0.1/day (Table 1's), so a short run's chips often log
# nothing; the Verifier samples 40 chips after the run.
_C2 = {"C": 4000, "b": 0.025, "T": 30.0, "T_m": 30.0, "f": 0.1, "s": 40, "k": 4}


@register(
    "more-chips-shorter",
    paper_ref="Appendix C.2 (Theorem 1, Lemma 1)",
    family="appendix C",
    kind="rate",
    expected="sampling.inspection",
    summary="Spreads the run over four times the chips for a quarter of the time, so that each chip is busy "
    "too briefly to be likely to log a snapshot.",
    default_trials=600,
    max_trials=200_000,
)
def _more_shorter(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.analysis import (
        H100_FLOPS_PER_DAY,
        Setting,
        p_d_more_chips,
        simulate,
    )

    attack = get_attack("more-chips-shorter")
    c = _C2
    chips = round(c["b"] * c["C"])
    setting = Setting(H=chips * H100_FLOPS_PER_DAY * c["T"], C=c["C"], f=c["f"], T=c["T"], T_m=c["T_m"])
    k = int(c["k"])
    t = c["T"] / k
    s = int(c["s"])
    caught = simulate_inspections(CovertRun(int(c["C"]), chips * k, t, c["f"]), s, c["T_m"], trials, seed)
    base_trials = max(50, trials // 2)
    base = simulate_inspections(CovertRun(int(c["C"]), chips, c["T"], c["f"]), s, c["T_m"], base_trials, seed + 1)
    predicted = float(p_d_more_chips(setting, s, t))
    mc = simulate(setting, s, trials, strategy="more-shorter", k=k, seed=seed, offset=0.0)
    return result_from_trials(
        attack,
        _trials(caught, trials, "sampling.inspection"),
        predicted=predicted,
        extra={
            "setting": {**c, "t": t},
            "formula": "C.2: p_d(t) = 1 - (1 - (H/(a*C*t))*(1 - e^(-f*t)))^s",
            "minimum_run": {"trials": base_trials, "detection_rate": base / base_trials, "predicted_rate": float(p_d_more_chips(setting, s, c["T"]))},
            "theorem_1_holds": predicted >= float(p_d_more_chips(setting, s, c["T"])),
            "analysis_monte_carlo": mc.to_json(),
        },
    )


# Collusion (§3.2): three Provers with 3,000, 3,000 and 14,000 chips; the run needs 4,000 chips
# for 30 days, more than either small Prover holds. Audited one by one (Eq. 1 per Prover), the
# small ones are not sampled at all (they cannot do the run alone) and the big one is; so the
# colluders put the run on the small ones' chips. The paper's countermeasure audits the world as
# one Prover: Eq. 1 on the pooled 20,000 chips.
_COLLUSION: dict[str, Any] = {"stockpiles": [3000, 3000, 14000], "contributions": [3000, 1000, 0], "chips_needed": 4000,
              "T": 30.0, "T_m": 30.0, "f": 0.1, "p": 0.9}


@register(
    "collusion",
    paper_ref="§3.2 (collusion; world as one Prover)",
    family="appendix C",
    kind="rate",
    expected="sampling.inspection",
    summary="Three Provers pool chips into one run none could do alone, placing it on the chips of the Provers "
    "whose own audits sample nothing.",
    default_trials=600,
    max_trials=200_000,
)
def _collusion(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.analysis import (
        H100_FLOPS_PER_DAY,
        Setting,
        colluding_detection_probability,
        detection_probability,
        per_prover_samples,
        pooled_setting,
        samples_exact,
        simulate,
    )

    attack = get_attack("collusion")
    c = _COLLUSION
    stock = [int(x) for x in c["stockpiles"]]
    contrib = [int(x) for x in c["contributions"]]
    setting = Setting(H=c["chips_needed"] * H100_FLOPS_PER_DAY * c["T"], C=float(sum(stock)), f=c["f"], T=c["T"], T_m=c["T_m"], p=c["p"])
    alone = per_prover_samples(setting, stock)
    # The run's chips are the first contrib[i] of each Prover's block of positions.
    C = sum(stock)
    starts = [sum(stock[:i]) for i in range(len(stock))]
    run_positions = {starts[i] + j for i in range(len(stock)) for j in range(contrib[i])}

    def measure(groups: list[tuple[int, int, int]], n: int, sub_seed: int) -> int:
        return _simulate_fixed(C, run_positions, c["T"], c["f"], c["T_m"], groups, n, sub_seed)

    per_prover_groups = [(starts[i], stock[i], alone[i]) for i in range(len(stock))]
    separate_trials = max(50, trials // 2)
    separate = measure(per_prover_groups, separate_trials, seed + 1)
    separate_predicted = max(0.0, colluding_detection_probability(setting, stock, contrib, alone))
    pooled = pooled_setting(setting, stock)
    s_pooled = samples_exact(pooled)
    caught = measure([(0, C, s_pooled)], trials, seed)
    predicted = detection_probability(pooled, s_pooled)
    mc = simulate(pooled, s_pooled, trials, seed=seed, offset=0.0)
    return result_from_trials(
        attack,
        _trials(caught, trials, "sampling.inspection"),
        predicted=predicted,
        extra={
            "setting": c,
            "per_prover_samples": alone,
            "pooled_samples": s_pooled,
            "audited_separately": {"trials": separate_trials, "detection_rate": separate / separate_trials, "predicted_rate": separate_predicted},
            "formula": "Appendix B on the pooled stockpile: 1 - (1 - b*(1 - e^(-f*T_m)))^s",
            "analysis_monte_carlo": mc.to_json(),
        },
        detail=f"audited one Prover at a time the pooled run is caught in {separate}/{separate_trials} trials "
        f"(predicted {separate_predicted:.3f}); audited as one Prover (Eq. 1 on {C} chips, s = {s_pooled}) it is caught "
        f"in {caught}/{trials}",
    )


def _simulate_fixed(C: int, run_positions: set[int], days: float, f: float, T_m: float, groups: list[tuple[int, int, int]], trials: int, seed: int) -> int:
    """Like `simulate_inspections` with the run's chips at fixed positions (the colluders
    choose where the run goes)."""
    from computewatch.registry.planning import draw

    rounds = max(1, math.ceil(days / T_m - 1e-12))
    rng = random.Random(seed)
    commitment = hashlib.sha256(repr((C, days, T_m, groups)).encode()).hexdigest()
    caught = 0
    for _ in range(trials):
        first: dict[int, float] = {}
        hit = False
        for j in range(1, rounds + 1):
            window = min(j * T_m, days)
            for start, size, s in groups:
                if s == 0 or hit:
                    continue
                for pos in draw(rng.randbytes(32), commitment, size, s):
                    chip = start + pos
                    if chip in run_positions:
                        if chip not in first:
                            first[chip] = _first_snapshot_days(rng, f)
                        if first[chip] <= window:
                            hit = True
                            break
            if hit:
                break
        caught += hit
    return caught
