"""The "program claims" family: each attack caught by the check it names (issue 18)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from computewatch.adversary.suite import Context, attack_names, get_attack, run_attack

CLAIMS = [n for n in attack_names() if get_attack(n).family == "program claims"]


@pytest.fixture(scope="module")
def ctx() -> Iterator[Context]:
    with Context() as c:
        yield c


def test_the_family_is_registered() -> None:
    assert {"losses-recorded-null", "borrowed-run-id", "chip-busy-zero", "chip-busy-beyond-transcript",
            "split-run-embedded-init", "custom-program-banned-by-policy", "tolerance-inflated-by-threads", "collate-embedded-text", "loss-plus-ten",
            "extra-passes-every-other-step", "extra-passes-hidden-from-counter"} <= set(CLAIMS)


@pytest.mark.parametrize("name", CLAIMS)
def test_each_claim_is_caught_by_its_check(ctx: Context, name: str) -> None:
    r = run_attack(name, 1, seed=3, context=ctx)
    assert r.ok and r.detected and r.detected_by == get_attack(name).expected, r.to_json()
