"""`computewatch registry exposure`: the covert-capacity bound (docs/registry.md, "Exposure").

Exit status: 0 done, 2 unusable input (an unknown period, p outside (0, 1)).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from computewatch.cli import registry as _registry
from computewatch.cli._common import Command, out, print_json
from computewatch.cli.registry import DbOption, JsonOption, with_registry

__all__ = ["exposure"]


@_registry.app.command("exposure", cls=Command)
def exposure(
    period: Annotated[str | None, typer.Option("--period", help="A committed plan's period (its rate, length and "
                                                  "window); default: every inspection, Table 1's f and T_m.")] = None,
    p: Annotated[float, typer.Option("--p", help="Strictly between 0 and 1. "
                                     "Confidence: runs above the bound were caught with at least this probability.")] = 0.9,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The largest undeclared run the register's actual inspections do not rule out, per owner and overall."""
    from rich.table import Table

    doc = with_registry(db, as_json, lambda reg: reg.exposure(period, p=p))
    if as_json:
        print_json(doc)
        return
    table = Table(title=f"exposure at p = {p:g}" + (f", period {escape(period)}" if period else ""))
    for col in ("owner", "chips", "inspected", "unaccounted", "unexplained snapshots", "max hidden FLOPs"):
        table.add_column(col, justify="left" if col == "owner" else "right")
    for name, e in [*((o["name"], o) for o in doc["owners"]), ("(all, pooled)", doc["overall"])]:
        table.add_row(escape(name), str(e["chips"]), str(e["inspected"]), str(e["unaccounted"]),
                      str(e["unexplained_snapshots"]), f"{e['max_hidden_flops']:.3g}")
    out.print(table)
