"""computewatch.demo: the whole chain in one call, fab to verdict (`computewatch demo`,
docs/demo.md).

- `world`: chipmaker, fab, register, Provers and inspector; chips made and passed in custody;
- `provers`: Prover A's honest run, Prover B's declared decoy and covert run;
- `inspection`: the Verifier's committed plan, inspections, reveal, evidence, verification and
  the explanation queue;
- `scenario`: `run_demo`, the steps in order; `report`: the demo's front page.

It uses only the public APIs of chip, prover, registry and verifier. Names are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from computewatch._lazy import lazy_exports

if TYPE_CHECKING:  # the names as the type checker sees them; at run time _WHERE loads them on first use
    from computewatch.demo.policy import DEMO_POLICY
    from computewatch.demo.provers import ProverRun
    from computewatch.demo.scenario import DemoHooks, DemoOptions, DemoResult, EXPECTED, ProverVerdict, run_demo
    from computewatch.demo.world import World, WorldPlan, build_world

_WHERE = {
    "DEMO_POLICY": "policy",
    "EXPECTED": "scenario",
    "DemoHooks": "scenario",
    "DemoOptions": "scenario",
    "DemoResult": "scenario",
    "ProverRun": "provers",
    "ProverVerdict": "scenario",
    "World": "world",
    "WorldPlan": "world",
    "build_world": "world",
    "run_demo": "scenario",
}
__all__ = [
    "DEMO_POLICY",
    "EXPECTED",
    "DemoHooks",
    "DemoOptions",
    "DemoResult",
    "ProverRun",
    "ProverVerdict",
    "World",
    "WorldPlan",
    "build_world",
    "run_demo",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
