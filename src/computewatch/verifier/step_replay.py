"""Replay exactly one training step (issue 19): from the state before step t to the state after.

`replay_step` is what the Prover runs (`computewatch respond`) to recompute a state it must
answer with; the Verifier never runs the Prover's program in its own process: `judge_steps`
checks an answer by staging it read-only into 17's sandboxed executor (a replay job that starts
from the answered state, with the operator trace on) and hashing what comes back.
Inputs: the loaded training program, the state before the step (a checkpoint-shaped state: the
rank's weights, optimizer tensors and RNG), the step's samples and the step number (the
precommitted schedule gives its learning rate). Output: the state after the step, the loss and,
on request, the FLOPs and every operator's output digest (`OpTrace`, a torch dispatch mode:
BLAKE3 over each output tensor's bytes, in dispatch order) for bisection to one operator.

A run of W > 1 ranks needs its collectives: `judge_steps` replays a drawn step of it only with
every rank's answered state (each hashed against its rank's commitment first), all ranks in one
replay job of the executor (gloo, the run's world size and layout), and judges each rank's
result against its own commitment, so a forged rank is named.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from computewatch.crypto.hashing import blake3_bytes, tensor_memory
from computewatch.formats.checkpoint import Checkpoint, restore
from computewatch.formats.commitments import live_optimizer_tensors, optimizer_digest, weights_digest
from computewatch.formats.seed import init_generator
from computewatch.verifier._replay import advance_scheduler as advance  # one way to put a fresh scheduler at a step

__all__ = ["OpTrace", "Replayed", "StepOutcome", "advance", "judge_steps", "replay_step", "state_of", "state_replayer", "tensor_replayer"]


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


# ------------------------------------------------------------------ the judge's side
def _executor_plan(run: Any, records: Sequence[Any], sandbox: bool, data_dir: str | None, time_scale: float) -> tuple[Any, Any, int]:
    """The plan, time budget and thread count of an executor for step replays of `run`."""
    from computewatch.verifier import _examine

    plan = _examine.RunPlan(run=run, inv={}, segments=[], expectations=[], mode="exact", threads=None, seed_hex="00", data_dir=data_dir,
                            policy_text=None, epsilon=None, sandbox=sandbox, time_scale=time_scale)
    threads = int(run.precommitment.environment.get("threads") or 1)
    return plan, _examine._Budget.of(run, list(records), threads, time_scale), threads


def _split_state(final: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A full state the executor wrote (``model/<name>``, ``optimizer/<index>/<key>``) as
    (model, optimizer tensors) under checkpoint names."""
    model = {n[len("model/"):]: v for n, v in final.items() if n.startswith("model/")}
    return model, {n[len("optimizer/"):]: v for n, v in final.items() if n.startswith("optimizer/")}


def judge_steps(run: Any, specs: Sequence[dict[str, Any]], *, sandbox: bool = True, data_dir: str | None = None,
                time_scale: float = 1.0) -> list[dict[str, Any]]:
    """Check answered states and replay one step from each, in ONE sandboxed executor for all of
    them (the Prover's program never runs in this process; a distributed run's step is one
    replay job of all its ranks, see the module doc).

    `run` is the judge's staged copy of the run; each spec: step, rank, response_dir, before
    (object digest of the answered state), expected_before ([weights, optimizer] digests the
    step commitments pin), after (answered state after the step, tolerance mode) or null. The
    answered state is hashed here BEFORE it is staged, read-only, as the replay's start state
    (one that does not hash to its commitment is never replayed); the state the executor
    returns is hashed here after. Returns, per spec, digests, booleans, the distance and the
    executor's operator trace of the step (digests only; the caller compares them)."""
    from computewatch.crypto.errors import FormatError
    from computewatch.formats.challenge import response_object
    from computewatch.formats.checkpoint import decode_checkpoint
    from computewatch.formats.commitments import checkpoint_commitment

    records = run.steps()
    names_of = {r: [reg.param for reg in run.layout.chips[r]] for r in range(run.world_size)}
    results: list[dict[str, Any]] = [{} for _ in specs]
    todo: list[tuple[int, bytes, Checkpoint]] = []
    for k, spec in enumerate(specs):
        t, rank = int(spec["step"]), int(spec["rank"])
        out = results[k]
        if t >= len(records) or rank >= run.world_size:
            out["error"] = f"step {t} rank {rank} is not among the {len(records)} recorded steps of {run.world_size} rank(s)"
            continue
        try:
            raw = response_object(spec["response_dir"], spec["before"])
            state = decode_checkpoint(raw, what=f"answered state before step {t}")
            if state.step != t or state.rank != rank:
                raise FormatError(f"the answered state says step {state.step} rank {state.rank}, asked step {t} rank {rank}")
            out["before"] = list(checkpoint_commitment(state.model, names_of[rank], state.optimizer_tensors))
        except FormatError as exc:
            out["error"] = str(exc)
            continue
        out["rng"] = blake3_bytes(state.rng["torch"].numpy().tobytes()).hex() if "torch" in state.rng else None
        if spec.get("expected_before") is not None and out["before"] != list(spec["expected_before"]):
            out["replayed"] = False  # never replay a state that is not the committed one
            continue
        todo.append((k, raw, state))
    firsts: dict[tuple[int, int], int] = {}
    unique, asked = [], {item[0] for item in todo}
    for item in todo:  # the same (step, rank) asked twice is replayed once
        spec = specs[item[0]]
        key = (int(spec["step"]), int(spec["rank"]))
        if key not in firsts:
            firsts[key] = item[0]
            unique.append(item)
    todo = unique
    _judge_groups(run, specs, todo, records, results, sandbox, data_dir, time_scale, names_of)
    for k, spec in enumerate(specs):
        first = firsts.get((int(spec["step"]), int(spec["rank"])))
        if k in asked and first is not None and first != k:
            results[k] = {**results[first], "rng": results[k].get("rng")}  # its own RNG is still judged
    return results


