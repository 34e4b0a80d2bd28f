"""Location attacks (docs/registry.md "Location"): a relay at home in front of a chip abroad, a
replayed measurement, a precomputed answer, an unregistered landmark and a chip answering for
another are each caught by the named check of `Registry.locate`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from computewatch.adversary.suite import Context, attack_names, get_attack, run_attack

CAUGHT = {
    "location-relay-abroad": "location.radius",
    "location-replayed": "location.replay",
    "location-precomputed": "location.chip-signature",
    "location-unregistered-landmark": "location.landmark",
    "location-other-chip": "location.chip-signature",
}


@pytest.fixture(scope="module")
def ctx() -> Iterator[Context]:
    with Context() as c:
        yield c


def test_the_location_family_is_exactly_these_attacks() -> None:
    assert {n for n in attack_names() if get_attack(n).family == "location"} == set(CAUGHT)


@pytest.mark.parametrize("name", sorted(CAUGHT))
def test_location_attack_is_caught_by_its_check(ctx: Context, name: str) -> None:
    result = run_attack(name, 1, seed=0, context=ctx)
    assert result.detected_by == CAUGHT[name] == get_attack(name).expected, result.to_json()
    assert result.detected and result.ok and result.detection_rate == 1.0 and result.detail
