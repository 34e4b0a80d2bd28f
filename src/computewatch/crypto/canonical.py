"""Canonical JSON: the one byte encoding of a JSON value that gets hashed or signed.

Rules (see docs/formats.md): object keys sorted by code point, separators "," and ":"
with no whitespace, UTF-8 without escaping non-ASCII, no NaN/Infinity, integers must satisfy
|x| < 2**53 (larger integers travel as decimal strings so every JSON reader sees the same
number), floats only if finite. Booleans and None are JSON true/false/null.
"""

from __future__ import annotations

import json
import math
from typing import Any

from computewatch.crypto.errors import FormatError

__all__ = ["MAX_SAFE_INTEGER", "canonical_json", "encode_parsed", "parse_canonical_json"]

# Beyond 2**53 doubles lose integers; readers in other languages would silently round.
MAX_SAFE_INTEGER = 2**53 - 1


def _check(obj: Any, path: str) -> None:
    # Walk first so the error names the offending location instead of failing inside json.
    if obj is None or isinstance(obj, (bool, str)):
        return
    if isinstance(obj, int):
        if abs(obj) > MAX_SAFE_INTEGER:
            raise FormatError(f"canonical JSON: integer at {path} has |x| >= 2**53; encode it as a decimal string")
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise FormatError(f"canonical JSON: non-finite float at {path}")
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise FormatError(f"canonical JSON: non-string key {key!r} at {path}")
            _check(value, f"{path}.{key}")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check(value, f"{path}[{i}]")
        return
    raise FormatError(f"canonical JSON: unsupported type {type(obj).__name__} at {path}")


def canonical_json(obj: Any) -> bytes:
    """Encode `obj` canonically; raises FormatError (a ValueError) on values the rules forbid."""
    _check(obj, "$")
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise FormatError(f"canonical JSON: {name} is not allowed")


class _NotCanonical(Exception):
    pass


def _safe_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise _NotCanonical
    return value


_fast_loads = json.JSONDecoder(parse_int=_safe_int, parse_constant=lambda name: _reject_fast(name)).decode
_fast_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _reject_fast(name: str) -> Any:
    raise _NotCanonical


def encode_parsed(obj: Any) -> bytes:
    """The canonical JSON of a value built only from what `parse_canonical_json` returned (and
    strings and small integers): the same bytes as `canonical_json`, without re-walking a value
    already checked. A value of any other origin must go through `canonical_json`."""
    return _fast_dumps(obj).encode("utf-8")


def parse_canonical_json(data: bytes) -> Any:
    """Parse `data`, requiring it to be exactly the canonical encoding of what it contains."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"canonical JSON: expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    # Fast path, one C parse and one C encode: integers are range-checked as they are parsed;
    # a duplicate key, a non-finite float or any other departure makes the re-encoding differ
    # (or fail). Accepting here implies the careful path below accepts the same value; on any
    # doubt that path runs and names the problem.
    try:
        obj = _fast_loads(raw.decode("utf-8"))
        if _fast_dumps(obj).encode("utf-8") == raw:
            return obj
    except (_NotCanonical, ValueError, RecursionError):
        pass
    return _parse_careful(raw)


def _parse_careful(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"canonical JSON: not valid UTF-8 ({exc})") from None

    def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise FormatError(f"canonical JSON: duplicate key {key!r}")
            out[key] = value
        return out

    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
        again = canonical_json(obj)
    except FormatError:
        raise
    except json.JSONDecodeError as exc:
        raise FormatError(f"canonical JSON: malformed ({exc})") from None
    except ValueError as exc:
        # An integer literal too long to convert (Python's 4300-digit limit); canonical integers
        # are < 2**53 anyway.
        raise FormatError(f"canonical JSON: malformed ({exc})") from None
    except RecursionError:
        raise FormatError("canonical JSON: nested too deeply") from None
    if again != raw:
        raise FormatError("canonical JSON: input is valid JSON but not in canonical form")
    return obj
