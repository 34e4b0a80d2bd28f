"""Command groups loaded on demand: `computewatch sampling table1` imports the sampling module
and nothing else (no torch), and `computewatch --help` imports no command module at all.

The root group knows each command by name, the modules that define it, and the one line its
group's list shows; a command's module is imported the first time the command is resolved.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
import typer.main
from typer.core import TyperCommand

from computewatch.cli._common import Group

__all__ = ["Lazy", "LazyGroup"]


@dataclass(frozen=True)
class Lazy:
    """One command of the root group, not yet imported.

    `modules` are imported in order (later ones add commands to the group the first defines);
    `attr` names the typer app (a group) or the function (a command, when `command_cls` is set)
    in the first module; `help` is the line the root's command list shows without importing
    it (tests/test_cli_lazy.py checks it equals the loaded command's own).
    """

    modules: tuple[str, ...]
    attr: str
    help: str
    command_cls: str | None = None  # "Command", or "module:Class" for a command's own class

    def load(self, name: str) -> Any:
        mods = [importlib.import_module(f"computewatch.cli.{m}") for m in self.modules]
        target = getattr(mods[0], self.attr)
        holder = typer.Typer()
        if self.command_cls is None:
            holder.add_typer(target, name=name, help=self.help)
        else:
            where, _, cls_name = self.command_cls.rpartition(":")
            cls_module = importlib.import_module(f"computewatch.cli.{where}") if where else importlib.import_module("computewatch.cli._common")
            holder.command(name, cls=getattr(cls_module, cls_name))(target)
        return typer.main.get_group(holder).commands[name]


class _Listed(TyperCommand):
    """What a command list shows for a command that is not loaded: its name and its line."""


class LazyGroup(Group):
    """The root group: its `Lazy` commands are imported when resolved, not when listed."""

    lazy: ClassVar[dict[str, Lazy]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in self.lazy if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        entry = self.lazy[cmd_name]
        if self._listing:
            return _Listed(name=cmd_name, help=entry.help, short_help=entry.help, callback=None)
        command = entry.load(cmd_name)
        self.add_command(command, cmd_name)
        return command

    @contextmanager
    def _listing_only(self) -> Iterator[None]:
        self._listing = True
        try:
            yield
        finally:
            self._listing = False

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with self._listing_only():
            super().format_help(ctx, formatter)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with self._listing_only():
            super().format_commands(ctx, formatter)
