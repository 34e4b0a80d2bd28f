"""The whole chain in one call: fab to verdict (`computewatch demo`, docs/demo.md).

`run_demo(root, options, hooks)` builds the world, lets the Provers train, inspects, verifies
and reports; `hooks` receive the narrative (step titles, lines, progress) so the command line
decides how to show it. The result says per Prover its verdict and evidence, and whether the
verdicts came out as the demo expects: A compliant, B in violation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from computewatch.demo.inspection import (
    commit_plan,
    explanation_queue,
    export_evidence,
    inspect_chips,
    plan_note,
    reveal_plan,
    settle_queue,
    verify_owner,
    write_verdict,
)
from computewatch.demo.policy import DEMO_POLICY, DEMO_POLICY_SOURCE
from computewatch.demo.provers import ProverRun, RunSize, covert_run, declared_run
from computewatch.demo.world import PROVER_A, PROVER_B, World, WorldPlan, build_world

__all__ = ["EXPECTED", "DemoHooks", "DemoOptions", "DemoResult", "ProverVerdict", "run_demo"]

# What the demo expects: the honest Prover compliant; the covert one in violation, caught by its
# chip's log: the precommitment of a run it never handed over (always logged, before the first
# step). The covert chip's snapshots fail the `snapshots` check too whenever it logged one
# (about 10 expected at the default size; none with probability e^-10).
EXPECTED: dict[str, tuple[str, frozenset[str]]] = {
    PROVER_A: ("compliant", frozenset()),
    PROVER_B: ("violation", frozenset({"precommitment"})),
}


class DemoHooks(Protocol):
    def step(self, title: str) -> None: ...
    def say(self, text: str) -> None: ...
    def task(self, description: str, total: int | None) -> contextlib.AbstractContextManager[Callable[[int], None]]: ...


class _Quiet:
    def step(self, title: str) -> None:
        pass

    def say(self, text: str) -> None:
        pass

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        yield lambda _done: None


@dataclass(frozen=True)
class DemoOptions:
    """Sizes of the demo. `steps` is Prover A's run; B's decoy is half as long, its covert run
    1.5 times. The defaults are the real demo (docs/demo.md); tests may shrink `steps`."""

    steps: int = 20
    chip_seconds_per_step: float = 1200.0
    policy_text: str = DEMO_POLICY
    policy_source: str = DEMO_POLICY_SOURCE
    workers: int = 1  # trusted-cluster jobs at once
    chip_secret_seed: bytes | None = None  # reproducible snapshot schedules (tests only)

    def sizes(self) -> dict[str, RunSize]:
        s, c = self.steps, self.chip_seconds_per_step
        return {
            "honest": RunSize(steps=s, checkpoint_every=s, chip_seconds_per_step=c),
            "decoy": RunSize(steps=max(2, s // 2), checkpoint_every=max(2, s // 2), chip_seconds_per_step=c),
            "covert": RunSize(steps=s + s // 2, checkpoint_every=s + s // 2, chip_seconds_per_step=c),
        }


@dataclass
class ProverVerdict:
    name: str
    verdict: str
    violations: list[dict[str, str]]  # the failed checks: {"check", "detail"}
    undecided: list[dict[str, str]]
    snapshots_logged: int
    snapshots_explained: int
    total_flops: int | None
    runs: list[ProverRun]
    queue: dict[str, int]
    verdict_file: Path
    report_file: Path
    rules: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "violations": self.violations}


@dataclass
class DemoResult:
    root: Path
    world: World
    provers: list[ProverVerdict]
    report: Path
    plan: dict[str, Any]
    inspections: list[dict[str, Any]]
    timings: dict[str, float]
    policy_threshold: float

    @property
    def as_expected(self) -> bool:
        """A compliant; B in violation with (at least) the expected failed checks."""
        got = {p.name: p for p in self.provers}
        for name, (verdict, checks) in EXPECTED.items():
            p = got.get(name)
            if p is None or p.verdict != verdict or not checks <= {v["check"] for v in p.violations}:
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {"provers": [p.to_json() for p in self.provers], "report": str(self.report)}


def _verify_progress(hooks: DemoHooks, owner: str) -> tuple[Callable[[str, int, int], None], contextlib.ExitStack]:
    from computewatch._stages import stages

    return stages(lambda what, total: hooks.task(f"{owner}: trusted cluster, {what}", total))


def run_demo(root: Path, options: DemoOptions | None = None, hooks: DemoHooks | None = None) -> DemoResult:
    """Run the demo in the empty folder `root` (created if missing); returns the result."""
    from computewatch.crypto.atomic import atomic_write
    from computewatch.demo.report import write_index
    from computewatch.verifier.report import write_report
    from computewatch.verifier.rules import Policy

    options = options or DemoOptions()
    hooks = hooks or _Quiet()
    policy = Policy.from_bytes(options.policy_text.encode(), source=options.policy_source)
    timings: dict[str, float] = {}
    t0 = last = time.monotonic()

    def lap(name: str) -> None:
        nonlocal last
        now = time.monotonic()
        timings[name] = round(now - last, 2)
        last = now

    root = Path(root).resolve()  # the trusted cluster's jobs do not run in this working directory
    root.mkdir(parents=True, exist_ok=True)
    sizes = options.sizes()

    hooks.step("1. Supply chain: a fab and a chipmaker make chips and register them (§3.1, §6)")
    plan = WorldPlan(secret_seed=options.chip_secret_seed)
    world = build_world(root, plan, say=hooks.say)  # a second or two: no progress bar
    lap("world")

    hooks.step("2. The Verifier commits to this period's inspection plan (§3.2, Eq. 1)")
    commitment = commit_plan(world, flops=policy.threshold_flops)
    atomic_write(root / "verifier" / "policy.toml", options.policy_text.encode("utf-8"), mode=0o644)
    p = commitment.plan
    hooks.say(f"plan {p['plan']} for period {p['period']}: {p['samples']} of {p['population']} chips; seed commitment "
              f"{p['seed_commitment']} published, the seed kept in {commitment.seed_file.relative_to(root)}")
    note = plan_note(p)
    if note:
        hooks.say(note)
    lap("plan")

    hooks.step("3. Prover A trains honestly on 4 chips (torch.distributed, gloo, one rank per chip) and declares its run")
    size = sizes["honest"]
    with hooks.task(f"{PROVER_A}: {size.steps} steps of the {size.preset} model on 4 ranks", None):
        run_a = declared_run(world, PROVER_A, "cluster", "run-1", size)
    hooks.say(f"{PROVER_A} declared run {run_a.run_id} on {', '.join(run_a.serials)}; transcript in {run_a.run_dir.relative_to(root)}")
    lap("prover_a")

    hooks.step("4. Prover B declares a small decoy run, and trains a covert run it hides")
    size = sizes["decoy"]
    with hooks.task(f"{PROVER_B}: decoy, {size.steps} steps on rack-1", size.steps) as update:
        decoy = declared_run(world, PROVER_B, "rack-1", "decoy", size, progress=lambda done, _t: update(done))
    hooks.say(f"{PROVER_B} declared run {decoy.run_id} on {', '.join(decoy.serials)}")
    size = sizes["covert"]
    with hooks.task(f"{PROVER_B}: covert run, {size.steps} steps on rack-2", size.steps) as update:
        covert = covert_run(world, PROVER_B, "rack-2", ".covert", size, progress=lambda done, _t: update(done))
    hooks.say(f"{PROVER_B} trained run {covert.run_id} on {', '.join(covert.serials)} without declaring it, and will not "
              "hand over its transcript")
    lap("prover_b")

    hooks.step("5. Inspectors inspect the drawn chips: boot, attestation to a fresh nonce, log audit (§3.1)")
    with hooks.task("inspections", int(p["samples"])) as update:
        inspected = inspect_chips(world, commitment, progress=update)
    for ins in inspected:
        hooks.say(f"{ins.serial} ({ins.owner}): {ins.outcome}, {ins.tree_size} log entries, {ins.queued} snapshots queued for explanation")
    revealed = reveal_plan(world, commitment)
    drawn = [i.serial for i in inspected]
    hooks.say(f"period over: seed revealed; the plan re-derives to the same {len(revealed['chips'])} chips: "
              f"{'yes' if revealed['chips'] == drawn else 'NO'}")
    inspected = export_evidence(world, inspected)
    lap("inspections")

    hooks.step("6. The Verifier demands an explanation of every logged snapshot, and checks the transcripts (App. D)")
    runs = {PROVER_A: [run_a], PROVER_B: [decoy, covert]}
    verdicts: list[ProverVerdict] = []
    vdir = root / "verifier"
    for owner in (PROVER_A, PROVER_B):
        queue = explanation_queue(world, owner)
        handed = [r for r in runs[owner] if r.submitted]
        hooks.say(f"{owner}: {len(queue)} logged snapshots to explain; hands over {len(handed)} transcript(s): "
                  + ", ".join(r.run_id for r in handed))
        evidence = [i.evidence_dir for i in inspected if i.owner == owner and i.evidence_dir is not None]
        progress, stack = _verify_progress(hooks, owner)
        with stack:
            verdict = verify_owner(world, owner, [r.run_dir for r in handed], evidence, options.policy_text,
                                   progress=progress, workers=options.workers)
        ref = write_verdict(vdir / f"verdict-{owner}.json", verdict)
        report_file = vdir / f"report-{owner}.html"
        write_report(verdict, report_file)
        report_file.chmod(0o644)
        counts = settle_queue(world, owner, verdict, f"verifier/{ref}")
        verdicts.append(ProverVerdict(
            name=owner,
            verdict=verdict["verdict"],
            violations=[{"check": c["name"], "detail": c["detail"]} for c in verdict["checks"] if c["passed"] is False],
            undecided=[{"check": c["name"], "detail": c["detail"]} for c in verdict["checks"] if c.get("status", "undecided") == "undecided" and c["passed"] is None],
            snapshots_logged=int(verdict["snapshots"]["logged"]),
            snapshots_explained=int(verdict["snapshots"]["explained"]),
            total_flops=verdict["total_flops"],
            runs=runs[owner],
            queue=counts,
            verdict_file=vdir / f"verdict-{owner}.json",
            report_file=report_file,
            rules=list(verdict.get("rules", [])),
        ))
        lap(f"verify_{owner}")

    timings["total"] = round(time.monotonic() - t0, 2)
    result = DemoResult(root, world, verdicts, root / "report.html", dict(revealed),
                        [{k: v for k, v in i.__dict__.items() if k != "extra"} for i in inspected], timings,
                        policy.threshold_flops)
    write_index(result)
    return result
