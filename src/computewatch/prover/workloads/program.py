"""The demo workloads as a training program: ``program:make_program`` (docs/formats.md).

The precommitted hyperparameters are ``{"workload": Workload.hyperparameters, "run": {...}}``;
the Workload they describe is itself the program (build_model, build_optimizer,
build_scheduler, sample, collate, train_step, loss, batch_size). Samples come from this
machine's Python standard library, so `data_dir` is unused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .presets import Workload

__all__ = ["ENTRY", "make_program"]

ENTRY = "program:make_program"


def make_program(hyperparameters: dict[str, Any], data_dir: Path | None = None) -> Workload:
    workload = hyperparameters.get("workload") if isinstance(hyperparameters, dict) else None
    if not isinstance(workload, dict):
        raise ValueError("the demo program needs hyperparameters {\"workload\": {...}, ...}")
    return Workload.from_hyperparameters(workload)
