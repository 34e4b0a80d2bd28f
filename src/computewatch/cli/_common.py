"""The command-line convention every `computewatch` command follows (docs/cli.md).

- Errors go to stderr as one line naming the problem (no traceback).
- Exit status: 0 success; 1 a negative finding (violation, tampering, refusal);
  2 unusable input (bad option, missing or malformed file).
- With ``--json``, stdout carries JSON also on failure: ``{"error": message, "exit": code}``
  (or the command's own document with its verdict), so scripts parse one stream.
- Options are validated before any side effect.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["EXIT_FINDING", "EXIT_OK", "EXIT_UNUSABLE", "err", "fail", "out", "print_json"]

EXIT_OK = 0
EXIT_FINDING = 1  # a negative finding: violation, tampering, refusal
EXIT_UNUSABLE = 2  # unusable input

# soft_wrap: paths and digests stay on one line, so they can be copied (and grepped).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


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
