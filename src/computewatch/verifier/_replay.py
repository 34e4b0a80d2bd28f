"""Segment replay inside the trusted cluster (paper §5, Appendix D step 5).

From checkpoint W_s, apply the recorded steps with the precommitted training program and the
committed samples, and compare: the weights at every step a chip snapshotted (its logged shard
digest), the losses and learning rates the Prover recorded, and the next checkpoint W_e. A run
of W ranks is replayed by W processes over gloo with the same layout, so every reduction
happens in the order it did in training. Exact mode compares bits; tolerance mode measures
distances normalised by the segment's update size.
"""

from __future__ import annotations

import math
import os
import socket
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from computewatch.crypto.hashing import blake3_bytes, hash_regions, shard_digest
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.checkpoint import restore
from computewatch.formats.dataset import sample_hash
from computewatch.formats.program import deterministic_cpu, environment_mismatch, load_program, wrap_ddp
from computewatch.formats.seed import init_generator
from computewatch.formats.snapshot_records import load_copy_out
from computewatch.verifier._run import StagedRun, staged_run
from computewatch.verifier.flops import count_flops

__all__ = ["advance_scheduler", "distance", "local_parameters", "replay_segment", "split_batch", "wrap_model"]


def split_batch(ids: Sequence[int], rank: int, world: int) -> list[int]:
    """Rank r's contiguous part of a global batch (docs/formats.md, "Training program")."""
    if len(ids) % world:
        raise ValueError(f"a batch of {len(ids)} samples does not split evenly over {world} ranks")
    part = len(ids) // world
    return list(ids[rank * part : (rank + 1) * part])


def wrap_model(model: torch.nn.Module, strategy: str) -> torch.nn.Module:
    """The layout's parallelism: DDP replicas or FSDP2 `fully_shard` on the root module."""
    if strategy == "ddp":
        return wrap_ddp(model)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        fully_shard(model)
    return model


def _module(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def local_parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    """What the rank's chip holds: its parameters (FSDP: local shards), named_parameters order."""
    return [p.to_local() if hasattr(p, "to_local") else p for _, p in _module(model).named_parameters()]


def advance_scheduler(scheduler: Any, steps: int) -> None:
    """Put a fresh scheduler at step `steps` without optimizer steps (its lr is a function of
    the step count, which is what the precommitment fixes)."""
    if scheduler is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
        for _ in range(steps):
            scheduler.step()


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors]) if tensors else torch.zeros(0, dtype=torch.float64)


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.detach().contiguous().reshape(-1).view(torch.uint8), b.detach().contiguous().reshape(-1).view(torch.uint8))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _replay_rank(rank: int, spec: dict[str, Any], run: StagedRun, port: int | None) -> dict[str, Any]:
    """Replay the segment on one rank; returns what this rank observed."""
    pre = run.precommitment
    world = run.world_size
    threads = int(spec.get("threads") or pre.environment["threads"])
    deterministic_cpu(threads)
    if port is not None:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        reference = spec.get("reference_threads")
        if not reference:
            return _replay_rank_inner(rank, spec, run, world)
        # Calibration: the same segment replayed twice, under the reference thread count and
        # under `threads`; the distance between the two replays is honest reproduction noise
        # (measured against the Prover's checkpoint instead, a drift built into the transcript
        # would pass as noise and raise epsilon above itself).
        deterministic_cpu(int(reference))
        first = _replay_rank_inner(rank, spec | {"keep_end": True}, run, world)
        deterministic_cpu(threads)
        second = _replay_rank_inner(rank, spec | {"keep_end": True}, run, world)
        if "error" in first or "error" in second:
            return first if "error" in first else second
        second["distance_parts"] = _distance_parts(second.pop("end_state"), first.pop("end_state"), first.pop("begin_state"))
        second.pop("begin_state")
        return second
    finally:
        if port is not None and dist.is_initialized():
            dist.destroy_process_group()


