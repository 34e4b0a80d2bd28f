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
from decimal import ROUND_HALF_EVEN, Context, Decimal
from collections.abc import Iterator

import blake3

# ln(u) correctly rounded (docs/formats.md): the platform's math.log may differ in the last bit,
# which moves an arrival by 1 ns about once in 40 000 at f = 0.1/day.
_LN = Context(prec=50, rounding=ROUND_HALF_EVEN)
__all__ = [
    "SCHEDULE_KEY_CONTEXT",
    "arrivals",
    "commitment",
    "epoch_seed",
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


def iter_arrivals(seed: bytes, rate_per_day: float, start_ns: int) -> Iterator[int]:
    """Arrival busy times (ns) after `start_ns`, in order, forever (nothing when the rate is 0)."""
    if rate_per_day <= 0:
        return
    mean_ns = _NS_PER_DAY / rate_per_day
    xof = blake3.blake3(b"arrivals", key=seed)
    t = start_ns
    i = 0
    while True:
        block = xof.digest(length=8 * _BLOCK, seek=8 * i)
        for j in range(_BLOCK):
            draw = int.from_bytes(block[8 * j : 8 * j + 8], "little")
            u = (draw + 1) / 2.0**64
            t += int(-float(_LN.ln(Decimal(u))) * mean_ns) + 1
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
