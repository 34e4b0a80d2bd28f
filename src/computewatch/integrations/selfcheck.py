"""The Prover's own check before handing a run over: replay it through its training program.

What the Verifier's exact replay does (docs/formats.md, "Training program"), from the run
folder alone: load the program from ``program/`` (code digest checked), build it from the
precommitted hyperparameters, fix the recorded thread count, and check

- W0: ``build_model(init_generator(seed))`` equals the step-0 checkpoint of every rank;
- the data order: each step's sample ids are the committed batch (`formats.seed.batches`) and
  each sample's bytes hash to the committed sample hash;
- the learning rate: each step's recorded lr is what a fresh optimizer and scheduler give;
- every segment: restoring checkpoint a and running ``train_step`` on the recorded batches gives
  checkpoint b's model tensors bit for bit, and rank 0's recorded loss of every step (with W
  ranks: W gloo processes, the model wrapped in ``DistributedDataParallel``, rank r on its part
  of each batch).

`check_run` returns a report; any mismatch is listed in ``problems``.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from computewatch.formats.checkpoint import CheckpointIndex, restore
from computewatch.formats.dataset import sample_hash
from computewatch.formats.program import (
    deterministic_cpu,
    load_program,
    read_program_files,
    wrap_ddp,
)
from computewatch.formats.seed import batches, init_generator
from computewatch.prover.distributed import free_port, init_gloo, split_batch
from computewatch.prover.runner import isolated_torch_state
from computewatch.prover.transcript import Transcript

__all__ = ["check_run"]


def check_run(run_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Replay every segment of the run in `run_dir`; ``{"problems": [...], "segments": n, ...}``."""
    transcript = Transcript(run_dir)
    world = transcript.world_size
    if world == 1:
        with isolated_torch_state():
            return _check_rank(0, 1, str(run_dir), data_dir)
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="computewatch-selfcheck-") as tmp:
        mp.spawn(_spawned, args=(world, free_port(), str(run_dir), data_dir, tmp), nprocs=world, join=True)
        reports = [json.loads((Path(tmp) / f"rank-{r}.json").read_text()) for r in range(world)]
    return {
        "problems": [p for rep in reports for p in rep["problems"]],
        "segments": reports[0]["segments"],
        "steps": reports[0]["steps"],
        "world_size": world,
    }


def _spawned(rank: int, world: int, port: int, run_dir: str, data_dir: str | None, out: str) -> None:
    init_gloo(rank, world, port)
    try:
        report = _check_rank(rank, world, run_dir, data_dir)
    finally:
        torch.distributed.destroy_process_group()
    (Path(out) / f"rank-{rank}.json").write_text(json.dumps(report))


def _same(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> list[str]:
    live = model.state_dict()
    return [k for k, v in live.items() if k not in tensors or not torch.equal(v.view(-1).view(torch.uint8), tensors[k].contiguous().view(-1).view(torch.uint8))]


def _check_rank(rank: int, world: int, run_dir: str, data_dir: Any) -> dict[str, Any]:
    transcript = Transcript(run_dir)
    pre = transcript.manifest.precommitment
    hashes = transcript.sample_hashes()
    records = transcript.steps()
    index = CheckpointIndex(transcript.storage, rank)
    problems: list[str] = []
    files = read_program_files(Path(run_dir) / "program")
    with load_program(files, pre.program_entry, pre.code_digest, pre.program_template) as loaded:
        program = loaded.make(pre.hyperparameters, data_dir)
        deterministic_cpu(pre.environment["threads"])
        model = program.build_model(init_generator(pre.seed))
        wrapped = wrap_ddp(model) if world > 1 else model
        optimizer = program.build_optimizer(wrapped)
        scheduler = program.build_scheduler(optimizer)
        if bad := _same(model, index.load(transcript.store, 0).model):
            problems.append(f"rank {rank}: W0 differs from build_model(init_generator(seed)) in {bad[:3]}")
        expected = list(batches(pre.seed, len(hashes), program.batch_size, len(records)))
        for rec, (_, ids) in zip(records, expected, strict=True):
            if list(rec.sample_ids) != list(ids):
                problems.append(f"step {rec.step}: recorded sample ids are not the committed batch")
        for rec in records:
            lr = float(optimizer.param_groups[0]["lr"])
            if rec.lr != lr:
                problems.append(f"step {rec.step}: recorded lr {rec.lr!r}, the precommitted schedule gives {lr!r}")
            if scheduler is not None:
                optimizer.step()  # no gradients: parameters unchanged; keeps the scheduler's order-of-calls check quiet
                scheduler.step()
        steps = [e["step"] for e in index.entries()]
        for a, b in itertools.pairwise(steps):
            restore(index.load(transcript.store, a), model, optimizer, scheduler)
            for rec in records[a:b]:
                mine = split_batch(rec.sample_ids, rank, world) if world > 1 else list(rec.sample_ids)
                samples = [program.sample(i) for i in mine]
                if any(sample_hash(s) != hashes[i] for s, i in zip(samples, mine, strict=True)):
                    problems.append(f"step {rec.step}: a sample's bytes do not hash to the committed sample hash")
                loss = program.train_step(wrapped, optimizer, scheduler, program.collate(samples))
                if rank == 0 and rec.loss is not None and loss != rec.loss:
                    problems.append(f"step {rec.step}: recorded loss {rec.loss!r}, the replay gives {loss!r}")
            if bad := _same(model, index.load(transcript.store, b).model):
                problems.append(f"rank {rank}: replaying steps {a}..{b - 1} does not give checkpoint {b} ({bad[:3]} differ)")
    return {"problems": problems, "segments": max(len(steps) - 1, 0), "steps": len(records)}
