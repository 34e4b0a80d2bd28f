"""Table 1 (§3.2): the paper's six runs; every number but the inputs is computed."""

from __future__ import annotations

from dataclasses import dataclass

from computewatch.analysis.params import Setting
from computewatch.analysis.plan import table_samples_per_year

__all__ = ["STOCKPILES", "TABLE1_MODELS", "Table1Model", "Table1Row", "table1"]


@dataclass(frozen=True)
class Table1Model:
    """A row's inputs: the model, its training FLOPs H, and whether it is a projection (†)."""

    name: str
    H: float
    projected: bool = False


TABLE1_MODELS: tuple[Table1Model, ...] = (
    Table1Model("GPT-3", 3.14e23),
    Table1Model("Chinchilla", 5.76e23),
    Table1Model("PaLM", 2.56e24),
    Table1Model("Chinchilla-280B", 9.9e24, projected=True),
    Table1Model("Chinchilla-1T", 1.27e26, projected=True),
    Table1Model("Chinchilla-10T", 1.3e28, projected=True),
)

# The audited stockpile sizes of Table 1's three sample columns.
STOCKPILES: tuple[int, ...] = (10**3, 10**5, 10**7)


@dataclass(frozen=True)
class Table1Row:
    model: Table1Model
    h100_days: float
    h100s_for_one_year: int
    samples_per_year: dict[int, float | None]

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model.name,
            "flops": self.model.H,
            "h100_days": self.h100_days,
            "h100s_for_one_year": self.h100s_for_one_year,
            "samples_per_year": {str(C): value for C, value in self.samples_per_year.items()},
        }


def table1(formula: str = "linear", base: Setting | None = None) -> list[Table1Row]:
    """Table 1's rows under `formula`, with Table 1's a, f, T, T_m, p unless `base` overrides
    them (base's H and C are replaced row by row)."""
    rows = []
    for model in TABLE1_MODELS:
        template = (base or Setting(H=model.H, C=STOCKPILES[0])).replace(H=model.H)
        rows.append(
            Table1Row(
                model=model,
                h100_days=template.chip_days,
                h100s_for_one_year=template.chips_for_one_year,
                samples_per_year={C: table_samples_per_year(template.replace(C=C), formula) for C in STOCKPILES},
            )
        )
    return rows
