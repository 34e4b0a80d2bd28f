"""Transcript spoofs (§5.1, ANCHORS.md: Zhang et al., Fang et al., forged consistent chains):
each spoof is verified against the chips that logged the run and fails the named check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from computewatch.adversary.suite import Context, get_attack, run_attack

CAUGHT = {
    "snapshot-is-init": "verifier.init",
    "long-run-as-short-runs": "verifier.init",
    "batches-reordered": "verifier.data",
    "batch-inserted": "verifier.data",
    "batch-removed": "verifier.data",
    "hyperparameters-altered": "verifier.precommitment",
    "hyperparameters-laundered": "verifier.segments",
    "fang-tiny-lr-drift": "verifier.segments",
    "zhang-forged-init": "verifier.init",
    "zhang-straight-line": "verifier.segments",
    "zhang-optimised-batches": "verifier.data",
    "forged-consistent-chain": "verifier.snapshots",
    "shard-only-spoof": "verifier.segments",
    "withheld-transcript": "verifier.snapshots",
}


# The executor's time limits are fixed (start-up) or scaled by this machine's measured matmul
# rate (steps); none of these spoofs is about time, and two xdist workers on two busy cores slowed
# a sandbox start-up past its limit once, so the Verifier here gets three times the limits.
TIME_SCALE = 3.0


@pytest.fixture(scope="module")
def results() -> Iterator[dict]:
    import computewatch.verifier

    made = []

    def request(*args: Any, **kwargs: Any) -> Any:
        made.append(kwargs.setdefault("time_scale", TIME_SCALE))
        return verify_request(*args, **kwargs)

    verify_request = computewatch.verifier.VerifyRequest
    with pytest.MonkeyPatch.context() as mp, Context() as ctx:  # one honest run, trained once, copied by every spoof
        mp.setattr(computewatch.verifier, "VerifyRequest", request)  # what adversary.world.verify_runs builds
        names = [*CAUGHT, "fang-tolerance-mode"]
        out = {name: run_attack(name, None, seed=7, context=ctx) for name in names}
        assert TIME_SCALE in made, "the Verifier was never asked through computewatch.verifier.VerifyRequest"
        yield out


@pytest.mark.parametrize("name", sorted(CAUGHT))
def test_spoof_is_caught_by_its_check(results: dict, name: str) -> None:
    result = results[name]
    assert result.detected_by == CAUGHT[name] == get_attack(name).expected, result.to_json()
    assert result.detected and result.ok and result.detection_rate == 1.0
    assert result.trials == get_attack(name).default_trials


def test_forged_consistent_chain_fails_only_against_the_chip(results: dict) -> None:
    # Every segment of the forged chain replays: only the chip-logged snapshots catch it, both
    # directly and where they pin the step commitments (issue 19).
    assert results["forged-consistent-chain"].checks == ["verifier.snapshots", "verifier.steps"]


def test_seeded_init_is_the_only_thing_that_catches_a_run_restarted_from_trained_weights(results: dict) -> None:
    for name in ("snapshot-is-init", "long-run-as-short-runs"):
        assert results[name].checks == ["verifier.init"], results[name].to_json()


def test_zhang_forged_init_passes_the_distribution_test_pol_uses(results: dict) -> None:
    r = results["zhang-forged-init"]
    assert r.extra["passes_pol_ks_test"] and all(k["ks_p_value"] >= 0.01 for k in r.extra["ks"])
    assert "not the one the committed seed gives" in r.detail


def test_altered_hyperparameters_break_the_chip_logged_precommitment(results: dict) -> None:
    assert "logged precommitment digest differs" in results["hyperparameters-altered"].detail


def test_fang_drift_exact_mode_catches_and_tolerance_mode_is_measured(results: dict) -> None:
    r = results["fang-tiny-lr-drift"]
    assert r.detection_rate == 1.0  # exact mode: every drift, however small
    tol = r.extra["tolerance"]
    assert [t["relative_lr_excess"] for t in tol] == [5e-7, 1e-2]
    for t in tol:  # tolerance mode decides by epsilon alone, as reported
        assert t["caught"] == (t["max_relative_distance"] > t["epsilon"]), t
    assert r.extra["tolerance_detection_rate"] == 1.0  # both drifts stand out of the replay noise


def test_fang_drift_is_caught_in_tolerance_mode_too(results: dict) -> None:
    r = results["fang-tolerance-mode"]
    tol = r.extra["tolerance"]
    # Epsilon comes from the distance between the Verifier's own replays (thread counts), so
    # the drift the Prover built into its records does not raise it.
    assert tol["epsilon"] < tol["max_relative_distance"]
    assert r.detected and r.ok and r.detected_by == "verifier.segments" and tol["verdict"] == "violation"