def _judge_groups(run: Any, specs: Sequence[dict[str, Any]], todo: list[tuple[int, bytes, Checkpoint]], records: Sequence[Any],
                  results: list[dict[str, Any]], sandbox: bool, data_dir: str | None, time_scale: float,
                  names_of: dict[int, list[str]]) -> None:
    """The replays of `judge_steps`, one executor job per step (every rank's state)."""
    from computewatch.crypto.errors import ComputewatchError
    from computewatch.verifier import _audit, _examine

    groups = _rank_groups(specs, todo, run.world_size, results)
    if not groups:
        return
    problem = _examine._program_problem(run)
    if problem is not None:
        for k, _, _ in todo:
            results[k]["error"] = problem
        return
    plan, budget, threads = _executor_plan(run, records, sandbox, data_dir, time_scale)
    hashes = run.sample_hashes()
    try:
        with _examine._session(plan, budget) as session:
            conv = _examine._Run(plan, session, budget, threads)
            conv.start()
            samples = conv.samples(sorted({i for t in groups for i in records[t].sample_ids}))
            bad = set(_audit.check_samples(run, hashes, samples, []) or [])
            for t, members in sorted(groups.items()):
                rec = records[t]
                reply, states = conv.replay(t, [list(rec.sample_ids)], samples, [], True, start_states=[raw for _, raw, _ in members], trace=True)
                total = (reply.flops or {}).get("total")
                for rank, (k, _raw, state) in enumerate(members):
                    _judge_rank(specs[k], results[k], rank, state, states[rank][-1], reply, rec, bad, names_of[rank],
                                total / run.world_size if isinstance(total, int) and total >= 0 else None)
    except ComputewatchError as exc:  # the executor failed (ExecutorFailure) or the evidence did: the Prover's
        for k, _, _ in todo:
            if "after" not in results[k]:
                results[k].pop("replayed", None)
                results[k]["error"] = str(exc)


def _rank_groups(specs: Sequence[dict[str, Any]], todo: Sequence[tuple[int, bytes, Checkpoint]], world: int,
                 results: list[dict[str, Any]]) -> dict[int, list[tuple[int, bytes, Checkpoint]]]:
    """The replays to run: per step, every rank's answered state in rank order. A step of a
    distributed run is replayed only when every rank's state matched its commitment."""
    by_step: dict[int, dict[int, tuple[int, bytes, Checkpoint]]] = {}
    for item in todo:
        spec = specs[item[0]]
        by_step.setdefault(int(spec["step"]), {})[int(spec["rank"])] = item
    groups = {}
    for t, ranks in by_step.items():
        if len(ranks) == world:
            groups[t] = [ranks[r] for r in range(world)]
            continue
        for k, _, _ in ranks.values():
            results[k]["replayed"] = False
            results[k]["note"] = "not replayed: the step needs every rank's committed state"
    return groups


