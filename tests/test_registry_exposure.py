"""The covert-capacity bound (`registry exposure`), on SQLite and PostgreSQL: per owner and
overall, chips, inspected, unaccounted (lost, refused, placed outside their facility),
unexplained snapshots and the largest run the actual inspections do not rule out; the inversion
of Eq. 1 is checked against the closed form and against the Monte Carlo world simulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from computewatch.analysis import Setting
from computewatch.analysis.detection import detection_probability
from computewatch.analysis.exposure import sampled_hidden_flops
from computewatch.analysis.montecarlo import simulate
from computewatch.chip import Chip
from computewatch.chip.exercise import run_steps, small_shard
from computewatch.cli import app

runner = CliRunner()
A = 989e12 * 86400  # the test chips' certified peak FLOP/s over a day


def test_the_bound_inverts_eq1_and_the_simulator_agrees() -> None:
    C, s, f, T_m, p = 2000, 20, 0.1, 30.0, 0.9
    H = sampled_hidden_flops(C, s, a=A, f=f, T_m=T_m, p=p)
    setting = Setting(H=H, C=C, a=A, f=f, T=T_m, T_m=T_m, p=p)
    assert detection_probability(setting, s) == pytest.approx(p, abs=1e-12)
    # The world simulator (run chips drawn without replacement, Poisson snapshots, a run inside
    # one period): a run of H* is caught with probability p, a run a quarter smaller is not.
    mc = simulate(setting, s, 20_000, seed=1, offset=0.0)
    assert mc.ci95[0] - 0.01 <= p <= mc.ci95[1] + 0.01, mc
    smaller = simulate(setting.replace(H=0.75 * H), s, 20_000, seed=2, offset=0.0)
    assert smaller.ci95[1] < p
    # No inspection rules nothing out; more inspections shrink the bound.
    assert sampled_hidden_flops(C, 0, a=A, f=f, T_m=T_m, p=p) == A * T_m * C
    assert sampled_hidden_flops(C, 40, a=A, f=f, T_m=T_m, p=p) < H < sampled_hidden_flops(C, 10, a=A, f=f, T_m=T_m, p=p)


def _use(chip_dir) -> None:
    chip = Chip.open(chip_dir)
    chip.boot()
    chip.attach(small_shard(), chip_dir.parent / f"{chip_dir.name}-storage")
    run_steps(chip, 3, 1800.0)
    chip.close()


def test_exposure_counts_the_register_and_bounds_each_owner(registry) -> None:
    reg, keys = registry.reg, registry.keys
    acme = [registry.register(i, to="acme") for i in range(4)]
    for i in (4, 5):
        registry.register(i, to="beta")
    chip = registry.fresh_chip(0)
    _use(chip)
    inspected = reg.record_inspection(acme[0], chip)
    reg.refuse(acme[1], "the owner refused entry")
    reg.report_with_key(acme[3], "lost", keys["acme"], reason="missing")
    db = reg.engine.url.render_as_string(hide_password=False)
    r = runner.invoke(app, ["registry", "exposure", "--p", "0.9", "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    by = {o["name"]: o for o in doc["owners"]}
    keys_ = {"chips", "inspected", "unaccounted", "unexplained_snapshots", "max_hidden_flops"}
    assert keys_ <= set(doc["overall"]) and all(keys_ | {"name"} <= set(o) for o in doc["owners"])
    a, f, T_m = doc["setting"]["a"], doc["setting"]["f"], doc["setting"]["T_m"]
    assert (a, f, T_m) == (A, 0.1, 30.0)
    # acme: 4 chips; chip 0 inspected, chip 1 refused and chip 3 lost (unaccounted), chip 2 not sampled.
    assert (by["acme"]["chips"], by["acme"]["inspected"], by["acme"]["unaccounted"]) == (4, 1, 2)
    assert by["acme"]["unexplained_snapshots"] == inspected["queued"] > 0
    assert by["acme"]["max_hidden_flops"] == pytest.approx(
        sampled_hidden_flops(2, 1, a=a, f=f, T_m=T_m, p=0.9) + 2 * a * T_m)
    # beta: nothing inspected, so its whole stockpile could have run unobserved.
    assert (by["beta"]["chips"], by["beta"]["inspected"], by["beta"]["max_hidden_flops"]) == (2, 0, pytest.approx(2 * a * T_m))
    overall = doc["overall"]
    assert (overall["chips"], overall["inspected"], overall["unaccounted"]) == (6, 1, 2)
    assert overall["max_hidden_flops"] == pytest.approx(sampled_hidden_flops(4, 1, a=a, f=f, T_m=T_m, p=0.9) + 2 * a * T_m)
    # A higher confidence rules out less.
    assert reg.exposure(p=0.99)["overall"]["max_hidden_flops"] > overall["max_hidden_flops"]
    # A period names a committed plan (its window and rate); an unknown one is unusable input.
    now = datetime.now(UTC)
    reg.commit_plan("2026-Q1", ["acme"], flops=1e24, f=0.5, T_m=10.0, start=now - timedelta(days=1))
    reg.commit_plan("2026-Q2", ["acme"], flops=1e24, f=0.5, T_m=10.0, start=now + timedelta(days=1))
    planned, later = reg.exposure("2026-Q1"), reg.exposure("2026-Q2")
    assert (planned["setting"]["f"], planned["setting"]["T_m"]) == (0.5, 10.0)
    assert {o["name"]: o["inspected"] for o in planned["owners"]}["acme"] == 1
    # The next period has no inspection yet (nor the refusal): all of acme's chips in service could hide a run.
    acme_later = {o["name"]: o for o in later["owners"]}["acme"]
    assert (acme_later["inspected"], acme_later["unaccounted"]) == (0, 1)
    assert acme_later["max_hidden_flops"] == pytest.approx(4 * later["setting"]["a"] * 10.0)
    bad = runner.invoke(app, ["registry", "exposure", "--period", "nope", "--db", db, "--json"])
    assert bad.exit_code == 2 and "nope" in json.loads(bad.stdout)["error"]
    # A chip of acme's turns up at beta, off its custody trail: acme answers for it (untracked).
    reg.report_found(acme[2], "beta")
    moved = {o["name"]: o for o in reg.exposure()["owners"]}
    assert (moved["acme"]["chips"], moved["acme"]["unaccounted"]) == (3, 3) and moved["beta"]["chips"] == 3
