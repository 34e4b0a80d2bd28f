"""Worker threads that sleep when idle (OpenMP's passive wait policy).

torch's CPU kernels run on OpenMP threads that, by default, spin for a while after each parallel
region waiting for the next one. On a machine whose cores are shared (other processes, other
executors, a loaded CI runner) the spinning threads steal the very cores the work needs: two
intra-op threads measured 4.7-8.1x slower than one at load 3 (issue 24). The passive policy makes
idle threads sleep instead. It changes scheduling only, never which thread adds which numbers,
so exact replay stays bit-identical.

OpenMP reads the policy once, when the runtime loads (with torch), so it must be in the
environment before torch is imported: the CLI sets it first thing, the trainer before it spawns
ranks, the executor's sandbox in its fixed environment, the tests in conftest. A value the user
set is kept.
"""

from __future__ import annotations

import os

__all__ = ["PASSIVE_THREADS_ENV", "prefer_passive_threads"]

PASSIVE_THREADS_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def prefer_passive_threads() -> None:
    """Ask for sleeping (not spinning) OpenMP threads in this process and its children, unless
    the user chose a policy. Effective for this process only if torch is not loaded yet."""
    for key, value in PASSIVE_THREADS_ENV.items():
        os.environ.setdefault(key, value)
