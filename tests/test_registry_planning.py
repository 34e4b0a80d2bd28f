"""Inspection planning (§3.2): s from Eq. 1, a committed seed, a draw anyone can re-derive after
the reveal and no one can predict before it; collusion pools owners; on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import blake3
import pytest

from computewatch.analysis import Setting
from computewatch.analysis import plan as eq1_plan
from computewatch.registry import PlanError, rederive
from computewatch.registry.planning import (
    DRAW_TAG,
    draw,
    encode_population,
    population_digest,
    seed_commitment,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "registry.md"
H100 = 989e12 * 86400  # the test chips' certified peak FLOP/s over a day


def _reference_draw(seed: bytes, commitment: str, n: int, k: int) -> list[int]:
    """The documented procedure written out plainly: a full list, words read one by one."""
    xof = blake3.blake3(DRAW_TAG + bytes.fromhex(commitment), key=seed)
    perm, offset = list(range(n)), 0
    for i in range(k):
        bound = n - i
        while True:
            w = int.from_bytes(xof.digest(length=8, seek=offset), "little")
            offset += 8
            if w < 2**64 - 2**64 % bound:
                break
        j = i + w % bound
        perm[i], perm[j] = perm[j], perm[i]
    return perm[:k]


def test_draw_vector_and_reference() -> None:
    seed = b"\x44" * 32
    assert seed_commitment(seed) == "18ae6afdab495b9129c4fdb7036d7f14149d5091a9c845f9a69978ff132229e9"
    assert draw(seed, "55" * 32, 10, 4) == [5, 8, 9, 0]
    assert draw(seed, "55" * 32, 1_000_000, 5) == [368125, 840788, 172337, 39871, 944450]
    pop = encode_population(["CW-0003", "CW-0001", "CW-0002"])
    assert pop == b"CW-0001\nCW-0002\nCW-0003\n"
    assert population_digest(pop) == "cee1ca91810748ba78065a2fe972a225e11d14d57a8236d8b2b4cc548f43f0e3"
    docs = DOCS.read_text()
    for value in ("18ae6afdab495b9129c4fdb7036d7f14149d5091a9c845f9a69978ff132229e9", "[5, 8, 9, 0]",
                  "[368125, 840788, 172337, 39871, 944450]",
                  "cee1ca91810748ba78065a2fe972a225e11d14d57a8236d8b2b4cc548f43f0e3"):
        assert value in docs, f"docs/registry.md must quote {value}"
    for n, k, s in ((1, 1, 1), (7, 7, 2), (1000, 13, 3), (100_003, 5, 4)):
        seed = bytes([s]) * 32
        assert draw(seed, "ab" * 32, n, k) == _reference_draw(seed, "ab" * 32, n, k)
    got = draw(b"\x01" * 32, "cd" * 32, 50, 50)
    assert sorted(got) == list(range(50)), "without replacement"
    with pytest.raises(PlanError, match="cannot draw 3 chips from a population of 2"):
        draw(seed, "ab" * 32, 2, 3)


def _fleet(registry, owners: dict[str, int]) -> dict[str, list[str]]:
    out, index = {}, 0
    for owner, count in owners.items():
        out[owner] = [registry.register(index + i, to=owner) for i in range(count)]
        index += count
    return out


def _past(days: float = 40.0) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def test_plan_is_reproducible_from_the_revealed_seed_and_bound_by_the_commitment(registry) -> None:
    reg = registry.reg
    fleet = _fleet(registry, {"acme": 6})
    committed, seed = reg.commit_plan("2026-01", ["acme"], flops=4 * H100 * 30, start=_past())
    setting = Setting(H=4 * H100 * 30, C=6.0, a=H100)
    assert committed["samples"] == eq1_plan(setting, "exact").samples_per_period < 6
    assert committed["population"] == 6 and committed["revealed"] is False
    with pytest.raises(PlanError, match="not revealed yet"):
        reg.plan(committed["plan"])
    secret = reg.plan(committed["plan"], seed)
    assert len(secret["chips"]) == committed["samples"] and set(secret["chips"]) <= set(fleet["acme"])
    with pytest.raises(PlanError, match="seed does not match the committed seed hash"):
        reg.plan(committed["plan"], b"\x00" * 32)
    with pytest.raises(PlanError, match="seed does not match"):
        reg.reveal(committed["plan"], b"\x00" * 32)
    revealed = reg.reveal(committed["plan"], seed)
    assert revealed["chips"] == secret["chips"] and revealed["revealed"]
    assert reg.plan(committed["plan"])["chips"] == secret["chips"]  # anyone, without the seed file
    with pytest.raises(PlanError, match="already revealed"):
        reg.reveal(committed["plan"], seed)
    # An outsider re-derives the plan from the published parts alone.
    parts = reg.plan_parts(committed["plan"])
    assert rederive(parts["document"], parts["population"], bytes.fromhex(parts["seed"]), parts["commitment"]) == secret["chips"]
    # The commitment binds the population: another population (or another document) does not pass.
    other = encode_population(fleet["acme"][:5])
    with pytest.raises(PlanError, match="population does not match"):
        rederive(parts["document"], other, seed, parts["commitment"])
    with pytest.raises(PlanError, match="does not hash to the commitment"):
        rederive(parts["document"].replace(b'"samples":', b'"samples": '), parts["population"], seed, parts["commitment"])
    with pytest.raises(PlanError, match="one plan per period"):
        reg.commit_plan("2026-01", ["acme"], flops=1.0 * H100 * 30)


def test_every_chip_is_drawn_when_no_smaller_plan_reaches_p(registry) -> None:
    reg = registry.reg
    fleet = _fleet(registry, {"acme": 3})
    committed, seed = reg.commit_plan("all", ["acme"], flops=H100 * 30, start=_past())
    assert committed["samples"] == 3 and "more than" in committed["reason"]
    assert sorted(reg.plan(committed["plan"], seed)["chips"]) == sorted(fleet["acme"])


def test_seed_is_revealed_only_after_the_period(registry) -> None:
    reg = registry.reg
    _fleet(registry, {"acme": 2})
    committed, seed = reg.commit_plan("now", ["acme"], flops=H100 * 30)
    with pytest.raises(PlanError, match="reveal the seed after it"):
        reg.reveal(committed["plan"], seed)
    assert reg.plans()[0]["revealed"] is False


def test_same_seed_other_population_gives_another_commitment(registry) -> None:
    reg = registry.reg
    fleet = _fleet(registry, {"acme": 4, "beta": 4})
    seed = b"\x42" * 32
    a, _ = reg.commit_plan("p", ["acme"], flops=H100 * 30, seed=seed, start=_past())
    b, _ = reg.commit_plan("p", ["beta"], flops=H100 * 30, seed=seed, start=_past())
    assert a["seed_commitment"] == b["seed_commitment"] and a["commitment"] != b["commitment"]
    assert set(reg.plan(a["plan"], seed)["chips"]) <= set(fleet["acme"])
    assert set(reg.plan(b["plan"], seed)["chips"]) <= set(fleet["beta"])


def test_collusion_pools_owners_that_alone_could_not_do_the_run(registry) -> None:
    reg = registry.reg
    fleet = _fleet(registry, {"acme": 3, "beta": 3})
    H = 4 * H100 * 30  # needs 4 chips for 30 days: neither owner alone can
    alone, _ = reg.commit_plan("q", ["acme"], flops=H, start=_past())
    assert alone["samples"] == 0 and ">= 1" in alone["reason"]
    pooled, seed = reg.commit_plan("q", ["acme", "beta"], flops=H, start=_past())
    assert pooled["pooled"] and pooled["stockpile"] == "acme+beta" and pooled["population"] == 6
    expected = eq1_plan(Setting(H=H, C=6.0, a=H100), "exact").samples_per_period
    assert pooled["samples"] == min(6, math.ceil(expected)) > 0
    world, _ = reg.commit_plan("q", None, flops=H, start=_past())
    assert world["stockpile"] == "*" and world["population"] == 6
    drawn = reg.plan(pooled["plan"], seed)["chips"]
    assert set(drawn) <= set(fleet["acme"] + fleet["beta"])


def test_exempt_and_lost_chips_leave_the_population_and_visits_group_by_facility(registry) -> None:
    reg, keys = registry.reg, registry.keys
    chips = [registry.register(i) for i in range(5)]
    for i, serial in enumerate(chips):
        reg.ship(serial, "acme", keys["maker"], keys["acme"], facility="hall-a" if i % 2 else "hall-b")
    reg.exempt(chips[0], "research")
    reg.report_with_key(chips[1], "lost", keys["acme"])
    committed, seed = reg.commit_plan("r", ["acme"], flops=H100 * 300, group_by_facility=True, start=_past())
    assert committed["population"] == 3
    plan = reg.plan(committed["plan"], seed)
    assert set(plan["chips"]) <= set(chips[2:])
    assert sorted(c for v in plan["visits"] for c in v["chips"]) == sorted(plan["chips"])
    for visit in plan["visits"]:
        assert visit["holder"] == "acme" and visit["facility"] in ("hall-a", "hall-b")
        assert all((chips.index(c) % 2 == 1) == (visit["facility"] == "hall-a") for c in visit["chips"])
    with pytest.raises(PlanError, match="nothing to sample"):
        reg.commit_plan("r", ["beta"], flops=H100)
    with pytest.raises(PlanError, match=r"Eq. 1"):
        reg.commit_plan("s", ["acme"], flops=-1.0)


def test_plan_status_follows_the_inspections(registry) -> None:
    reg = registry.reg
    _fleet(registry, {"acme": 3})
    committed, seed = reg.commit_plan("t", ["acme"], flops=H100 * 30, start=_past(10), T_m=30)
    drawn = reg.plan(committed["plan"], seed)["chips"]
    reg.refuse(drawn[0], "not presented", plan=committed["plan"])
    status = reg.plan_status(committed["plan"], seed)
    assert status["counts"]["refused"] == 1 and status["counts"]["pending"] == len(drawn) - 1
    assert not status["complete"] and status["chips"][0]["outcome"] == "refused"
