"""The Prover's answer to a step challenge (issue 19): `computewatch respond`.

For every drawn step t the Prover recomputes, from its nearest checkpoint at or before t, the
state before step t (weights, optimizer state, RNG, as a checkpoint file), runs step t once more
with every operator's outputs hashed (for bisection to one operator) and, in tolerance mode,
keeps the state after it. The Prover pays for these replays in its own data-center; the
Verifier replays only the one drawn step. Drawn steps of one checkpoint interval share one pass. A distributed run (W > 1) is answered by
W gloo processes replaying together, one state per rank and drawn step (`respond_ranks`).

`StepFn` lets a caller (the attack suite) change how the Prover computes a step; honest
Provers use the precommitted program's own `train_step` through `replay_step`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.digest import blake3_bytes
from computewatch.formats.challenge import check_challenge, write_response
from computewatch.formats.checkpoint import CheckpointIndex, capture, encode_checkpoint, restore
from computewatch.formats.manifest import read_manifest
from computewatch.formats.program import deterministic_cpu, load_program, read_program_files
from computewatch.formats.seed import init_generator
from computewatch.formats.steps import StepLog
from computewatch.formats.storage import ObjectStore, RunStorage
from computewatch.verifier.step_replay import advance, replay_step

__all__ = ["StepFn", "load_challenge", "respond"]

# (program, model, optimizer, scheduler, batch, step) -> loss: how the Prover trains one step.
StepFn = Callable[[Any, torch.nn.Module, torch.optim.Optimizer, Any, Any, int], Any]


def _honest(program: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, batch: Any, step: int) -> Any:
    return program.train_step(model, optimizer, scheduler, batch)


def respond(
    run_dir: str | os.PathLike[str],
    challenge: dict[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    step_fn: StepFn | None = None,
    refuse: Callable[[int], str | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the response folder for `challenge` (already parsed) and return response.json's path."""
    check_challenge(challenge)
    storage = RunStorage(run_dir, create=False)
    manifest = read_manifest(storage)
    pre = manifest.precommitment
    if manifest.run_id != challenge["run_id"]:
        raise ComputewatchError(f"the challenge is for run {challenge['run_id']}, {run_dir} holds run {manifest.run_id}")
    if pre.layout.world_size != 1:
        if step_fn is not None or refuse is not None:
            raise ComputewatchError("a distributed run is answered by the precommitted program's own steps only")
        from computewatch.prover.respond_ranks import respond_ranks

        return respond_ranks(run_dir, challenge, out_dir, data_dir=data_dir, progress=progress)
    step_fn = step_fn or _honest
    store = ObjectStore(storage)
    records = list(StepLog(storage).read())
    index = CheckpointIndex(storage, 0)
    ckpt_steps = sorted(e["step"] for e in index.entries())
    drawn = sorted(int(s["step"]) for s in challenge["steps"])
    by_start: dict[int, list[int]] = defaultdict(list)
    for t in drawn:
        start = max((c for c in ckpt_steps if c <= t), default=None)
        if start is None:
            raise ComputewatchError(f"no checkpoint at or before step {t}")
        by_start[start].append(t)
    answers: list[dict[str, Any]] = []
    objects: dict[str, bytes] = {}
    deterministic_cpu(int(pre.environment["threads"]))
    done = 0
    with load_program(read_program_files(Path(storage.local_path or run_dir) / "program"), pre.program_entry, pre.code_digest) as loaded:
        program = loaded.make(pre.hyperparameters, data_dir)
        for start, targets in sorted(by_start.items()):
            model = program.build_model(init_generator(pre.seed))
            optimizer = program.build_optimizer(model)
            scheduler = program.build_scheduler(optimizer)
            advance(scheduler, start)
            restore(index.load(store, start), model, optimizer, None, settings="live")
            t = start
            for target in targets:
                while t < target:
                    batch = program.collate([program.sample(i) for i in records[t].sample_ids])
                    step_fn(program, model, optimizer, scheduler, batch, t)
                    t += 1
                reason = refuse(target) if refuse is not None else None
                if reason is not None:
                    answers.append({"step": target, "rank": 0, "before": None, "after": None, "ops": None, "refused": reason})
                else:
                    answers.append(_answer(program, model, optimizer, scheduler, records, target, pre.seed, challenge["mode"], objects, step_fn))
                done += 1
                if progress is not None:
                    progress(done, len(drawn))
    return write_response(out_dir, challenge, answers, objects)


def _answer(program: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, records: list[Any], t: int, seed: bytes, mode: str, objects: dict[str, bytes], step_fn: StepFn) -> dict[str, Any]:
    state = capture(t, model, optimizer, scheduler)
    data = encode_checkpoint(state)
    before = blake3_bytes(data).hex()
    objects[before] = data
    samples = [program.sample(i) for i in records[t].sample_ids]
    rng = torch.get_rng_state()
    outcome = replay_step(program, state, samples, t, seed, trace=True, step_fn=step_fn)
    torch.set_rng_state(rng)  # the live run continues from its own RNG
    ops = canonical_json([list(op) for op in outcome.ops])
    ops_digest = blake3_bytes(ops).hex()
    objects[ops_digest] = ops
    after = None
    if mode == "tolerance":
        after_state = capture(t + 1, model, optimizer, scheduler)
        after_state.model, after_state.optimizer_tensors = outcome.model, outcome.optimizer_tensors
        data = encode_checkpoint(after_state)
        after = blake3_bytes(data).hex()
        objects[after] = data
    return {"step": t, "rank": 0, "before": before, "after": after, "ops": ops_digest, "refused": None}


def load_challenge(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        return check_challenge(json.loads(Path(path).read_bytes()))
    except (OSError, ValueError) as exc:
        raise ComputewatchError(f"{path}: not a readable challenge ({exc})") from None
