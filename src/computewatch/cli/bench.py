"""`computewatch bench ...`: the group; each benchmark lives in its own module and registers here."""

from __future__ import annotations

import typer

from computewatch.cli._common import Group

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, cls=Group)
