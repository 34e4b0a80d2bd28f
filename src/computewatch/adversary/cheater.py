"""A cheating Prover's training run: trains differently from what it precommits, and hides it.

`train_with_deviation` is one monitored training process, like `computewatch train` with one
chip, except that the run it really trains deviates from its precommitment in the ways a covert
Prover would try (paper §5.1, ANCHORS.md): another learning rate, initial weights that are not
from the committed seed, batches in another order, or a precommitment the chip never saw, saw
with another digest, or saw only after a snapshot. With `launder=True` it also rewrites its own
records (learning rates, checkpoint settings, W0) so that they look like the honest run it
claims, leaving only what the Verifier recomputes to catch it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from computewatch.adversary.transcript import edit_checkpoint, edit_steps
from computewatch.chip import Chip, provision_chips
from computewatch.formats.dataset import DatasetCommitment
from computewatch.formats.program import ProgramSource, deterministic_cpu, load_program
from computewatch.formats.seed import batches, derive_run_seed, init_generator
from computewatch.prover.config import CheckpointConfig, ChipConfig, RunConfig
from computewatch.prover.recorder import Recorder
from computewatch.prover.runner import demo_program, isolated_torch_state
from computewatch.prover.workloads import preset

__all__ = ["Deviation", "train_with_deviation"]


@dataclass(frozen=True)
class Deviation:
    lr_scale: float = 1.0  # really train at this multiple of the committed learning rate
    init_seed: bytes | None = None  # W0 from this seed instead of the committed one
    swap_steps: tuple[int, int] | None = None  # train these two steps on each other's batches
    precommitment: str = "honest"  # "honest" | "missing" | "different" | "after-snapshot"
    launder: bool = False  # rewrite lr records, checkpoint settings and W0 to look honest


class _DeviousChip:
    """Passes the Recorder's calls to the chip, except the precommitment it hides or alters."""

    def __init__(self, chip: Chip, how: str) -> None:
        self.chip, self.how = chip, how
        self.serial = chip.serial
        self._deferred: list[tuple[str, Any, str]] = []

    def attach(self, tensors: Sequence[torch.Tensor], storage_dir: Any) -> Any:
        return self.chip.attach(tensors, storage_dir)

    def log_precommitment(self, digest: bytes, run_id: str) -> Any:
        if self.how == "missing":
            return None
        if self.how == "different":
            digest = bytes(b ^ 0xFF for b in digest)
        if self.how == "after-snapshot":
            self._deferred.append(("precommitment", digest, run_id))
            return None
        return self.chip.log_precommitment(digest, run_id)

    def log_memory_map(self, memory_map: dict[str, Any], run_id: str) -> Any:
        if self.how == "after-snapshot":
            self._deferred.append(("memory-map", memory_map, run_id))
            return None
        return self.chip.log_memory_map(memory_map, run_id)

    def step_boundary(self, step: int, busy_seconds: float) -> list[Any]:
        snaps = self.chip.step_boundary(step, busy_seconds)
        if snaps and self._deferred:  # the chip has already logged a snapshot of this run
            for kind, value, run_id in self._deferred:
                (self.chip.log_precommitment if kind == "precommitment" else self.chip.log_memory_map)(value, run_id)
            self._deferred = []
        return snaps


