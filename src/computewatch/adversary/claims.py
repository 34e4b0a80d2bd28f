"""Program claims: a Prover whose replay is bit-identical, but whose transcript, chip or program
claims more (or less) than it did (issue 18; paper §5.1, Appendix D).

Each attack runs end to end with the cheating Prover's tools and is verified by
`computewatch.verifier.verify`; each ends in the named check. Family "program claims".
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from computewatch.adversary.suite import Context, Trial, get_attack, register, result_from_trials
from computewatch.adversary.world import RUN, copy_run, honest_run, party_key, verdict_trial, verify_runs

__all__: list[str] = []

_FAMILY = "program claims"


def _run_attack(name: str, make: Any, **verify: Any) -> Any:
    """A runner: per trial, `make(ctx, rng) -> (runs, options)`, then the Verifier on them."""

    def run(ctx: Context, trials: int, seed: int) -> Any:
        attack = get_attack(name)
        rng = random.Random(seed)
        out: list[Trial] = []
        for _ in range(trials):
            runs, options = make(ctx, rng)
            out.append(verdict_trial(verify_runs(runs, **{**verify, **options}), attack.expected))
        return result_from_trials(attack, out)

    return run


# ------------------------------------------------------------------------------ null losses
def _null_losses(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    from computewatch.adversary.transcript import edit_steps

    spoof = copy_run(honest_run(ctx), ctx.scratch("null-losses") / "run")
    edit_steps(spoof, lambda recs: [replace(r, loss=None) for r in recs])
    return [spoof], {"segments": "all"}


register(
    "losses-recorded-null",
    paper_ref="§5.1 (the transcript's losses); issue 18",
    family=_FAMILY,
    kind="caught",
    expected="verifier.loss",
    summary="Records every step's loss as null (the step format's 'not finite'), so the replay has nothing to compare "
    "and a policy rule on the loss nothing to read; before, the loss check passed with nothing compared.",
    max_trials=5,
)(_run_attack("losses-recorded-null", _null_losses))


# ---------------------------------------------------------------------- borrowed run id
def _borrowed_id(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    from computewatch.formats.manifest import read_manifest
    from computewatch.formats.storage import RunStorage

    run = honest_run(ctx)  # Prover B's run, named like A's approved one
    pre = read_manifest(RunStorage(run, create=False)).precommitment
    prover_a = party_key("prover-a").public_key.keyid
    digest_a = bytes(rng.randrange(256) for _ in range(32)).hex()  # A's run: its own precommitment
    policy = (
        '[policy]\nname = "approvals"\nversion = 2\nthreshold_flops = 1.0\n'
        f'approvals = [{{run_id = "{pre.run_id}", prover = "{prover_a}", precommitment = "{digest_a}"}}]\n'
        '[[rules]]\nid = "needs-approval"\nkind = "approval"\n'
    )
    return [run], {"policy_text": policy}


register(
    "borrowed-run-id",
    paper_ref="§2.1 (approval requirements); issue 18 (identity binding)",
    family=_FAMILY,
    kind="caught",
    expected="verifier.precommitment",
    summary="Prover B names its run after Prover A's approved run id, hoping to inherit A's approval.",
    max_trials=5,
)(_run_attack("borrowed-run-id", _borrowed_id))


# ------------------------------------------------------------------------- chip busy time
class _ExtraWorkChip:
    """The owner trains `factor` steps on the chip for every step its transcript records (the
    extra ones train something else; the chip's clock counts them all)."""

    def __init__(self, chip: Any, factor: int) -> None:
        self.chip, self.serial, self.factor = chip, chip.serial, factor

    def attach(self, tensors: Any, storage_dir: Any) -> Any:
        return self.chip.attach(tensors, storage_dir)

    def log_precommitment(self, digest: bytes, run_id: str) -> Any:
        return self.chip.log_precommitment(digest, run_id)

    def log_memory_map(self, memory_map: dict[str, Any], run_id: str) -> Any:
        return self.chip.log_memory_map(memory_map, run_id)

    def step_boundary(self, step: int, busy_seconds: float) -> list[Any]:
        return [s for _ in range(self.factor) for s in self.chip.step_boundary(step, busy_seconds)]


def _cheat_run(ctx: Context, name: str, **kw: Any) -> Path:
    from computewatch.adversary.cheater import Deviation, train_with_deviation

    return train_with_deviation(ctx.scratch(name) / "run", Deviation(), steps=RUN["steps"], checkpoint_every=RUN["checkpoint_every"],
                                snapshots_per_day=RUN["snapshots_per_day"], overrides=dict(RUN["overrides"]), **kw)


def _zero_busy(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    return [_cheat_run(ctx, "zero-busy", chip_seconds_per_step=0.0)], {}


def _busy_beyond(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    run = _cheat_run(ctx, "busy-beyond", chip_seconds_per_step=RUN["chip_seconds_per_step"], chip_wrapper=lambda c: _ExtraWorkChip(c, 3))
    return [run], {"segments": "all"}


register(
    "chip-busy-zero",
    paper_ref="§3 (snapshots at random busy times); issue 18 (busy time the chip measures)",
    family=_FAMILY,
    kind="caught",
    expected="verifier.snapshots",
    summary="The owner tells a simulated chip it was busy 0 seconds per step: no snapshot can fire, so the run leaves "
    "no trace for an inspection. (On hardware the chip's clock measures busy time and no number is taken.)",
    max_trials=3,
)(_run_attack("chip-busy-zero", _zero_busy))

register(
    "chip-busy-beyond-transcript",
    paper_ref="§3, §5.1 (compute accounting); issue 18",
    family=_FAMILY,
    kind="caught",
    expected="verifier.compute",
    summary="The chip trains three steps for every step the transcript records (48 beside 16): its clock shows three "
    "times the busy time the transcript explains, while every snapshot still replays.",
    max_trials=3,
)(_run_attack("chip-busy-beyond-transcript", _busy_beyond))
