"""Small monitored runs for the Verifier's tests, and a one-call `verify` on them (through the
real sandbox: the Prover's program runs in a bubblewrap executor, the checks in this process)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from computewatch.crypto.signing import VerifyKey
from computewatch.prover.runner import TrainConfig, train
from computewatch.verifier import VerifyRequest, verify

# 16 steps of the tiny MLP on a 16 KiB corpus, a checkpoint every 4 steps, half an hour of chip
# time per step at 24 snapshots per day: about one snapshot every other step, on fixed schedules.
RUN = {"preset": "mlp", "steps": 16, "checkpoint_every": 4, "snapshots_per_day": 24.0, "chip_seconds_per_step": 1800.0,
       "overrides": {"corpus_bytes": 1 << 14}, "threads": 1}


def honest_run(out: Path, *, nproc: int = 1, strategy: str = "ddp", secret: bytes = b"t" * 32, **changes: Any) -> Path:
    train(TrainConfig(out=out, nproc=nproc, strategy=strategy, chip_secret_seed=secret, **{**RUN, **changes}))
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def run_verify(*runs: Path, chips: list[Path] | None = None, prover: Path | None = None, **options: Any) -> dict[str, Any]:
    first = runs[0]
    request = VerifyRequest(
        runs=list(runs),
        chips=chips if chips is not None else [r / "chips" for r in runs],
        chipmaker_roots=[VerifyKey.load(r / "chips" / "chipmaker" / "chipmaker.pub") for r in runs],
        prover_keys=[VerifyKey.load(prover or first / "keys" / "prover.pub")],
        seed=options.pop("seed", b"verifier seed for the tests....."),
        sandbox=options.pop("sandbox", True),
        **options,
    )
    return verify(request)


def failed(doc: dict[str, Any]) -> dict[str, str]:
    """Failed checks by name, with their detail."""
    return {c["name"]: c["detail"] for c in doc["checks"] if c["passed"] is False}