def _judge_rank(spec: dict[str, Any], out: dict[str, Any], rank: int, state: Checkpoint, final: dict[str, torch.Tensor], reply: Any,
                rec: Any, bad: set[int], names: Sequence[str], flops: float | None) -> None:
    """One rank's result of a replayed step: digests of what the executor returned, the schedule,
    the samples, the distance to the answered after-state (tolerance) and, on rank 0, the trace."""
    from computewatch.crypto.errors import FormatError
    from computewatch.formats.challenge import response_object
    from computewatch.formats.checkpoint import decode_checkpoint
    from computewatch.formats.commitments import checkpoint_commitment
    from computewatch.verifier._compare import distance

    t = int(spec["step"])
    out["samples_ok"] = not any(i in bad for i in rec.sample_ids)
    model, opt = _split_state(final)
    out["replayed"] = True
    try:
        out["after"] = list(checkpoint_commitment(model, names, opt))
    except FormatError as exc:
        out["error"] = f"the replayed state is unusable: {exc}"
        return
    out["lr"], out["rng_at_start"], out["loss"] = reply.lr[0], reply.rng[0], reply.losses[0]
    out["lr_ok"] = reply.lr[0] == rec.lr
    out["flops"] = flops  # this rank's share of the step's FLOPs
    # The executor hashes rank 0's operators only; another rank's failure names the rank, not an operator.
    out["ops"] = [[str(x) for x in op[:2]] for op in reply.ops or [] if isinstance(op, list) and len(op) >= 2] if rank == 0 else []
    if spec.get("after"):
        try:
            answered = decode_checkpoint(response_object(spec["response_dir"], spec["after"]), what=f"answered state after step {t}")
            out["answered_after"] = list(checkpoint_commitment(answered.model, names, answered.optimizer_tensors))
        except FormatError as exc:
            out["error"] = str(exc)
            return
        flat = lambda d: torch.cat([d[n].detach().reshape(-1).double() for n in names])  # noqa: E731
        r, c, b = flat(model), flat(answered.model), flat(state.model)
        parts = {"diff2": float(torch.dot(r - c, r - c)), "update2": float(torch.dot(c - b, c - b)),
                 "replayed2": float(torch.dot(r - b, r - b)), "dot": float(torch.dot(r - b, c - b))}
        out["distance"] = distance([parts])


@contextmanager
def state_replayer(run: Any, *, sandbox: bool = True, data_dir: str | None = None, time_scale: float = 1.0) -> Iterator[Callable[[bytes, int, int], tuple[str, str]]]:
    """Bisection's intermediate replays (`bisection.bisect_segment`): yields
    `replay(state, a, b)`, which stages `state` (a Prover's answered state, checkpoint-encoded,
    already hashed against its commitment by the caller) read-only into ONE warm sandboxed
    executor, replays steps [a, b) from it and returns the (weights, optimizer) digests of the
    state the executor returns, hashed here. Single-rank runs."""
    from computewatch.formats.commitments import checkpoint_commitment

    names = [reg.param for reg in run.layout.chips[0]]
    with tensor_replayer(run, sandbox=sandbox, data_dir=data_dir, time_scale=time_scale) as replay_tensors:

        def replay(state: bytes, a: int, b: int) -> tuple[str, str]:
            model, opt, _ops = replay_tensors(state, a, b)
            return checkpoint_commitment(model, names, opt)

        yield replay


Replayed = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[list[str]]]


@contextmanager
def tensor_replayer(run: Any, *, sandbox: bool = True, data_dir: str | None = None, time_scale: float = 1.0) -> Iterator[Callable[..., Replayed]]:
    """Like `state_replayer`, but `replay(state, a, b, trace=False)` returns the state itself
    (model and optimizer tensors, as the executor wrote them) and, with `trace`, the executor's
    operator trace of step b - 1 (digests only): tolerance-mode bisection compares distances."""
    from computewatch.crypto.errors import ComputewatchError
    from computewatch.verifier import _audit, _examine

    if run.world_size != 1:
        raise ComputewatchError("a distributed run's steps are not replayed from one answered state")
    problem = _examine._program_problem(run)
    if problem is not None:
        raise ComputewatchError(problem)
    records = run.steps()
    plan, budget, threads = _executor_plan(run, records, sandbox, data_dir, time_scale)
    hashes = run.sample_hashes()
    with _examine._session(plan, budget) as session:
        conv = _examine._Run(plan, session, budget, threads)
        conv.start()
        samples: dict[int, bytes] = {}

        def replay(state: bytes, a: int, b: int, trace: bool = False) -> Replayed:
            if not 0 <= a < b <= len(records):
                raise ValueError(f"steps {a}..{b} are not in the run's {len(records)} recorded steps")
            batches = [list(records[t].sample_ids) for t in range(a, b)]
            need = sorted({i for ids in batches for i in ids} - set(samples))
            if need:
                got = conv.samples(need)
                if _audit.check_samples(run, hashes, got, []):
                    raise ComputewatchError("a sample as the program rebuilds it is not the committed sample")
                samples.update(got)
            reply, states = conv.replay(a, batches, samples, [], True, start_states=[state], count_flops=False, trace=trace)
            model, opt = _split_state(states[0][-1])
            ops = [[str(x) for x in op[:2]] for op in reply.ops or [] if isinstance(op, list) and len(op) >= 2]
            return model, opt, ops

        yield replay
