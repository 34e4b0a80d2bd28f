"""Attack family "step challenges" (issue 19): forged steps and evasive responders against step
commitments and challenges.

This module only registers the attacks; what they run (training forged runs, challenging and
judging them) lives in `_step_forgery_runs`, which needs torch and is imported when an attack
runs, so that `computewatch attack list` starts without torch. The public helpers
(`forged_run`, `challenge_and_judge`, `recommit_checkpoint`, ...) are re-exported from there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from computewatch.adversary.suite import Context, register

if TYPE_CHECKING:  # at run time `__getattr__` below loads them (torch) on first use
    from computewatch.adversary._step_forgery_runs import (
        ForgedRun, challenge_and_judge, detection_closed_form, forged_run, forged_step_fn, recommit_checkpoint,
    )

__all__ = ["ForgedRun", "challenge_and_judge", "detection_closed_form", "forged_run", "forged_step_fn", "recommit_checkpoint"]


def _lazy(factory: str, *args: Any) -> Callable[[Context, int, int], Any]:
    def run_it(ctx: Context, trials: int, seed: int) -> Any:
        from computewatch.adversary import _step_forgery_runs as runs

        return getattr(runs, factory)(*args)(ctx, trials, seed)

    return run_it


for _share in (0.001, 0.01, 0.1):
    register(
        f"step-forgery-{_share:g}",
        paper_ref="§5.2 fn 21; ANCHORS Verde/RepOps",
        family="step-challenges",
        kind="rate",
        expected="verifier.steps",
        summary=f"forged states (not what the program computes) on {_share:.1%} of the steps, the chain kept consistent; caught when a drawn step is forged",
        default_trials=10,
        max_trials=200,
    )(_lazy("rate_runner", _share))

register("step-update-jump", paper_ref="ANCHORS PoL top-Q", family="step-challenges", kind="caught", expected="verifier.steps",
         summary="one step taken with 10x the precommitted learning rate; the committed update norm gives it away to top-Q",
         default_trials=1, max_trials=20)(_lazy("jump_runner"))
for _kind, _summary in (("refuses", "refuses to answer a drawn step"), ("late", "answers after the challenge's deadline"),
                        ("wrong-state", "answers a state that does not hash to the commitment of the step asked")):
    register(f"step-responder-{_kind}", paper_ref="§5.2 fn 21", family="step-challenges", kind="caught", expected="verifier.steps",
             summary=f"a responder that {_summary}", default_trials=1, max_trials=20)(_lazy("responder_runner", _kind))


def __getattr__(name: str) -> Any:
    if name in __all__:
        from computewatch.adversary import _step_forgery_runs as runs

        return getattr(runs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
