"""Forged steps and evasive responders against step commitments and challenges (issue 19).

A cheating Prover trains with its own step on some steps (the "forged" ones) and records
everything else honestly, so its commitments, checkpoints and manifest form an internally
consistent chain: no digest of its own exposes it. Two forgeries:

* ``break``: after the honest step the weights are nudged (x (1 + 1e-3)): a state the precommitted
  program does not produce, on a fraction b of the steps (0.1%, 1%, 10%);
* ``jump``: one step taken with 10x the precommitted learning rate (an update about 10x larger).

And three responders: one that refuses a drawn step, one that answers after the deadline, one
that answers a state that does not hash to its commitment. The judge is the real one
(`verifier.spot_checks.judge_responses`), fed by the real inventory and the judge's step checks,
whose replays run in the sandboxed executor (unconfined only where this machine has no sandbox).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from computewatch.adversary.suite import Context, Trial, get_attack, result_from_trials
from computewatch.crypto.digest import blake3_bytes
from computewatch.formats.challenge import challenge_tag, read_response, response_object, write_response
from computewatch.formats.checkpoint import decode_checkpoint, encode_checkpoint
from computewatch.formats.program import deterministic_cpu
from computewatch.formats.seed import batches
from computewatch.prover.config import CheckpointConfig, ChipConfig, RunConfig
from computewatch.prover.recorder import Recorder
from computewatch.prover.respond import respond
from computewatch.prover.runner import TrainConfig, build_run, demo_program, isolated_torch_state, run_hyperparameters
from computewatch.verifier.challenges import make_challenge
from computewatch.crypto.signing import VerifyKey
from computewatch.verifier._audit import inventory
from computewatch.verifier._run import staged_run
from computewatch.verifier.sandbox import sandbox_problem
from computewatch.verifier.step_replay import judge_steps
from computewatch.verifier.spot_checks import judge_responses

__all__ = ["RANK_DRAWN", "ForgedRun", "challenge_and_judge", "ddp_response", "detection_closed_form", "forge_rank_commitment", "forged_run",
           "forged_step_fn", "judge_rank_forgery", "jump_runner", "rank_runner", "rate_runner", "recommit_checkpoint", "responder_runner"]

_NUDGE = 1e-3
_JUMP = 10.0


def forged_step_fn(forged: set[int], how: str) -> Callable[..., Any]:
    """The cheater's step: the program's own step, altered on the forged steps."""

    def step(program: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, batch: Any, t: int) -> Any:
        if t not in forged:
            return program.train_step(model, optimizer, scheduler, batch)
        if how == "jump":
            saved = [g["lr"] for g in optimizer.param_groups]
            for g in optimizer.param_groups:
                g["lr"] = g["lr"] * _JUMP
            try:
                return program.train_step(model, optimizer, scheduler, batch)
            finally:
                if scheduler is None:  # a scheduler's step already set the next step's lr from its base lr
                    for g, lr in zip(optimizer.param_groups, saved, strict=True):
                        g["lr"] = lr
        loss = program.train_step(model, optimizer, scheduler, batch)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + _NUDGE)
        return loss

    return step


class ForgedRun:
    def __init__(self, run_dir: Path, forged: set[int], how: str, steps: int) -> None:
        self.run_dir, self.forged, self.how, self.steps = run_dir, forged, how, steps
        self.step_fn = forged_step_fn(forged, how)
        self._inventory: dict[str, Any] | None = None

    def inventory(self, keys: tuple[bytes, ...]) -> dict[str, Any]:
        if self._inventory is None:
            with staged_run(str(self.run_dir), [VerifyKey.from_pem(k) for k in keys], checkpoints="all") as staged:
                inv = inventory(staged)
            inv["run_dir"] = str(self.run_dir)
            self._inventory = inv
        return self._inventory


def forged_run(out: Path, steps: int, forged: Sequence[int], how: str = "break", *, checkpoint_every: int = 50, preset: str = "mlp",
               overrides: dict[str, Any] | None = None) -> ForgedRun:
    """Train the demo workload (no chip) with the forged steps; the transcript is recorded honestly.
    `overrides` replaces workload fields (a smaller model for a long benchmark run)."""
    config = TrainConfig(out=out, preset=preset, steps=steps, checkpoint_every=checkpoint_every, nonce=b"step-forgery", monitor=False,
                         overrides={"corpus_bytes": 1 << 15, **(overrides or {})})
    fn = forged_step_fn(set(forged), how)
    with isolated_torch_state():
        deterministic_cpu(1)
        run = build_run(config)
        workload, corpus, seed, model = run["workload"], run["corpus"], run["seed"], run["model"]
        optimizer = workload.build_optimizer(model)
        scheduler = workload.build_scheduler(optimizer)
        with Recorder(out, model=model, optimizer=optimizer, scheduler=scheduler, hyperparameters=run_hyperparameters(workload, config),
                      dataset=run["commitment"], nonce=b"step-forgery", program=demo_program(),
                      config=RunConfig(checkpoint=CheckpointConfig(every=checkpoint_every), chip=ChipConfig(seconds_per_step=None))) as rec:
            for step, ids in batches(seed, len(corpus), workload.batch_size, steps):
                loss = fn(workload, model, optimizer, scheduler, workload.collate([corpus.sample(i) for i in ids]), step)
                rec.step(step, ids, loss)
    return ForgedRun(out, set(forged), how, steps)


def detection_closed_form(n: int, bad: int, k: int) -> float:
    """P(at least one of `bad` forged steps among `k` drawn without replacement from `n`);
    about 1 - (1 - b)^K for b = bad / n."""
    if k >= n - bad + 1:
        return 1.0
    return 1.0 - math.comb(n - bad, k) / math.comb(n, k)


class _Memo:
    """The judge's step checks (`step_replay.judge_steps`, the sandboxed executor) run once per
    (step, rank, answered state) across trials; the new ones of a call share one executor."""

    def __init__(self, keys: tuple[bytes, ...], *, sandbox: bool = True) -> None:
        self.keys = [VerifyKey.from_pem(k) for k in keys]
        self.sandbox = sandbox and sandbox_problem() is None  # the attack measures the checks, not the sandbox
        self.cache: dict[tuple[Any, ...], dict[str, Any]] = {}

    def __call__(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        key = lambda spec: (spec["run_dir"], spec["step"], spec["rank"], spec["before"], spec["after"])  # noqa: E731
        todo = {key(s): s for s in specs if key(s) not in self.cache}
        if todo:
            with staged_run(specs[0]["run_dir"], self.keys) as staged:
                for k, res in zip(todo, judge_steps(staged, list(todo.values()), sandbox=self.sandbox), strict=True):
                    self.cache[k] = res
        return [self.cache[key(s)] for s in specs]


def challenge_and_judge(
    run: ForgedRun,
    keys: tuple[bytes, ...],
    seed: bytes,
    count: int,
    work: Path,
    *,
    top_q: int = 0,
    memo: _Memo | None = None,
    answers_cache: dict[int, dict[str, Any]] | None = None,
    tamper: Callable[[Path, dict[str, Any]], None] | None = None,
    refuse: Callable[[int], str | None] | None = None,
    late: bool = False,
    steps: Sequence[int] | None = None,
    mode: str = "exact",
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str], dict[str, Any]]:
    """One challenge, the cheater's response and the real judge; returns (spot_checks,
    localized, findings, challenge). `steps` replaces the drawn steps (a benchmark judging
    chosen steps), the challenge re-tagged with the same secret."""
    inv = run.inventory(keys)
    challenge = make_challenge(inv["step_commitments"], inv["run_id"], inv["precommitment_digest"], seed, count, top_q=top_q, deadline_s=3600, now_ns=0, mode=mode)
    if steps is not None:
        challenge["steps"] = [{"step": int(t), "reasons": ["chosen"]} for t in sorted(set(steps))]
        challenge["tag"] = challenge_tag(challenge, seed)
    folder = work / f"response-{seed.hex()[:12]}"
    shared = work / "answers"
    cache = answers_cache if answers_cache is not None else {}
    todo = [s for s in challenge["steps"] if s["step"] not in cache]
    if todo:
        part = dict(challenge, steps=todo)
        tmp = work / "tmp-response"
        shutil.rmtree(tmp, ignore_errors=True)
        respond(run.run_dir, part, tmp, step_fn=run.step_fn)
        for a in read_response(tmp)["answers"]:
            cache[a["step"]] = a
        shared.mkdir(parents=True, exist_ok=True)
        for obj in (tmp / "objects").iterdir():
            if not (shared / obj.name).exists():
                shutil.move(str(obj), shared / obj.name)
        shutil.rmtree(tmp, ignore_errors=True)
    answers = []
    for s in challenge["steps"]:
        a = dict(cache[s["step"]])
        reason = refuse(s["step"]) if refuse is not None else None
        if reason is not None:
            a.update(before=None, after=None, ops=None, refused=reason)
        answers.append(a)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "objects").symlink_to(shared.resolve(), target_is_directory=True)
    write_response(folder, challenge, answers, {})
    if tamper is not None:
        tamper(folder, challenge)
    findings: list[str] = []
    runs = {inv["run_id"]: dict(inv, steps=run.steps)}
    now = (3600 * 2 if late else 60) * 1_000_000_000
    spot, localized = judge_responses(runs, [str(folder)], seed, memo or _Memo(keys), lambda n, d: findings.append(d), lambda n, d: None, now_ns=now, mode=mode)
    return spot, localized, findings, challenge


def _keys(run_dir: Path) -> tuple[bytes, ...]:
    return ((run_dir / "keys" / "prover.pub").read_bytes(),)


def _seed(seed: int, i: int) -> bytes:
    return blake3_bytes(f"step-forgery trial {seed} {i}".encode())


# ----------------------------------------------------------------------------------- attacks
_SUITE_STEPS = 200
_SUITE_K = 10


def _rate_attack(share: float) -> Callable[[Context, int, int], Any]:
    def run_it(ctx: Context, trials: int, seed: int) -> Any:
        name = f"step-forgery-{share:g}"
        bad = max(1, round(share * _SUITE_STEPS))
        forged = sorted(int(x) for x in torch.randperm(_SUITE_STEPS, generator=torch.Generator().manual_seed(seed + bad))[:bad])
        run = ctx.shared(f"step-forgery-run-{bad}-{seed}", lambda: forged_run(ctx.scratch("forged") / "run", _SUITE_STEPS, forged, "break"))
        keys, memo = _keys(run.run_dir), _Memo(_keys(run.run_dir))
        cache: dict[int, dict[str, Any]] = {}
        work = ctx.scratch(name)
        out = []
        for i in range(trials):
            spot, _loc, findings, _ch = challenge_and_judge(run, keys, _seed(seed, i), _SUITE_K, work, memo=memo, answers_cache=cache)
            out.append(Trial(bool(spot["failed"]), "verifier.steps" if spot["failed"] else None, ("verifier.steps",) if findings else (), findings[0] if findings else ""))
        attack = get_attack(name)
        predicted = detection_closed_form(_SUITE_STEPS, bad, _SUITE_K)
        return result_from_trials(attack, out, predicted=predicted, extra={"steps": _SUITE_STEPS, "forged": bad, "drawn": _SUITE_K})

    return run_it


def _caught(name: str, make: Callable[[Context, int, int, int], tuple[dict[str, Any], list[dict[str, Any]], list[str]]]) -> Callable[[Context, int, int], Any]:
    def run_it(ctx: Context, trials: int, seed: int) -> Any:
        out = []
        extra: dict[str, Any] = {}
        for i in range(trials):
            _spot, localized, findings = make(ctx, trials, seed, i)
            caught = bool(findings)
            out.append(Trial(caught, "verifier.steps" if caught else None, ("verifier.steps",) if caught else (), findings[0] if findings else ""))
            extra.setdefault("localized", []).extend(localized)
        return result_from_trials(get_attack(name), out, extra=extra)

    return run_it


def _honest_like(ctx: Context, seed: int) -> ForgedRun:
    return ctx.shared(f"step-honest-{seed}", lambda: forged_run(ctx.scratch("honest") / "run", 60, [], "break", checkpoint_every=20))


def _jump(ctx: Context, trials: int, seed: int, i: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    where = 20 + (seed * 7 + i * 13) % 30
    run = ctx.shared(f"step-jump-{seed}-{i}", lambda: forged_run(ctx.scratch("jump") / "run", 60, [where], "jump", checkpoint_every=20))
    spot, localized, findings, challenge = challenge_and_judge(run, _keys(run.run_dir), _seed(seed, i), 0, ctx.scratch("jump-judge"), top_q=1)
    if [s["step"] for s in challenge["steps"]] != [where]:
        findings = []  # top-Q did not draw it: not caught by top-Q
    return spot, localized, findings


def _responder(kind: str) -> Callable[[Context, int, int, int], tuple[dict[str, Any], list[dict[str, Any]], list[str]]]:
    def make(ctx: Context, trials: int, seed: int, i: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
        run = _honest_like(ctx, seed)
        work = ctx.scratch(f"responder-{kind}")
        tamper = None
        if kind == "wrong-state":

            def tamper(folder: Path, challenge: dict[str, Any]) -> None:
                # Answer with a well-formed state of the right step whose weights are not the
                # committed ones (one weight nudged): it does not hash to its commitment.
                doc = read_response(folder)
                answers = doc["answers"]
                state = decode_checkpoint(response_object(folder, answers[0]["before"]))
                first = sorted(state.model)[0]
                state.model[first] = state.model[first].clone()
                state.model[first].view(-1)[0] += 1e-3
                data = encode_checkpoint(state)
                answers[0]["before"] = blake3_bytes(data).hex()
                (folder / "objects").unlink()
                shutil.copytree(work / "answers", folder / "objects")
                write_response(folder, challenge, answers, {answers[0]["before"]: data})

        spot, loc, findings, _ = challenge_and_judge(
            run, _keys(run.run_dir), _seed(seed, i), 3, work,
            refuse=(lambda t: "the state was not kept") if kind == "refuses" else None, late=kind == "late", tamper=tamper,
        )
        return spot, loc, findings

    return make


def rate_runner(share: float) -> Callable[[Context, int, int], Any]:
    return _rate_attack(share)


def jump_runner() -> Callable[[Context, int, int], Any]:
    return _caught("step-update-jump", _jump)


def responder_runner(kind: str) -> Callable[[Context, int, int], Any]:
    return _caught(f"step-responder-{kind}", _responder(kind))


def recommit_checkpoint(run_dir: Path, rank: int, step: int) -> None:
    """After editing the checkpoint at `step`, make the chain agree with it again, as a careful
    cheater would: the commitment of step - 1 takes the edited checkpoint's digests, and the
    manifest is re-signed (Prover key) over the rewritten step records."""
    from dataclasses import replace as _replace

    from computewatch.adversary.transcript import edit_steps
    from computewatch.formats.checkpoint import CheckpointIndex
    from computewatch.formats.commitments import checkpoint_commitment
    from computewatch.formats.manifest import prover_key, read_manifest, write_manifest
    from computewatch.formats.steps import StepLog, records_root
    from computewatch.formats.storage import ObjectStore, RunStorage

    storage = RunStorage(run_dir, create=False)
    manifest = read_manifest(storage)
    names = [reg.param for reg in manifest.precommitment.layout.chips[rank]]
    ckpt = CheckpointIndex(storage, rank).load(ObjectStore(storage), step)
    weights, opt = checkpoint_commitment(ckpt.model, names, ckpt.optimizer_tensors)

    def fix(records: list[Any]) -> list[Any]:
        rec = records[step - 1]
        state = list(rec.state)
        state[rank] = _replace(state[rank], weights=weights, optimizer=opt)
        records[step - 1] = _replace(rec, state=tuple(state))
        return records

    edit_steps(run_dir, fix)
    records = list(StepLog(storage).read())
    root = records_root(records)
    steps = {"count": len(records), "records_root": root.hex() if root is not None else None}
    write_manifest(storage, _replace(manifest, steps=steps), prover_key(storage))


# ------------------------------------------------------------- a forged rank (W > 1)
RANK_DRAWN = (2, 5)  # challenged steps of the 8-step DDP run; rank 1 is forged after step 5


def forge_rank_commitment(run_dir: Path, rank: int, step: int) -> None:
    """Rank `rank` claims another state after `step` than the program makes: its commitment is
    rewritten and the manifest re-signed (Prover key), so the chain the Prover submits is
    internally consistent."""
    from dataclasses import replace as _replace

    from computewatch.adversary.transcript import edit_steps
    from computewatch.formats.manifest import prover_key, read_manifest, write_manifest
    from computewatch.formats.steps import StepLog, records_root
    from computewatch.formats.storage import RunStorage

    storage = RunStorage(run_dir, create=False)

    def fix(records: list[Any]) -> list[Any]:
        rec = records[step]
        state = list(rec.state)
        state[rank] = _replace(state[rank], weights=blake3_bytes(b"forged rank state").hex())
        records[step] = _replace(rec, state=tuple(state))
        return records

    edit_steps(run_dir, fix)
    records = list(StepLog(storage).read())
    root = records_root(records)
    manifest = read_manifest(storage)
    write_manifest(storage, _replace(manifest, steps={"count": len(records), "records_root": root.hex() if root is not None else None}),
                   prover_key(storage))


def _rank_challenge(inv: dict[str, Any], seed: bytes) -> dict[str, Any]:
    challenge = make_challenge(inv["step_commitments"], inv["run_id"], inv["precommitment_digest"], seed, 0, top_q=0, now_ns=0)
    challenge["steps"] = [{"step": t, "reasons": ["chosen"]} for t in RANK_DRAWN]
    challenge["tag"] = challenge_tag(challenge, seed)
    return challenge


def ddp_response(out: Path, seed: bytes) -> tuple[Path, Path]:
    """An honest 8-step DDP run (W = 2, no chips) and its Prover's answer (both ranks) to a
    challenge of RANK_DRAWN: (run folder, response folder)."""
    from computewatch.prover.runner import train

    run = out / "honest"
    train(TrainConfig(out=run, preset="mlp", steps=8, checkpoint_every=4, nproc=2, strategy="ddp", monitor=False, threads=1,
                      nonce=b"ranks", overrides={"corpus_bytes": 1 << 14}))
    with staged_run(str(run), [VerifyKey.from_pem(k) for k in _keys(run)], checkpoints="all") as staged:
        inv = inventory(staged)
    respond(run, _rank_challenge(inv, seed), out / "response")
    return run, out / "response"


def judge_rank_forgery(run_dir: Path, response: Path, seed: bytes, work: Path) -> tuple[dict[str, Any], list[str]]:
    """The judge's spot checks of `run_dir` answered by `response` (re-addressed to the run's
    own challenge: the answered states are the program's either way); returns (spot_checks
    with `localized`, findings)."""
    with staged_run(str(run_dir), [VerifyKey.from_pem(k) for k in _keys(run_dir)], checkpoints="all") as staged:
        inv = inventory(staged)
        challenge = _rank_challenge(inv, seed)
        answered = read_response(response)
        objects = {name: response_object(response, name) for a in answered["answers"] for name in (a["before"], a["ops"])}
        folder = work / f"response-{run_dir.name}"
        write_response(folder, challenge, answered["answers"], objects)
        findings: list[str] = []
        runs = {inv["run_id"]: dict(inv, run_dir=str(run_dir), steps=inv["step_commitments"]["count"])}
        spot, localized = judge_responses(runs, [str(folder)], seed, lambda specs: judge_steps(staged, specs, sandbox=sandbox_problem() is None),
                                          lambda n, d: findings.append(d), lambda n, d: None, now_ns=60 * 10**9)
    return dict(spot, localized=localized), findings


def rank_runner() -> Callable[[Context, int, int], Any]:
    def run_it(ctx: Context, trials: int, seed: int) -> Any:
        secret = _seed(seed, 0)
        run, response = ctx.shared(f"step-ddp-{seed}", lambda: ddp_response(ctx.scratch("ddp"), secret))
        out = []
        extra: dict[str, Any] = {"localized": []}
        for i in range(trials):
            forged = ctx.scratch(f"forged-rank-{i}") / "run"
            shutil.copytree(run, forged)
            forge_rank_commitment(forged, 1, RANK_DRAWN[-1])
            spot, findings = judge_rank_forgery(forged, response, secret, ctx.scratch(f"judge-rank-{i}"))
            named = [(f["step"], f["rank"]) for f in spot["failed"]] == [(RANK_DRAWN[-1], 1)]
            out.append(Trial(named, "verifier.steps" if named else None, ("verifier.steps",) if findings else (), findings[0] if findings else ""))
            extra["localized"].extend(spot["localized"])
        return result_from_trials(get_attack("step-forged-rank"), out, extra=extra)

    return run_it
