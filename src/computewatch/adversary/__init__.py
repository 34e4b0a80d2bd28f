"""computewatch.adversary: cheating Provers, one per attack family (paper's attack table, §5.1,
Appendix C; ANCHORS.md). Tests and `computewatch attack` use them to show each attack caught by
the check that should catch it (docs/attacks.md). The suite: `attack_names()`,
`run_attack(name, trials, seed)`, `run_all(...)`; the cheater's tools: `train_with_deviation`
and the transcript edits. Names are imported lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from computewatch._lazy import lazy_exports

if TYPE_CHECKING:  # the names as the type checker sees them; at run time _WHERE loads them on first use
    from computewatch.adversary.cheater import Deviation, train_with_deviation
    from computewatch.adversary.suite import (
        Attack, AttackResult, Context, attack_names, get_attack, run_all, run_attack,
    )
    from computewatch.adversary.transcript import (
        edit_checkpoint, edit_snapshot_records, edit_steps, interpolate_checkpoints, resign_manifest,
    )

_WHERE = {
    "Attack": "suite",
    "AttackResult": "suite",
    "Context": "suite",
    "Deviation": "cheater",
    "attack_names": "suite",
    "get_attack": "suite",
    "run_all": "suite",
    "run_attack": "suite",
    "edit_checkpoint": "transcript",
    "edit_snapshot_records": "transcript",
    "edit_steps": "transcript",
    "interpolate_checkpoints": "transcript",
    "resign_manifest": "transcript",
    "train_with_deviation": "cheater",
}
__all__ = [
    "Attack",
    "AttackResult",
    "Context",
    "Deviation",
    "attack_names",
    "edit_checkpoint",
    "edit_snapshot_records",
    "edit_steps",
    "get_attack",
    "interpolate_checkpoints",
    "resign_manifest",
    "run_all",
    "run_attack",
    "train_with_deviation",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
