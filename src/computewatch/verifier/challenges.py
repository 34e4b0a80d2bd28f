"""Step challenges, the Verifier's side (issue 19): what the step commitments say, and which
steps the Prover must answer for.

`commitment_summary` runs inside the trusted cluster (a hook of the inventory job): from the
staged run it takes each step's per-rank commitments and update norms, the root of the step
records, and checks the chain where the transcript itself pins it: the manifest's signed step
root (predicate v3), every checkpoint at step s against the commitment of step s - 1, and every
snapshot record against the commitment of the step that produced its weights. Only digests,
norms and findings leave the cluster.

`draw_steps` picks the challenged steps after the Prover has committed: K distinct steps drawn
from the Verifier's secret (BLAKE3 counter mode, modulo over 256-bit words) plus the Q steps
whose committed update norm is largest relative to their neighbours' (PoL's top-Q, made local:
`relative_norms`). `make_challenge` builds the
tagged challenge document (`computewatch.formats.challenge`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.digest import blake3_bytes
from computewatch.crypto.merkle import root_from_leaves
from computewatch.formats.challenge import CHALLENGE_KIND, CHALLENGE_VERSION, challenge_tag
from computewatch.formats.commitments import checkpoint_commitment

__all__ = ["commitment_summary", "draw_steps", "make_challenge", "relative_norms", "step_norm"]


def step_norm(state: Sequence[dict[str, Any]], strategy: str) -> float:
    """The update norm of a whole step: summed over FSDP shards, one replica otherwise."""
    if not state:
        return 0.0
    if strategy == "fsdp":
        return math.sqrt(sum(float(c["update_norm"]) ** 2 for c in state))
    return max(float(c["update_norm"]) for c in state)


def commitment_summary(run: Any, checkpoint_norms: Sequence[Sequence[float]] = ()) -> dict[str, Any]:
    """Inside the cluster: the run's step commitments and the chain findings (see module doc).
    `checkpoint_norms` ([from, to, L2 of the weight change]) check the committed update norms by
    the triangle inequality: the step norms of an interval add up to at least its change, so a
    large update hidden behind small claimed norms (to dodge top-Q) shows."""
    out: dict[str, Any] = {"committed": False, "count": 0, "records_root": None, "state": [], "norms": [], "initial": [], "problems": [], "pins": 0}
    try:
        records = run.steps()
    except ComputewatchError as exc:
        out["problems"].append(f"step records unreadable: {exc}")
        return out
    out["count"] = len(records)
    out["rng"] = [r.rng for r in records]  # rank 0's RNG digest at each step's start
    root = root_from_leaves([r.leaf() for r in records]) if records else None
    out["records_root"] = root.hex() if root is not None else None
    signed = run.manifest.steps
    if signed is not None and (signed.get("count") != len(records) or signed.get("records_root") != out["records_root"]):
        out["problems"].append(f"the manifest signs {signed.get('count')} step records with another root than the {len(records)} submitted")
    committed = [r for r in records if r.state is not None]
    if not committed:
        return out
    world = run.world_size
    if len(committed) != len(records):
        missing = [r.step for r in records if r.state is None][:5]
        out["problems"].append(f"{len(records) - len(committed)} step records carry no commitment (e.g. steps {missing})")
    out["committed"] = True
    for r in records:
        state = [c.to_json() for c in r.state] if r.state is not None else []
        if state and len(state) != world:
            out["problems"].append(f"step {r.step}: commitments of {len(state)} ranks, the run has {world}")
        out["state"].append([[c["weights"], c["optimizer"]] for c in state])
        out["norms"].append(step_norm(state, run.layout.strategy))
    for a, b, l2 in checkpoint_norms:
        claimed = sum(out["norms"][int(a) : int(b)])
        if claimed * (1 + 1e-6) + 1e-12 < float(l2):
            out["problems"].append(f"steps {int(a)}-{int(b) - 1}: committed update norms add up to {claimed:.6g}, less than the {float(l2):.6g} the checkpoints changed by")
    names = [[reg.param for reg in run.layout.chips[rank]] for rank in range(world)]
    for rank in range(world):
        for entry in run.checkpoint_entries(rank):
            s = entry["step"]
            try:
                ckpt = run.checkpoint(s, rank)
                digests = list(checkpoint_commitment(ckpt.model, names[rank], ckpt.optimizer_tensors))
            except ComputewatchError as exc:
                out["problems"].append(f"rank {rank} checkpoint {s}: {exc}")
                continue
            if s == 0:
                out["initial"].append(digests)
            elif s - 1 < len(out["state"]) and out["state"][s - 1] and out["state"][s - 1][rank] != digests:
                out["problems"].append(f"rank {rank} checkpoint at step {s} does not match the state committed by step {s - 1}")
    for rec in run.snapshot_records():
        s, rank = int(rec["step"]), int(rec["rank"])
        if 0 < s <= len(out["state"]) and out["state"][s - 1] and rank < len(out["state"][s - 1]):
            if out["state"][s - 1][rank][0] != rec["shard_digest"]:
                out["problems"].append(f"rank {rank} snapshot at step {s} (counter {rec['counter']}) does not match the weights committed by step {s - 1}")
            else:
                out["pins"] += 1
    return out


def relative_norms(norms: Sequence[float], window: int = 16) -> list[float]:
    """Each step's update norm over the median norm of the `window` steps on either side.

    PoL ranks updates by size within an epoch; over a whole run the learning-rate schedule moves
    every norm by orders of magnitude (warm-up peaks dwarf a late 10x jump), so top-Q ranks each
    step against its neighbours instead: an honest step scores about 1, a jump its factor."""
    norms = [float(x) for x in norms]
    out = []
    for t, n in enumerate(norms):
        near = sorted(norms[max(0, t - window) : t] + norms[t + 1 : t + 1 + window])
        med = near[len(near) // 2] if near else 0.0
        out.append(n / med if med > 0 else (math.inf if n > 0 else 0.0))
    return out


def draw_steps(seed: bytes, run_id: str, n_steps: int, count: int, norms: Sequence[float] = (), top_q: int = 0) -> list[dict[str, Any]]:
    """`count` distinct random steps of 0..n_steps-1 from the secret, plus the `top_q` largest
    committed updates; each with the reasons it was drawn, in step order."""
    chosen: dict[int, list[str]] = {}
    if top_q > 0 and norms:
        score = relative_norms(norms)
        for t in sorted(range(len(norms)), key=lambda i: (-score[i], i))[:top_q]:
            chosen.setdefault(t, []).append("top-q")
    pool = list(range(n_steps))
    counter = 0
    picked = 0
    while pool and picked < min(count, n_steps):
        word = int.from_bytes(blake3_bytes(seed + b"step-challenge\x00" + run_id.encode() + counter.to_bytes(8, "big")), "big")
        counter += 1
        t = pool.pop(word % len(pool))
        chosen.setdefault(t, []).append("random")
        picked += 1
    return [{"step": t, "reasons": chosen[t]} for t in sorted(chosen)]


def make_challenge(
    summary: dict[str, Any],
    run_id: str,
    precommitment_digest: str,
    seed: bytes,
    count: int,
    *,
    top_q: int = 2,
    mode: str = "exact",
    deadline_s: int = 24 * 3600,
    now_ns: int | None = None,
    at: Sequence[int] = (),
) -> dict[str, Any]:
    """The tagged challenge for a run whose commitments `summary` describes; `at` adds steps the
    Verifier names itself (a bisection round's midpoint, reason "bisection")."""
    if not summary.get("committed"):
        raise ComputewatchError(f"run {run_id} has no step commitments (step records v1): it cannot be challenged step by step")
    if count < 0 or top_q < 0:
        raise ValueError("--steps and --top-q must be >= 0")
    doc: dict[str, Any] = {
        "v": CHALLENGE_VERSION,
        "kind": CHALLENGE_KIND,
        "run_id": run_id,
        "precommitment_digest": precommitment_digest,
        "records_root": summary["records_root"],
        "steps_count": summary["count"],
        "mode": mode,
        "issued_ns": str(time.time_ns() if now_ns is None else now_ns),
        "deadline_s": int(deadline_s),
        "steps": draw_steps(seed, run_id, summary["count"], count, summary["norms"], top_q),
        "tag": "",
    }
    bad = [t for t in at if not 0 <= int(t) < summary["count"]]
    if bad:
        raise ValueError(f"--at {bad[0]}: the run has steps 0 to {summary['count'] - 1}")
    if at:
        by_step = {s["step"]: s for s in doc["steps"]}
        for t in sorted({int(t) for t in at}):
            by_step.setdefault(t, {"step": t, "reasons": []})["reasons"].append("bisection")
        doc["steps"] = [by_step[t] for t in sorted(by_step)]
    doc["tag"] = challenge_tag(doc, seed)
    return doc
