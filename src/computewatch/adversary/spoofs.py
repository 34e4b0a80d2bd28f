"""Transcript spoofs: a Prover hands the Verifier a transcript that is not the run its chips saw
(paper §5, §5.1 and Definition 1; ANCHORS.md: Zhang et al. 2022, Fang et al. 2023,
OpenVerifiableLLM's forged-but-consistent chain).

Every spoof is built with the cheating Prover's tools (`adversary.cheater` trains a deviating
run on a real chip, `adversary.transcript` edits a transcript and keeps it internally
consistent: content addresses, indexes, batch roots, signatures) and then verified by
`computewatch.verifier.verify` against the chips that logged the run, with the Prover's
registered key pinned. Each ends in the Verifier check that fails it.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from computewatch.adversary.suite import (
    Context,
    Trial,
    get_attack,
    register,
    result_from_trials,
)
from computewatch.adversary.world import (
    RUN,
    copy_run,
    failed_checks,
    honest_run,
    train_run,
    verdict_trial,
    verify_runs,
)

__all__ = ["kolmogorov_smirnov", "sample_hashes"]

_OVERRIDES = dict(RUN["overrides"])


# ------------------------------------------------------------------------------ helpers
def sample_hashes(run: Path) -> list[bytes]:
    """The run's per-sample hashes (what a Prover recomputes batch roots from)."""
    from computewatch.formats.manifest import read_manifest
    from computewatch.formats.storage import ObjectStore, RunStorage

    storage = RunStorage(run, create=False)
    data = ObjectStore(storage).get(read_manifest(storage).sample_hashes)
    return [data[i : i + 32] for i in range(0, len(data), 32)]


def _key(run: Path) -> Any:
    from computewatch.crypto.signing import SigningKey

    return SigningKey.load(run / "keys" / "prover.key")


def _cheat(ctx: Context, name: str, deviation: Any, **kw: Any) -> Path:
    from computewatch.adversary.cheater import train_with_deviation

    kw.setdefault("overrides", _OVERRIDES)
    return train_with_deviation(ctx.scratch(name) / "run", deviation, steps=RUN["steps"], checkpoint_every=RUN["checkpoint_every"],
                                snapshots_per_day=RUN["snapshots_per_day"], chip_seconds_per_step=RUN["chip_seconds_per_step"], **kw)


def _checkpoint(run: Path, step: int, rank: int = 0) -> Any:
    from computewatch.formats.checkpoint import CheckpointIndex
    from computewatch.formats.storage import ObjectStore, RunStorage

    storage = RunStorage(run, create=False)
    return CheckpointIndex(storage, rank).load(ObjectStore(storage), step)


def _checkpoint_steps(run: Path, rank: int = 0) -> list[int]:
    from computewatch.formats.checkpoint import CheckpointIndex
    from computewatch.formats.storage import RunStorage

    return [int(e["step"]) for e in CheckpointIndex(RunStorage(run, create=False), rank).entries()]


def _verify_trial(attack: Any, runs: list[Path], **kw: Any) -> Trial:
    return verdict_trial(verify_runs(runs, **kw), attack.expected)


def _edit_attack(name: str, edit: Any) -> Any:
    """A runner: per trial, edit a copy of the honest run, then verify it."""

    def run(ctx: Context, trials: int, seed: int) -> Any:
        attack = get_attack(name)
        rng = random.Random(seed)
        out = []
        for _ in range(trials):
            spoof = copy_run(honest_run(ctx), ctx.scratch(name) / "run")
            edit(spoof, rng)
            out.append(_verify_trial(attack, [spoof]))
        return result_from_trials(attack, out)

    return run


