"""The command-line convention every `computewatch` command follows (docs/cli.md).

- Errors go to stderr as one line naming the problem (no traceback).
- Exit status: 0 success; 1 a negative finding (violation, tampering, refusal);
  2 unusable input (bad option, missing or malformed file).
- With ``--json``, stdout carries JSON also on failure: ``{"error": message, "exit": code}``
  (or the command's own document with its verdict), so scripts parse one stream.
- Options are validated before any side effect: the helpers below check output paths, storage
  URLs and bounds up front, and `guard` turns the library's errors into that one line.
- Long work shows progress on stderr: a rich bar on a terminal, a plain line per tenth of the
  work otherwise (so logs and CI show it too).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

__all__ = [
    "Command",
    "Group",
    "EXIT_FINDING",
    "EXIT_OK",
    "EXIT_UNUSABLE",
    "FLAG",
    "available_cores",
    "check_output_dir",
    "check_output_file",
    "check_storage_url",
    "err",
    "fail",
    "guard",
    "out",
    "print_json",
    "progress",
    "stage_progress",
    "write_output",
]

EXIT_OK = 0
EXIT_FINDING = 1  # a negative finding: violation, tampering, refusal
EXIT_UNUSABLE = 2  # unusable input

# soft_wrap: paths and digests stay on one line, so they can be copied (and grepped).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# typer.Option(..., metavar=FLAG) for boolean flags: help shows no value placeholder for them.
FLAG = ""


def _flag_help(option: Any) -> Any:
    if option is not None:
        option.metavar = FLAG  # `--help` takes no value: no "<bool>" beside it in the help
    return option


def _plain_metavar(param: Any) -> None:
    """docs/cli.md's placeholders: none for a boolean flag, `<path>` (repeatable) rather than
    typer's `<list[Path]>`, `<int>` rather than `<int range>` (the range is shown beside it)."""
    if getattr(param, "metavar", None) is not None:
        return
    if getattr(param, "is_flag", False):
        param.metavar = FLAG
        return
    try:
        label = param.display_type(None)
    except Exception:  # a type typer cannot describe without a context (choices): keep typer's
        return
    if not isinstance(label, str) or not ("list[" in label or " range" in label):
        return
    inner = re.sub(r"list\[(.*)\]", r"\1", label).replace(" range", "").replace("<Path>", "<path>")
    if getattr(param, "param_type_name", "") == "argument":
        # An argument's metavar is its name in the usage line: change only the type shown.
        shown = inner + ("..." if getattr(param, "nargs", 1) != 1 else "")
        param.display_type_rich = lambda ctx: shown
    else:
        param.metavar = inner


def _first_sentence(text: str | None) -> str | None:
    """A docstring's first sentence on one line: what a group's command list shows."""
    if not text:
        return text
    words = " ".join(text.split("\n\n")[0].split())
    end = words.find(". ")
    return words if end < 0 else words[: end + 1]


class Command(TyperCommand):
    """A command whose help shows `--help` as the flag it is (`app.command(cls=Command)`), and
    whose line in its group's list is its first sentence, wrapped to the terminal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.short_help:
            self.short_help = _first_sentence(self.help)
        for param in self.params:
            _plain_metavar(param)

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_help(super().get_help_option(ctx))


class Group(TyperGroup):
    """A command group whose help shows `--help` as the flag it is (`typer.Typer(cls=Group)`)."""

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_help(super().get_help_option(ctx))


def print_json(doc: Any) -> None:
    """JSON on stdout, one document (sorted keys, indented), bypassing rich's markup."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = EXIT_UNUSABLE, *, as_json: bool = False, doc: dict[str, Any] | None = None) -> NoReturn:
    """Print one error line to stderr (and the JSON error document when `as_json`), then exit."""
    line = " ".join(str(message).split())  # one line, whatever the message held
    err.print(f"[red]error:[/red] {escape(line)}")
    if as_json:
        print_json({**(doc or {}), "error": line, "exit": code})
    raise typer.Exit(code)


