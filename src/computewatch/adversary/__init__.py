"""computewatch.adversary: cheating Provers, one per attack family (paper's attack table, §5.1,
Appendix C; ANCHORS.md). Tests and `computewatch attack` use them to show each attack caught by
the check that should catch it (docs/attacks.md). The suite: `attack_names()`,
`run_attack(name, trials, seed)`, `run_all(...)`; the cheater's tools: `train_with_deviation`
and the transcript edits. Names are imported lazily."""

from __future__ import annotations

from computewatch._lazy import lazy_exports

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
__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