def train_with_deviation(
    out: str | os.PathLike[str],
    deviation: Deviation,
    *,
    preset_name: str = "mlp",
    steps: int = 16,
    checkpoint_every: int = 4,
    snapshots_per_day: float = 24.0,
    chip_seconds_per_step: float = 1800.0,
    chip_secret_seed: bytes | None = None,
    overrides: dict[str, Any] | None = None,
    threads: int = 1,
    nonce: bytes | None = None,
    run_id: str | None = None,
    init_state: Mapping[str, torch.Tensor] | None = None,
    chip_wrapper: Callable[[Any], Any] | None = None,
    program: ProgramSource | None = None,
) -> Path:
    """Train one process on one fresh chip under `out/chips`, deviating as told; returns `out`.

    `nonce` and `run_id` fix what is otherwise random (two runs with the same ones and the same
    settings share their precommitment); `init_state` loads these weights over W0 before the
    first step (a run that really starts where another ended); `chip_wrapper` wraps the chip the
    Recorder talks to (an owner who drives the chip differently from what the run needs);
    `program` trains with (and records) that training program instead of the demo's."""
    out = Path(out)
    honest = preset(preset_name, total_steps=max(steps, 1), **(overrides or {}))
    really: Any = replace(honest, lr=honest.lr * deviation.lr_scale)  # the Workload, or below the loaded program: one duck type
    corpus = honest.dataset()
    commitment = DatasetCommitment.from_samples(corpus.sample(i) for i in range(len(corpus)))
    nonce = os.urandom(32) if nonce is None else nonce
    seed = derive_run_seed(commitment.root, nonce)
    chip = Chip.open(provision_chips(out / "chips", 1, snapshots_per_day=snapshots_per_day, secret_seed=chip_secret_seed)[0])
    chip.boot()
    order = list(batches(seed, len(corpus), honest.batch_size, steps))
    trained = [ids for _t, ids in order]
    if deviation.swap_steps is not None:
        i, j = deviation.swap_steps
        trained[i], trained[j] = trained[j], trained[i]
    source = program or demo_program()
    hyperparameters = {"workload": honest.hyperparameters, "run": {"steps": steps, "world_size": 1, "strategy": "single"}}
    with isolated_torch_state(), ExitStack() as stack:
        deterministic_cpu(threads)
        if program is not None:
            really = stack.enter_context(load_program(source.read(), source.entry, source.code_digest)).make(hyperparameters)
        model = really.build_model(init_generator(deviation.init_seed or seed))
        if init_state is not None:
            model.load_state_dict(dict(init_state))
        optimizer = really.build_optimizer(model)
        scheduler = really.build_scheduler(optimizer)
        try:
            with Recorder(
                out,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                hyperparameters=hyperparameters,
                dataset=commitment,
                nonce=nonce,
                program=source,
                config=RunConfig(run_id=run_id, checkpoint=CheckpointConfig(every=checkpoint_every),
                                 chip=ChipConfig(seconds_per_step=chip_seconds_per_step)),
                chip=(chip_wrapper or (lambda c: c))(_DeviousChip(chip, deviation.precommitment)),
            ) as rec:
                for (t, committed), ids in zip(order, trained, strict=True):
                    loss = really.train_step(model, optimizer, scheduler, really.collate([corpus.sample(i) for i in ids]))
                    rec.step(t, committed, loss)  # the records name the committed batch
        finally:
            chip.close()
        if deviation.launder:
            _launder(out, honest, seed, commitment, steps)
    return out


def _launder(out: Path, honest: Any, seed: bytes, commitment: DatasetCommitment, steps: int) -> None:
    """Make the records claim the honest run: its learning rates, its optimizer settings and
    scheduler state in every checkpoint, and its W0."""
    model = honest.build_model(init_generator(seed))
    optimizer = honest.build_optimizer(model)
    scheduler = honest.build_scheduler(optimizer)
    lrs, settings = [], {}
    import warnings

    for t in range(steps + 1):
        settings[t] = ([{k: v for k, v in g.items() if k != "params"} for g in optimizer.state_dict()["param_groups"]], scheduler.state_dict())
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scheduler.step()
    edit_steps(out, lambda recs: [replace(r, lr=lrs[r.step]) for r in recs])
    from computewatch.formats.checkpoint import CheckpointIndex
    from computewatch.formats.storage import RunStorage

    w0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for entry in CheckpointIndex(RunStorage(out, create=False), 0).entries():
        step = entry["step"]

        def fix(ckpt: Any, s: int = step) -> None:
            groups, sched = settings[s]
            ckpt.optimizer_meta["param_groups"] = [dict(g, params=old["params"]) for g, old in zip(_plain(groups), ckpt.optimizer_meta["param_groups"], strict=True)]
            ckpt.scheduler = _plain(sched)
            if s == 0:
                ckpt.model = {k: w0[k] for k in ckpt.model}

        edit_checkpoint(out, 0, step, fix)


def _plain(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj
