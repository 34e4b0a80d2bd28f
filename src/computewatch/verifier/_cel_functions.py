"""The facts and functions policy expressions see (docs/rules.md, "Facts" and "Functions").

`context_value` puts a JSON-like value into CEL's terms (numbers as doubles, nulls absent);
`extension_functions` are ours, called from CEL with evaluated arguments: they take and return
doubles, and refuse bad input with ValueError, which the evaluator reports as the rule's error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

__all__ = ["CEL_FUNCTIONS", "LEGACY_FUNCTIONS", "context_value", "extension_functions", "kind_of"]

CEL_FUNCTIONS = frozenset({
    "min", "max", "sum", "mean", "abs", "fraction_above", "fraction_below", "get", "data_fraction", "data_size",
})  # fmt: skip
# Only in translations of legacy expressions: the legacy `==`, an error across kinds (CEL's is false).
LEGACY_FUNCTIONS = frozenset({"legacy_equal"})


_KINDS = ((bool, "true/false"), (int, "an int"), (float, "a double"), (str, "a string"), (list, "a list"), (dict, "a map"))


def kind_of(value: Any) -> str:
    """How an error names a value's CEL type (bool before int: a bool is an int in Python)."""
    if value is None:
        return "null"
    return next((name for t, name in _KINDS if isinstance(value, t)), type(value).__name__)


def context_value(value: Any) -> Any:
    """A JSON-like value in CEL's terms: numbers as doubles, nulls in maps dropped (absent).

    A number beyond the double range (a Prover's `1e400` written as an integer) becomes null too,
    so reading it is an error on that run rather than a crash of the evaluation."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        try:
            f = float(value)
        except OverflowError:
            return None
        return f if math.isfinite(f) else None
    if isinstance(value, Mapping):
        converted = ((str(k), context_value(v)) for k, v in value.items())
        return {k: v for k, v in converted if v is not None}
    if isinstance(value, (list, tuple)):
        return [context_value(v) for v in value]
    return None  # not a JSON value: absent


def _numbers(values: Any, what: str) -> list[float]:
    if not isinstance(values, list):
        raise ValueError(f"needs a list, got {kind_of(values)}")
    if not values:
        raise ValueError(f"{what} of an empty list")
    if all(type(v) is float for v in values):  # the context's numbers are doubles already
        return values
    return [_number(v) for v in values]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"needs a number, got {kind_of(value)}")
    return float(value)


@lru_cache(maxsize=256)
def _bytes_regex(pattern: str) -> re.Pattern[bytes]:
    return re.compile(pattern.encode("utf-8"))


def _legacy_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return kind_of(value)


def _legacy_equal(a: Any, b: Any) -> bool:
    """The legacy `==`: values of different kinds cannot be compared (an error, not false)."""
    if _legacy_kind(a) != _legacy_kind(b):
        raise ValueError(f"cannot compare {_legacy_kind(a)} with {_legacy_kind(b)} using '=='")
    return bool(a == b)


def _get(table: Any, key: Any, default: Any) -> Any:
    if not isinstance(table, dict) or not isinstance(key, str):
        raise ValueError("needs a map and a string key")
    value = table.get(key)
    return default if value is None else value


def extension_functions(data: Sequence[bytes] | None) -> dict[str, Callable[..., Any]]:
    """Our functions over the run's facts; `data` is the cluster's random subset (None: not drawn)."""

    def subset() -> Sequence[bytes]:
        if data is None:
            raise ValueError("the data subset was not drawn by the trusted cluster")
        return data

    def data_fraction(pattern: str) -> float:
        samples = subset()
        if not samples:
            raise ValueError("the data subset is empty")
        rx = _bytes_regex(pattern)  # a UTF-8 pattern over raw sample bytes
        return sum(1 for s in samples if rx.search(bytes(s)) is not None) / len(samples)

    def fraction(compare: Callable[[float, float], bool]) -> Callable[[Any, Any], float]:
        def fn(values: Any, x: Any) -> float:
            xs, bound = _numbers(values, "fraction"), _number(x)
            return sum(1 for v in xs if compare(v, bound)) / len(xs)

        return fn

    return {
        "min": lambda xs: min(_numbers(xs, "min")),
        "max": lambda xs: max(_numbers(xs, "max")),
        "sum": lambda xs: math.fsum(_numbers(xs, "sum")),
        "mean": lambda xs: math.fsum(_numbers(xs, "mean")) / len(xs),
        "abs": lambda x: abs(_number(x)),
        "fraction_above": fraction(lambda v, b: v > b),
        "fraction_below": fraction(lambda v, b: v < b),
        "get": _get,
        "data_fraction": data_fraction,
        "data_size": lambda: float(len(subset())),
        "legacy_equal": _legacy_equal,
    }
