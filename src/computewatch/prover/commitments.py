"""The Recorder's step commitments, computed off the training step's critical path.

After optimizer step t the weights W_{t+1} and the optimizer state stay untouched until the next
optimizer step: the forward and backward passes only read them. So the commitment (the chip's
shard digest of the rank's parameters, the digest of its optimizer state and the update norm,
`computewatch.formats.commitments`) is computed by one background thread while the next step's
forward and backward run, zero-copy over the live tensors, and an optimizer step pre-hook waits
for it before the optimizer may write. The only work left on the critical path is handing the
job over and, if the thread is late, the wait. The update norm needs W_t: a copy of the
parameters (not of the optimizer state) is kept and refreshed by the same thread.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from computewatch.formats.commitments import ShardHasher, StateCommitment, live_commitment

__all__ = ["StepCommitter"]


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _inner_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer itself, also inside a wrapper (accelerate, Lightning) that keeps it
    as ``optimizer`` or ``_optimizer``."""
    seen = 0
    while not isinstance(optimizer, torch.optim.Optimizer) and seen < 4:
        optimizer = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        seen += 1
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def _pre_hook(optimizer: Any, fn: Callable[..., None]) -> Any:
    """An optimizer step pre-hook on the real torch optimizer, or None where there is none
    (then commitments are computed on the step itself)."""
    inner = _inner_optimizer(optimizer)
    try:
        return inner.register_step_pre_hook(fn) if inner is not None else None
    except AttributeError:  # a subclass that skipped Optimizer.__init__
        return None


class StepCommitter:
    """One rank's commitments, one per recorded step, in step order."""

    def __init__(self, rank: int, params: Callable[[], Sequence[torch.Tensor]], optimizer: torch.optim.Optimizer) -> None:
        self.rank = rank
        self._params = params
        self._optimizer = _inner_optimizer(optimizer) or optimizer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"computewatch-commit-{rank}")
        self._cached: list[torch.Tensor] | None = None  # detached views of the parameters' memory
        self._prev = [_local(p).detach().clone() for p in params()]
        self._last: Future[StateCommitment] | None = None
        self._pending: list[tuple[int, Future[StateCommitment]]] = []
        self._lock = threading.Lock()
        self._hook = _pre_hook(optimizer, lambda *_: self.wait())
        self._hashers = (ShardHasher(), ShardHasher())
        self.wait_s = 0.0  # critical-path time spent waiting for a late commitment

    def start(self, step: int) -> None:
        """Commit the state after `step` (call right after the optimizer step)."""
        self.wait()
        if self._hook is None:  # no way to hold the next optimizer step back: commit now
            fut: Future[StateCommitment] = Future()
            fut.set_result(self._commit())
        else:
            fut = self._pool.submit(self._commit)
        self._last = fut
        with self._lock:
            self._pending.append((step, fut))

    def _commit(self) -> StateCommitment:
        if self._cached is None:
            self._cached = [_local(p).detach() for p in self._params()]
        params = self._cached
        with torch.no_grad():
            diffs = torch._foreach_sub(params, self._prev) if params else []
            norms = torch._foreach_norm(list(diffs)) if diffs else []
            norm = math.sqrt(sum(float(n) ** 2 for n in norms))
            del diffs
            commitment = live_commitment(self.rank, params, self._optimizer, norm, self._hashers)
            if params:
                torch._foreach_copy_(self._prev, params)
        return commitment

    def wait(self) -> None:
        """Block until the last commitment is computed (the state may change after this)."""
        fut = self._last
        if fut is not None and not fut.done():
            import time

            t0 = time.perf_counter()
            fut.result()
            self.wait_s += time.perf_counter() - t0

    def take(self) -> list[tuple[int, StateCommitment]]:
        """Every finished commitment since the last call, in step order (waits for the last one)."""
        self.wait()
        with self._lock:
            pending, self._pending = self._pending, []
        return [(step, fut.result()) for step, fut in pending]

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
        self._pool.shutdown(wait=True)

    def __del__(self) -> None:  # a Recorder that was never closed must not leave the hook behind
        hook: Any = getattr(self, "_hook", None)
        if hook is not None:
            hook.remove()
