"""The snapshot schedule: Poisson arrivals in busy time from a keyed CSPRNG, per epoch.

Pure functions shared by the chip (which draws the schedule) and any auditor (which redraws it
from the revealed seed). The paper's per-clock-cycle Bernoulli trigger aggregates to a Poisson
process of rate f per day; here the gaps between arrivals are drawn directly (inversion of the
exponential distribution), which is the same process without a draw per cycle.

- schedule key  = BLAKE3 derive_key("computewatch 2026 chip snapshot schedule v1", device secret)
- epoch seed    = BLAKE3 keyed(schedule key, b"epoch" || u64be(epoch))
- commitment    = SHA-256(b"computewatch chip schedule commitment v1" || 0x00 || seed)
- draw i        = u64le(BLAKE3 keyed(seed, b"arrivals") XOF bytes [8i, 8i+8))
- u_i           = (draw_i + 1) / 2**64 (IEEE-754 double, round to nearest): u in (0, 1]
- gap_i (ns)    = floor(-ln(u_i) * (86400e9 / f)) + 1 (a correctly rounded ln; >= 1 ns)
- arrival_i     = epoch start busy ns + gap_0 + ... + gap_i; the epoch holds those in (start, end].
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Context, Decimal

import blake3

# ln(u) correctly rounded (docs/formats.md): the platform's math.log may differ in the last bit,
# which moves an arrival by 1 ns about once in 40 000 at f = 0.1/day.
_LN = Context(prec=50, rounding=ROUND_HALF_EVEN)
# The platform log is within about half an ulp of ln(u) (glibc, musl, macOS: at most 1 ulp), so
# the correctly rounded value lies within _WINDOW ulps of it. The gap is monotone in ln(u); when
# both ends of the window give the same gap, that is the gap of the correctly rounded ln too,
# and the 50-digit logarithm is needed only for the draws (about 1 in 300 at f = 48/day) whose
# window straddles an integer nanosecond.
_WINDOW = 4
__all__ = [
    "SCHEDULE_KEY_CONTEXT",
    "arrivals",
    "commitment",
    "epoch_seed",
    "gap_ns",
    "iter_arrivals",
    "schedule_key",
]

SCHEDULE_KEY_CONTEXT = "computewatch 2026 chip snapshot schedule v1"
_COMMIT_PREFIX = b"computewatch chip schedule commitment v1\x00"
_NS_PER_DAY = 86_400 * 10**9
_BLOCK = 64  # draws fetched per XOF call


def schedule_key(device_secret: bytes) -> bytes:
    return blake3.blake3(device_secret, derive_key_context=SCHEDULE_KEY_CONTEXT).digest()


def epoch_seed(key: bytes, epoch: int) -> bytes:
    return blake3.blake3(b"epoch" + int(epoch).to_bytes(8, "big"), key=key).digest()


def commitment(seed: bytes) -> bytes:
    return hashlib.sha256(_COMMIT_PREFIX + seed).digest()


def _slow_gap(u: float, mean_ns: float) -> int:
    return int(-float(_LN.ln(Decimal(u))) * mean_ns) + 1


def gap_ns(u: float, mean_ns: float) -> int:
    """floor(-ln(u) * mean_ns) + 1 with ln(u) correctly rounded (docs/formats.md), u in (0, 1]."""
    y = math.log(u)
    w = _WINDOW * math.ulp(y)
    hi = y + w
    if hi < 0.0:
        g = int(-hi * mean_ns)
        if g == int(-(y - w) * mean_ns):
            return g + 1
    return _slow_gap(u, mean_ns)


def _platform_log_is_close() -> bool:
    """Self-check of the platform log on fixed draws across (0, 1]: within 1 ulp of the correctly
    rounded value, else every gap takes the exact (slow) path."""
    for k in range(1, 257):
        u = float((k * 0x9E3779B97F4A7C15) % 2**64 + 1) / 2.0**64
        exact = float(_LN.ln(Decimal(u)))
        if abs(math.log(u) - exact) > math.ulp(exact):
            return False
    return True


_fast_log: bool | None = None


def iter_arrivals(seed: bytes, rate_per_day: float, start_ns: int) -> Iterator[int]:
    """Arrival busy times (ns) after `start_ns`, in order, forever (nothing when the rate is 0)."""
    if rate_per_day <= 0:
        return
    global _fast_log
    if _fast_log is None:
        _fast_log = _platform_log_is_close()
    gap = gap_ns if _fast_log else _slow_gap
    mean_ns = _NS_PER_DAY / rate_per_day
    xof = blake3.blake3(b"arrivals", key=seed)
    t = start_ns
    i = 0
    while True:
        block = xof.digest(length=8 * _BLOCK, seek=8 * i)
        for j in range(_BLOCK):
            draw = int.from_bytes(block[8 * j : 8 * j + 8], "little")
            t += gap((draw + 1) / 2.0**64, mean_ns)
            yield t
        i += _BLOCK


def arrivals(seed: bytes, rate_per_day: float, start_ns: int, end_ns: int) -> list[int]:
    """The epoch's arrivals in (start_ns, end_ns]."""
    out: list[int] = []
    for t in iter_arrivals(seed, rate_per_day, start_ns):
        if t > end_ns:
            break
        out.append(t)
    return out
