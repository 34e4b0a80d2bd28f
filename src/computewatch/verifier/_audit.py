"""Trusted-cluster jobs over a whole transcript: the inventory and the audit.

`inventory` turns the Prover's raw run directory into what the Verifier may hold outside the
cluster (Appendix D step 2, a hashed transcript, computed here rather than taken from the
Prover): run id, precommitment digest, the memory-map digest of every rank, checkpoint steps,
the snapshot records with whether each copy-out hashes to its digest, update norms between
checkpoints (for PoL's top-Q), and the recorded learning rate and loss per step.

`audit` runs the checks that need no replay: `init` (W0 recomputed from the committed seed),
`data` (order from the seed, batch roots, inclusion proofs, sample bytes), `hyperparameters`
(every step's lr and every checkpoint's optimizer settings against the precommitted program),
`memorization` (PoTD's forward-only test) and the policy's data and benchmark facts.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.hashing import blake3_bytes
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.dataset import DatasetCommitment, sample_hash, verify_sample
from computewatch.formats.program import ProgramError, deterministic_cpu, load_program
from computewatch.formats.seed import batches, init_generator
from computewatch.formats.snapshot_records import load_copy_out
from computewatch.formats.steps import batch_root
from computewatch.verifier._replay import advance_scheduler
from computewatch.verifier._run import StagedRun, staged_run
from computewatch.verifier.challenges import commitment_summary

__all__ = ["audit", "inventory", "verifier_rng"]

_MEMO_SAMPLES = 24  # trained and held-out samples per memorization segment
_DATA_SPOT_CHECKS = 32  # samples whose bytes and inclusion proofs the data check rebuilds


def verifier_rng(seed_hex: str, purpose: str) -> random.Random:
    """A PRNG keyed by the Verifier's secret seed, one stream per purpose."""
    return random.Random(blake3_bytes(bytes.fromhex(seed_hex) + b"\x00" + purpose.encode()).hex())


