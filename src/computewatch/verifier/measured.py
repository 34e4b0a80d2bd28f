"""Compute the Verifier measures itself (issue 18): CPU time of the executor's process tree,
read by the judge from the kernel, against a reference kernel the judge times in its own process.

The executor's FLOP count is the program's claim: it runs in the program's process, and work done
with torch's dispatch modes disabled, or in a thread or process of its own, never reaches it. The
CPU time that work takes is the kernel's account, which the judge reads from `/proc` for the
executor and every process below it (`utime + stime` of the live ones, `cutime + cstime` of those
already reaped: inside the sandbox every orphan is reaped by the sandbox's own init, so no child
escapes the sum). A program can only raise it by spending more.

The CPU time becomes FLOPs through the judge's reference kernel: a single-threaded float32
matmul of known FLOPs timed in CPU seconds (`reference_rate`, the best of a few timings, so load
on the machine can only make it look faster, never slower than the machine is), then

    measured = max(0, sum over jobs of max(0, cpu_seconds - steps x OVERHEAD_S) - FLOOR_S) x rate x EFFICIENCY

OVERHEAD_S allows each step the CPU time that is not arithmetic (Python, torch's dispatch, the
counter itself); FLOOR_S, once per run, the first-call costs a fresh executor pays whatever the
program (torch's lazy imports and allocator on its first steps); EFFICIENCY is the share of the reference rate an honest step's remaining CPU
time reaches at the least. Both are set from honest replays with margin (docs/verifier.md,
"Measured compute": figures and noise), so that the measured figure stays at or below an honest
program's count, and work hidden from the counter shows as a count far below it.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EFFICIENCY", "FLOOR_S", "OVERHEAD_S", "MeasuredJob", "measurable", "measured_flops", "reference_rate", "tree_cpu_seconds"]

# Per replayed step and thread, CPU seconds allowed for what is not arithmetic (Python, torch's
# dispatch, the FLOP counter itself, collate); and the share of the reference rate an honest
# step's remaining CPU time reaches at the least. Both from honest replays (docs/verifier.md).
OVERHEAD_S = 0.05
EFFICIENCY = 0.1
# CPU seconds of a run's replays beyond the per-step allowance that no finding rests on: a fresh
# executor's first steps pay one-time costs (0.1-0.2 s measured), which on a few-step run of a
# tiny model exceeded what its count needs and made honest runs `compute` findings on a loaded
# machine. Hidden work under it is not flagged; the attack suite's hidden passes cost about 3 s.
FLOOR_S = 0.5
_REFERENCE_N = 256  # 2·N^3 FLOPs per product: fits in cache, the CPU's best case
_LOCK = threading.Lock()


@dataclass(frozen=True)
class MeasuredJob:
    """One replay job as the judge measured it: the executor tree's CPU seconds and its steps."""

    cpu_seconds: float
    steps: int
    threads: int = 1
    ranks: int = 1


def _stat_times(pid: int) -> tuple[int, int, float] | None:
    """(parent pid, own pid, CPU ticks incl. reaped children) of a process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        ppid = int(fields[1])
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    except (IndexError, ValueError):
        return None
    return ppid, pid, float(ticks)


def tree_cpu_seconds(root: int) -> float | None:
    """CPU seconds the process `root` and every process below it have used so far (reaped
    children included); None when `root` is gone or `/proc` cannot be read."""
    table: dict[int, tuple[int, float]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    for name in names:
        if name.isdigit():
            got = _stat_times(int(name))
            if got is not None:
                table[got[1]] = (got[0], got[2])
    if root not in table:
        return None
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    ticks, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        ticks += table[pid][1]
        todo.extend(children.get(pid, []))
    return ticks / os.sysconf("SC_CLK_TCK")


def _time_reference() -> float:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(_REFERENCE_N, _REFERENCE_N), torch.randn(_REFERENCE_N, _REFERENCE_N)
        best = 0.0
        for _ in range(5):
            start, n = time.thread_time(), 0
            while True:
                a @ b
                n += 1
                spent = time.thread_time() - start
                if spent >= 0.02:
                    break
            best = max(best, n * 2 * _REFERENCE_N**3 / spent)
        return best
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=1)
def _first_rate() -> float:
    return _time_reference()


def reference_rate() -> float:
    """This machine's FLOPs per CPU second on the reference kernel, timed in the judge's process
    (the program cannot touch it): the larger of this process's first timing and a fresh one."""
    with _LOCK:
        return max(_first_rate(), _time_reference())


def measurable(job: MeasuredJob) -> bool:
    """Whether a job's CPU time says something: one process, one thread. With several intra-op
    threads OpenMP's threads spin while they wait for each other, and ranks spin in gloo's
    collectives; on a loaded machine that multiplies the CPU time (measured: 8 to 10 times the
    single-threaded figure at a load of 10 to 20 on 2 cores; a 2-rank DDP replay of the demo MLP
    about 100 times its count)."""
    return job.threads == 1 and job.ranks == 1


def measured_flops(jobs: list[MeasuredJob], rate: float) -> tuple[float, int]:
    """(FLOPs the measured CPU time stands for, steps it covers): per job, the CPU seconds beyond
    the allowance of OVERHEAD_S per step, summed, less FLOOR_S once, at EFFICIENCY of the
    reference rate. One run's single-threaded jobs only (`measurable`)."""
    beyond = sum(max(0.0, j.cpu_seconds - j.steps * OVERHEAD_S) for j in jobs)
    return max(0.0, beyond - FLOOR_S) * rate * EFFICIENCY, sum(j.steps for j in jobs)
