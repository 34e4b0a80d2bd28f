"""Sampling-driven attacks: the random snapshot trigger against weight swapping (§4) and the
Appendix C evasions, measured by drawing inspections and snapshots with the regime's own parts
and compared with the analysis module's closed forms within the measurement's interval."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from computewatch.adversary.suite import Context, agreement_interval, run_attack

TRIALS = 400


@pytest.fixture(scope="module")
def ctx() -> Iterator[Context]:
    with Context() as c:
        yield c


@pytest.fixture(scope="module")
def results(ctx: Context) -> dict:
    names = ("swap-before-snapshot", "fewer-chips-longer", "more-chips-shorter", "collusion")
    return {n: run_attack(n, TRIALS, seed=11, context=ctx) for n in names}


@pytest.mark.parametrize("name", ["swap-before-snapshot", "fewer-chips-longer", "more-chips-shorter", "collusion"])
def test_measured_rate_agrees_with_the_closed_form(results: dict, name: str) -> None:
    r = results[name]
    assert r.trials == TRIALS and r.predicted_rate is not None
    lo, hi = agreement_interval(round(r.detection_rate * TRIALS), TRIALS)
    assert lo <= r.predicted_rate <= hi, r.to_json()
    assert r.ok and r.detected
    assert r.detected_by == ("verifier.snapshots" if name == "swap-before-snapshot" else "sampling.inspection")


def test_random_trigger_catches_what_a_predictable_one_never_would(results: dict) -> None:
    r = results["swap-before-snapshot"]
    assert r.extra["predictable_trigger_detection_rate"] == 0.0
    assert r.detection_rate > 0.5
    # The first trials were real monitored runs verified by the Verifier; each agrees with the
    # schedule model on its chip's revealed schedule.
    assert r.extra["real_trials"] == r.extra["real_trials_matching_the_schedule_model"] == 3


def test_appendix_c_reshaping_does_not_help_the_prover(results: dict) -> None:
    c1 = results["fewer-chips-longer"]
    assert c1.extra["ratio_to_minimum_predicted"] > 0.95  # C.1: < 5% gain for the Prover
    c2 = results["more-chips-shorter"]
    assert c2.extra["theorem_1_holds"]
    # Theorem 1 measured: more chips for less time is caught clearly more often than the
    # minimum run, and the measurement has the power to tell the two apart.
    lo, _hi = agreement_interval(round(c2.detection_rate * TRIALS), TRIALS)
    assert lo > c2.extra["minimum_run"]["predicted_rate"]


def test_collusion_escapes_separate_audits_and_not_the_pooled_one(results: dict) -> None:
    r = results["collusion"]
    separate = r.extra["audited_separately"]
    assert separate["detection_rate"] == 0.0 and separate["predicted_rate"] == 0.0
    assert r.extra["per_prover_samples"][:2] == [0, 0] and r.extra["pooled_samples"] > 0
    assert r.detection_rate >= 0.85 and r.predicted_rate >= 0.9


def test_same_seed_same_measurement(ctx: Context) -> None:
    a = run_attack("more-chips-shorter", 100, seed=2, context=ctx)
    b = run_attack("more-chips-shorter", 100, seed=2, context=ctx)
    assert a.detection_rate == b.detection_rate
