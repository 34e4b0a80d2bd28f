"""One run's examination: the judge drives one warm executor through the run's jobs and decides.

Order (one executor per run, started once): the program's answers (W0, schedule, settings);
the sample bytes of every id any check needs (hashed here against the commitment: only bytes
that match are ever handed back in); the selected segments' replays in ascending order of their
start, so the executor never holds a checkpoint later than the one it starts from; then the
forward-only loss evaluations (memorization, benchmarks), which need later checkpoints. Every
comparison happens here, on tensors read back from the executor's scratch folder.
"""

from __future__ import annotations

import functools
import math
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from computewatch.crypto.errors import ComputewatchError
from computewatch.formats.checkpoint import encode_safetensors
from computewatch.formats.program import code_digest_of, environment_mismatch, parse_entry, resolve_program
from computewatch.verifier import _audit
from computewatch.verifier._fanout import Spread
from computewatch.verifier._compare import distance, distance_parts, rank_tensors, shard_digest_of, states_equal
from computewatch.verifier._run import StagedRun
from computewatch.verifier.cluster import WARM_HELPERS_FROM, ExecutorFailure, ExecutorSession, FailureReason, WarmPool
from computewatch.verifier.protocol import (
    Hello,
    LossesJob,
    LossesReply,
    ProgramJob,
    ProgramReply,
    ReplayJob,
    ReplayReply,
    SamplesJob,
    SamplesReply,
    Status,
)
from computewatch.verifier.measured import MeasuredJob, reference_rate, tree_cpu_seconds
from computewatch.verifier.sandbox import Limits
from computewatch.verifier.selection import Segment

__all__ = ["Finding", "RunPlan", "RunResult", "calibrate", "examine", "judge_estimate", "replay_steps"]

_EST_FACTOR = 6  # FLOPs per parameter per sample: forward 2, backward 4 (1 FMA = 2 FLOP)
_FAR_BELOW = 0.5  # an executor count below this share of the judge's estimate is a finding


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str


@dataclass
class RunPlan:
    run: StagedRun
    inv: dict[str, Any]
    segments: list[Segment]
    expectations: list[dict[str, Any]]  # updated in place: explained, detail (and handed back in RunResult)
    mode: str
    threads: int | None
    seed_hex: str  # the Verifier's secret: used here only, never sent to the executor
    data_dir: str | None
    policy_text: str | None
    epsilon: float | None
    sandbox: bool
    time_scale: float = 1.0
    memorization: list[list[int]] = field(default_factory=list)
    executors: int = 1  # sandboxed executors the run's replays are spread over (all of this run only)
    warm: WarmPool | None = None  # started executors to take first (never on Ray: local processes)


@dataclass
class RunResult:
    findings: list[Finding] = field(default_factory=list)
    segments: list[tuple[Segment, dict[str, Any]]] = field(default_factory=list)
    flops_claims: list[int] = field(default_factory=list)
    counted_steps: int = 0  # steps the executor's counts in flops_claims cover
    measured: list[MeasuredJob] = field(default_factory=list)
    reference_rate: float | None = None  # the judge's FLOPs per CPU second on its reference kernel
    unknown_ops: dict[str, int] = field(default_factory=dict)
    replayed_steps: int = 0
    expected_lr: list[list[float]] = field(default_factory=list)
    memorization: dict[str, Any] | None = None
    rules: list[dict[str, Any]] = field(default_factory=list)
    policy_facts: dict[str, Any] = field(default_factory=dict)
    executors: int = 1  # executors that replayed the run's segments
    # The plan's expectations as examined: on Ray the plan was a copy, so the caller takes the
    # explained snapshots from here (verification._absorb_expectations).
    expectations: list[dict[str, Any]] = field(default_factory=list)

    def add(self, check: str, status: Status, detail: str) -> None:
        self.findings.append(Finding(check, status, detail))

    def absorb(self, part: RunResult) -> None:
        """Append a part's replay findings (one executor's share of the segments)."""
        self.findings += part.findings
        self.segments += part.segments
        self.flops_claims += part.flops_claims
        self.counted_steps += part.counted_steps
        for k, v in part.unknown_ops.items():
            self.unknown_ops[k] = self.unknown_ops.get(k, 0) + v
        self.replayed_steps += part.replayed_steps


