"""Cost of the step commitments (issue 19, item 1) beside the plain training step, CPU presets.

Method. Two copies of the same demo run (same seed, same batches) train side by side in this
process, one plain and one with the Recorder's `StepCommitter` attached (the per-step work the
commitments add: the chip's shard digest of the weights, the optimizer-state digest and the
update norm, computed by a background thread while the next forward/backward runs, with an
optimizer pre-hook that waits for it). Steps alternate one by one, the order within a pair
flipping every repetition, so load from other processes hits both alike. Reported per preset:

- ``critical_share``: time the training thread spends on commitments (handing the job over,
  plus any wait in the optimizer pre-hook) over the plain step time. This is the cost the
  training loop sees, measured directly, insensitive to other load. Target: <= 0.005.
- ``paired_overhead``: total committed-loop time over plain-loop time minus one (noisy on a
  loaded machine: it includes the background thread competing for cores).
- ``inline_share``: the background thread's work per step over the plain step time: what
  computing the commitment synchronously on the step would cost (the honest size of the work).
- ``inline_cpu_share``: the same work in the thread's own CPU time (what it costs on a free
  core; the wall-time figure above includes the time other processes held the core).
- ``state_bytes``: bytes hashed per step (weights + optimizer state).

    python benchmarks/bench_step_commitments.py --json [--presets mlp,tiny,small] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from _overhead import _Loop  # benchmarks/_overhead.py (this script's folder is on sys.path)

from computewatch.formats.commitments import live_optimizer_tensors
from computewatch.formats.program import deterministic_cpu
from computewatch.prover.commitments import StepCommitter
from computewatch.prover.recorder import local_tensors
from computewatch.prover.runner import TrainConfig, isolated_torch_state


class _Timed(StepCommitter):
    """Counts the background work per commitment (the inline cost it replaces)."""

    work_s = 0.0
    work_cpu_s = 0.0

    def _commit(self) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return super()._commit()
        finally:
            self.work_s += time.perf_counter() - t0
            self.work_cpu_s += time.thread_time() - c0


def measure(preset: str, repeats: int) -> dict[str, Any]:
    config = TrainConfig(out=Path("."), preset=preset, steps=2 * repeats + 8, nonce=b"computewatch-bench")
    plain, committed = _Loop(config, repeats + 4), _Loop(config, repeats + 4)
    plain.run(2, None)
    committed.run(2, None)
    committer = _Timed(0, lambda: local_tensors(committed.model), committed.optimizer)
    critical = 0.0

    def after(step: int, ids: Any, loss: float) -> None:
        nonlocal critical
        t0 = time.perf_counter()
        committer.start(step)
        critical += time.perf_counter() - t0

    t_plain = t_comm = 0.0
    for rep in range(repeats):
        if rep % 2 == 0:
            t_plain += plain.run(1, None)
            t_comm += committed.run(1, after)
        else:
            t_comm += committed.run(1, after)
            t_plain += plain.run(1, None)
    taken = committer.take()
    committer.close()
    critical += committer.wait_s
    state_bytes = sum(p.numel() * p.element_size() for p in local_tensors(committed.model))
    state_bytes += sum(t.numel() * t.element_size() for t in live_optimizer_tensors(committed.optimizer).values())
    step_s = t_plain / repeats
    return {
        "preset": preset,
        "steps": repeats,
        "commitments": len(taken),
        "plain_step_s": step_s,
        "state_bytes": state_bytes,
        "critical_share": critical / t_plain,
        "hook_wait_s_total": committer.wait_s,
        "paired_overhead": t_comm / t_plain - 1.0,
        "inline_share": committer.work_s / t_plain,
        "inline_cpu_share": committer.work_cpu_s / t_plain,
        "target_met": critical / t_plain <= 0.005,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="mlp,tiny,small")
    ap.add_argument("--repeats", type=int, default=0, help="steps per side (default: per preset)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    args = ap.parse_args()
    default = {"mlp": 400, "tiny": 120, "small": 30}
    out = {"method": "interleaved plain vs committed steps, same process; critical_share is the target metric", "results": []}
    with isolated_torch_state():
        deterministic_cpu(args.threads)
        out["threads"] = torch.get_num_threads()
        for name in args.presets.split(","):
            out["results"].append(measure(name, args.repeats or default.get(name, 50)))
    out["all_met"] = all(r["target_met"] for r in out["results"])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
