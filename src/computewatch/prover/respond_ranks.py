"""`computewatch respond` for a distributed run (W > 1): every rank's state before each drawn step.

A step of a DDP or FSDP run needs every rank's collectives, so the Prover answers with W
processes (gloo, the run's world size and layout, as in training) that restore their rank's
nearest checkpoint, replay the recorded batches (rank r takes its part of each global batch) up
to each drawn step, and write the rank's state before it (checkpoint-encoded), the operator
trace of the step itself (run traced, live, so the ranks stay in lockstep) and, in tolerance
mode, the state after it. The parent merges the ranks' answers into one response folder.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.digest import blake3_bytes
from computewatch.crypto.errors import ComputewatchError
from computewatch.formats.challenge import write_response
from computewatch.formats.checkpoint import CheckpointIndex, capture, encode_checkpoint, restore
from computewatch.formats.manifest import read_manifest
from computewatch.formats.program import deterministic_cpu, load_program, read_program_files
from computewatch.formats.seed import init_generator
from computewatch.formats.steps import StepLog
from computewatch.formats.storage import ObjectStore, RunStorage

__all__ = ["respond_ranks"]


def respond_ranks(
    run_dir: str | os.PathLike[str],
    challenge: dict[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Answer `challenge` (already checked) for every rank of a distributed run."""
    import tempfile

    import torch.multiprocessing as mp

    from computewatch.prover.distributed import free_port

    world = read_manifest(RunStorage(run_dir, create=False)).precommitment.layout.world_size
    with tempfile.TemporaryDirectory(prefix="computewatch-respond-") as tmp:
        args = (str(run_dir), challenge, tmp, world, free_port(), data_dir)
        try:
            mp.spawn(_rank_main, args=args, nprocs=world, join=True)
        except mp.ProcessRaisedException as exc:
            lines = str(exc).strip().splitlines()
            raise ComputewatchError(f"a responding rank failed: {lines[-1] if lines else exc}") from exc
        except mp.ProcessExitedException as exc:
            raise ComputewatchError(f"a responding rank died: {exc}") from exc
        answers: list[dict[str, Any]] = []
        objects: dict[str, bytes] = {}
        for rank in range(world):
            folder = Path(tmp) / f"rank-{rank}"
            answers.extend(json.loads((folder / "answers.json").read_bytes()))
            for obj in (folder / "objects").iterdir():
                objects[obj.name] = obj.read_bytes()
        answers.sort(key=lambda a: (a["step"], a["rank"]))
        if progress is not None:
            progress(len(challenge["steps"]), len(challenge["steps"]))
        return write_response(out_dir, challenge, answers, objects)


def _rank_main(rank: int, run_dir: str, challenge: dict[str, Any], tmp: str, world: int, port: int, data_dir: str | None) -> None:
    import torch.distributed as dist

    from computewatch.prover.distributed import init_gloo
    from computewatch.verifier._replay import _module, split_batch, wrap_model
    from computewatch.verifier.step_replay import OpTrace, advance

    storage = RunStorage(run_dir, create=False)
    pre = read_manifest(storage).precommitment
    deterministic_cpu(int(pre.environment["threads"]))
    init_gloo(rank, world, port)
    try:
        store = ObjectStore(storage)
        records = list(StepLog(storage).read())
        index = CheckpointIndex(storage, rank)
        ckpt_steps = sorted(e["step"] for e in index.entries())
        by_start: dict[int, list[int]] = defaultdict(list)
        for t in sorted({int(s["step"]) for s in challenge["steps"]}):
            start = max((c for c in ckpt_steps if c <= t), default=None)
            if start is None:
                raise ComputewatchError(f"rank {rank}: no checkpoint at or before step {t}")
            by_start[start].append(t)
        out = Path(tmp) / f"rank-{rank}"
        (out / "objects").mkdir(parents=True)
        answers: list[dict[str, Any]] = []

        def keep(data: bytes) -> str:
            digest = blake3_bytes(data).hex()
            (out / "objects" / digest).write_bytes(data)
            return digest

        with load_program(read_program_files(Path(storage.local_path or run_dir) / "program"), pre.program_entry, pre.code_digest) as loaded:
            program = loaded.make(pre.hyperparameters, data_dir)
            for start, targets in sorted(by_start.items()):
                model = wrap_model(program.build_model(init_generator(pre.seed)), pre.layout.strategy)
                optimizer = program.build_optimizer(model)
                scheduler = program.build_scheduler(optimizer)
                advance(scheduler, start)
                restore(index.load(store, start), _module(model), optimizer, None, settings="live")
                t = start
                live = (model, optimizer, scheduler)

                def step(t: int, live: tuple[Any, Any, Any] = live) -> None:
                    batch = program.collate([program.sample(i) for i in split_batch(records[t].sample_ids, rank, world)])
                    program.train_step(*live, batch)

                for target in targets:
                    while t < target:
                        step(t)
                        t += 1
                    before = keep(encode_checkpoint(capture(t, _module(model), optimizer, scheduler, rank=rank, world_size=world)))
                    tracer = OpTrace()
                    with tracer:
                        step(t)
                    ops = keep(canonical_json([list(op) for op in tracer.ops]))
                    t += 1
                    after = None
                    if challenge["mode"] == "tolerance":
                        after = keep(encode_checkpoint(capture(t, _module(model), optimizer, scheduler, rank=rank, world_size=world)))
                    answers.append({"step": target, "rank": rank, "before": before, "after": after, "ops": ops, "refused": None})
        (out / "answers.json").write_bytes(json.dumps(answers).encode())
    finally:
        dist.destroy_process_group()
