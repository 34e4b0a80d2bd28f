"""`Registry`: the chip-owner directory and supply-chain register a Verifier agency runs (§6)."""

from __future__ import annotations

from computewatch.registry._custody_ops import CustodyMixin
from computewatch.registry._lots import LotMixin
from computewatch.registry._exposure import ExposureMixin
from computewatch.registry._location import LocationMixin
from computewatch.registry._plans import PlanMixin
from computewatch.registry._supply import SupplyMixin
from computewatch.registry._witness import WitnessMixin

__all__ = ["Registry"]


class Registry(SupplyMixin, LotMixin, CustodyMixin, WitnessMixin, PlanMixin, LocationMixin, ExposureMixin):
    """The register over one database (SQLite file or PostgreSQL); `Registry.open(url)`.

    Parties and production (`add_chipmaker`, `add_owner`, `add_fab`, `produce`,
    `register_chip`; by signed lot `register_lot`, `register_lot_chip`), custody (`transfer`, `ship`, `report`, `exempt`, `report_found`,
    `investigations`), the witness and inspections (`tree_heads`, `record_tree_head`,
    `record_inspection`, `refuse`, `explanation_queue`, `mark_explained`) and planning
    (`commit_plan`, `plan`, `reveal`, `plan_status`), location (`add_landmark`,
    `set_facility_site`, `locate`, `locations`) and exposure (`exposure`). docs/registry.md
    documents each.
    """