@contextlib.contextmanager
def guard(code: int = EXIT_UNUSABLE, *, as_json: bool = False) -> Iterator[None]:
    """Turn the library's errors inside the block into `fail`'s one line.

    `ComputewatchError` exits with `code`; an OSError names its file and the system's reason
    (never a temp file's name: callers that write use `write_output`); MemoryError says so.
    """
    from computewatch.crypto.errors import ComputewatchError

    try:
        yield
    except ComputewatchError as exc:
        fail(str(exc), code, as_json=as_json)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{exc.strerror or exc}", EXIT_UNUSABLE, as_json=as_json)
    except MemoryError:
        fail("out of memory: choose smaller sizes", EXIT_UNUSABLE, as_json=as_json)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_parent(path: Path, option: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        fail(f"{option} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        fail(f"{option} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{option} {path}: folder {parent} is not writable")


def check_output_file(
    path: Path, option: str = "--out", *, suffixes: tuple[str, ...] = (), overwrite: bool = True
) -> Path:
    """Refuse, before any work, an output file that cannot be written where the user said.

    A directory, a missing or read-only folder, a name without one of `suffixes` (when given:
    a writer that picks its format from the name would otherwise write another file than
    the one named), or an existing file when `overwrite` is False (evidence is never replaced
    silently).
    """
    path = Path(path)
    if path.is_dir():
        fail(f"{option} {path} is a folder; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        fail(f"{option} {path}: the file name must end in {' or '.join(suffixes)}")
    if path.exists() and not overwrite:
        fail(f"{option} {path} exists; choose another name (or --force to replace it)")
    _check_parent(path, option)
    return path


def check_output_dir(path: Path, option: str = "--out", *, may_exist: bool = True) -> Path:
    """Refuse an output folder that is a file, that exists when it must not, or whose nearest
    existing ancestor is not writable (folders are created later, by the command itself)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        fail(f"{option} {path} is a file, not a folder")
    if path.exists() and not may_exist and any(path.iterdir()):
        fail(f"{option} {path} exists and is not empty; choose a new folder")
    probe = path
    while not probe.exists():
        probe = probe.parent if str(probe.parent) else Path(".")
    if not probe.is_dir():
        fail(f"{option} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        fail(f"{option} {path}: folder {probe} is not writable")
    return path


def write_output(path: Path, data: bytes, option: str = "--out", *, mode: int = 0o644) -> None:
    """Write a command's output file atomically; an error names the user's path, not a temp file."""
    from computewatch.crypto.atomic import atomic_write

    try:
        atomic_write(path, data, mode=mode)
    except OSError as exc:
        fail(f"cannot write {option} {path}: {exc.strerror or exc}")


def check_storage_url(location: str, what: str = "run directory") -> str:
    """An fsspec URL whose filesystem cannot load is refused up front, naming the package to
    install; local paths (no protocol, file://) pass unchanged."""
    if "://" not in location:
        return location
    from fsspec.core import split_protocol
    from fsspec.registry import get_filesystem_class, known_implementations

    protocol, _ = split_protocol(location)
    if protocol in (None, "file", "local"):
        return location
    try:
        get_filesystem_class(protocol)
    except ValueError:
        fail(f"{what} {location}: unknown storage protocol {protocol!r}")
    except ImportError:
        spec = known_implementations.get(protocol, {})
        package = str(spec.get("class", "")).split(".")[0] or protocol
        fail(f"{what} {location}: {protocol}:// URLs need the package {package}; install it (pip install {package})")
    return location


@contextlib.contextmanager
def progress(
    description: str, total: int | None, *, console: Console = err, step: float = 0.1, quiet_s: float = 2.0,
    heartbeat_s: float = 10.0,
) -> Iterator[Callable[[int], None]]:
    """Progress of long work on stderr; yields `update(done)`.

    On a terminal: a transient rich bar (its clock runs even while `done` stands still).
    Otherwise (a log file, CI, a pipe): one plain line when the work starts, then one at each
    `step` share of `total` done (at most one per `quiet_s` seconds), a "still working" line
    after `heartbeat_s` seconds without one (work of unknown size, or one long unit of it), and
    a last line with the time it took when it took more than `quiet_s`.
    """
    if console.is_terminal:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = ["[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        if total is not None:
            columns.append(TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda done: bar.update(task, completed=done)
        return
    start = time.monotonic()
    name = escape(description)
    console.print(f"{name}: started" + (f" ({total:,} to do)" if total else ""), highlight=False)
    state: dict[str, Any] = {"mark": step, "printed": start, "done": 0}
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            console.print(line, highlight=False)
            state["printed"] = time.monotonic()

    def update(done: int) -> None:
        state["done"] = done
        if not total:
            return
        share, now = done / total, time.monotonic()
        # A line per `step` of the work, at most one every `quiet_s`: short work stays quiet.
        if share >= state["mark"] and (now - state["printed"] >= quiet_s or (done >= total and now - start >= quiet_s)):
            say(f"{name}: {done:,}/{total:,} ({share:.0%}) after {now - start:.1f} s")
        while state["mark"] <= share:
            state["mark"] += step

    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(min(1.0, heartbeat_s)):
            now = time.monotonic()
            if now - state["printed"] >= heartbeat_s:
                if total and state["done"] >= total:  # its part is done; what follows has not reported yet
                    say(f"{name}: all {total:,} done, the next step still under way after {now - start:.0f} s")
                else:
                    where = f" ({state['done']:,}/{total:,})" if total else ""
                    say(f"{name}: still working after {now - start:.0f} s{where}")

    beat = threading.Thread(target=heartbeat, name="progress-heartbeat", daemon=True)
    beat.start()
    ok = False
    try:
        yield update
        ok = True
    finally:
        stop.set()
        beat.join()
        took = time.monotonic() - start
        if took >= quiet_s:
            say(f"{name}: {'done' if ok else 'stopped'} after {took:.1f} s")


def stage_progress(prefix: str = "") -> tuple[Callable[[str, int, int], None], contextlib.ExitStack]:
    """A `(stage, done, total)` callback (the Verifier's and the service's progress) over
    `progress`: one bar, or one series of lines, per stage. Close the stack when the work ends."""
    from computewatch._stages import stages

    return stages(lambda stage, total: progress(f"{prefix}{stage}", total))
