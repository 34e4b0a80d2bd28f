"""Fault injection for the crash tests: handlers for `computewatch._faults` points, and the
test-only entry point that runs a child process with them installed.

In process:
    with installed(PauseAt("transfer", folder)): ...

A child process (what the library once read from environment variables):
    [sys.executable, FAULTS, "pause=transfer:DIR", "--", "-c", CODE, ARG, ...]
    [sys.executable, FAULTS, "pause=service-write:DIR", "--", "-m", "computewatch", "serve", ...]

Arguments before `--`, any number:
    pause=NAME:DIR        stop inside the open transaction at pause point NAME: write DIR/paused,
                          wait (up to 120 s) for DIR/resume; the test kills it there or races it
    mark=DIR              create DIR/write-requested as each write transaction asks for the lock
    hold-commit=SECONDS   the service's group-commit writer waits SECONDS before it takes each batch,
                          so rows of several chips queue up and a batch of two or more forms
    kill-append=N         write half of chip log entry N durably, then SIGKILL this process
    kill-checkpoint=STEP  SIGKILL this process halfway through writing step STEP's checkpoint
After `--`: `-c CODE [ARG ...]` or `-m MODULE [ARG ...]`, as `python` takes them.

Handlers are module-level classes, so a training run can pickle them to the ranks it spawns.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from computewatch._faults import install, installed

__all__ = ["FAULTS", "HoldCommit", "KillInCheckpoint", "KillMidAppend", "MarkWrites", "PauseAt", "faulty", "installed", "parse"]

FAULTS = str(Path(__file__).resolve())


class PauseAt:
    def __init__(self, name: str, folder: str | Path) -> None:
        self.name, self.folder = name, str(folder)

    def __call__(self, point: str, info: Mapping[str, Any]) -> None:
        if point != "registry.transaction" or info.get("name") != self.name:
            return
        folder = Path(self.folder)
        if "labels" in info:  # a group commit's batch: which entries it holds
            (folder / "batch").write_text("\n".join(info["labels"]) + "\n")
        (folder / "paused").write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not (folder / "resume").exists() and time.monotonic() < deadline:
            time.sleep(0.01)


class MarkWrites:
    def __init__(self, folder: str | Path) -> None:
        self.folder = str(folder)

    def __call__(self, point: str, info: Mapping[str, Any]) -> None:
        if point == "registry.write-requested":
            (Path(self.folder) / "write-requested").write_text(str(os.getpid()))


class HoldCommit:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, point: str, info: Mapping[str, Any]) -> None:
        if point == "service.group-commit":
            time.sleep(self.seconds)


class KillMidAppend:
    def __init__(self, counter: int) -> None:
        self.counter = counter

    def __call__(self, point: str, info: Mapping[str, Any]) -> None:
        if point == "chip.log.append" and info["counter"] == self.counter:
            from computewatch.crypto.atomic import append_durable

            line = info["line"]
            append_durable(info["path"], line[: len(line) // 2])  # a torn tail, durably on disk
            os.kill(os.getpid(), signal.SIGKILL)


class KillInCheckpoint:
    def __init__(self, step: int) -> None:
        self.step = step

    def __call__(self, point: str, info: Mapping[str, Any]) -> None:
        if point == "checkpoint.half-written" and info["step"] == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def parse(spec: str) -> Any:
    """One handler from its argument (`pause=NAME:DIR`, `mark=DIR`, `hold-commit=SECONDS`, `kill-append=N`, `kill-checkpoint=STEP`)."""
    kind, _, value = spec.partition("=")
    if kind == "pause":
        name, _, folder = value.partition(":")
        return PauseAt(name, folder)
    if kind == "mark":
        return MarkWrites(value)
    if kind == "hold-commit":
        return HoldCommit(float(value))
    if kind == "kill-append":
        return KillMidAppend(int(value))
    if kind == "kill-checkpoint":
        return KillInCheckpoint(int(value))
    raise SystemExit(f"unknown fault {spec!r}")


def faulty(*specs: str) -> list[str]:
    """The start of a child's command line: `[python, this file, *specs, "--"]`; append `-c CODE ...`."""
    return [sys.executable, FAULTS, *specs, "--"]


def _main(argv: list[str]) -> None:
    split = argv.index("--")
    install(*(parse(spec) for spec in argv[:split]))
    rest = argv[split + 1 :]
    if rest[0] == "-c":
        sys.argv = ["-c", *rest[2:]]
        sys.path.insert(0, "")
        exec(compile(rest[1], "<string>", "exec"), {"__name__": "__main__"})
    elif rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        raise SystemExit("after --: -c CODE or -m MODULE")


if __name__ == "__main__":
    _main(sys.argv[1:])