def _json_norm(obj: Any) -> Any:
    """Tuples to lists, so live state compares with JSON state."""
    if isinstance(obj, (list, tuple)):
        return [_json_norm(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _json_norm(v) for k, v in obj.items()}
    return obj


# ------------------------------------------------------------------------------------ inventory
def inventory(spec: dict[str, Any], keys: list[VerifyKey]) -> dict[str, Any]:
    with staged_run(spec["run_dir"], keys, checkpoints="all") as run:
        pre = run.precommitment
        out: dict[str, Any] = {
            "run_id": pre.run_id,
            "precommitment_digest": pre.digest().hex(),
            "world_size": run.world_size,
            "strategy": run.layout.strategy,
            "checkpoint_every": pre.checkpoint_every,
            "environment": pre.environment,
            "program_entry": pre.program_entry,
            "code_digest": pre.code_digest,
            "chips": list(run.manifest.chips),
            "memory_maps": [blake3_bytes(canonical_json(run.layout.memory_map(r))).hex() for r in range(run.world_size)],
            "problems": [],
        }
        try:
            steps = run.steps()
            out["steps"] = len(steps)
            out["lr"] = [[r.step, r.lr] for r in steps]
            out["loss"] = [[r.step, r.loss] for r in steps]
        except ComputewatchError as exc:
            out.update(steps=0, lr=[], loss=[])
            out["problems"].append(f"step records: {exc}")
        per_rank = {r: [(e["step"], e["digest"]) for e in run.checkpoint_entries(r)] for r in range(run.world_size)}
        out["checkpoints"] = {str(r): [[s, d] for s, d in v] for r, v in per_rank.items()}
        common = sorted(set.intersection(*(set(s for s, _ in v) for v in per_rank.values()))) if per_rank else []
        for r, v in per_rank.items():
            odd = sorted(set(s for s, _ in v) - set(common))
            if odd:
                out["problems"].append(f"rank {r} has checkpoints at steps {odd} that other ranks lack")
        out["checkpoint_steps"] = common
        out["update_norms"] = _update_norms(run, common)
        out["snapshot_records"] = [_snapshot_record(run, rec) for rec in run.snapshot_records()]
        out["step_commitments"] = commitment_summary(run, out["update_norms"])  # issue 19: the committed chain
    return out


def _update_norms(run: StagedRun, steps: Sequence[int]) -> list[list[float]]:
    """L2 norm of the weight change between consecutive checkpoints (PoL's update size)."""
    ranks = range(run.world_size) if run.layout.strategy == "fsdp" else [0]  # replicas count once
    models = [{r: run.checkpoint(step, r).model for r in ranks} for step in steps]
    norms = []
    for (a, prev), (b, cur) in zip(zip(steps, models), zip(steps[1:], models[1:])):
        total = sum(
            float(torch.sum((t.double() - prev[r][name].double()) ** 2))
            for r in ranks
            for name, t in cur[r].items()
            if name in prev[r] and t.is_floating_point()
        )
        norms.append([a, b, math.sqrt(total)])
    return norms


def _snapshot_record(run: StagedRun, rec: dict[str, Any]) -> dict[str, Any]:
    item = {k: rec[k] for k in ("rank", "chip_id", "counter", "step", "shard_digest", "object")}
    try:
        run.stage_object(rec["object"])
        load_copy_out(run.store.get(rec["object"]), rec)
        item["copy_out_ok"], item["copy_out_detail"] = True, ""
    except ComputewatchError as exc:
        item["copy_out_ok"], item["copy_out_detail"] = False, str(exc)
    return item


# ---------------------------------------------------------------------------------------- audit
def audit(spec: dict[str, Any], keys: list[VerifyKey]) -> dict[str, Any]:
    with staged_run(spec["run_dir"], keys, checkpoints="all") as run:
        pre = run.precommitment
        deterministic_cpu(int(pre.environment["threads"]))
        results: dict[str, Any] = {}
        try:
            files = run.program_files()
        except ComputewatchError as exc:
            return {"program_error": str(exc), "program_tampered": True}
        try:
            with load_program(files, pre.program_entry, pre.code_digest) as loaded:
                program = loaded.make(pre.hyperparameters, spec.get("data_dir"))
                steps = run.steps()
                hashes = run.sample_hashes()
                results["init"] = _check_init(run, program)
                results["data"] = _check_data(run, program, steps, hashes, spec["seed"])
                results["hyperparameters"] = _check_hyperparameters(run, program, steps)
                results["memorization"] = _memorization(run, program, steps, hashes, spec.get("memorization", []), spec["seed"])
                results["rules"] = _rules(run, program, steps, hashes, spec)
        except ProgramError as exc:
            tampered = "code digest" in str(exc)
            return {"program_error": str(exc), "program_tampered": tampered}
        except ComputewatchError as exc:
            return {"program_error": f"the transcript could not be audited: {exc}", "program_tampered": True}
    return results


def _full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def _check_init(run: StagedRun, program: Any) -> dict[str, Any]:
    """W0 from `build_model(init_generator(seed))` must be every rank's step-0 checkpoint."""
    w0 = _full_state(program.build_model(init_generator(run.precommitment.seed)))
    regions = {r: {reg.param: reg for reg in run.layout.chips[r]} for r in range(run.world_size)}
    for rank in range(run.world_size):
        try:
            ckpt = run.checkpoint(0, rank)
        except ComputewatchError as exc:
            return {"passed": False, "detail": f"rank {rank} has no step-0 checkpoint to compare W0 with ({exc})"}
        if set(ckpt.model) != set(w0):
            return {"passed": False, "detail": f"rank {rank}'s step-0 checkpoint holds other tensors than the program's model"}
        for name, full in w0.items():
            reg = regions[rank].get(name)
            want = full.reshape(-1)[reg.start : reg.stop].reshape(reg.shape) if reg is not None else full
            got = ckpt.model[name]
            if got.dtype != want.dtype or got.shape != want.shape or not torch.equal(_bits(got), _bits(want)):
                return {"passed": False, "detail": f"rank {rank}: W0 tensor {name!r} is not the one the committed seed gives"}
        if ckpt.optimizer_tensors:
            return {"passed": False, "detail": f"rank {rank}'s step-0 checkpoint carries optimizer state: training did not start fresh"}
    return {"passed": True, "detail": f"W0 equals the program's initialisation from the committed seed on {run.world_size} rank(s)"}


def _check_data(run: StagedRun, program: Any, steps: Sequence[Any], hashes: list[bytes], seed_hex: str) -> dict[str, Any]:
    pre = run.precommitment
    n = len(hashes)
    size = program.batch_size
    for rec, (t, ids) in zip(steps, batches(pre.seed, n, size, len(steps))):
        if list(rec.sample_ids) != list(ids):
            return {"passed": False, "detail": f"step {t}: the sample ids differ from the order the committed seed gives"}
        if batch_root([hashes[i] for i in rec.sample_ids]).hex() != rec.batch_root:
            return {"passed": False, "detail": f"step {t}: batch_root does not match the committed hashes of its samples"}
    commitment = DatasetCommitment(hashes)
    root = bytes.fromhex(pre.dataset["root"])
    rng = verifier_rng(seed_hex, f"data/{pre.run_id}")
    used = sorted({i for rec in steps for i in rec.sample_ids})
    for i in rng.sample(used, min(_DATA_SPOT_CHECKS, len(used))):
        data = program.sample(i)
        try:
            verify_sample(data, i, n, commitment.inclusion_proof(i), root)
        except ComputewatchError:
            return {"passed": False, "detail": f"sample {i} as the program rebuilds it is not the committed sample (inclusion proof fails)"}
    return {
        "passed": True,
        "detail": f"{len(steps)} batches follow the seed's order; batch roots match; {min(_DATA_SPOT_CHECKS, len(used))} samples rebuilt and proven against the dataset root",
    }


def _check_hyperparameters(run: StagedRun, program: Any, steps: Sequence[Any]) -> dict[str, Any]:
    """Recorded lr per step and every checkpoint's optimizer settings against a fresh optimizer
    and scheduler built from the precommitted hyperparameters."""
    model = program.build_model(init_generator(run.precommitment.seed))
    optimizer = program.build_optimizer(model)
    scheduler = program.build_scheduler(optimizer)
    ckpt_steps = {e["step"] for e in run.checkpoint_entries(0)}
    expected_lr = []
    for t in range(len(steps) + 1):
        if t in ckpt_steps:
            problem = _settings_differ(run, optimizer, scheduler, t)
            if problem:
                return {"passed": False, "detail": problem, "expected_lr": expected_lr}
        if t == len(steps):
            break
        lr = float(optimizer.param_groups[0]["lr"])
        expected_lr.append([t, lr])
        if steps[t].lr != lr:
            return {"passed": False, "detail": f"step {t}: recorded lr {steps[t].lr!r}, the precommitted schedule gives {lr!r}", "expected_lr": expected_lr}
        advance_scheduler(scheduler, 1)
    return {"passed": True, "detail": f"lr of all {len(steps)} steps and the optimizer settings of {len(ckpt_steps)} checkpoints follow the precommitment", "expected_lr": expected_lr}


def _settings_differ(run: StagedRun, optimizer: torch.optim.Optimizer, scheduler: Any, step: int) -> str | None:
    live = [{k: v for k, v in g.items() if k != "params"} for g in _json_norm(optimizer.state_dict()["param_groups"])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = _json_norm(scheduler.state_dict()) if scheduler is not None else None
    for rank in range(run.world_size):
        ckpt = run.checkpoint(step, rank)
        groups = [{k: v for k, v in g.items() if k != "params"} for g in ckpt.optimizer_meta.get("param_groups", [])]
        if groups != live:
            return f"checkpoint at step {step} (rank {rank}): optimizer settings differ from the precommitted ones"
        if sched is not None and _json_norm(ckpt.scheduler) != sched:
            return f"checkpoint at step {step} (rank {rank}): scheduler state differs from the precommitted schedule"
    return None


def _sample_losses(program: Any, model: torch.nn.Module, samples: Sequence[bytes]) -> list[float]:
    with torch.no_grad():
        return [float(program.loss(model, program.collate([s]))) for s in samples]


def _model_at(run: StagedRun, program: Any, step: int) -> torch.nn.Module:
    model = program.build_model(init_generator(run.precommitment.seed))
    weights = run.full_weights(step)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(weights[name])
    return model.eval()


def _memorization(run: StagedRun, program: Any, steps: Sequence[Any], hashes: list[bytes], segments: Sequence[Sequence[int]], seed_hex: str) -> dict[str, Any] | None:
    """PoTD: right after a segment trains on its samples, their loss drops more than that of
    held-out samples. Per segment z = (mean drop trained - mean drop held out) / standard error;
    the segments combine by Stouffer's method."""
    if not segments:
        return None
    n = len(hashes)
    zs = []
    rows = []
    for a, b in segments:
        trained = sorted({i for rec in steps[a:b] for i in rec.sample_ids})
        others = sorted(set(range(n)) - set(trained))
        if len(trained) < 4 or len(others) < 4:
            continue
        rng = verifier_rng(seed_hex, f"memorization/{run.precommitment.run_id}/{a}-{b}")
        t_ids = rng.sample(trained, min(_MEMO_SAMPLES, len(trained)))
        h_ids = rng.sample(others, min(_MEMO_SAMPLES, len(others)))
        before, after = _model_at(run, program, a), _model_at(run, program, b)
        t_samples = [program.sample(i) for i in t_ids]
        h_samples = [program.sample(i) for i in h_ids]
        if any(sample_hash(s) != hashes[i] for s, i in zip(t_samples + h_samples, t_ids + h_ids)):
            return {"passed": False, "detail": "a sample the program rebuilds is not the committed one", "segments": len(rows)}
        drop_t = [x - y for x, y in zip(_sample_losses(program, before, t_samples), _sample_losses(program, after, t_samples))]
        drop_h = [x - y for x, y in zip(_sample_losses(program, before, h_samples), _sample_losses(program, after, h_samples))]
        z = _welch_z(drop_t, drop_h)
        zs.append(z)
        rows.append({"from": a, "to": b, "z": z})
    if not zs:
        return None
    combined = sum(zs) / math.sqrt(len(zs))
    p_value = 0.5 * math.erfc(combined / math.sqrt(2))
    return {"segments": len(zs), "statistic": combined, "p_value": p_value, "per_segment": rows}


def _welch_z(a: Sequence[float], b: Sequence[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / max(1, len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / max(1, len(b) - 1)
    se = math.sqrt(va / len(a) + vb / len(b))
    return (ma - mb) / se if se > 0 else 0.0


def _rules(run: StagedRun, program: Any, steps: Sequence[Any], hashes: list[bytes], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate the policy here, where the raw data is: a random data subset and benchmarks on
    the final weights feed the rules; only the rule outcomes leave the cluster."""
    if not spec.get("policy"):
        return []
    from computewatch.verifier.rules import Policy, RunFacts

    policy = Policy.from_bytes(spec["policy"].encode("utf-8"), source="policy")
    need = policy.requirements()
    rng = verifier_rng(spec["seed"], f"policy/{run.precommitment.run_id}")
    n = len(hashes)
    data = None
    if need.get("data_subset"):
        data = [program.sample(i) for i in rng.sample(range(n), min(int(need["data_subset"]), n))]
    benchmarks: dict[str, float | None] = {}
    for name, count in (need.get("benchmarks") or {}).items():
        if name != "final_loss":
            continue  # a benchmark the cluster does not know stays unknown (rules reading it: "error")
        final = max(e["step"] for e in run.checkpoint_entries(0))
        model = _model_at(run, program, final)
        losses = _sample_losses(program, model, [program.sample(i) for i in rng.sample(range(n), min(int(count), n))])
        benchmarks[name] = sum(losses) / len(losses)
    facts = RunFacts(
        run_id=run.precommitment.run_id,
        total_flops=spec.get("total_flops"),
        hyperparameters=run.precommitment.hyperparameters,
        steps=len(steps),
        lr=[r.lr for r in steps],
        data=data,
        benchmarks=benchmarks,
        world_size=run.world_size,
        chips=run.world_size,
    )
    return [o.to_json() for o in policy.evaluate(facts)]