def _replay_rank_inner(rank: int, spec: dict[str, Any], run: StagedRun, world: int) -> dict[str, Any]:
    pre = run.precommitment
    start, end = int(spec["start"]), spec.get("end")
    stop = int(end) if end is not None else max(int(s["step"]) for s in spec["snapshots"])
    steps = run.steps()
    if stop > len(steps):
        return {"rank": rank, "error": f"the transcript records {len(steps)} steps; the segment needs {stop}"}
    hashes = run.sample_hashes()
    want = {int(s["step"]): s for s in spec["snapshots"] if int(s["rank"]) == rank}
    out: dict[str, Any] = {"rank": rank, "snapshots": [], "losses": [], "lr_ok": True, "rng_ok": True, "samples_ok": True, "loss_ok": True}
    with load_program(run.program_files(), pre.program_entry, pre.code_digest) as loaded:
        program = loaded.make(pre.hyperparameters, spec.get("data_dir"))
        model = program.build_model(init_generator(pre.seed))
        model = wrap_model(model, run.layout.strategy) if world > 1 else model
        optimizer = program.build_optimizer(model)
        scheduler = program.build_scheduler(optimizer)
        advance_scheduler(scheduler, start)
        restore(run.checkpoint(start, rank), _module(model), optimizer, None, settings="live")
        begin = [t.detach().clone() for t in local_parameters(model)]
        flops = None
        problems: list[str] = []
        perturb = spec.get("perturb") or {}  # calibration only: a spoof to measure false accepts
        for t in range(start, stop):
            rec = steps[t]
            if perturb.get("swap_batch") and t == start and t + 1 < len(steps):
                rec = steps[t + 1]
            if perturb.get("lr_scale"):
                for group in optimizer.param_groups:
                    group["lr"] = group["lr"] * float(perturb["lr_scale"])
            if rank == 0:
                if blake3_bytes(torch.get_rng_state().numpy().tobytes()).hex() != rec.rng:
                    out["rng_ok"] = False
                    problems.append(f"step {t}: RNG state differs from the recorded one")
                if float(optimizer.param_groups[0]["lr"]) != rec.lr:
                    out["lr_ok"] = False
                    problems.append(f"step {t}: recorded lr {rec.lr!r}, the precommitted schedule gives {optimizer.param_groups[0]['lr']!r}")
            ids = split_batch(rec.sample_ids, rank, world)
            samples = []
            for i in ids:
                data = program.sample(i)
                if not 0 <= i < len(hashes) or sample_hash(data) != hashes[i]:
                    out["samples_ok"] = False
                    problems.append(f"step {t}: sample {i} the program rebuilds does not hash to the committed sample hash")
                samples.append(data)
            batch = program.collate(samples)
            if flops is None and spec.get("count_flops", True):
                loss, flops = count_flops(lambda: program.train_step(model, optimizer, scheduler, batch))
            else:
                loss = program.train_step(model, optimizer, scheduler, batch)
            loss = float(loss)
            if rank == 0:
                out["losses"].append([t, loss if math.isfinite(loss) else None])
                recorded = rec.loss
                if spec["mode"] == "exact" and recorded is not None and loss != recorded:
                    out["loss_ok"] = False
                if spec["mode"] == "tolerance" and recorded is not None and not math.isclose(loss, recorded, rel_tol=1e-3, abs_tol=1e-6):
                    out["loss_ok"] = False
            if spec.get("step_digests"):  # issue 19: locate the first step off the committed chain
                out.setdefault("step_digests", []).append(shard_digest(hash_regions([p.detach() for p in local_parameters(model)])).hex())
            if t + 1 in want:
                out["snapshots"].append(_compare_snapshot(run, model, want[t + 1], spec["mode"], begin))
        out["flops"] = flops.to_json() if flops is not None else None
        if end is not None:
            out.update(_compare_end(run, rank, int(end), model, optimizer, spec["mode"], begin))
        if spec.get("keep_end"):
            out["end_state"] = [t.detach().clone() for t in local_parameters(model)]
            out["begin_state"] = begin
        out["problems"] = problems[:20]
    return out


def _compare_snapshot(run: StagedRun, model: torch.nn.Module, want: dict[str, Any], mode: str, begin: list[torch.Tensor]) -> dict[str, Any]:
    tensors = [t.detach() for t in local_parameters(model)]
    digest = shard_digest(hash_regions(tensors)).hex()
    result = {"rank": int(want["rank"]), "step": int(want["step"]), "digest": want["digest"], "replayed": digest}
    if mode == "exact":
        result["explained"] = digest == want["digest"]
        return result
    copy = load_copy_out(run.store.get(want["object"]), {"shard_digest": want["digest"], "object": want["object"]})
    dist_ = distance([_distance_parts(tensors, copy, begin)])
    result["distance"] = dist_
    result["explained"] = digest == want["digest"] or dist_["relative"] <= float(want["epsilon"])
    return result


def _distance_parts(replayed: Sequence[torch.Tensor], recorded: Sequence[torch.Tensor], begin: Sequence[torch.Tensor]) -> dict[str, float]:
    """Sums that add up over disjoint shards: |r - c|^2, |c - b|^2, |r - b|^2 and <r - b, c - b>."""
    r, c, b = _flat(replayed), _flat(recorded), _flat(begin)
    if r.shape != c.shape or r.shape != b.shape:
        return {"diff2": math.inf, "update2": 0.0, "replayed2": 0.0, "dot": 0.0}
    upd_r, upd_c = r - b, c - b
    return {
        "diff2": float(torch.dot(r - c, r - c)),
        "update2": float(torch.dot(upd_c, upd_c)),
        "replayed2": float(torch.dot(upd_r, upd_r)),
        "dot": float(torch.dot(upd_r, upd_c)),
    }


