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
    "EXIT_FINDING",
    "EXIT_OK",
    "EXIT_UNUSABLE",
    "FLAG",
    "Command",
    "Group",
    "available_cores",
    "check_output_dir",
    "check_output_file",
    "check_register",
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
    that runs under the command line's one guard (docs/cli.md): usage errors print JSON too
    with `--json`; paths that would hang a read (FIFOs, sockets, devices) and integers past 64
    bits are refused before anything runs; every OS, database, encoding or memory error ends in
    one line and exit 2; an output folder or file the failed command created is removed. Its line in
    its group's list is its first sentence, wrapped to the terminal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.short_help:
            self.short_help = _first_sentence(self.help)
        for param in self.params:
            _plain_metavar(param)

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_help(super().get_help_option(ctx))

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        wants_json = "--json" in args
        try:
            return super().make_context(info_name, list(args), parent=parent, **extra)
        except _USAGE_ERRORS as exc:
            if wants_json:
                _print_json_safely({"error": " ".join(exc.format_message().split()), "exit": EXIT_UNUSABLE})
            raise

    def invoke(self, ctx: Any) -> Any:
        as_json = bool(ctx.params.get("as_json"))
        with _command_guard(as_json):
            _check_params(ctx.params, as_json)
            made = _new_outputs(ctx.params)
            plain, sys.stdout = sys.stdout, _GuardedStdout(sys.stdout)
            try:
                result = super().invoke(ctx)
                _flush_stdout()
                return result
            except BaseException as exc:
                if _is_unusable(exc):
                    _remove_partial(made)
                raise
            finally:
                sys.stdout = plain


class Group(TyperGroup):
    """A command group whose help shows `--help` as the flag it is (`typer.Typer(cls=Group)`)."""

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_help(super().get_help_option(ctx))


def _click_classes(name: str) -> tuple[type[BaseException], ...]:
    """Click's exception class `name`, from typer's own copy of click and from click itself."""
    found: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            cls = getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
        if cls not in found:
            found.append(cls)
    return tuple(found)


_USAGE_ERRORS: tuple[type[Any], ...] = _click_classes("UsageError")  # two copies of click: no common base to name
# Exceptions that are the command line's own way out (usage errors, Exit, Abort): passed through.
_CLICK_EXITS = (*_click_classes("ClickException"), *_click_classes("Exit"), *_click_classes("Abort"), typer.Exit, typer.Abort)
_OUTPUT_PARAMS = ("out", "out_dir", "out_file", "workdir", "seed_out", "html")
_INT64 = 2**63 - 1


def _print_json_safely(doc: Any) -> None:
    try:
        print_json(doc)
    except OSError:
        _abandon_stdout()


def _abandon_stdout() -> None:
    """Stdout cannot be written (a full disk, a closed pipe): send what is left to /dev/null, so
    the interpreter's own final flush does not add a second error."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except OSError as exc:
        raise _StdoutError(exc.errno, exc.strerror) from None


class _StdoutError(OSError):
    """Writing the command's output to standard output failed."""


class _GuardedStdout:
    """Standard output whose write errors say they are standard output's (a full disk, a
    closed pipe): they carry no file name of their own."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        try:
            return int(self._inner.write(text))
        except OSError as exc:
            raise _StdoutError(exc.errno, exc.strerror) from None

    def flush(self) -> None:
        try:
            self._inner.flush()
        except OSError as exc:
            raise _StdoutError(exc.errno, exc.strerror) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _is_unusable(exc: BaseException) -> bool:
    if isinstance(exc, (typer.Exit, *_click_classes("Exit"))):
        return getattr(exc, "exit_code", 0) == EXIT_UNUSABLE
    if isinstance(exc, _click_classes("ClickException")):
        return True
    if isinstance(exc, SystemExit):
        return exc.code == EXIT_UNUSABLE
    return not isinstance(exc, (KeyboardInterrupt, typer.Abort, *_click_classes("Abort")))


def _special_file(path: Path) -> str | None:
    """What kind of non-regular file `path` is (a read of it could block forever), or None."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or str(path) == os.devnull:
        return None
    return "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


def _option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_params(params: dict[str, Any], as_json: bool) -> None:
    """Before anything runs: no path that would hang a read or write, no integer past 64 bits."""
    for name, value in params.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, Path) or (name == "db" and isinstance(v, str) and v and "://" not in v):
                kind = _special_file(Path(v))
                if kind is not None:
                    fail(f"{_option_name(name)} {v} is {kind}, not a regular file or folder", as_json=as_json)
            elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > _INT64:
                fail(f"{_option_name(name)} {v}: out of range (at most {_INT64})", as_json=as_json)


