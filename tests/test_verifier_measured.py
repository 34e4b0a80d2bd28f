"""Compute the Verifier measures (issue 18 item 1): the executor tree's CPU time as the kernel
accounts it (children and reaped grandchildren included), the reference kernel, the conversion
to FLOPs and the `compute` judgement against the executor's count."""

from __future__ import annotations

import subprocess
import sys
import time

from computewatch.verifier.flops import count_flops
from computewatch.verifier.measured import EFFICIENCY, FLOOR_S, OVERHEAD_S, MeasuredJob, measurable, measured_flops, reference_rate, tree_cpu_seconds
from computewatch.verifier.verification import _measured_total

# A parent that burns CPU in a child it waits for (reaped: its time moves into the parent's
# cutime) and in a grandchild it never waits for, then idles so the tree can be read.
_TREE = """
import os, sys, time
def burn(s):
    end = time.process_time() + s
    while time.process_time() < end:
        pass
pid = os.fork()
if pid == 0:
    if os.fork() == 0:
        burn(0.3); os._exit(0)
    burn(0.3); os._exit(0)
os.waitpid(pid, 0)
burn(0.2)
print("done", flush=True)
time.sleep(30)
"""


def test_the_whole_process_tree_is_measured_reaped_children_included() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
        time.sleep(0.4)  # the orphaned grandchild finishes its 0.3 s (reaped by init: outside the tree here)
        cpu = tree_cpu_seconds(proc.pid)
        assert cpu is not None and cpu >= 0.45  # parent 0.2 + reaped child 0.3 (at clock-tick resolution)
    finally:
        proc.kill()
        proc.wait()
    assert tree_cpu_seconds(proc.pid) is None  # gone: nothing to measure


def test_the_reference_rate_is_a_plausible_cpu_matmul_rate() -> None:
    rate = reference_rate()
    assert 1e8 < rate < 1e13


def test_measured_flops_allow_the_per_step_overhead_and_scale_by_the_efficiency() -> None:
    rate = 1e11
    jobs = [MeasuredJob(cpu_seconds=4 * OVERHEAD_S + FLOOR_S + 0.5, steps=4), MeasuredJob(cpu_seconds=0.01, steps=4)]
    flops, steps = measured_flops(jobs, rate)
    assert steps == 8 and abs(flops - 0.5 * rate * EFFICIENCY) < 1e-6 * flops  # the second job is all overhead: 0, not negative
    # A run whose CPU beyond the allowance stays inside the floor (a fresh executor's first-call
    # costs) measures nothing; the floor is taken once per run, not per job.
    assert measured_flops([MeasuredJob(4 * OVERHEAD_S + 0.9 * FLOOR_S, 4)], rate)[0] == 0.0
    split = measured_flops([MeasuredJob(4 * OVERHEAD_S + FLOOR_S, 4), MeasuredJob(4 * OVERHEAD_S + 0.5, 4)], rate)[0]
    assert abs(split - 0.5 * rate * EFFICIENCY) < 1e-6 * split
    assert not measurable(MeasuredJob(1.0, 4, threads=2)) and measurable(MeasuredJob(1.0, 4, threads=1))
    assert not measurable(MeasuredJob(1.0, 4, ranks=2))


def test_the_run_total_extrapolates_per_replayed_step_and_skips_multithreaded_jobs() -> None:
    jobs = [MeasuredJob(OVERHEAD_S * 4 + FLOOR_S + 1.0, 4), MeasuredJob(50.0, 4, threads=4)]
    run = {"measured_jobs": jobs, "reference_rate": 1e11, "steps": 40}
    total = _measured_total(run)
    assert total is not None and abs(total - 1.0 * 1e11 * EFFICIENCY * 10) < 1e-6 * total
    assert _measured_total({"measured_jobs": [MeasuredJob(9.0, 4, threads=2)], "reference_rate": 1e11, "steps": 40}) is None


def test_flop_counts_of_steps_add_up() -> None:
    import torch

    a = torch.randn(8, 8)
    _, one = count_flops(lambda: a @ a)
    _, two = count_flops(lambda: a @ a)
    assert one.add(two).total == 2 * 2 * 8**3 and one.by_op["aten.mm"] == 2 * 2 * 8**3
