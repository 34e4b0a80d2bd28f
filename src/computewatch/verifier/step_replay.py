"""Replay exactly one training step (issue 19): from the state before step t to the state after.

`replay_step` is the one function both sides run: the Prover (`computewatch respond`) to
recompute a state it must answer with, the trusted cluster (job ``step``) to check an answer.
Inputs: the loaded training program, the state before the step (a checkpoint-shaped state: the
rank's weights, optimizer tensors and RNG), the step's samples and the step number (the
precommitted schedule gives its learning rate). Output: the state after the step, the loss and,
on request, the FLOPs and every operator's output digest (`OpTrace`, a torch dispatch mode:
BLAKE3 over each output tensor's bytes, in dispatch order) for bisection to one operator.

One process, one rank: a run of W > 1 ranks needs its collectives, so its steps are not
replayed one at a time here (their commitments are still checked against answered states).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from computewatch.crypto.hashing import blake3_bytes, tensor_memory
from computewatch.formats.checkpoint import Checkpoint, restore
from computewatch.formats.commitments import live_optimizer_tensors, optimizer_digest, weights_digest
from computewatch.formats.seed import init_generator

__all__ = ["OpTrace", "StepOutcome", "advance", "replay_step", "state_of", "step_job"]


class OpTrace(TorchDispatchMode):
    """Records (operator name, BLAKE3 of its outputs' bytes) for every dispatched operator."""

    def __init__(self, keep: set[int] | None = None) -> None:
        super().__init__()
        self.ops: list[tuple[str, str]] = []
        self.keep = keep or set()  # indices whose outputs are kept (per-operator distances)
        self.kept: dict[int, list[torch.Tensor]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        index = len(self.ops)
        # Outputs, and every argument the operator wrote in place (in-place and foreach ops
        # return nothing or an alias: their result is the argument they modified).
        tensors = [t for t in _flatten(out) if isinstance(t, torch.Tensor)]
        for i, arg in enumerate(func._schema.arguments):
            info = arg.alias_info
            if info is not None and info.is_write and i < len(args):
                tensors.extend(t for t in _flatten(args[i]) if isinstance(t, torch.Tensor))
        digest = blake3_bytes(b"".join(_bytes(t) for t in tensors)).hex()
        self.ops.append((str(func.overloadpacket.__name__), digest))
        if index in self.keep:
            self.kept[index] = [t.detach().to("cpu", copy=True) for t in tensors]
        return out


def _flatten(obj: Any) -> list[Any]:
    if isinstance(obj, (list, tuple)):
        return [x for item in obj for x in _flatten(item)]
    return [obj]


def _bytes(t: torch.Tensor) -> bytes:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.layout != torch.strided:
        return b""
    try:
        return bytes(tensor_memory(t))
    except Exception:  # a dtype without a region name: hash its float64 values instead
        return t.to(torch.float64).contiguous().numpy().tobytes()


@dataclass
class StepOutcome:
    model: dict[str, torch.Tensor]
    optimizer_tensors: dict[str, torch.Tensor]
    loss: float | None
    lr: float
    rng_before: str  # BLAKE3 of torch's CPU RNG state when the step started
    flops: dict[str, Any] | None = None
    ops: list[tuple[str, str]] = field(default_factory=list)
    kept: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    def commitment(self, param_names: Sequence[str]) -> tuple[str, str]:
        return weights_digest([self.model[n] for n in param_names]), optimizer_digest(self.optimizer_tensors)


def advance(scheduler: Any, steps: int) -> None:
    """A fresh scheduler put at step `steps` (its lr is a function of the step count)."""
    import warnings

    if scheduler is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            scheduler.step()


def state_of(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Copies of the live state under checkpoint names."""
    model_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = {k: v.detach().clone() for k, v in live_optimizer_tensors(optimizer).items()}
    return model_sd, opt


def replay_step(
    program: Any,
    state: Checkpoint,
    samples: Sequence[bytes],
    step: int,
    seed: bytes,
    *,
    trace: bool = False,
    keep_ops: set[int] | None = None,
    count_flops: bool = False,
    step_fn: Any = None,
) -> StepOutcome:
    """Apply step `step` of the program to `state` (the state before it) with these samples.

    The model, optimizer and scheduler are built by the program from the precommitted
    hyperparameters (the scheduler advanced to `step`); only the per-parameter state (weights,
    moments, step counts) and the RNG come from `state`, never its optimizer settings.
    `step_fn(program, model, optimizer, scheduler, batch, step)` replaces the program's
    `train_step` (the Prover's own way of computing a step, e.g. in the attack suite)."""
    model = program.build_model(init_generator(seed))
    optimizer = program.build_optimizer(model)
    scheduler = program.build_scheduler(optimizer)
    advance(scheduler, step)
    restore(state, model, optimizer, None, settings="live", restore_rng=True)
    rng_before = blake3_bytes(torch.get_rng_state().numpy().tobytes()).hex()
    lr = float(optimizer.param_groups[0]["lr"])
    batch = program.collate(list(samples))
    flops = None
    tracer = OpTrace(keep_ops) if trace else None

    def one() -> Any:
        if step_fn is not None:
            return step_fn(program, model, optimizer, scheduler, batch, step)
        return program.train_step(model, optimizer, scheduler, batch)

    def run() -> Any:
        if tracer is None:
            return one()
        with tracer:
            return one()

    if count_flops:
        from computewatch.verifier.flops import count_flops as _count

        loss, counted = _count(run)
        flops = counted.to_json()
    else:
        loss = run()
    loss = float(loss)
    model_sd, opt = state_of(model, optimizer)
    return StepOutcome(
        model_sd,
        opt,
        loss if math.isfinite(loss) else None,
        lr,
        rng_before,
        flops,
        tracer.ops if tracer else [],
        tracer.kept if tracer else {},
    )


# ------------------------------------------------------------------ the trusted-cluster job
def step_job(spec: dict[str, Any], keys: list[Any]) -> dict[str, Any]:
    """Job "step": check one answered state and replay one step from it (single-rank runs).

    spec: run_dir, step, rank, response_dir, before (object digest of the answered state),
    after (answered state after the step, tolerance mode) or null, data_dir, threads.
    Returns digests, booleans, distances, the FLOPs of the step and the operator trace; no
    tensor leaves the job."""
    from computewatch.formats.challenge import response_object
    from computewatch.formats.checkpoint import decode_checkpoint
    from computewatch.formats.commitments import checkpoint_commitment
    from computewatch.formats.dataset import sample_hash
    from computewatch.formats.program import deterministic_cpu, load_program
    from computewatch.verifier._replay import distance, split_batch
    from computewatch.verifier._run import staged_run

    t, rank = int(spec["step"]), int(spec["rank"])
    with staged_run(spec["run_dir"], keys) as run:
        pre = run.precommitment
        deterministic_cpu(int(spec.get("threads") or pre.environment["threads"]))
        records = run.steps()
        if t >= len(records):
            return {"error": f"step {t} is beyond the {len(records)} recorded steps"}
        rec = records[t]
        names = [reg.param for reg in run.layout.chips[rank]]
        state = decode_checkpoint(response_object(spec["response_dir"], spec["before"]), what=f"answered state before step {t}")
        if state.step != t or state.rank != rank:
            return {"error": f"the answered state says step {state.step} rank {state.rank}, asked step {t} rank {rank}"}
        out: dict[str, Any] = {"before": list(checkpoint_commitment(state.model, names, state.optimizer_tensors))}
        out["rng"] = blake3_bytes(state.rng["torch"].numpy().tobytes()).hex() if "torch" in state.rng else None
        if run.world_size > 1:
            out["replayed"] = False
            out["note"] = "a step of a distributed run is not replayed alone (it needs every rank's collectives)"
            return out
        hashes = run.sample_hashes()
        with load_program(run.program_files(), pre.program_entry, pre.code_digest) as loaded:
            program = loaded.make(pre.hyperparameters, spec.get("data_dir"))
            ids = split_batch(rec.sample_ids, rank, run.world_size)
            samples = [program.sample(i) for i in ids]
            out["samples_ok"] = all(0 <= i < len(hashes) and sample_hash(s) == hashes[i] for i, s in zip(ids, samples))
            outcome = replay_step(program, state, samples, t, pre.seed, trace=True, count_flops=True)
        out["replayed"] = True
        out["after"] = list(outcome.commitment(names))
        out["lr"], out["rng_at_start"], out["loss"] = outcome.lr, outcome.rng_before, outcome.loss
        out["lr_ok"] = outcome.lr == rec.lr
        out["flops"] = outcome.flops["total"] if outcome.flops else None
        out["ops"] = [list(op) for op in outcome.ops]
        if spec.get("after"):
            answered = decode_checkpoint(response_object(spec["response_dir"], spec["after"]), what=f"answered state after step {t}")
            out["answered_after"] = list(checkpoint_commitment(answered.model, names, answered.optimizer_tensors))
            flat = lambda d: torch.cat([d[n].detach().reshape(-1).double() for n in names])  # noqa: E731
            r, c, b = flat(outcome.model), flat(answered.model), flat(state.model)
            parts = {"diff2": float(torch.dot(r - c, r - c)), "update2": float(torch.dot(c - b, c - b)),
                     "replayed2": float(torch.dot(r - b, r - b)), "dot": float(torch.dot(r - b, c - b))}
            out["distance"] = distance([parts])
        return out