def _new_outputs(params: dict[str, Any]) -> list[Path]:
    """The output paths the command will create (they do not exist yet): removed if it fails."""
    made = []
    for name in _OUTPUT_PARAMS:
        v = params.get(name)
        if isinstance(v, Path) and not os.path.lexists(v):
            made.append(v)
    return made


def _remove_partial(paths: list[Path]) -> None:
    import shutil

    for p in paths:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                p.unlink()
        except OSError:
            pass


def _error_line(exc: BaseException) -> str | None:
    """The one line for an error the guard handles (None: not one of them)."""
    import errno as errno_

    if isinstance(exc, _StdoutError):
        _abandon_stdout()  # what is still buffered goes nowhere: the exit's flush adds no second error
        return f"cannot write standard output: {exc.strerror}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        hint = {errno_.ENAMETOOLONG: " (a name is longer than the file system allows)",
                errno_.ELOOP: " (a symbolic link loop)", errno_.ENOSPC: " (the disk is full)"}.get(exc.errno or 0, "")
        return f"{where}{exc.strerror or exc}{hint}"
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower():
        return "out of memory: choose smaller sizes (or raise the memory limit)"
    if isinstance(exc, UnicodeError):
        return f"a file that should be text is not UTF-8 text (binary data?): {exc.reason if hasattr(exc, 'reason') else exc}"
    if isinstance(exc, OverflowError):
        return f"a number is out of range: {exc}"
    mod = type(exc).__module__
    if mod.startswith("sqlalchemy"):
        orig = getattr(exc, "orig", None) or exc
        first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        return f"register database error: {first}"
    if mod.startswith("alembic"):
        return f"register database: {' '.join(str(exc).split())} (made by a newer computewatch?)"
    return None


@contextlib.contextmanager
def _command_guard(as_json: bool) -> Iterator[None]:
    from computewatch.crypto.errors import ComputewatchError

    try:
        yield
    except ComputewatchError as exc:
        fail(str(exc), EXIT_UNUSABLE, as_json=as_json)
    except Exception as exc:  # noqa: BLE001 (the command line's one guard: no traceback reaches the user)
        if isinstance(exc, _CLICK_EXITS):
            raise
        if os.environ.get("COMPUTEWATCH_DEBUG"):
            raise
        line = _error_line(exc)
        if line is None:
            line = f"unexpected failure: {' '.join(str(exc).split())[:300] or type(exc).__name__} (COMPUTEWATCH_DEBUG=1 shows where)"
        fail(line, EXIT_UNUSABLE, as_json=as_json)


