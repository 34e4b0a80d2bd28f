"""Canonical JSON: the one byte encoding of a JSON value that gets hashed or signed.

Rules (see docs/formats.md): object keys sorted by code point, separators "," and ":"
with no whitespace, UTF-8 without escaping non-ASCII, no NaN/Infinity, integers must satisfy
|x| < 2**53 (larger integers travel as decimal strings so every JSON reader sees the same
number), floats only if finite. Booleans and None are JSON true/false/null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from computewatch.crypto.errors import FormatError

__all__ = [
    "CANONICAL_VERSIONS",
    "MAX_SAFE_INTEGER",
    "canonical_json",
    "canonical_json_at",
    "canonical_json_v2",
    "encode_parsed",
    "encode_parsed_v2",
    "parse_canonical_json",
    "parse_canonical_json_at",
    "parse_canonical_json_tagged",
    "parse_canonical_json_v2",
    "version_of_v_field",
]

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


def _parse_careful(raw: bytes, encode: Callable[[Any], bytes] = canonical_json, label: str = "canonical JSON", form: str = "canonical") -> Any:
    """Parse `raw` strictly and require `encode` (version 1's `canonical_json` by default) to
    give back the same bytes; every refusal names its problem, prefixed with `label`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{label}: not valid UTF-8 ({exc})") from None

    def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise FormatError(f"{label}: duplicate key {key!r}")
            out[key] = value
        return out

    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
        again = encode(obj)
    except FormatError:
        raise
    except (json.JSONDecodeError, ValueError) as exc:
        # ValueError also covers an integer literal too long to convert (Python's 4300-digit
        # limit); canonical integers are < 2**53 anyway.
        raise FormatError(f"{label}: malformed ({exc})") from None
    except RecursionError:
        raise FormatError(f"{label}: nested too deeply") from None
    if again != raw:
        raise FormatError(f"{label}: input is valid JSON but not in {form} form")
    return obj


# --- Version 2: RFC 8785 (JSON Canonicalization Scheme) -------------------------------------
# What changes against version 1: numbers are laid out as ECMAScript's Number::toString does
# (so 1.0 is `1`, 1e-7 is `1e-7`) and object keys sort by UTF-16 code unit. Strings, separators
# and the integer range are the same, so a value with no float and no key above U+FFFF encodes
# to the same bytes under both versions; that lets the hot paths use one C encode.


def _es6_number(x: float) -> str:
    # Shortest round-trip digits (Python's repr gives them), laid out per ECMA-262 Number::toString.
    if x == 0:
        return "0"
    if x < 0:
        return "-" + _es6_number(-x)
    _sign, digit_tuple, exponent = Decimal(repr(x)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    assert isinstance(exponent, int)
    exponent += len("".join(map(str, digit_tuple))) - len(digits)
    k = len(digits)
    n = exponent + k  # value = 0.d1..dk * 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be")


def _needs_slow_path(obj: Any) -> bool:
    # True where RFC 8785 and version 1 would differ: a float anywhere, or a key above U+FFFF.
    if isinstance(obj, float):
        return True
    if isinstance(obj, dict):
        return any(
            any(ord(ch) > 0xFFFF for ch in key) or _needs_slow_path(value) for key, value in obj.items()
        )
    if isinstance(obj, (list, tuple)):
        return any(_needs_slow_path(value) for value in obj)
    return False


def _encode_v2(obj: Any, out: list[str]) -> None:
    if isinstance(obj, float):
        out.append(_es6_number(obj))
    elif isinstance(obj, dict):
        out.append("{")
        for i, key in enumerate(sorted(obj, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(_fast_dumps(key))
            out.append(":")
            _encode_v2(obj[key], out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            _encode_v2(value, out)
        out.append("]")
    else:
        out.append(_fast_dumps(obj))


def canonical_json_v2(obj: Any) -> bytes:
    """Encode `obj` per RFC 8785 (format version 2); raises FormatError on values it forbids
    (non-finite floats, integers beyond 2**53, non-string keys, other types)."""
    _check(obj, "$")
    return encode_parsed_v2(obj)


def encode_parsed_v2(obj: Any) -> bytes:
    """`canonical_json_v2` of a value that `parse_canonical_json_v2` returned, without the walk
    that checks types and ranges (the parse already did)."""
    if not _needs_slow_path(obj):
        return _fast_dumps(obj).encode("utf-8")
    out: list[str] = []
    _encode_v2(obj, out)
    return "".join(out).encode("utf-8")


def parse_canonical_json_v2(data: bytes) -> Any:
    """Parse `data`, requiring it to be exactly the RFC 8785 encoding of what it contains.

    A number with a fraction or exponent comes back as a float, any other as an int; since
    RFC 8785 writes integral doubles without `.0`, a reader that needs a float must accept an
    int where a float is expected (`float(value)`)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"canonical JSON v2: expected bytes, got {type(data).__name__}")
    return _parse_careful(bytes(data), canonical_json_v2, "canonical JSON v2", "RFC 8785")


# --- Choosing the version: a document's own version tag names its canonical form -------------
# A format's version (a predicate type, a "v" field) fixes which canonical JSON its bytes are in,
# so one value never has two accepted encodings under one version (no malleability).
CANONICAL_VERSIONS = (1, 2)


def canonical_json_at(version: int, obj: Any) -> bytes:
    """`canonical_json` (version 1) or `canonical_json_v2` (version 2, RFC 8785) of `obj`."""
    if version == 2:
        return canonical_json_v2(obj)
    if version == 1:
        return canonical_json(obj)
    raise FormatError(f"canonical JSON: no version {version!r} (known: 1, 2)")


def parse_canonical_json_at(version: int, data: bytes) -> Any:
    """`parse_canonical_json` (version 1) or `parse_canonical_json_v2` (version 2) of `data`."""
    if version == 2:
        return parse_canonical_json_v2(data)
    if version == 1:
        return parse_canonical_json(data)
    raise FormatError(f"canonical JSON: no version {version!r} (known: 1, 2)")


def parse_canonical_json_tagged(data: bytes, version_of: Callable[[Any], int]) -> tuple[Any, int]:
    """Parse a document whose own tag says which canonical JSON it is in: `version_of(value)`
    reads that tag (raising FormatError for an unknown one) and returns 1 or 2. Returns the value
    and its version; the bytes must be exactly that version's encoding of the value.

    Most documents are in both forms at once (no float, no key above U+FFFF), so the version 1
    fast path parses them once; the tag then decides, and a version 2 document must re-encode
    to its bytes under RFC 8785 too."""
    raw = bytes(data)
    try:
        obj = parse_canonical_json(raw)
    except FormatError as first:
        try:
            obj = parse_canonical_json_v2(raw)
        except FormatError:
            raise first from None
        if version_of(obj) != 2:
            raise FormatError(f"canonical JSON: a version 1 document not in version 1 form ({first})") from None
        return obj, 2
    version = version_of(obj)
    if version == 2 and encode_parsed_v2(obj) != raw:
        raise FormatError("canonical JSON v2: input is valid JSON but not in RFC 8785 form")
    if version not in CANONICAL_VERSIONS:
        raise FormatError(f"canonical JSON: no version {version!r} (known: 1, 2)")
    return obj, version


def version_of_v_field(obj: Any, v2: int, what: str) -> int:
    """The canonical JSON version of a record whose legacy form has no "v" field (version 1) and
    whose version 2 form carries ``"v": v2``; FormatError for any other "v"."""
    if not isinstance(obj, dict) or "v" not in obj:
        return 1
    if obj["v"] != v2 or isinstance(obj["v"], bool):
        raise FormatError(f"{what} version {obj['v']!r}: only v{v2} carries a version field")
    return 2
