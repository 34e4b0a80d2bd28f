"""The Verifier's side of the demo: a committed inspection plan, inspections of the drawn chips,
the reveal, the explanation queue, verification in the trusted cluster, and the register's
record of which logged snapshots were explained (paper §3.1-3.2, Appendix D).

The Verifier starts from what its inspectors read off the chips, never from the Provers' files:
`export_evidence` writes, per inspected chip, its certificate and exactly the log the inspector
read (checked against the SHA-256 in the signed inspection statement), and `verify_owner` pins
the chipmaker roots, the Provers' keys and the witnessed tree heads from the register.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from computewatch.crypto.errors import ComputewatchError
from computewatch.demo.world import INSPECTOR, World

__all__ = [
    "DemoError",
    "Inspected",
    "PlanCommitment",
    "commit_plan",
    "explanation_queue",
    "export_evidence",
    "inspect_chips",
    "plan_note",
    "reveal_plan",
    "settle_queue",
    "verify_owner",
    "write_verdict",
]

VerifyProgress = Callable[[str, int, int], None]
Progress = Callable[[int], None]


class DemoError(ComputewatchError):
    """The demo's world is not what it should be (a log read that does not match its statement)."""


@dataclass(frozen=True)
class PlanCommitment:
    plan: dict[str, Any]  # the register's plan summary (samples, reason, commitments)
    seed: bytes  # the Verifier's secret until the reveal
    seed_file: Path

    @property
    def id(self) -> int:
        return int(self.plan["plan"])