def distance(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """L2 of the difference, that L2 relative to the recorded update, and the true cosine of the
    replayed and recorded updates (PoL's cosine divided by the first norm twice)."""
    diff2, update2, replayed2, dot = (sum(p[k] for p in parts) for k in ("diff2", "update2", "replayed2", "dot"))
    l2, update = math.sqrt(diff2), math.sqrt(update2)
    denom = math.sqrt(replayed2) * update
    return {
        "l2": l2,
        "update": update,
        "relative": l2 / update if update > 0 else (0.0 if l2 == 0 else math.inf),
        "cosine": dot / denom if denom > 0 else (1.0 if l2 == 0 else 0.0),
    }


def _compare_end(run: StagedRun, rank: int, end: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, mode: str, begin: list[torch.Tensor]) -> dict[str, Any]:
    ckpt = run.checkpoint(end, rank)
    live = {k: (v.to_local() if hasattr(v, "to_local") else v) for k, v in _module(model).state_dict().items()}
    model_equal = set(live) == set(ckpt.model) and all(_bits_equal(live[k], ckpt.model[k]) for k in live)
    opt_equal = _optimizer_equal(optimizer, ckpt)
    names = [n for n, _ in _module(model).named_parameters()]
    recorded = [ckpt.model[n] for n in names if n in ckpt.model]
    parts = _distance_parts(local_parameters(model), recorded, begin)
    return {"end_model_equal": model_equal, "end_optimizer_equal": opt_equal, "distance_parts": parts}


def _optimizer_equal(optimizer: torch.optim.Optimizer, ckpt: Any) -> bool:
    state = optimizer.state_dict()["state"]
    live: dict[str, torch.Tensor] = {}
    for idx, entries in state.items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                live[f"{idx}/{key}"] = value.to_local() if hasattr(value, "to_local") else value
    return set(live) == set(ckpt.optimizer_tensors) and all(_bits_equal(live[k], ckpt.optimizer_tensors[k]) for k in live)


def _spawned(rank: int, spec: dict[str, Any], root: str, keys: list[bytes], port: int, queue: Any) -> None:
    from computewatch.formats.manifest import read_manifest
    from computewatch.formats.storage import ObjectStore, RunStorage

    storage = RunStorage(root, create=False)
    manifest = read_manifest(storage, [VerifyKey.from_pem(k) for k in keys])
    run = StagedRun(Path(root), storage, ObjectStore(storage), manifest)
    try:
        queue.put(_replay_rank(rank, spec, run, port))
    except BaseException as exc:  # reported to the parent as this rank's failure
        queue.put({"rank": rank, "error": f"{type(exc).__name__}: {exc}"})


def replay_segment(spec: dict[str, Any], keys: list[VerifyKey]) -> dict[str, Any]:
    """Job "segment": replay [start, end) (or up to the last requested snapshot)."""
    pairs = {(r, int(spec["start"])) for r in range(spec["world_size"])}
    if spec.get("end") is not None:
        pairs |= {(r, int(spec["end"])) for r in range(spec["world_size"])}
    with staged_run(spec["run_dir"], keys, checkpoints=pairs, snapshot_objects=spec["mode"] == "tolerance") as run:
        mismatch = environment_mismatch(run.precommitment.environment)
        if run.world_size == 1:
            ranks = [_replay_rank(0, spec, run, None)]
        else:
            ranks = _replay_distributed(spec, run, keys)
    return _merge(spec, ranks, mismatch)


def _replay_distributed(spec: dict[str, Any], run: StagedRun, keys: list[VerifyKey]) -> list[dict[str, Any]]:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = _free_port()
    pem = [k.to_pem() for k in keys]
    procs = [ctx.Process(target=_spawned, args=(r, spec, str(run.root), pem, port, queue), daemon=True) for r in range(run.world_size)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return sorted(results, key=lambda r: r["rank"])


def _merge(spec: dict[str, Any], ranks: list[dict[str, Any]], mismatch: list[str]) -> dict[str, Any]:
    errors = [f"rank {r['rank']}: {r['error']}" for r in ranks if "error" in r]
    result: dict[str, Any] = {"start": spec["start"], "end": spec.get("end"), "environment_mismatch": mismatch}
    if errors:
        result.update(error="; ".join(errors))
        return result
    strategy_sum = spec.get("strategy") == "fsdp"
    flops = [r["flops"] for r in ranks if r.get("flops")]
    unknown: dict[str, int] = {}
    for f in flops:
        for k, v in f["unknown_ops"].items():
            unknown[k] = unknown.get(k, 0) + v
    result["flops_per_step"] = sum(f["total"] for f in flops) if flops else None
    result["matmul_flops_per_step"] = sum(f["matmul"] for f in flops) if flops else None
    result["unknown_ops"] = unknown
    result["snapshots"] = [s for r in ranks for s in r["snapshots"]]
    result["losses"] = ranks[0]["losses"]
    result["step_digests"] = [r.get("step_digests", []) for r in ranks]
    for key in ("lr_ok", "rng_ok", "samples_ok", "loss_ok"):
        result[key] = all(r[key] for r in ranks)
    result["problems"] = [p for r in ranks for p in r.get("problems", [])][:20]
    if spec.get("end") is not None:
        result["end_model_equal"] = all(r["end_model_equal"] for r in ranks)
        result["end_optimizer_equal"] = all(r["end_optimizer_equal"] for r in ranks)
        # Distances add up over disjoint shards (FSDP); replicas (DDP) are counted once.
        result["distance"] = distance([r["distance_parts"] for r in (ranks if strategy_sum else ranks[:1])])
    return result
