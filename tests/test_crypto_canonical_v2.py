"""Canonical JSON version 2 is RFC 8785: checked against the RFC's own number vectors and
against an implementation that is not ours (the `rfc8785` package)."""

from __future__ import annotations

import math
import random
import struct

import pytest
import rfc8785

from computewatch.crypto.canonical import (
    FormatError,
    canonical_json,
    canonical_json_v2,
    parse_canonical_json_v2,
)

# RFC 8785 Appendix B: IEEE-754 binary64 (big-endian hex) -> its JCS serialisation.
RFC8785_NUMBERS = {
    "0000000000000000": "0",
    "8000000000000000": "0",
    "0000000000000001": "5e-324",
    "8000000000000001": "-5e-324",
    "7fefffffffffffff": "1.7976931348623157e+308",
    "ffefffffffffffff": "-1.7976931348623157e+308",
    "4340000000000000": "9007199254740992",
    "c340000000000000": "-9007199254740992",
    "4430000000000000": "295147905179352830000",
    "44b52d02c7e14af5": "9.999999999999997e+22",
    "44b52d02c7e14af6": "1e+23",
    "44b52d02c7e14af7": "1.0000000000000001e+23",
    "444b1ae4d6e2ef4e": "999999999999999700000",
    "444b1ae4d6e2ef4f": "999999999999999900000",
    "444b1ae4d6e2ef50": "1e+21",
    "3eb0c6f7a0b5ed8c": "9.999999999999997e-7",
    "3eb0c6f7a0b5ed8d": "0.000001",
    "41b3de4355555553": "333333333.3333332",
    "41b3de4355555554": "333333333.33333325",
    "41b3de4355555555": "333333333.3333333",
    "41b3de4355555556": "333333333.3333334",
    "41b3de4355555557": "333333333.33333343",
    "becbf647612f3696": "-0.0000033333333333333333",
    "43143ff3c1cb0959": "1424953923781206.2",
}


def _double(hex_bytes: str) -> float:
    return struct.unpack(">d", bytes.fromhex(hex_bytes))[0]


@pytest.mark.parametrize(("bits", "text"), sorted(RFC8785_NUMBERS.items()))
def test_rfc8785_number_vectors(bits: str, text: str) -> None:
    assert canonical_json_v2(_double(bits)).decode() == text


def test_random_doubles_match_an_independent_implementation() -> None:
    rng = random.Random(8785)
    checked = 0
    while checked < 20000:
        x = _double(rng.getrandbits(64).to_bytes(8, "big").hex())
        if not math.isfinite(x):
            continue
        assert canonical_json_v2(x) == rfc8785.dumps(x), x.hex()
        checked += 1


def test_keys_sort_by_utf16_code_unit_and_strings_escape_as_jcs() -> None:
    # U+1F600 is a surrogate pair (D83D..) in UTF-16, so it sorts before U+E000; by code point
    # it would sort after. Version 1 sorts by code point: the two versions differ exactly here.
    value = {"\U0001f600": 1, "\ue000": 2, "a": [1.0, 2, "x\u2028\x7f\n\x01\"\\"], "b": {"z": None, "y": True}}
    ours = canonical_json_v2(value)
    assert ours == rfc8785.dumps(value)
    assert ours != canonical_json(value)
    assert ours.index("\U0001f600".encode()) < ours.index("\ue000".encode())


def test_values_without_floats_encode_identically_in_both_versions() -> None:
    value = {"serial": "chip-0001", "n": 2**53 - 1, "ok": [True, False, None], "é": {"k": -7}}
    assert canonical_json_v2(value) == canonical_json(value) == rfc8785.dumps(value)


def test_parse_round_trips_and_rejects_other_encodings() -> None:
    value = {"loss": 0.25, "lr": 1e-7, "steps": 3, "w": 1.0}
    data = canonical_json_v2(value)
    assert data == b'{"loss":0.25,"lr":1e-7,"steps":3,"w":1}'
    assert parse_canonical_json_v2(data) == {"loss": 0.25, "lr": 1e-7, "steps": 3, "w": 1}
    for bad, problem in [
        (b'{"w":1.0}', r"RFC 8785"),  # version 1's spelling of the same value
        (b'{"lr":1e-07}', r"RFC 8785"),
        (b'{"b":1,"a":2}', r"RFC 8785"),
        (b'{"a":1,"a":1}', "duplicate key"),
        (b'{"a":NaN}', "not allowed"),
        (b'{"a":9007199254740993}', r"2\*\*53"),
        (b"\xff", "UTF-8"),
        (b'{"a":', "malformed"),
    ]:
        with pytest.raises(FormatError, match=problem):
            parse_canonical_json_v2(bad)


def test_forbidden_values_name_their_location() -> None:
    with pytest.raises(FormatError, match=r"\$\.a\[1\]"):
        canonical_json_v2({"a": [0, float("inf")]})
    with pytest.raises(FormatError, match="2\\*\\*53"):
        canonical_json_v2({"n": 2**60})