@dataclass(frozen=True)
class Inspected:
    serial: str
    owner: str
    inspection: int
    outcome: str
    problems: list[dict[str, Any]]
    queued: int
    tree_size: int
    nonce: str
    evidence_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def commit_plan(world: World, *, flops: float, period: str = "demo-period-1", T: float = 30.0, T_m: float = 30.0) -> PlanCommitment:
    """Commit to the period's inspection plan over every owner's chips (Eq. 1 sizes the sample;
    the seed's hash goes into the commitment, the seed itself into a 0600 file of the Verifier's)."""
    plan, seed = world.registry.commit_plan(
        period, None, flops=flops, T=T, T_m=T_m, f=world.plan.snapshots_per_day, p=0.9
    )
    folder = world.root / "verifier"
    folder.mkdir(parents=True, exist_ok=True)
    seed_file = folder / "plan-seed.hex"
    fd = os.open(seed_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(seed.hex() + "\n")
    return PlanCommitment(plan, seed, seed_file)


def plan_note(plan: dict[str, Any]) -> str:
    """Why the plan draws what it draws, in words that match what the demo goes on to show.

    The register's reason is Eq. 1's: a run of the demo's H is too small for snapshot sampling
    (Appendix B's model, where only Poisson-timed snapshots during the run reveal it) to find
    with any useful probability, so every chip is inspected. The demo catches a hidden run
    anyway, by another route the model leaves out: the precommitment every chip logs before a
    run's first step, which an inspection always reads.
    """
    from computewatch.analysis.detection import detection_probability
    from computewatch.analysis.params import Setting

    st = {k: float(v) for k, v in plan["setting"].items()}
    population = int(plan["population"])
    if int(plan["samples"]) < population:
        return str(plan.get("reason") or "")
    setting = Setting(H=st["H"], C=st["C"], a=st["a"], f=st["f"], T=st["T"], T_m=st["T_m"], p=st["p"])
    by_snapshots = detection_probability(setting, population)
    run_s = st["H"] / st["a"] * 86400.0
    return (
        f"Eq. 1 with H = {st['H']:.3g} FLOPs: such a run takes {run_s:.2g} s of one chip's time at the certified "
        f"peak rate, so Eq. 1 asks for more samples than the {population} chips and every chip is inspected. "
        f"In Eq. 1's model, where only a snapshot taken during the run (f = {st['f']:g} a day) reveals it, even "
        f"that finds such a run with probability {by_snapshots:.2g}. The demo's inspections catch a hidden run "
        "another way: every chip logs a run's precommitment before its first step, and an inspection reads the "
        "whole log (the demo's chips also count 20 simulated minutes of busy time per step, so they log snapshots too)."
    )


def inspect_chips(world: World, commitment: PlanCommitment, *, progress: Progress | None = None) -> list[Inspected]:
    """Inspect every chip the plan draws, as the inspector with the chip in hand: verified boot,
    attestation to 32 fresh random bytes, log audit against the pinned root and the witness;
    the register stores the signed finding and queues the logged snapshots for the holder."""
    drawn = world.registry.plan(commitment.id, commitment.seed)["chips"]
    out = []
    for i, serial in enumerate(drawn):
        nonce = os.urandom(32)
        res = world.registry.record_inspection(
            serial, world.chip_dir(serial), plan=commitment.id, inspector=INSPECTOR,
            inspector_key=world.keys[INSPECTOR], nonce=nonce,
        )
        owner = world.registry.holder(serial)
        out.append(Inspected(serial, owner, int(res["inspection"]), res["outcome"], res["problems"], int(res["queued"]),
                             int(res["tree_size"]), nonce.hex()))
        if progress is not None:
            progress(i + 1)
    return out


def reveal_plan(world: World, commitment: PlanCommitment) -> dict[str, Any]:
    """Move the world's clock past the period's end and publish the seed; anyone can now
    re-derive which chips the plan drew (`computewatch inspect plan ID`)."""
    world.clock.advance(float(commitment.plan["setting"]["T_m"]) + 1.0)
    return dict(world.registry.reveal(commitment.id, commitment.seed))


def _log_prefix(log: bytes, entries: int) -> bytes:
    end = 0
    for _ in range(entries):
        nl = log.find(b"\n", end)
        if nl < 0:
            return log
        end = nl + 1
    return log[:end]


def export_evidence(world: World, inspected: list[Inspected]) -> list[Inspected]:
    """The Verifier's evidence folder per inspected chip: its certificate and the log as the
    inspector read it (`verifier/evidence/<serial>/`). The log is checked against the SHA-256 the
    signed inspection statement carries, so the Verifier audits what was inspected."""
    root = world.root / "verifier" / "evidence"
    done = []
    for ins in inspected:
        statement = world.registry.inspection(ins.inspection)["statement"]["predicate"]
        chip_dir = world.chip_dir(ins.serial)
        log = _log_prefix((chip_dir / "log" / "chip.log").read_bytes(), ins.tree_size)
        if hashlib.sha256(log).hexdigest() != statement["log_sha256"]:
            raise DemoError(f"chip {ins.serial}: its log no longer starts with the log inspection {ins.inspection} read")
        folder = root / ins.serial
        (folder / "log").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(chip_dir / "certificate.json", folder / "certificate.json")
        (folder / "log" / "chip.log").write_bytes(log)
        done.append(Inspected(**{**ins.__dict__, "evidence_dir": folder}))
    return done


def explanation_queue(world: World, owner: str) -> list[dict[str, Any]]:
    """The logged snapshots `owner` must explain (pending entries of the register's queue)."""
    return list(world.registry.explanation_queue(owner=owner))


def verify_owner(
    world: World,
    owner: str,
    runs: list[Path],
    evidence: list[Path],
    policy_text: str,
    *,
    progress: VerifyProgress | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Verify what `owner` handed over against the logs of its inspected chips, in the trusted
    cluster (exact replay), with the register's pins and the policy; returns the verdict."""
    from computewatch.verifier import VerifyRequest, verify

    trust = world.registry.verifier_trust()
    request = VerifyRequest(
        runs=[str(r) for r in runs],
        chips=[str(e) for e in evidence],
        chipmaker_roots=trust["chipmaker_roots"],
        prover_keys=trust["prover_keys"],
        known_heads=trust["known_heads"],
        seed=os.urandom(32),
        policy_text=policy_text,
        mode="exact",
        segments=1,
        workers=workers,
    )
    return verify(request, progress)


def settle_queue(world: World, owner: str, verdict: dict[str, Any], verdict_ref: str) -> dict[str, int]:
    """Close the owner's queue entries: a snapshot the verdict reproduced is `explained`, every
    other one `unexplained`. Returns the counts."""
    explained = {(s["chip"], int(s["counter"])) for run in verdict.get("runs", []) for s in run.get("snapshots", []) if s.get("explained")}
    counts = {"explained": 0, "unexplained": 0}
    for entry in explanation_queue(world, owner):
        status = "explained" if (entry["serial"], int(entry["counter"])) in explained else "unexplained"
        world.registry.mark_explained(entry["serial"], int(entry["counter"]), verdict_ref, status=status,
                                      shard_digest=entry["shard_digest"])
        counts[status] += 1
    return counts


def write_verdict(path: Path, verdict: dict[str, Any]) -> str:
    """Write the verdict JSON; returns a reference for the register (`path#sha256=...`)."""
    from computewatch.crypto.atomic import atomic_write

    data = (json.dumps(verdict, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(path, data, mode=0o644)
    return f"{path.name}#sha256={hashlib.sha256(data).hexdigest()}"
