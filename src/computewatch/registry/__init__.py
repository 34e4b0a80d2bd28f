"""computewatch.registry: the supply chain and chip-owner directory (paper §3.1, §3.2, §6).

A real database through SQLAlchemy 2 and Alembic (SQLite file by default, PostgreSQL for
shared deployments): fabs and their lots, wafers and dies, chips registered from their
chipmaker certificates, owners and their keys, signed custody transfers, loss reports and
investigations, exemptions, the witness of every chip log's tree heads, inspection plans drawn
from a committed seed, inspections and the queue of snapshots owners must explain.
The register is a set of services over one unit of work (`UnitOfWork`), behind the `Registry`
facade (docs/architecture.md, "The register"). Documentation: docs/registry.md. Names are imported lazily (SQLAlchemy loads on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from computewatch._lazy import lazy_exports

if TYPE_CHECKING:  # the names as the type checker sees them; at run time _WHERE loads them on first use
    from computewatch.registry._parties import Party
    from computewatch.registry.custody import (
        countersign,
        parse_statement,
        report_statement,
        sign_statement,
        transfer_statement,
    )
    from computewatch.registry.errors import ConflictError, CustodyError, NotFoundError, PlanError, RegistryError
    from computewatch.registry.planning import rederive
    from computewatch.registry.registry import Registry, Services
    from computewatch.registry.rows import (
        CustodyRecord,
        DeclaredRun,
        ExposureReport,
        ExposureSetting,
        FabLot,
        Flag,
        Inspection,
        InspectionCheck,
        InspectionResult,
        Investigation,
        ItemListing,
        LocationCheck,
        OwnerExposure,
        Plan,
        PlanStatus,
        PlannedChip,
        QueuedSnapshot,
        Refusal,
        RegisteredLandmark,
        TreeHead,
        Visit,
    )
    from computewatch.registry.unit import UnitOfWork

_WHERE = {
    "CustodyRecord": "rows",
    "DeclaredRun": "rows",
    "ExposureReport": "rows",
    "ExposureSetting": "rows",
    "FabLot": "rows",
    "Flag": "rows",
    "Inspection": "rows",
    "InspectionCheck": "rows",
    "InspectionResult": "rows",
    "Investigation": "rows",
    "ItemListing": "rows",
    "LocationCheck": "rows",
    "OwnerExposure": "rows",
    "Plan": "rows",
    "PlanStatus": "rows",
    "PlannedChip": "rows",
    "QueuedSnapshot": "rows",
    "Refusal": "rows",
    "RegisteredLandmark": "rows",
    "TreeHead": "rows",
    "Visit": "rows",
    "ConflictError": "errors",
    "Party": "_parties",
    "Services": "registry",
    "UnitOfWork": "unit",
    "CustodyError": "errors",
    "NotFoundError": "errors",
    "PlanError": "errors",
    "Registry": "registry",
    "RegistryError": "errors",
    "countersign": "custody",
    "parse_statement": "custody",
    "rederive": "planning",
    "report_statement": "custody",
    "sign_statement": "custody",
    "transfer_statement": "custody",
}
__all__ = [
    "ConflictError",
    "CustodyError",
    "CustodyRecord",
    "DeclaredRun",
    "ExposureReport",
    "ExposureSetting",
    "FabLot",
    "Flag",
    "Inspection",
    "InspectionCheck",
    "InspectionResult",
    "Investigation",
    "ItemListing",
    "LocationCheck",
    "NotFoundError",
    "OwnerExposure",
    "Party",
    "Plan",
    "PlanError",
    "PlanStatus",
    "PlannedChip",
    "QueuedSnapshot",
    "Refusal",
    "RegisteredLandmark",
    "Registry",
    "RegistryError",
    "Services",
    "TreeHead",
    "UnitOfWork",
    "Visit",
    "countersign",
    "parse_statement",
    "rederive",
    "report_statement",
    "sign_statement",
    "transfer_statement",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
