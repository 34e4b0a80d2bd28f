"""Timing attack: swap the true weights out for innocent ones whenever a snapshot is due
(paper §4, attack table row "swap true weights for fakes before a scheduled snapshot").

The cheater keeps illicit weights in the chip's memory for a share of its busy time and puts
innocent weights back for the rest, hoping the snapshots fall on the innocent stretches. Against
a predictable trigger (snapshots every 1/f days) it knows when a snapshot is due and is never
caught. Against the chip's trigger (Poisson arrivals in busy time from a seed only the firmware
holds, `formats.schedule`) it cannot know: a snapshot that fires while the illicit weights are
loaded logs their digest, which no submitted transcript explains (the Verifier's `snapshots`
check). With the illicit weights loaded for L busy-days at rate f, the arrivals landing there are
Poisson(f*L), so the detection probability is 1 - exp(-f*L) whatever the cheater's pattern.

Trials draw fresh schedule seeds and use the chip's own arrival function; the first trials run
on real chips (the copy-out, hash and log of `computewatch.chip`) and must agree with the model
on their revealed schedules.
"""

from __future__ import annotations

import math
import random
from typing import Any

from computewatch.adversary.suite import Context, Trial, get_attack, register, result_from_trials

__all__ = ["STEP_SECONDS", "STEPS", "SNAPSHOTS_PER_DAY", "illicit_steps", "predicted_rate"]

STEPS = 40  # steps of the covert run on one chip
STEP_SECONDS = 1800.0  # busy seconds per step
SNAPSHOTS_PER_DAY = 4.8  # f: about four snapshots over the run
INNOCENT_SHARE = 0.75  # the cheater shows innocent weights on three steps of every four
_REAL_CHIPS = 3
_NS = 1_000_000_000


def illicit_steps(steps: int = STEPS) -> list[int]:
    """Steps whose end state holds the illicit weights (one in four)."""
    period = round(1 / (1 - INNOCENT_SHARE))
    return [t for t in range(steps) if t % period == period - 1]


def predicted_rate(steps: int = STEPS) -> float:
    """1 - exp(-f*L), L the busy-days with the illicit weights loaded."""
    illicit_days = len(illicit_steps(steps)) * STEP_SECONDS / 86_400
    return -math.expm1(-SNAPSHOTS_PER_DAY * illicit_days)


def _caught_by_schedule(seed: bytes, illicit: set[int]) -> bool:
    """Whether any arrival of the schedule lands in an illicit step (a trigger inside step t
    snapshots the state at the end of step t)."""
    from computewatch.formats.schedule import arrivals

    step_ns = int(STEP_SECONDS * _NS)
    return any((t - 1) // step_ns in illicit for t in arrivals(seed, SNAPSHOTS_PER_DAY, 0, STEPS * step_ns))


def _real_chip_trial(ctx: Context, index: int, illicit: set[int]) -> tuple[bool, bool]:
    """A real chip under the swapping cheater: (illicit digest logged, schedule model agrees)."""
    import json

    import torch

    from computewatch.chip import Chip, provision_chips
    from computewatch.crypto.hashing import hash_regions, shard_digest

    root = ctx.scratch(f"timing-chip-{index}")
    chip = Chip.open(provision_chips(root, 1, snapshots_per_day=SNAPSHOTS_PER_DAY)[0])
    chip.boot()
    g = torch.Generator().manual_seed(index)
    innocent = [torch.randn(16, 8, generator=g), torch.randn(8, generator=g)]
    secret = [torch.randn(16, 8, generator=g), torch.randn(8, generator=g)]
    memory = [t.clone() for t in innocent]
    chip.attach(memory, root / "storage")
    try:
        for t in range(STEPS):
            source = secret if t in illicit else innocent  # the swap, done at the step boundary
            for dst, src in zip(memory, source):
                dst.copy_(src + 1e-3 * t)  # training moves the weights a little every step
            chip.step_boundary(t, STEP_SECONDS)
    finally:
        chip.close()
    bad = {shard_digest(hash_regions([s + 1e-3 * t for s in secret])).hex() for t in illicit}
    entries = [json.loads(line) for line in chip.log_path.read_bytes().split(b"\n")[:-1]]
    logged = {e["body"]["shard_digest"] for e in entries if e["kind"] == "snapshot"}
    caught = bool(logged & bad)
    seeds = [bytes.fromhex(e["body"]["seed"]) for e in entries if e["kind"] == "schedule-reveal"]
    model = any(_caught_by_schedule(s, illicit) for s in seeds[:1])
    return caught, model == caught


@register(
    "swap-before-snapshot",
    paper_ref="§4 (random snapshot times)",
    family="timing",
    kind="rate",
    expected="verifier.snapshots",
    summary="Keeps illicit weights on the chip for one step in four and swaps innocent weights in for the rest, "
    "betting that snapshots fall on the innocent steps.",
    default_trials=400,
    max_trials=200_000,
)
def _swap(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("swap-before-snapshot")
    illicit = set(illicit_steps())
    rng = random.Random(seed)
    out: list[Trial] = []
    agree = real = 0
    for i in range(trials):
        if i < min(_REAL_CHIPS, trials):
            caught, consistent = _real_chip_trial(ctx, seed * 1000 + i, illicit)
            real += 1
            agree += consistent
        else:
            caught = _caught_by_schedule(rng.randbytes(32), illicit)
        out.append(Trial(caught, attack.expected if caught else None, (attack.expected,) if caught else (),
                         "a snapshot logged the illicit weights: no transcript explains its digest" if caught else ""))
    # A predictable trigger (every 1/f days, known to the cheater): it shows innocent weights
    # exactly at every due step and keeps the illicit ones loaded at all others.
    period_steps = 86_400 / SNAPSHOTS_PER_DAY / STEP_SECONDS
    due = {math.ceil((j + 1) * period_steps) - 1 for j in range(int(STEPS / period_steps))}
    loaded = set(range(STEPS)) - due
    predictable_caught = bool(due & loaded)
    return result_from_trials(
        attack,
        out,
        predicted=predicted_rate(),
        extra={
            "snapshots_per_day": SNAPSHOTS_PER_DAY,
            "illicit_busy_days": len(illicit) * STEP_SECONDS / 86_400,
            "real_chip_trials": real,
            "real_chip_trials_matching_the_schedule_model": agree,
            "predictable_trigger_detection_rate": float(predictable_caught),
            "formula": "1 - exp(-f * L): L busy-days with illicit weights loaded",
        },
    )
