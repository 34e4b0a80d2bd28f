"""Fault-injection points: named places where a crash test stops or kills the process mid-operation.

The library calls `fault_point(name, **info)` at each point below. Nothing is installed outside
tests, so a point is a loop over an empty tuple; the library reads no environment variable for
this. Tests install handlers explicitly: in process with `installed(handler, ...)`, or in a child
process through the test-only entry point `tests/_faults.py`, which installs the handlers its
arguments name and then runs `-c CODE` or `-m MODULE` (the command line, the server). A
training run spawning one process per rank hands the installed handlers to its ranks
(`prover.runner`), so they must be picklable.

A handler is called as `handler(name, info)` and ignores points it does not know.

| point | where | info |
|---|---|---|
| `chip.log.append` | the chip is about to append entry `counter` to its log | `path`, `counter`, `line` |
| `checkpoint.half-written` | half of a checkpoint object's bytes are in its temp file | `step` |
| `registry.transaction` | inside an open write transaction, nothing committed yet | `name` ("transfer", "service-write", "service-answered", "service-batch": a group commit of two or more rows, with their `labels`) |
| `service.group-commit` | the service's group-commit writer is about to take the queued rows as its next batch | |
| `registry.write-requested` | a write transaction is about to ask for the database's write lock | |
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["FaultHandler", "current", "fault_point", "install", "installed"]

FaultHandler = Callable[[str, Mapping[str, Any]], None]

_handlers: tuple[FaultHandler, ...] = ()


def fault_point(point: str, /, **info: Any) -> None:
    """Give every installed handler the chance to act here (none are, outside tests)."""
    for handler in _handlers:
        handler(point, info)


def current() -> tuple[FaultHandler, ...]:
    """The handlers installed now (what a process hands to the processes it spawns)."""
    return _handlers


def install(*handlers: FaultHandler) -> None:
    """Install handlers for the rest of this process (a child started to crash)."""
    global _handlers
    _handlers = (*_handlers, *handlers)


@contextmanager
def installed(*handlers: FaultHandler) -> Iterator[None]:
    """Install handlers for the block only."""
    global _handlers
    before = _handlers
    _handlers = (*before, *handlers)
    try:
        yield
    finally:
        _handlers = before