def print_json(doc: Any) -> None:
    """JSON on stdout, one document (sorted keys, indented), bypassing rich's markup."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = EXIT_UNUSABLE, *, as_json: bool = False, doc: dict[str, Any] | None = None) -> NoReturn:
    """Print one error line to stderr (and the JSON error document when `as_json`), then exit."""
    line = " ".join(str(message).split())  # one line, whatever the message held
    err.print(f"[red]error:[/red] {escape(line)}")
    if as_json:
        _print_json_safely({**(doc or {}), "error": line, "exit": code})
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
    except (OSError, MemoryError) as exc:
        fail(_error_line(exc) or str(exc), EXIT_UNUSABLE, as_json=as_json)


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
    path: Path, option: str = "--out", *, suffixes: tuple[str, ...] = (), overwrite: bool = True, force: str | None = None
) -> Path:
    """Refuse, before any work, an output file that cannot be written where the user said.

    A directory, a missing or read-only folder, a name without one of `suffixes` (when given:
    a writer that picks its format from the name would otherwise write another file than
    the one named), or an existing file when `overwrite` is False (evidence is never replaced
    silently; `force` names the option that would replace it, if the command has one). A
    symbolic link (a loop, a dangling link, or one leading elsewhere) and a name the file
    system cannot hold are refused too.
    """
    path = Path(path)
    _check_name(path, option)
    if path.is_symlink():
        fail(f"{option} {path} is a symbolic link{' that leads nowhere' if not path.exists() else ''}; give the file itself")
    if path.is_dir():
        fail(f"{option} {path} is a folder; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        fail(f"{option} {path}: the file name must end in {' or '.join(suffixes)}")
    if path.exists() and not overwrite:
        fail(f"{option} {path} exists; choose another name" + (f" (or {force} to replace it)" if force else ""))
    _check_parent(path, option)
    return path


def _check_name(path: Path, option: str) -> None:
    """A name the file system cannot hold is refused up front (not as a traceback later)."""
    import errno as errno_

    try:
        os.lstat(path)
    except OSError as exc:
        if exc.errno in (errno_.ENAMETOOLONG, errno_.ELOOP):
            line = _error_line(exc) or str(exc)
            fail(f"{option} {path}: {line.split(': ', 1)[-1] if exc.filename else line}")
    limit = os.pathconf(".", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    too_long = [part for part in path.parts if len(os.fsencode(part)) > limit]
    if too_long:
        fail(f"{option} {path}: the name {too_long[0][:40]}... is longer than the file system allows ({limit} bytes)")


def check_output_dir(path: Path, option: str = "--out", *, may_exist: bool = True) -> Path:
    """Refuse an output folder that is a file, that exists when it must not, or whose nearest
    existing ancestor is not writable (folders are created later, by the command itself)."""
    path = Path(path)
    _check_name(path, option)
    if path.is_symlink() and not path.is_dir():
        fail(f"{option} {path} is a symbolic link{' that leads nowhere' if not path.exists() else ''}; give a folder")
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


_SQLITE_HEADER = b"SQLite format 3\x00"


def check_register(db: str | None, *, create: bool = False, as_json: bool = False) -> str:
    """Refuse, before anything is opened or created, a register database that is not one.

    `--db ''`; a SQLite file that does not exist (unless `create`: only `registry init` makes a
    register, so a mistyped or forgotten --db never silently starts an empty one in the working
    directory); a FIFO, folder or other non-file; a file that is not SQLite; a database holding
    another application's tables (its tables are never added to). Returns the resolved URL."""
    from computewatch.registry import db as reg_db

    if db is not None and not db.strip():
        fail("--db is empty: give a SQLite file or a postgresql:// URL", as_json=as_json)
    given = db or os.environ.get(reg_db.ENV_VAR)
    where = f"--db {given}" if given else f"{reg_db.DEFAULT_FILE} (the default: no --db and no ${reg_db.ENV_VAR})"
    resolved = reg_db.resolve_url(db)
    if resolved.startswith("sqlite:///"):
        path = Path(resolved[len("sqlite:///"):])
        if not path.exists():
            if not create:
                fail(f"no register at {where}: create one with `computewatch registry init --db {path}`", as_json=as_json)
        else:
            kind = _special_file(path) or ("a folder" if path.is_dir() else None)
            if kind is not None:
                fail(f"{where} is {kind}, not a register database file", as_json=as_json)
            with open(path, "rb") as fh:
                head = fh.read(len(_SQLITE_HEADER))
            if head and head != _SQLITE_HEADER:
                fail(f"{where} is not a SQLite database (so not a register)", as_json=as_json)
    _refuse_foreign_tables(resolved, where, as_json)
    return resolved


def _refuse_foreign_tables(url: str, where: str, as_json: bool) -> None:
    """Look (without changing a byte: SQLite is opened read-only) at the tables and the schema
    revision: another application's database, or a register a newer computewatch migrated."""
    from sqlalchemy import create_engine, inspect, text

    from computewatch.registry import db as reg_db

    closed = False  # a SQLite file no process has open (no write-ahead log beside it)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not path.exists():
            return
        closed = not Path(f"{path}-wal").exists()
        # immutable: reading a closed file must not even leave a -wal or -shm file beside it
        uri = f"file:{path}?mode=ro" + ("&immutable=1" if closed else "")
        engine = create_engine("sqlite://", creator=lambda: __import__("sqlite3").connect(uri, uri=True))
    else:
        engine = reg_db.make_engine(url)
    try:
        with engine.connect() as conn:
            if closed:
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
                size = conn.exec_driver_sql("PRAGMA page_size").scalar() or 0
                if pages * size > path.stat().st_size:
                    fail(f"{where} is cut short ({path.stat().st_size:,} of {pages * size:,} bytes): a half-written "
                         "or damaged register; restore it from a backup", as_json=as_json)
            tables = set(inspect(conn).get_table_names())
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() if "alembic_version" in tables else None
    finally:
        engine.dispose()
    if tables and "register_meta" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        fail(f"{where} holds another application's tables ({shown}), not a register: choose another database", as_json=as_json)
    if version is not None and version not in _known_revisions():
        fail(f"{where}: the register's schema is at revision {version!r}, which this computewatch does not know "
             "(made by a newer computewatch?)", as_json=as_json)


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    from computewatch.registry import db as reg_db

    return {r.revision for r in ScriptDirectory.from_config(reg_db._alembic_config()).walk_revisions()}


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
            ProgressColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns: list[str | ProgressColumn] = ["[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
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
