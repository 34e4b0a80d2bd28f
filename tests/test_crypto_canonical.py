"""Canonical JSON: one encoding per value, and the parser refuses every other encoding."""

from __future__ import annotations

import pytest

from computewatch.crypto import ComputewatchError, canonical_json, parse_canonical_json
from computewatch.crypto.errors import FormatError


def test_sorted_keys_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "é"], "A": 0.5}) == '{"A":0.5,"a":[true,null,"é"],"b":1}'.encode()


def test_nested_keys_sorted_by_code_point() -> None:
    assert canonical_json({"z": {"b": 1, "B": 2}}) == b'{"z":{"B":2,"b":1}}'


@pytest.mark.parametrize("value", [2**53, -(2**53), 2**64])
def test_large_integers_rejected(value: int) -> None:
    with pytest.raises(ValueError, match="2\\*\\*53"):
        canonical_json({"n": value})


def test_largest_safe_integer_accepted() -> None:
    assert canonical_json([2**53 - 1]) == b"[9007199254740991]"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_rejected(value: float) -> None:
    with pytest.raises(FormatError, match="non-finite"):
        canonical_json({"x": [value]})


def test_unsupported_types_and_keys_named() -> None:
    with pytest.raises(FormatError, match=r"bytes at \$.k"):
        canonical_json({"k": b"raw"})
    with pytest.raises(FormatError, match="non-string key"):
        canonical_json({1: "x"})


def test_round_trip() -> None:
    obj = {"v": 1, "list": [1, -2, "x", {"q": False}], "s": "☃"}
    assert parse_canonical_json(canonical_json(obj)) == obj


@pytest.mark.parametrize(
    "data, why",
    [
        (b'{"b":1,"a":2}', "canonical form"),
        (b'{"a": 1}', "canonical form"),
        (b'{"a":1,"a":1}', "duplicate key"),
        (b'{"a":NaN}', "NaN"),
        (b'{"a":1', "malformed"),
        (b'\xff', "UTF-8"),
        (b'{"a":"\\u00e9"}', "canonical form"),
        (b'{"n":9007199254740992}', "2\\*\\*53"),
    ],
)
def test_parser_rejects_non_canonical(data: bytes, why: str) -> None:
    with pytest.raises(ComputewatchError, match=why):
        parse_canonical_json(data)


@pytest.mark.parametrize(
    "data, why",
    [
        (b"1" * 5000, "malformed"),  # past Python's int-conversion limit: a ValueError inside json
        (b"[" * 100_000 + b"]" * 100_000, "deeply"),  # a RecursionError inside json
    ],
)
def test_hostile_input_is_a_format_error_not_a_crash(data: bytes, why: str) -> None:
    with pytest.raises(FormatError, match=why):
        parse_canonical_json(data)
