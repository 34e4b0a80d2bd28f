"""The snapshot trigger: Poisson at rate f in busy time, unpredictable without the chip secret,
and the realised snapshot times match the schedule the chip revealed."""

from __future__ import annotations

from scipy import stats

from computewatch.chip import Chip
from _chips import booted_chip, run_steps
from computewatch.formats.schedule import (
    arrivals,
    commitment,
    epoch_seed,
    iter_arrivals,
    schedule_key,
)

DAY_NS = 86_400 * 10**9


def test_arrival_rate_matches_f_statistically() -> None:
    f, days = 50.0, 400
    seed = epoch_seed(schedule_key(b"\x42" * 32), 0)
    times = arrivals(seed, f, 0, days * DAY_NS)
    n = len(times)
    # Total count: Poisson(f * days); a 99.9% interval.
    lo, hi = stats.poisson.ppf([0.0005, 0.9995], f * days)
    assert lo <= n <= hi, n
    # Per-day counts are Poisson(f): chi-square dispersion test (variance = mean).
    per_day = [0] * days
    for t in times:
        per_day[min((t - 1) // DAY_NS, days - 1)] += 1
    mean = sum(per_day) / days
    dispersion = sum((c - mean) ** 2 for c in per_day) / mean
    p = stats.chi2.sf(dispersion, days - 1)
    assert 0.001 < p < 0.999, p
    # Gaps are exponential with mean 1/f days (Kolmogorov-Smirnov).
    gaps = [(b - a) / DAY_NS for a, b in zip([0, *times[:-1]], times, strict=True)]
    assert stats.kstest(gaps, "expon", args=(0, 1 / f)).pvalue > 0.001


def test_schedules_differ_per_chip_and_epoch_and_commitments_bind() -> None:
    k1, k2 = schedule_key(b"\x01" * 32), schedule_key(b"\x02" * 32)
    s = {epoch_seed(k, e) for k in (k1, k2) for e in range(3)}
    assert len(s) == 6
    first = [next(iter_arrivals(x, 10.0, 0)) for x in s]
    assert len(set(first)) == 6
    assert commitment(epoch_seed(k1, 0)) != commitment(epoch_seed(k1, 1))
    assert list(iter_arrivals(epoch_seed(k1, 0), 0.0, 0)) == []


def test_realised_snapshots_match_the_revealed_schedule(tmp_path) -> None:
    f = 50.0
    chip = booted_chip(tmp_path, rate=f, epoch_busy_s=6 * 3600)
    steps, step_s = 300, 900.0  # 75 busy hours: many epochs, several triggers per step at times
    taken = run_steps(chip, steps, step_s)
    chip.close()
    log = list(chip.log)
    commits = {e.body["epoch"]: e for e in log if e.kind == "schedule-commit"}
    reveals = {e.body["epoch"]: e for e in log if e.kind == "schedule-reveal"}
    assert set(commits) == set(reveals) and len(commits) >= 12
    realised: dict[int, list[int]] = {}
    for e in log:
        if e.kind == "snapshot":
            realised.setdefault(e.body["epoch"], []).extend(int(t) for t in e.body["triggers"])
            for t in e.body["triggers"]:
                assert int(e.body["step_start_busy_ns"]) < int(t) <= e.busy_ns
    total = 0
    for epoch, c in commits.items():
        seed = bytes.fromhex(reveals[epoch].body["seed"])
        assert commitment(seed).hex() == c.body["commitment"]
        expected = arrivals(seed, f, int(c.body["start_busy_ns"]), int(reveals[epoch].body["end_busy_ns"]))
        assert realised.get(epoch, []) == expected
        total += len(expected)
    assert taken == sum(1 for e in log if e.kind == "snapshot") > 0
    days = steps * step_s / 86_400
    assert stats.poisson.ppf(0.0005, f * days) <= total <= stats.poisson.ppf(0.9995, f * days)
    assert chip.audit().ok


def test_restart_continues_counters_clock_and_epochs(tmp_path) -> None:
    chip = booted_chip(tmp_path, rate=20.0)
    run_steps(chip, 10, 3600.0)
    before = chip.clock_reading()
    chip.close()
    n = len(chip.log)
    assert chip.log[n - 2].kind == "shutdown"
    again = Chip.open(chip.state_dir)
    again.boot()
    after = again.clock_reading()
    assert after.busy_ns == before.busy_ns and after.clock_ns >= before.clock_ns
    assert after.reset_count == before.reset_count + 1 and after.safe
    assert again.log[n].counter == n and again.log[n].kind == "boot"
    epochs = [e.body["epoch"] for e in again.log if e.kind == "schedule-commit"]
    assert epochs == sorted(set(epochs)) and len(epochs) >= 2
    again.idle(3600.0)
    assert again.clock_reading().clock_ns > after.clock_ns and again.clock_reading().busy_ns == after.busy_ns
    again.close()
    assert again.audit().ok


def test_a_clock_supplied_by_the_owner_is_read_not_driven_and_busy_time_follows_it(tmp_path) -> None:
    from computewatch.chip import SimulatedClock, provision_chips
    from computewatch.chip.exercise import small_shard

    (state,) = provision_chips(tmp_path, 1, snapshots_per_day=1.0)
    clock = SimulatedClock()
    chip = Chip.open(state, clock=clock)
    chip.boot()
    chip.attach(small_shard(), tmp_path / "s")
    # Busy time is what the secure clock measured since the last boundary, not the owner's number.
    chip.step_boundary(0, 100.0)
    assert chip.clock_reading().clock_ns == 0 and chip.busy_ns == 0
    clock.advance(5.0)
    chip.step_boundary(1, 0.0)
    assert chip.clock_reading().clock_ns == 5 * 10**9 and chip.busy_ns == 5 * 10**9
    chip.close()
    assert chip.audit().ok
