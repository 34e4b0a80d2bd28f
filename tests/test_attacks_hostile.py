"""Attack family "hostile training program" (issue 17), end to end through the command line and
the sandbox: each attack commits a program whose hostile lines act only under the Verifier's
replay; it is caught by the named check, or contained by the sandbox. Three of the family run
here (each costs a training and a CLI verification); `computewatch attack run --all` runs all."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from computewatch.adversary.suite import Context, attack_names, get_attack, run_attack
from computewatch.verifier.sandbox import sandbox_problem

FAMILY = {
    "program-rebinds-flop-counting": "verifier.compute",
    "program-rebinds-judge": "verifier.segments",
    "program-reads-next-checkpoint": "verifier.segments",
    "program-writes-outside-scratch": "sandbox.filesystem",
    "program-reads-secrets": "verifier.segments",
    "program-opens-network": "sandbox.network",
    "program-fork-bomb": "verifier.segments",
    "program-memory-bomb": "verifier.segments",
    "program-infinite-loop": "verifier.segments",
    "program-forges-result-lines": "verifier.segments",
    "program-detects-replay": "verifier.snapshots",
}
RUN_HERE = ("program-rebinds-flop-counting", "program-rebinds-judge", "program-reads-secrets")

pytestmark = pytest.mark.skipif(sandbox_problem() is not None, reason=f"no sandbox here: {sandbox_problem()}")


def test_the_family_is_registered_with_its_checks() -> None:
    listed = {n for n in attack_names() if get_attack(n).family == "hostile program"}
    assert listed == set(FAMILY)
    assert {n: get_attack(n).expected for n in FAMILY} == FAMILY


@pytest.fixture(scope="module")
def results() -> Iterator[dict]:
    with Context() as ctx:
        yield {name: run_attack(name, None, seed=3, context=ctx) for name in RUN_HERE}


@pytest.mark.parametrize("name", RUN_HERE)
def test_a_hostile_program_is_caught_or_contained(results: dict, name: str) -> None:
    result = results[name]
    assert result.ok and result.detected and result.detected_by == FAMILY[name], result.to_json()
