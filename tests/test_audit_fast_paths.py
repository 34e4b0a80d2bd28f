"""The chip-log audit's fast paths give exactly what the careful paths give (issue 24): canonical
JSON checked with one parse and one encode, signed bytes cut from the line, the shard digest
from the parsed regions, schedule gaps without a 50-digit logarithm unless a draw needs it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from computewatch.crypto import canonical as C
from computewatch.crypto.errors import FormatError
from computewatch.crypto.hashing import Region, shard_digest
from computewatch.formats import schedule as S
from computewatch.formats.chip_entry import (
    entry_signing_input,
    entry_signing_input_from_line,
    parse_entry_line,
    split_log,
)

# Log version 1: every entry signed (the signing-input cut is checked on each).
_LOG = Path(__file__).resolve().parent / "vectors" / "computewatch" / "chip-log-v1" / "chip.log"


def _careful(raw: bytes) -> tuple[str, object]:
    try:
        return "ok", C._parse_careful(raw)
    except FormatError as exc:
        return "error", str(exc)


def _fast(raw: bytes) -> tuple[str, object]:
    try:
        return "ok", C.parse_canonical_json(raw)
    except FormatError as exc:
        return "error", str(exc)


def _mutations(raw: bytes, rng: random.Random) -> list[bytes]:
    out = [raw, raw + b" ", b" " + raw, raw.replace(b":", b": ", 1), raw.replace(b",", b", ", 1)]
    for _ in range(12):
        i = rng.randrange(len(raw) + 1)
        out.append(raw[:i] + bytes([rng.choice(b'0123456789e.-"\\,:{}[]a\x00 ')]) + raw[i:])
        if i < len(raw):
            out.append(raw[:i] + raw[i + 1 :])
    return out


def test_fast_canonical_parse_agrees_with_the_careful_parse() -> None:
    rng = random.Random(24)
    samples = [
        b'{"a":1,"a":1}', b'{"b":1,"a":2}', b"[9007199254740991]", b"[9007199254740992]", b"[-9007199254740992]",
        b"[1e400]", b"[NaN]", b"[Infinity]", b"[-0]", b"[-0.0]", b"[1.0]", b"[1.00]", b"[1E5]", b'["\\ud800"]',
        b'["\\u00e9"]', '["é"]'.encode(), b'["\\/"]', b'["\\u001f"]', b'["\\u001F"]', b"[0.1]", b"[1e-05]", b"[1e-5]",
        b'{"\xf0\x9f\x98\x80":1,"\xef\xbf\xbf":2}', b'{"\xef\xbf\xbf":2,"\xf0\x9f\x98\x80":1}', b"[" * 3000 + b"]" * 3000,
        b"\xff", b"", b"[]", b"{}", b"true", b"null", b"[01]", b"[1.5e+300]",
    ]
    lines, _ = split_log(_LOG.read_bytes())
    for raw in [*samples, *lines[:8]]:
        for m in _mutations(raw, rng) if raw else [raw]:
            assert _fast(m) == _careful(m), m[:80]
    # Accepted values are identical objects, including the int/float distinction.
    for value in ([1, 1.0, -3, 2**53 - 1, 0.1, "é", None, True], {"z": {"b": [1e-05]}, "a": ""}):
        raw = C.canonical_json(value)
        out = C.parse_canonical_json(raw)
        assert out == value and json.dumps(out) == json.dumps(json.loads(raw))
        assert [type(x) for x in out] == [type(x) for x in value] if isinstance(value, list) else True


def test_signed_bytes_cut_from_the_line_are_the_encoded_ones() -> None:
    lines, _ = split_log(_LOG.read_bytes())
    assert len(lines) > 30
    for line in lines:
        e = parse_entry_line(line)
        assert entry_signing_input_from_line(line, e) == entry_signing_input(e)
    # A line whose ending is not the canonical one falls back to encoding the entry.
    e = parse_entry_line(lines[0])
    odd = lines[0][: -len(b"1}")] + b"1.0}"
    assert entry_signing_input_from_line(odd, e) == entry_signing_input(e)
    e2 = dict(e, sig="not-the-line's")
    assert entry_signing_input_from_line(lines[0], e2) == entry_signing_input(e2)


def test_shard_digest_from_the_parsed_regions_is_shard_digest() -> None:
    lines, _ = split_log(_LOG.read_bytes())
    seen = 0
    for line in lines:
        e = parse_entry_line(line)
        if e["kind"] != "snapshot":
            continue
        raw = e["body"]["regions"]
        regions = [Region.from_json(r) for r in raw]
        doc = {"v": 1, "hash": "blake3-256", "regions": raw}
        from computewatch.crypto.hashing import blake3_bytes

        assert blake3_bytes(C.encode_parsed(doc)) == shard_digest(regions)
        assert shard_digest(regions).hex() == e["body"]["shard_digest"]
        seen += 1
    assert seen >= 2


@pytest.mark.parametrize("rate", [86_400.0, 48.0, 0.1, 1e-4])
def test_schedule_gap_equals_the_correctly_rounded_gap_over_many_draws(rate: float) -> None:
    rng = random.Random(int(rate * 1000) + 7)
    mean = S._NS_PER_DAY / rate
    draws = [0, 1, 2**53 - 1, 2**53, 2**63, 2**64 - 2**10, 2**64 - 2, 2**64 - 1]
    draws += [rng.getrandbits(64) for _ in range(6000)]
    draws += [rng.getrandbits(rng.randrange(1, 64)) for _ in range(500)]  # small u: long gaps
    slow = 0
    for d in draws:
        u = (d + 1) / 2.0**64
        exact = S._slow_gap(u, mean)
        assert S.gap_ns(u, mean) == exact, (rate, d)
        y = S.math.log(u)
        w = S._WINDOW * S.math.ulp(y)
        slow += not (y + w < 0 and int(-(y + w) * mean) == int(-(y - w) * mean))
    # Both branches ran: the window check is what decides, not a path always (or never) taken.
    assert 0 < slow < len(draws) or rate < 1e-3
    assert slow > 0


def test_arrivals_match_the_decimal_reference() -> None:
    seed = bytes(range(32))
    assert S._platform_log_is_close()
    for rate in (48.0, 2.5):
        got = S.arrivals(seed, rate, 10**9, 10**9 + 3 * 86_400 * 10**9)
        S._fast_log = False
        try:
            ref = S.arrivals(seed, rate, 10**9, 10**9 + 3 * 86_400 * 10**9)
        finally:
            S._fast_log = None
        assert got == ref and len(got) >= 3