# ------------------------------------------------------------------ seeded initialisation
@register(
    "snapshot-is-init",
    paper_ref="§5.1 (seeded initialisation), footnote 18",
    family="transcripts",
    kind="caught",
    expected="verifier.init",
    summary="Takes the weights a chip logged in a snapshot of an earlier (covert) run and presents a new, small run "
    "that 'starts' from them, claiming the snapshot is just its initialisation.",
    default_trials=1,
    max_trials=5,
)
def _snapshot_is_init(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.adversary.cheater import Deviation
    from computewatch.formats.snapshot_records import (
        load_copy_out,
        read_snapshot_records,
    )
    from computewatch.formats.storage import ObjectStore, RunStorage

    attack = get_attack("snapshot-is-init")
    covert = honest_run(ctx)
    storage = RunStorage(covert, create=False)
    record = read_snapshot_records(storage, 0)[0]
    tensors = load_copy_out(ObjectStore(storage).get(record["object"]), record)
    import torch

    from computewatch.prover.workloads import preset

    model = preset("mlp", total_steps=RUN["steps"], **_OVERRIDES).build_model(torch.Generator().manual_seed(0))
    names = [n for n, _ in model.named_parameters()]  # the chip's regions, in parameter order
    state = dict(zip(names, tensors, strict=True))
    out = []
    for _ in range(trials):
        spoof = _cheat(ctx, "snapshot-is-init", Deviation(), init_state=state)
        out.append(_verify_trial(attack, [spoof]))
    return result_from_trials(attack, out, extra={"snapshot": {"step": record["step"], "counter": record["counter"]}})


@register(
    "long-run-as-short-runs",
    paper_ref="§5.1 (levers: seeded initialisation)",
    family="transcripts",
    kind="caught",
    expected="verifier.init",
    summary="Reports one long run as two short ones: the second 'new' run starts from the first one's final weights, "
    "so each looks small.",
    default_trials=1,
    max_trials=5,
)
def _long_as_short(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.adversary.cheater import Deviation
    from computewatch.adversary.transcript import resign_manifest

    attack = get_attack("long-run-as-short-runs")
    first = copy_run(honest_run(ctx), ctx.scratch("first-half") / "run")
    final = _checkpoint(first, _checkpoint_steps(first)[-1]).model
    out = []
    for _ in range(trials):
        second = _cheat(ctx, "second-half", Deviation(), init_state=final)
        resign_manifest(second, _key(first))  # one Prover, one registered key
        out.append(_verify_trial(attack, [first, second], chips=[first / "chips", second / "chips"]))
    return result_from_trials(attack, out)


# ------------------------------------------------------------------ data order (d_1)
def _reorder(run: Path, rng: random.Random) -> None:
    from computewatch.adversary.transcript import edit_steps

    def swap(recs: list[Any]) -> list[Any]:
        i = rng.randrange(1, len(recs) - 1)
        a, b = recs[i], recs[i + 1]
        recs[i], recs[i + 1] = replace(a, sample_ids=b.sample_ids), replace(b, sample_ids=a.sample_ids)
        return recs

    edit_steps(run, swap, hashes=sample_hashes(run))


def _insert(run: Path, rng: random.Random) -> None:
    from computewatch.adversary.transcript import edit_steps

    hashes = sample_hashes(run)

    def insert(recs: list[Any]) -> list[Any]:
        i = rng.randrange(1, len(recs) - 1)
        extra = replace(recs[i], sample_ids=tuple(rng.randrange(len(hashes)) for _ in recs[i].sample_ids))
        return [*recs[:i], extra, *recs[i:-1]]  # same number of steps: the last batch is pushed out

    edit_steps(run, insert, hashes=hashes)


def _remove(run: Path, rng: random.Random) -> None:
    from computewatch.adversary.transcript import edit_steps

    def remove(recs: list[Any]) -> list[Any]:
        i = rng.randrange(1, len(recs) - 1)
        return recs[:i] + recs[i + 1 :] + [recs[-1]]

    edit_steps(run, remove, hashes=sample_hashes(run))


for _name, _what, _fn in (
    ("batches-reordered", "Swaps the batches of two consecutive steps in its step records (batch roots recomputed).", _reorder),
    ("batch-inserted", "Inserts a batch of other samples into its step records (batch roots recomputed).", _insert),
    ("batch-removed", "Removes one step's batch from its step records (batch roots recomputed).", _remove),
):
    register(
        _name,
        paper_ref="§5.1 (Definition 1: d_1 edit distance on the data sequence)",
        family="transcripts",
        kind="caught",
        expected="verifier.data",
        summary=_what,
        default_trials=1,
        max_trials=10,
    )(_edit_attack(_name, _fn))


# ------------------------------------------------------------------ hyperparameters (d_2)
def _alter_hyperparameters(run: Path, rng: random.Random) -> None:
    from computewatch.adversary.transcript import resign_manifest
    from computewatch.formats.manifest import read_manifest
    from computewatch.formats.storage import RunStorage

    hp = json.loads(json.dumps(read_manifest(RunStorage(run, create=False)).precommitment.hyperparameters))
    hp["workload"]["optimizer"]["lr"] = hp["workload"]["optimizer"]["lr"] / 10  # "we trained gently"
    resign_manifest(run, _key(run), hyperparameters=hp)


register(
    "hyperparameters-altered",
    paper_ref="§5.1 (Definition 1: d_2 hyperparameter distance; precommitment)",
    family="transcripts",
    kind="caught",
    expected="verifier.precommitment",
    summary="Claims other hyperparameters (a tenth of the learning rate) than the run used, re-signing its manifest.",
    default_trials=1,
    max_trials=10,
)(_edit_attack("hyperparameters-altered", _alter_hyperparameters))


@register(
    "hyperparameters-laundered",
    paper_ref="§5.1 (d_2), ANCHORS.md (PoL stores no hyperparameters)",
    family="transcripts",
    kind="caught",
    expected="verifier.segments",
    summary="Trains at twice the precommitted learning rate and rewrites its records (learning rates, optimizer "
    "settings) to show the precommitted one.",
    default_trials=1,
    max_trials=5,
)
def _laundered(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.adversary.cheater import Deviation

    attack = get_attack("hyperparameters-laundered")
    out = [_verify_trial(attack, [_cheat(ctx, "laundered", Deviation(lr_scale=2.0, launder=True))]) for _ in range(trials)]
    return result_from_trials(attack, out)


# ------------------------------------------------------------------ Fang et al.
_FANG_LR = 1e-4  # the tiny declared learning rate
_FANG_DRIFTS = (5e-7, 1e-2)  # the real lr's relative excess: inside and outside the tolerance


@register(
    "fang-tiny-lr-drift",
    paper_ref="ANCHORS.md (Fang et al. 2023); §5.1",
    family="transcripts",
    kind="caught",
    expected="verifier.segments",
    summary="Declares a tiny learning rate and really trains slightly faster (relative excess 5e-7 and 1e-2), "
    "laundering its records, so every segment drifts from the declared trajectory by about the excess.",
    default_trials=2,
    max_trials=2,
    why="Exact replay (bit-identical, the default) catches any drift. Tolerance mode accepts a segment whose "
    "replay is within epsilon of the recorded update (epsilon = 10x the honest noise across thread counts, at "
    "least 1e-6): a drift below that passes, so tolerance mode misses it (measured in extra.tolerance).",
)
def _fang(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("fang-tiny-lr-drift")
    out, tolerance = [], []
    for i in range(trials):
        drift = _FANG_DRIFTS[i % len(_FANG_DRIFTS)]
        _run, exact, tol = _fang_run(ctx, drift)
        out.append(verdict_trial(exact, attack.expected))
        tolerance.append(tol)
    missed = [t["relative_lr_excess"] for t in tolerance if not t["caught"]]
    detail = (f"exact mode caught {sum(t.caught for t in out)}/{len(out)}; tolerance mode caught "
              f"{sum(t['caught'] for t in tolerance)}/{len(tolerance)}" + (f", missing the drift(s) {missed}" if missed else ""))
    return result_from_trials(attack, out, detail=detail, extra={
        "declared_lr": _FANG_LR,
        "tolerance": tolerance,
        "tolerance_detection_rate": sum(t["caught"] for t in tolerance) / len(tolerance),
    })


def _fang_run(ctx: Context, drift: float) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """One drifting run (cached per context): its exact-mode verdict and its tolerance-mode
    measurement."""

    def make() -> tuple[Path, dict[str, Any], dict[str, Any]]:
        from computewatch.adversary.cheater import Deviation

        run = _cheat(ctx, "fang", Deviation(lr_scale=1.0 + drift, launder=True), overrides={**_OVERRIDES, "lr": _FANG_LR})
        exact = verify_runs([run])
        doc = verify_runs([run], mode="tolerance", threads=2)
        rel = [s["distance"]["relative"] for r in doc["runs"] for s in r["segments"] if s.get("distance")]
        tol = {
            "relative_lr_excess": drift,
            "verdict": doc["verdict"],
            "failed": failed_checks(doc),
            "epsilon": doc["tolerance"]["epsilon"],
            "honest_relative": doc["tolerance"].get("honest_relative"),
            "max_relative_distance": max(rel) if rel else None,
            "caught": doc["verdict"] == "violation",
        }
        return run, exact, tol

    return ctx.shared(f"fang:{drift!r}", make)


@register(
    "fang-tolerance-mode",
    paper_ref="ANCHORS.md (Fang et al. 2023); docs/verifier.md (tolerance mode)",
    family="transcripts",
    kind="caught",
    expected="verifier.segments",
    summary="The Fang drift (declared lr 1e-4, real lr 1% higher, records laundered) verified in tolerance mode "
    "instead of exact mode: epsilon comes from the distance between the Verifier's own replays, never from the "
    "Prover's records, so the drift stands out.",
    default_trials=1,
    max_trials=1,
)
def _fang_tolerance(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("fang-tolerance-mode")
    _run, _exact, tol = _fang_run(ctx, _FANG_DRIFTS[-1])
    by = attack.expected if attack.expected in tol["failed"] else (tol["failed"][0] if tol["failed"] else None)
    trial = Trial(tol["caught"], by, tuple(tol["failed"]),
                  f"tolerance mode: epsilon {tol['epsilon']:.3g}, largest segment distance {tol['max_relative_distance']:.3g}: "
                  + ("caught" if tol["caught"] else "accepted"))
    return result_from_trials(attack, [trial], extra={"tolerance": tol})


# ------------------------------------------------------------------ Zhang et al.
def kolmogorov_smirnov(a: Any, b: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic D and its asymptotic p-value (PoL's W0 test)."""
    import numpy as np

    x, y = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    grid = np.concatenate([x, y])
    d = float(np.max(np.abs(np.searchsorted(x, grid, side="right") / x.size - np.searchsorted(y, grid, side="right") / y.size)))
    n = x.size * y.size / (x.size + y.size)
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2 * sum((-1) ** (j - 1) * math.exp(-2 * j * j * lam * lam) for j in range(1, 101))
    return d, min(1.0, max(0.0, p))


def _forge_w0(run: Path, rng: random.Random) -> dict[str, float]:
    """Zhang et al. step 1: W0' drawn from the initialisation distribution (the program's own
    init under a seed of the forger's choosing), each tensor's values reordered to follow the
    rank order of the final weights; returns the KS test of W0' against the genuine W0."""
    import torch

    from computewatch.adversary.transcript import edit_checkpoint
    from computewatch.formats.seed import init_generator
    from computewatch.prover.workloads import preset

    workload = preset("mlp", total_steps=RUN["steps"], **_OVERRIDES)
    fresh = workload.build_model(init_generator(rng.randbytes(32))).state_dict()
    final = _checkpoint(run, _checkpoint_steps(run)[-1]).model
    genuine = _checkpoint(run, 0).model
    forged = {}
    for name, t in genuine.items():
        if not t.is_floating_point() or t.numel() < 2:
            forged[name] = t
            continue
        values = torch.sort(fresh[name].reshape(-1)).values
        order = torch.argsort(final[name].reshape(-1))
        out = torch.empty_like(values)
        out[order] = values
        forged[name] = out.reshape(t.shape).contiguous()

    def put(ckpt: Any) -> None:
        ckpt.model = {k: forged[k] for k in ckpt.model}

    edit_checkpoint(run, 0, 0, put)
    def flat(m: dict[str, Any]) -> Any:
        return torch.cat([v.reshape(-1) for v in m.values() if v.is_floating_point() and v.ndim >= 2]).numpy()

    d, p = kolmogorov_smirnov(flat(forged), flat(genuine))
    return {"ks_statistic": d, "ks_p_value": p}


@register(
    "zhang-forged-init",
    paper_ref="ANCHORS.md (Zhang et al. 2022, step 1); §5.1 (seeded initialisation)",
    family="transcripts",
    kind="caught",
    expected="verifier.init",
    summary="Replaces W0 by values sampled from the initialisation distribution and reordered to follow the final "
    "weights' rank order: it passes PoL's Kolmogorov-Smirnov test of the initialisation.",
    default_trials=1,
    max_trials=10,
)
def _zhang_init(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("zhang-forged-init")
    rng = random.Random(seed)
    out, ks = [], []
    for _ in range(trials):
        spoof = copy_run(honest_run(ctx), ctx.scratch("zhang-init") / "run")
        ks.append(_forge_w0(spoof, rng))
        out.append(_verify_trial(attack, [spoof]))
    passes = all(k["ks_p_value"] >= 0.01 for k in ks)
    return result_from_trials(attack, out, extra={"ks": ks, "passes_pol_ks_test": passes})


def _straight_line(run: Path, rng: random.Random) -> None:
    from computewatch.adversary.transcript import interpolate_checkpoints

    interpolate_checkpoints(run)


register(
    "zhang-straight-line",
    paper_ref="ANCHORS.md (Zhang et al. 2022, step 2)",
    family="transcripts",
    kind="caught",
    expected="verifier.segments",
    summary="Replaces every checkpoint between W0 and the final weights by the straight line between them.",
    default_trials=1,
    max_trials=10,
)(_edit_attack("zhang-straight-line", _straight_line))


def _optimise_batches(run: Path, rng: random.Random, candidates: int = 8) -> float:
    """Zhang et al. step 3, as far as committed data allows: on the straight-line trajectory,
    pick for every step the batch (among `candidates` drawn from the committed dataset) whose
    gradient best points along that step; returns the mean cosine reached."""
    import torch

    from computewatch.adversary.transcript import edit_steps, interpolate_checkpoints
    from computewatch.prover.workloads import preset

    interpolate_checkpoints(run)
    workload = preset("mlp", total_steps=RUN["steps"], **_OVERRIDES)
    corpus = workload.dataset()
    first, last = _checkpoint(run, 0).model, _checkpoint(run, _checkpoint_steps(run)[-1]).model
    steps = RUN["steps"]
    model = workload.build_model(torch.Generator().manual_seed(0))
    chosen: list[tuple[int, ...]] = []
    cosines = []
    hashes = sample_hashes(run)
    size = None
    for t in range(steps):
        point = {k: torch.lerp(first[k], last[k], t / steps) for k in first}
        model.load_state_dict(point)
        direction = torch.cat([(last[k] - first[k]).reshape(-1) for k, _ in model.named_parameters()])
        best, best_cos = None, -2.0
        for _ in range(candidates):
            size = size or 64
            ids = tuple(rng.randrange(len(hashes)) for _ in range(size))
            model.zero_grad(set_to_none=True)
            workload.loss(model, workload.collate([corpus.sample(i) for i in ids])).backward()
            grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for _, p in model.named_parameters()])
            cos = float(torch.nn.functional.cosine_similarity(-grad, direction, dim=0))
            if cos > best_cos:
                best, best_cos = ids, cos
        assert best is not None
        chosen.append(best)
        cosines.append(best_cos)
    edit_steps(run, lambda recs: [replace(r, sample_ids=chosen[r.step][: len(r.sample_ids)]) for r in recs], hashes=hashes)
    return sum(cosines) / len(cosines)


@register(
    "zhang-optimised-batches",
    paper_ref="ANCHORS.md (Zhang et al. 2022, step 3); §5.1 (precommitted data)",
    family="transcripts",
    kind="caught",
    expected="verifier.data",
    summary="On a straight-line trajectory, picks for every step the batch whose gradient best follows the line "
    "(fabricated samples are impossible: the dataset root is precommitted).",
    default_trials=1,
    max_trials=5,
)
def _zhang_batches(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("zhang-optimised-batches")
    rng = random.Random(seed)
    out, cos = [], []
    for _ in range(trials):
        spoof = copy_run(honest_run(ctx), ctx.scratch("zhang-batches") / "run")
        cos.append(_optimise_batches(spoof, rng))
        out.append(_verify_trial(attack, [spoof]))
    return result_from_trials(attack, out, extra={"mean_cosine_of_chosen_batches": cos})


# ------------------------------------------------------------------ consistent forged chain
@register(
    "forged-consistent-chain",
    paper_ref="ANCHORS.md (OpenVerifiableLLM: a forged but internally consistent chain passes); §4, §5.1",
    family="transcripts",
    kind="caught",
    expected="verifier.snapshots",
    summary="Really trains a violating run (three times the learning rate) on the monitored chip, and submits instead "
    "the honest run of the same precommitment, trained off the books: every segment replays bit for bit.",
    default_trials=1,
    max_trials=3,
)
def _forged_chain(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.adversary.cheater import Deviation

    attack = get_attack("forged-consistent-chain")
    out = []
    for i in range(trials):
        nonce, run_id = os.urandom(32), f"forged-{seed}-{i}"
        real = _cheat(ctx, "violating", Deviation(lr_scale=3.0, launder=True), nonce=nonce, run_id=run_id)
        forged = _cheat(ctx, "forged", Deviation(), nonce=nonce, run_id=run_id)
        _take_over_chip(forged, real)
        trial = _verify_trial(attack, [forged], chips=[real / "chips"])
        segments_ok = "verifier.segments" not in trial.checks
        out.append(Trial(trial.caught, trial.by, trial.checks, trial.detail + ("" if not segments_ok else "; every replayed segment of the chain is consistent")))
    return result_from_trials(attack, out)


def _take_over_chip(forged: Path, real: Path) -> None:
    """Make the forged transcript claim the monitored chip: its manifest names the real run's
    chip (re-signed with the Prover's key) and it carries the real run's snapshot records and
    copy-outs (the chip's log points at them)."""
    from computewatch.formats.manifest import (
        read_manifest,
        write_manifest,
        write_public_key,
    )
    from computewatch.formats.snapshot_records import (
        encode_snapshot_record,
        read_snapshot_records,
        snapshot_file,
    )
    from computewatch.formats.storage import ObjectStore, RunStorage

    src, dst = RunStorage(real, create=False), RunStorage(forged, create=False)
    key = _key(real)
    manifest = read_manifest(dst)
    write_public_key(dst, key)
    write_manifest(dst, replace(manifest, chips=read_manifest(src).chips), key)
    records = read_snapshot_records(src, 0)
    for rec in records:
        ObjectStore(dst).put(ObjectStore(src).get(rec["object"]))
    dst.write_atomic(snapshot_file(0), b"".join(encode_snapshot_record(r) for r in records))


# ------------------------------------------------------------------ shard-only spoof
@register(
    "shard-only-spoof",
    paper_ref="§5.1 (shard-vs-full-weights complication)",
    family="transcripts",
    kind="caught",
    expected="verifier.segments",
    summary="Two chips (FSDP) trained the run; only rank 0's chip is inspected, so the Prover keeps rank 0's shard "
    "genuine and fabricates the surrounding layers (rank 1's shard) in every later checkpoint.",
    default_trials=1,
    max_trials=2,
)
def _shard_only(ctx: Context, trials: int, seed: int) -> Any:
    import torch

    from computewatch.adversary.transcript import edit_checkpoint

    attack = get_attack("shard-only-spoof")
    base = ctx.shared("run:fsdp", lambda: train_run(ctx.scratch("run-fsdp") / "run", nproc=2, strategy="fsdp", steps=4))
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(trials):
        spoof = copy_run(base, ctx.scratch("shard-only") / "run")
        for step in _checkpoint_steps(spoof, 1)[1:]:

            def fabricate(ckpt: Any) -> None:
                ckpt.model = {k: (v + 0.01 * torch.randn(v.shape, generator=gen, dtype=v.dtype)).contiguous() if v.is_floating_point() else v
                              for k, v in ckpt.model.items()}

            edit_checkpoint(spoof, 1, step, fabricate)
        chips = sorted((spoof / "chips").glob("chip-*"))
        out.append(_verify_trial(attack, [spoof], chips=[chips[0]]))
    return result_from_trials(attack, out)


# ------------------------------------------------------------------ withheld transcript
@register(
    "withheld-transcript",
    paper_ref="§5.2 and footnote 20 (transcripts for all runs), §3",
    family="transcripts",
    kind="caught",
    expected="verifier.snapshots",
    summary="Trains a covert run on an inspected chip and submits only its honest runs' transcripts.",
    default_trials=1,
    max_trials=3,
)
def _withheld(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("withheld-transcript")
    honest = honest_run(ctx)
    out = []
    for i in range(trials):
        covert = train_run(ctx.scratch("covert") / "run", secret=b"withheld transcript chip %07d." % (seed * 10 + i))
        out.append(_verify_trial(attack, [honest], chips=[covert / "chips"]))
    return result_from_trials(attack, out)