# ------------------------------------------------------------------------------ budgets
@functools.lru_cache(maxsize=8)
def _reference_flops_per_s(threads: int) -> float:
    """This machine's matmul rate (the reference kernel the time limits are scaled by)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        a, b = torch.randn(256, 256), torch.randn(256, 256)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 0.05:
            a @ b
            n += 1
        return max(1e8, n * 2 * 256**3 / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(before)


def judge_estimate(run: StagedRun, steps: list[Any]) -> tuple[int, int]:
    """(parameters N, FLOPs 6·N·D) from the layout's parameter shapes, which every checkpoint
    the judge hashed must have, and D = the committed samples of all recorded steps."""
    n = sum(spec.numel for spec in run.layout.params)
    d = sum(len(rec.sample_ids) for rec in steps)
    return n, _EST_FACTOR * n * d


@dataclass(frozen=True)
class _Budget:
    startup: float
    per_step: float
    base: float
    limits: Limits

    @classmethod
    def of(cls, run: StagedRun, steps: list[Any], threads: int, scale: float) -> _Budget:
        n, _ = judge_estimate(run, steps)
        batch = max((len(r.sample_ids) for r in steps), default=1)
        est = 3 * _EST_FACTOR * n * batch / _reference_flops_per_s(threads)
        per_step = max(0.5, 20 * est)
        world = run.world_size
        startup = scale * (60 + 20 * world)
        total = startup * 2 + scale * (120 + per_step * max(1, len(steps)) * 4)
        model_bytes = 4 * n
        limits = Limits(
            cpu_seconds=int(total * max(1, threads) * 2 + 60),
            address_space=(6 << 30) + 32 * model_bytes,
            file_size=(256 << 20) + 8 * model_bytes,
            processes=256 * world,
        )
        return cls(startup, scale * per_step, scale * 30, limits)

    def job(self, steps: int) -> float:
        return self.base + self.per_step * steps


# ------------------------------------------------------------------------------ staging
def _ckpt_bytes(run: StagedRun, step: int, rank: int) -> bytes:
    entry = next((e for e in run.checkpoint_entries(rank) if e["step"] == step), None)
    if entry is None:
        raise ComputewatchError(f"no checkpoint at step {step} for rank {rank}")
    return run.store.get(entry["digest"])


def _stage_data(session: ExecutorSession, folder: str) -> None:
    """The Prover's raw data folder, copied in (regular files only, links refused)."""
    base = Path(folder)
    for root, dirs, files in os.walk(base, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = Path(root) / name
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                raise ComputewatchError(f"--data folder holds {path.relative_to(base)}, which is not a regular file")
            session.put(f"data/{path.relative_to(base).as_posix()}", path.read_bytes())


def _samples_payload(ids: list[int], samples: dict[int, bytes]) -> tuple[list[int], bytes, list[int]]:
    order = sorted(set(ids))
    return order, b"".join(samples[i] for i in order), [len(samples[i]) for i in order]


class _Run:
    """The executor conversation for one run."""

    def __init__(self, plan: RunPlan, session: ExecutorSession, budget: _Budget, threads: int) -> None:
        self.plan, self.session, self.budget, self.threads = plan, session, budget, threads
        self.run = plan.run
        self.ranks_started = False
        self.w0: dict[str, torch.Tensor] | None = None  # the program's W0, once the program job answered
        self.measured: list[MeasuredJob] = []  # CPU time of each counted replay job, read by the judge

    def _cpu(self) -> float | None:
        """CPU seconds of the executor's whole process tree so far, from the kernel's account."""
        proc = self.session.proc
        return tree_cpu_seconds(proc.pid) if proc is not None else None

    def start(self) -> int:
        pre = self.run.precommitment
        hello = Hello("hello", pre.program_entry, pre.code_digest, dict(pre.hyperparameters), pre.seed.hex(), self.run.world_size,
                      self.run.layout.strategy, self.threads, "data" if self.plan.data_dir else None, pre.program_template)
        return self.session.start(hello, self.budget.startup).batch_size

    def program(self, steps: int, settings_at: list[int]) -> tuple[ProgramReply, dict[str, torch.Tensor]]:
        job = ProgramJob("program", self.session.next_job(), steps, settings_at)
        reply = self.session.request(job, ProgramReply, self.budget.job(steps // 10 + 2))
        return reply, self.session.tensors(reply.w0)

    def samples(self, ids: list[int]) -> dict[int, bytes]:
        job = SamplesJob("samples", self.session.next_job(), ids)
        reply = self.session.request(job, SamplesReply, self.budget.job(len(ids) // 50 + 1))
        if len(reply.lengths) != len(ids) or any(n < 0 for n in reply.lengths):
            raise self.session.fail(FailureReason.MALFORMED_REPLY)
        data = self.session.output(reply.file)
        if sum(reply.lengths) != len(data):
            raise self.session.fail(FailureReason.MALFORMED_OUTPUT)
        out, at = {}, 0
        for i, n in zip(ids, reply.lengths, strict=False):
            out[i] = data[at : at + n]
            at += n
        return out

    def replay(self, start: int, batches: list[list[int]], samples: dict[int, bytes], keep: list[int], final: bool, *,
               threads: int | None = None, lr_scale: float = 1.0, count_flops: bool = True, start_states: list[bytes] | None = None,
               trace: bool = False) -> tuple[ReplayReply, list[dict[int, dict[str, torch.Tensor]]]]:
        """Replay from the checkpoint at `start` (or from `start_states`, one checkpoint-encoded
        state per rank: a Prover's answered state the caller has already hashed); returns the
        reply and, per rank, the tensors by kept step (and -1 for the final state). `trace`: the
        executor also hashes every operator's outputs of the last step (bisection)."""
        job_id = self.session.next_job()
        start_bytes = start_states if start_states is not None else [_ckpt_bytes(self.run, start, r) for r in range(self.run.world_size)]
        start_files = [self.session.put(f"job-{job_id}/start-r{r}.ckpt", data) for r, data in enumerate(start_bytes)]
        ids, payload, lengths = _samples_payload([i for b in batches for i in b], samples)
        self.session.put(f"job-{job_id}/samples.bin", payload)
        job = ReplayJob("replay", job_id, start, start_files, batches, f"job-{job_id}/samples.bin", ids, lengths, sorted(keep), final,
                        threads or self.threads, lr_scale, count_flops, trace)
        timeout = self.budget.job(len(batches)) + (0 if self.ranks_started or self.run.world_size == 1 else self.budget.startup)
        self.ranks_started = True
        cpu_before = self._cpu()
        reply = self.session.request(job, ReplayReply, timeout)
        cpu_after = self._cpu()
        if count_flops and cpu_before is not None and cpu_after is not None:
            self.measured.append(MeasuredJob(max(0.0, cpu_after - cpu_before), len(batches), threads or self.threads, self.run.world_size))
        n = len(batches)
        if (len(reply.losses) != n or len(reply.lr) != n or len(reply.rng) != n or len(reply.files) != self.run.world_size
                or (reply.ops is not None and not trace)):
            raise self.session.fail(FailureReason.MALFORMED_REPLY)
        labels = sorted(keep) + ([-1] if final else [])
        states = []
        for files in reply.files:
            if len(files) != len(labels):
                raise self.session.fail(FailureReason.MALFORMED_REPLY)
            states.append({label: self.session.tensors(f) for label, f in zip(labels, files, strict=False)})
        return reply, states

    def losses(self, weights: list[dict[str, torch.Tensor]], ids: list[int], samples: dict[int, bytes]) -> list[list[float | None]]:
        job_id = self.session.next_job()
        files = [self.session.put(f"job-{job_id}/w{k}.safetensors", encode_safetensors(w, {})) for k, w in enumerate(weights)]
        order, payload, lengths = _samples_payload(ids, samples)
        self.session.put(f"job-{job_id}/samples.bin", payload)
        reply = self.session.request(LossesJob("losses", job_id, files, f"job-{job_id}/samples.bin", order, lengths), LossesReply,
                                     self.budget.job(len(weights) * len(order) // 20 + 1))
        if len(reply.losses) != len(weights) or any(len(row) != len(order) for row in reply.losses):
            raise self.session.fail(FailureReason.MALFORMED_REPLY)
        index = {i: k for k, i in enumerate(order)}
        return [[row[index[i]] for i in ids] for row in reply.losses]


# ------------------------------------------------------------------------------ examination
_PROGRAM_CHECKS = ("init", "data", "hyperparameters", "segments")


def _program_problem(run: StagedRun) -> str | None:
    pre = run.precommitment
    try:
        files = run.program_files()
        parse_entry(pre.program_entry)
        actual = code_digest_of(files)
    except ComputewatchError as exc:
        return f"the training program cannot be loaded: {exc}"
    if actual != pre.code_digest:
        return f"training program files hash to code digest {actual}, the precommitment binds {pre.code_digest}"
    return None


def _template_problem(run: StagedRun) -> str | None:
    """A named template this Verifier does not pin in that version (formats/templates.py): the
    run is to be verified with the release that recorded it, not replayed with the Prover's copy."""
    pre = run.precommitment
    try:
        resolve_program(run.program_files(), pre.program_entry, pre.code_digest, pre.program_template)
    except ComputewatchError as exc:
        return f"the training program cannot be loaded: {exc}"
    return None


def _max_output(plan: RunPlan) -> int:
    return (64 << 20) + 16 * 8 * sum(spec.numel for spec in plan.run.layout.params)


def _session(plan: RunPlan, budget: _Budget) -> ExecutorSession:
    return _stage(plan, ExecutorSession(sandbox=plan.sandbox, limits=budget.limits, max_output=_max_output(plan), warm=plan.warm))


def _warm_helpers(plan: RunPlan, budget: _Budget, threads: int) -> list[_Run]:
    """The run's further executors that are already started (the warm pool's), staged and not
    yet told the run: they help from the first segment (`_fanout`). None for a distributed run
    (its rank processes are its parallelism) or a run of fewer than WARM_HELPERS_FROM segments
    (its first executor replays alone unless the break-even rule starts more)."""
    out: list[_Run] = []
    if plan.warm is None or plan.run.world_size != 1 or len(plan.segments) < WARM_HELPERS_FROM:
        return out
    try:
        while len(out) < min(plan.executors, len(plan.segments)) - 1:
            session = plan.warm.session(sandbox=plan.sandbox, limits=budget.limits, max_output=_max_output(plan))
            if session is None:
                break
            out.append(_Run(plan, session, budget, threads))
            _stage(plan, session)
    except BaseException:
        for helper in out:
            helper.session.close()
        raise
    return out


def _stage(plan: RunPlan, session: ExecutorSession) -> ExecutorSession:
    pre = plan.run.precommitment
    # A trusted template's files are staged from the Verifier's pinned copy, never the Prover's.
    for rel, data in resolve_program(plan.run.program_files(), pre.program_entry, pre.code_digest, pre.program_template).items():
        session.put(f"program/{rel}", data)
    if plan.data_dir:
        _stage_data(session, plan.data_dir)
    return session


def examine(plan: RunPlan) -> RunResult:
    """Every check of one run that needs its program, decided here from the executor's answers."""
    res = RunResult(expectations=plan.expectations)
    run = plan.run
    rid = run.precommitment.run_id
    try:
        steps = run.steps()
        hashes = run.sample_hashes()
    except ComputewatchError as exc:
        for name in _PROGRAM_CHECKS:
            res.add(name, Status.FAILED, f"run {rid}: the transcript cannot be examined: {exc}")
        return res
    problem = _program_problem(run)
    if problem is not None:
        for name in _PROGRAM_CHECKS:
            res.add(name, Status.FAILED, f"run {rid}: {problem}")
        return res
    problem = _template_problem(run)
    if problem is not None:  # not tampering: another version of a trusted template
        for name in _PROGRAM_CHECKS:
            res.add(name, Status.UNDECIDED, f"run {rid}: {problem}")
        for e in plan.expectations:
            if e["object"] is not None and not e["explained"] and not e["detail"]:
                e["detail"] = "not replayed: the run's program template is not the version this Verifier pins"
                res.add("snapshots", Status.UNDECIDED, f"{e['chip']} snapshot {e['counter']} (step {e['step']}): {e['detail']}")
        return res
    threads = int(plan.threads or run.precommitment.environment.get("threads") or 1) if plan.mode == "tolerance" else int(run.precommitment.environment.get("threads") or 1)
    budget = _Budget.of(run, steps, threads, plan.time_scale)
    stage = "start"
    pending = list(_PROGRAM_CHECKS)
    try:
        session = _session(plan, budget)
    except ComputewatchError as exc:
        for name in _PROGRAM_CHECKS:
            res.add(name, Status.FAILED, f"run {rid}: {exc}")
        return res
    helpers: list[_Run] = []
    try:
        conv = _Run(plan, session, budget, threads)
        helpers = _warm_helpers(plan, budget, threads)
        batch_size = conv.start()
        stage = "program"
        _program_checks(conv, res, steps, hashes, batch_size, pending)
        stage = "samples"
        samples, needs = _data_checks(conv, res, steps, hashes, pending)
        stage = "replay"
        res.reference_rate = reference_rate()  # timed here, the executors idle between jobs
        losses = _LossJobs(conv, samples, *needs)
        _replay_spread(conv, res, steps, samples, helpers, losses)
        pending.remove("segments")
        stage = "losses"
        losses.judge(res)
    except ExecutorFailure as failure:
        label = {"start": "starting the program", "program": "building W0 and the schedule", "samples": "rebuilding samples",
                 "replay": "replaying a segment", "losses": "evaluating losses"}[stage]
        text = f"run {rid}: {failure} while {label}"
        for name in pending or ["segments"]:
            res.add(name, Status.FAILED, text)
        for e in plan.expectations:
            if e["object"] is not None and not e["explained"] and not e["detail"]:
                e["detail"] = "not reproduced: the executor failed"
                res.add("snapshots", Status.FAILED, f"{e['chip']} snapshot {e['counter']} (step {e['step']}): {e['detail']}")
    except ComputewatchError as exc:  # the Prover's staged evidence failed to parse mid-way
        for name in pending or ["segments"]:
            res.add(name, Status.FAILED, f"run {rid}: the transcript cannot be examined: {exc}")
    finally:
        session.close()
        for helper in helpers:  # closed by the spread too; here when it never ran
            helper.session.close()
    return res


def _replay_spread(conv: _Run, res: RunResult, steps: list[Any], samples: dict[int, bytes], ready: list[_Run], losses: _LossJobs) -> None:
    """The run's segments in ascending order, on `conv`, on the started helpers `ready` and,
    where the work left is worth their start-up, on more executors of this run, up to
    `plan.executors` in all (`_fanout`); then the loss evaluations on whichever executor is
    free. Findings in segment order; the first replay failure (in segment order) raised after
    every executor stopped; the loss jobs' outcomes kept in `losses`. A distributed run keeps
    one executor (its rank processes are the parallelism)."""
    plan = conv.plan
    ordered = sorted(plan.segments, key=lambda s: (s.start, _stop(s)))
    parts = [RunResult() for _ in ordered]
    most = plan.executors - 1 if plan.run.world_size == 1 else 0

    made: list[_Run] = []

    def make() -> _Run:
        made.append(_Run(plan, _session(plan, conv.budget), conv.budget, conv.threads))
        return made[-1]

    def begin(helper: _Run) -> None:
        helper.start()

    spread = Spread(ordered, conv, lambda c, i, seg: _replays(c, parts[i], steps, samples, [seg]), make, begin,
                    lambda c: c.session.close_process(), lambda c: c.session.close(),
                    lambda seg: max(1, min(_stop(seg), len(steps)) - seg.start), conv.session.startup_s, most,
                    ready=ready, tail=len(losses.jobs), tail_work=losses.run)
    errors = spread.run()
    for part in parts:
        res.absorb(part)
    res.executors = 1 + spread.helpers_started
    # CPU time of every executor that replayed, each read by the judge around its own jobs.
    res.measured = [*conv.measured, *(job for helper in [*ready, *made] for job in helper.measured)]
    losses.errors, losses.ran = spread.tail_errors, spread.tail_ran
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first


def _program_checks(conv: _Run, res: RunResult, steps: list[Any], hashes: list[bytes], batch_size: int, pending: list[str]) -> None:
    run, rid = conv.run, conv.run.precommitment.run_id
    settings_at = [e["step"] for e in run.checkpoint_entries(0) if e["step"] <= len(steps)]
    reply, w0 = conv.program(len(steps), settings_at)
    conv.w0 = w0
    ok, detail = _audit.check_init(run, w0)
    if ok:  # a custom program with a template's architecture must start from the template's W0
        problem = _audit.check_template_init(run, w0)
        ok, detail = (False, problem) if problem else (ok, detail)
    res.add("init", Status.PASSED if ok else Status.FAILED, f"run {rid}: {detail}")
    pending.remove("init")
    ok, detail, res.expected_lr = _audit.check_schedule(run, steps, reply.lr, settings_at, reply.settings)
    res.add("hyperparameters", Status.PASSED if ok else Status.FAILED, f"run {rid}: {detail}")
    pending.remove("hyperparameters")
    ok, detail = _audit.check_order(run, steps, hashes, batch_size)
    res.add("data", Status.PASSED if ok else Status.FAILED, f"run {rid}: {detail}")


def _needed_ids(plan: RunPlan, steps: list[Any], hashes: list[bytes]) -> tuple[list[int], list[int], list[Any], list[int], dict[str, list[int]]]:
    run = plan.run
    replay_ids = [i for seg in plan.segments for t in range(seg.start, _stop(seg)) if t < len(steps) for i in steps[t].sample_ids]
    spot = _audit.spot_check_ids(run, steps, plan.seed_hex)
    memo = _audit.memorization_ids(run, steps, len(hashes), plan.memorization, plan.seed_hex)
    subset, bench = _audit.policy_needs(plan.policy_text, run, len(hashes), plan.seed_hex)
    return replay_ids, spot, memo, subset, bench


def _data_checks(conv: _Run, res: RunResult, steps: list[Any], hashes: list[bytes], pending: list[str]) -> tuple[dict[int, bytes], tuple[Any, ...]]:
    plan, run, rid = conv.plan, conv.run, conv.run.precommitment.run_id
    replay_ids, spot, memo, subset, bench = _needed_ids(plan, steps, hashes)
    every = sorted({i for i in [*replay_ids, *spot, *subset, *(i for m in memo for i in m[2] + m[3]), *(i for v in bench.values() for i in v)]
                    if 0 <= i < len(hashes)})
    samples = conv.samples(every)
    bad = _audit.check_samples(run, hashes, samples, spot)
    if bad:
        res.add("data", Status.FAILED, f"run {rid}: {len(bad)} sample(s) as the program rebuilds them are not the committed samples (first: {bad[0]})")
    else:
        res.add("data", Status.PASSED, f"run {rid}: {len(samples)} samples rebuilt by the program hash to the commitment; {len(spot)} proven against the dataset root")
    pending.remove("data")
    return samples, (memo, subset, bench)


def _stop(seg: Segment) -> int:
    return seg.end if seg.end is not None else (seg.stop or seg.start)


def _replays(conv: _Run, res: RunResult, steps: list[Any], samples: dict[int, bytes], segments: list[Segment]) -> None:
    plan, run = conv.plan, conv.run
    mismatch = environment_mismatch(run.precommitment.environment) if plan.mode == "exact" else []
    for seg in sorted(segments, key=lambda s: (s.start, _stop(s))):
        stop = _stop(seg)
        label = f"run {run.precommitment.run_id} segment {seg.start}->{stop}"
        if stop > len(steps):
            res.add("segments", Status.FAILED, f"{label}: the transcript records {len(steps)} steps; the segment needs {stop}")
            res.segments.append((seg, {"passed": False, "error": "too few step records"}))
            continue
        wanted = [e for e in plan.expectations if e["object"] is not None and seg.start < e["step"] <= stop]
        keep = sorted({e["step"] for e in wanted})
        batches = [list(steps[t].sample_ids) for t in range(seg.start, stop)]
        reply, states = conv.replay(seg.start, batches, samples, keep, seg.end is not None)
        res.replayed_steps += stop - seg.start
        _judge_segment(conv, res, seg, label, steps, reply, states, wanted, mismatch)
        doc = res.segments[-1][1]
        if doc.get("passed") is False and plan.mode == "exact" and (plan.inv.get("step_commitments") or {}).get("committed"):
            doc["step_digests"] = _step_digests(conv, seg.start, batches, samples)


def _step_digests(conv: _Run, start: int, batches: list[list[int]], samples: dict[int, bytes]) -> list[list[str]]:
    """Per rank, the digest (hashed here, by the judge) of the replayed weights after every step
    of a failed segment: `spot_checks.localize_segments` finds the first one off the committed
    chain (issue 19). A second replay, run only for segments that already failed."""
    layout = conv.run.layout
    keep = list(range(start + 1, start + len(batches) + 1))
    _, states = conv.replay(start, batches, samples, keep, False, count_flops=False)
    out = []
    for rank, by_step in enumerate(states):
        digests = []
        for t in keep:
            got = rank_tensors(layout, rank, by_step.get(t, {}))
            digests.append(shard_digest_of(got) if got is not None else "")
        out.append(digests)
    return out


def _begin(run: StagedRun, step: int, rank: int) -> list[torch.Tensor]:
    model = run.checkpoint(step, rank).model
    return [model[reg.param] for reg in run.layout.chips[rank]]


def _judge_segment(conv: _Run, res: RunResult, seg: Segment, label: str, steps: list[Any], reply: ReplayReply,
                   states: list[dict[int, dict[str, torch.Tensor]]], wanted: list[dict[str, Any]], mismatch: list[str]) -> None:
    plan, run = conv.plan, conv.run
    layout = run.layout
    unsure = plan.mode == "exact" and bool(mismatch)
    doc: dict[str, Any] = {"passed": None, "distance": None, "error": "", "losses": []}
    recs = steps[seg.start : seg.start + len(reply.losses)]
    doc["losses"] = [[rec.step, loss] for rec, loss in zip(recs, reply.losses, strict=False)]
    if reply.flops and isinstance(reply.flops.get("total"), int) and reply.flops["total"] >= 0:
        res.flops_claims.append(int(reply.flops["total"]))
        res.counted_steps += len(reply.losses)
        for k, v in (reply.flops.get("unknown_ops") or {}).items():
            if isinstance(v, int):
                res.unknown_ops[str(k)] = res.unknown_ops.get(str(k), 0) + v
    lr_bad = [rec.step for rec, lr in zip(recs, reply.lr, strict=False) if rec.lr != lr]
    if lr_bad:
        res.add("hyperparameters", Status.FAILED, f"{label}: the recorded lr differs from the one the program used in replay (step {lr_bad[0]})")
    rng_bad = [rec.step for rec, d in zip(recs, reply.rng, strict=False) if rec.rng != d]
    if rng_bad:
        res.add("segments", Status.FAILED, f"{label}: the recorded RNG states differ from the replay's (step {rng_bad[0]})")
    loss_ok = all(
        rec.loss is None or (loss is not None and (loss == rec.loss if plan.mode == "exact" else math.isclose(loss, rec.loss, rel_tol=1e-3, abs_tol=1e-6)))
        for rec, loss in zip(recs, reply.losses, strict=False)
    )
    if not loss_ok:
        res.add("loss", Status.UNDECIDED if unsure else Status.FAILED, f"{label}: recorded losses differ from the replayed ones")
    else:
        res.add("loss", Status.PASSED, f"{label}: recorded losses equal the replayed ones")
    begins = {r: _begin(run, seg.start, r) for r in range(run.world_size)}
    for e in wanted:
        rank = int(e["rank"])
        got = rank_tensors(layout, rank, states[rank].get(e["step"], {}))
        if got is None:
            explained = False
        elif plan.mode == "exact":
            explained = shard_digest_of(got) == e["digest"]
        else:
            from computewatch.formats.snapshot_records import load_copy_out

            copy = load_copy_out(run.store.get(e["object"]), {"shard_digest": e["digest"], "object": e["object"]})
            explained = shard_digest_of(got) == e["digest"] or distance([distance_parts(got, copy, begins[rank])])["relative"] <= float(plan.epsilon or 0)
        if explained:
            e["explained"], e["detail"] = True, f"reproduced by replaying {seg.start}->{e['step']}"
        elif unsure:
            e["detail"] = "not reproduced on this (different) machine"
            res.add("snapshots", Status.UNDECIDED, f"{e['chip']} snapshot {e['counter']} (step {e['step']}): {e['detail']}")
        else:
            e["detail"] = "the transcript does not reproduce it"
            res.add("snapshots", Status.FAILED, f"{e['chip']} snapshot {e['counter']} (step {e['step']}): replay from checkpoint {seg.start} does not reproduce the logged shard")
    if seg.end is None:
        res.segments.append((seg, doc))
        return
    parts, equal = [], True
    for rank in range(run.world_size):
        final = states[rank][-1]
        ckpt = run.checkpoint(seg.end, rank)
        model = {k[len("model/"):]: v for k, v in final.items() if k.startswith("model/")}
        opt = {k[len("optimizer/"):]: v for k, v in final.items() if k.startswith("optimizer/")}
        equal = equal and states_equal(model, ckpt.model) and states_equal(opt, ckpt.optimizer_tensors)
        replayed = rank_tensors(layout, rank, model)
        recorded = [ckpt.model[reg.param] for reg in layout.chips[rank]]
        parts.append(distance_parts(replayed, recorded, begins[rank]) if replayed is not None else {"diff2": math.inf, "update2": 0.0, "replayed2": 0.0, "dot": 0.0})
    dist = distance(parts if layout.strategy == "fsdp" else parts[:1])
    doc["distance"] = dist
    passed = equal if plan.mode == "exact" else dist["relative"] <= float(plan.epsilon or 0)
    doc["passed"] = None if unsure and not passed else passed
    if passed:
        how = f" (relative distance {dist['relative']:.2e})" if plan.mode == "tolerance" else " bit for bit"
        res.add("segments", Status.PASSED, f"{label} replays to the next checkpoint{how}")
    elif unsure:
        res.add("segments", Status.UNDECIDED, f"{label}: not reproduced, but this machine differs from the recording one ({'; '.join(mismatch)}): exact replay is impossible here")
    else:
        what = "bit for bit" if plan.mode == "exact" else f"within epsilon (relative distance {dist['relative']:.3e})"
        res.add("segments", Status.FAILED, f"{label}: replay does not reproduce the next checkpoint {what}")
    res.segments.append((seg, doc))


class _LossJobs:
    """The forward-only loss evaluations of a run (memorization before and after a segment, the
    policy's benchmarks on the final weights): each one job for whichever of the run's executors
    has no segment left to replay (`_fanout`'s tail), judged here once all are back."""

    def __init__(self, conv: _Run, samples: dict[int, bytes], memo: list[Any], subset: list[int], bench: dict[str, list[int]]) -> None:
        run = conv.run
        self.staged, self.samples, self.subset = run, samples, subset
        self.memo = [(a, b, t_ids, h_ids) for a, b, t_ids, h_ids in memo if all(i in samples for i in t_ids + h_ids)]
        # A trusted template's benchmarks are evaluated here, by the Verifier's own code.
        self.twin = _audit.twin_benchmarks(run, conv.w0, bench, samples, conv.plan.data_dir) if conv.w0 is not None else None
        self.bench = list(({} if self.twin is not None else bench).items())
        final = max((e["step"] for e in run.checkpoint_entries(0)), default=0)
        self.jobs: list[tuple[list[int], list[int]]] = [([a, b], t_ids + h_ids) for a, b, t_ids, h_ids in self.memo]
        self.jobs += [([final], ids) for _, ids in self.bench]
        self.results: list[list[list[float | None]]] = [[] for _ in self.jobs]
        self.errors: list[BaseException | None] = [None] * len(self.jobs)
        self.ran = [False] * len(self.jobs)

    def run(self, conv: _Run, j: int) -> None:
        """Job j on `conv`, an executor with no segment left to replay."""
        at, ids = self.jobs[j]
        self.results[j] = conv.losses([self.staged.full_weights(step) for step in at], ids, self.samples)

    def judge(self, res: RunResult) -> None:
        """Memorization and the policy's facts from the jobs' answers; the first failed job raised."""
        first = next((e for e in self.errors if e is not None), None)
        if first is not None:
            raise first
        if not all(self.ran):  # _fanout leaves a job undone only after a failure, raised before this
            raise RuntimeError("a loss evaluation was left undone without a failure")
        rows = []
        for (a, b, t_ids, _), (before, after) in zip(self.memo, self.results, strict=False):
            drops = [(x - y) if x is not None and y is not None else 0.0 for x, y in zip(before, after, strict=False)]
            rows.append((a, b, drops[: len(t_ids)], drops[len(t_ids) :]))
        res.memorization = _audit.memorization(rows)
        benchmarks: dict[str, float | None] = dict(self.twin or {})
        for (name, _), (vals,) in zip(self.bench, self.results[len(self.memo) :], strict=False):
            finite = [v for v in vals if v is not None]
            benchmarks[name] = sum(finite) / len(finite) if finite and len(finite) == len(vals) else None
        res.policy_facts = {"data": [self.samples[i] for i in self.subset if i in self.samples] if self.subset else None,
                            "benchmarks": benchmarks}


# ------------------------------------------------------------------------------ calibration
def calibrate(plan: RunPlan, seg: Segment, thread_counts: tuple[int, ...]) -> dict[str, Any]:
    """Tolerance mode's epsilon from honest reproduction noise, in an executor of its own (it
    sees the checkpoint a segment starts from, so it never serves that run's replays): the
    Verifier's own replays under different thread counts against each other, and two spoofed
    replays (lr +1%, one batch swapped) against the recorded checkpoint."""
    run = plan.run
    steps = run.steps()
    assert seg.end is not None
    budget = _Budget.of(run, steps, max(thread_counts), plan.time_scale)
    batches = [list(steps[t].sample_ids) for t in range(seg.start, seg.end)]
    swapped = [list(steps[seg.start + 1].sample_ids), *batches[1:]] if len(steps) > seg.start + 1 else batches
    session = _session(plan, budget)
    try:
        conv = _Run(plan, session, budget, thread_counts[0])
        conv.start()
        samples = conv.samples(sorted({i for b in batches + swapped for i in b}))
        ends = [conv.replay(seg.start, batches, samples, [], True, threads=t, count_flops=False)[1] for t in thread_counts]
        spoofs = [conv.replay(seg.start, batches, samples, [], True, threads=thread_counts[0], lr_scale=1.01, count_flops=False)[1],
                  conv.replay(seg.start, swapped, samples, [], True, threads=thread_counts[0], count_flops=False)[1]]
    finally:
        session.close()
    layout = run.layout
    ranks = range(run.world_size) if layout.strategy == "fsdp" else [0]

    def params(state: list[dict[int, dict[str, torch.Tensor]]], rank: int) -> list[torch.Tensor] | None:
        return rank_tensors(layout, rank, {k[len("model/"):]: v for k, v in state[rank][-1].items() if k.startswith("model/")})

    def rel(a: list[dict[int, dict[str, torch.Tensor]]], b: list[torch.Tensor] | None, rank_b: Any) -> float:
        parts = []
        for r in ranks:
            got, want = params(a, r), rank_b(r)
            if got is None or want is None:
                return math.inf
            parts.append(distance_parts(got, want, _begin(run, seg.start, r)))
        return distance(parts)["relative"]

    honest = [rel(e, None, lambda r, e0=ends[0]: params(e0, r)) for e in ends[1:]]
    spoof = [rel(s, None, lambda r: [run.checkpoint(seg.end, r).model[reg.param] for reg in layout.chips[r]]) for s in spoofs]
    noise = max(honest) if honest else 0.0
    epsilon = max(10 * noise, 1e-6)
    return {
        "epsilon": epsilon,
        "false_reject_rate": sum(d > epsilon for d in honest) / len(honest) if honest else None,
        "false_accept_rate": sum(d <= epsilon for d in spoof) / len(spoof) if spoof else None,
        "samples": len(honest) + len(spoof),
        "honest_relative": honest,
        "spoof_relative": spoof,
        "segment": {"run_id": run.precommitment.run_id, "from": seg.start, "to": seg.end},
    }


# ------------------------------------------------------------------------------ spot replays
def replay_steps(run: StagedRun, start: int, count: int, keep: list[int], *, sandbox: bool = True, data_dir: str | None = None,
                 time_scale: float = 1.0) -> list[dict[int, dict[str, torch.Tensor]]]:
    """From the checkpoint at `start`, replay `count` recorded steps of a staged run in a fresh
    sandboxed executor and return, per rank, the parameters after every step in `keep` (by
    step) and the full state after the last step (key -1). The caller (a spot check) compares;
    the committed samples are checked against the commitment first (ExecutorFailure or
    ComputewatchError when the executor or the evidence fails)."""
    steps = run.steps()
    if not 0 <= start < start + count <= len(steps):
        raise ValueError(f"steps {start}..{start + count} are not in the run's {len(steps)} recorded steps")
    problem = _program_problem(run) or _template_problem(run)
    if problem is not None:
        raise ComputewatchError(problem)
    plan = RunPlan(run=run, inv={}, segments=[], expectations=[], mode="exact", threads=None, seed_hex="00", data_dir=data_dir,
                   policy_text=None, epsilon=None, sandbox=sandbox, time_scale=time_scale)
    threads = int(run.precommitment.environment.get("threads") or 1)
    budget = _Budget.of(run, steps, threads, time_scale)
    batches = [list(steps[t].sample_ids) for t in range(start, start + count)]
    hashes = run.sample_hashes()
    with _session(plan, budget) as session:
        conv = _Run(plan, session, budget, threads)
        conv.start()
        samples = conv.samples(sorted({i for b in batches for i in b}))
        bad = _audit.check_samples(run, hashes, samples, [])
        if bad:
            raise ComputewatchError(f"sample {bad[0]} as the program rebuilds it is not the committed sample")
        return conv.replay(start, batches, samples, keep, True)[1]
