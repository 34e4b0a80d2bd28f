"""Which checkpoint-to-checkpoint segments the trusted cluster replays, chosen after the Prover
has committed to its transcript.

Three sources, as in DESIGN.md: every segment that holds a logged snapshot (the chip's shard must
be reproduced from the checkpoint before it), the Q largest updates (PoL's top-Q, from update
norms the cluster computed itself, not the Prover's claim), and `count` segments drawn with the
Verifier's secret seed. The seed is committed (SHA-256, published in the report) and revealed
with the verdict, so anyone can re-derive the choice and nobody could predict it beforehand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from computewatch.crypto.digest import blake3_bytes

__all__ = ["SEED_COMMITMENT_TAG", "Segment", "parse_seed", "seed_commitment", "select_segments"]

SEED_COMMITMENT_TAG = b"computewatch verifier segment seed v1\x00"


@dataclass
class Segment:
    start: int
    end: int | None  # None: the steps after the last checkpoint, up to the last snapshot
    reasons: list[str] = field(default_factory=list)
    stop: int | None = None  # for end=None: the last step to replay to

    def to_json(self) -> dict[str, object]:
        return {"from": self.start, "to": self.end if self.end is not None else self.stop, "reasons": list(self.reasons)}


def parse_seed(text: str) -> bytes:
    """The Verifier's secret: 64 hex digits as given, any other text through BLAKE3."""
    text = text.strip()
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text.lower()):
        return bytes.fromhex(text)
    if not text:
        raise ValueError("the verifier seed is empty")
    return blake3_bytes(text.encode())


def seed_commitment(seed: bytes) -> str:
    return hashlib.sha256(SEED_COMMITMENT_TAG + seed).hexdigest()


def _draw(seed: bytes, run_id: str, candidates: Sequence[int], count: int) -> list[int]:
    """`count` distinct indices from `candidates`, by rejection sampling over a BLAKE3 XOF."""
    pool = list(candidates)
    out: list[int] = []
    counter = 0
    while pool and len(out) < count:
        word = int.from_bytes(blake3_bytes(seed + b"segments\x00" + run_id.encode() + counter.to_bytes(8, "big")), "big")
        counter += 1
        out.append(pool.pop(word % len(pool)))  # 256-bit words: the modulo bias is negligible
    return out


def select_segments(
    run_id: str,
    checkpoint_steps: Sequence[int],
    snapshot_steps: Sequence[int],
    update_norms: Sequence[Sequence[float]],
    seed: bytes,
    *,
    count: int | str = 1,
    top_q: int = 1,
) -> list[Segment]:
    """Segments to replay, in step order, each with the reasons it was chosen."""
    steps = sorted(set(checkpoint_steps))
    pairs = list(zip(steps, steps[1:]))
    chosen: dict[tuple[int, int | None], Segment] = {}

    def pick(key: tuple[int, int | None], reason: str) -> Segment:
        seg = chosen.setdefault(key, Segment(key[0], key[1]))
        if reason not in seg.reasons:
            seg.reasons.append(reason)
        return seg

    for t in sorted(set(snapshot_steps)):
        pair = next(((a, b) for a, b in pairs if a < t <= b), None)
        if pair is not None:
            pick(pair, "snapshot")
        elif steps and t > steps[-1]:
            seg = pick((steps[-1], None), "snapshot")
            seg.stop = max(seg.stop or 0, t)
    if count == "all":
        for pair in pairs:
            pick(pair, "all")
    else:
        ranked = sorted(update_norms, key=lambda row: -row[2])
        for a, b, _ in ranked[:top_q]:
            if (int(a), int(b)) in pairs:
                pick((int(a), int(b)), "top-q")
        rest = [i for i, pair in enumerate(pairs) if pair not in chosen]
        for i in _draw(seed, run_id, rest, int(count)):
            pick(pairs[i], "random")
    return sorted(chosen.values(), key=lambda s: (s.start, s.end if s.end is not None else 1 << 62))
