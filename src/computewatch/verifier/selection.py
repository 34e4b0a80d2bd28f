"""Which checkpoint-to-checkpoint segments the trusted cluster replays, chosen after the Prover
has committed to its transcript.

Three sources, as in DESIGN.md: every segment that holds a logged snapshot (the chip's shard must
be reproduced from the checkpoint before it), the Q largest updates among the segments not
already chosen (PoL's top-Q, from update norms the cluster computed itself, not the Prover's
claim; a top-Q pick that only repeats a snapshot segment would add nothing), and `count`
segments drawn with the Verifier's secret seed. The snapshot and top-Q picks are predictable to
the Prover, so only the random draws protect against a forged segment: `count` defaults to the
fewest draws that catch a one-segment forgery with the stated detection target
(`computewatch.analysis.segments`), and `selection_summary` reports the detection the choice
gives. The seed is committed (SHA-256, published in the report) and revealed
with the verdict, so anyone can re-derive the choice and nobody could predict it beforehand.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from computewatch.analysis.segments import DEFAULT_SEGMENT_DETECTION, forgery_detection, segments_for_detection
from computewatch.crypto.digest import blake3_bytes

__all__ = [
    "DEFAULT_SEGMENT_DETECTION",
    "SEED_COMMITMENT_TAG",
    "Segment",
    "parse_seed",
    "seed_commitment",
    "select_segments",
    "selection_summary",
]

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
    count: int | str | None = None,
    top_q: int = 1,
    detection_target: float = DEFAULT_SEGMENT_DETECTION,
) -> list[Segment]:
    """Segments to replay, in step order, each with the reasons it was chosen. `count`: random
    segments besides the snapshot and top-Q ones, "all", or None for the fewest that catch a
    one-segment forgery with probability `detection_target`."""
    steps = sorted(set(checkpoint_steps))
    pairs = list(itertools.pairwise(steps))
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
        # Top-Q among the segments not chosen yet: a pick that lands on a snapshot segment
        # (typically the first, whose early updates are largest) would replay nothing new.
        ranked = [(int(a), int(b)) for a, b, _ in sorted(update_norms, key=lambda row: -row[2])]
        fresh = [pair for pair in dict.fromkeys(ranked) if pair in pairs and pair not in chosen]
        for pair in fresh[:top_q]:
            pick(pair, "top-q")
        rest = [i for i, pair in enumerate(pairs) if pair not in chosen]
        draws = segments_for_detection(len(rest), detection_target) if count is None else int(count)
        for i in _draw(seed, run_id, rest, draws):
            pick(pairs[i], "random")
    return sorted(chosen.values(), key=lambda s: (s.start, s.end if s.end is not None else 1 << 62))


def selection_summary(segments: Sequence[Segment], checkpoint_steps: Sequence[int]) -> dict[str, Any]:
    """What the choice gives against a one-segment forgery: the segments the Prover could
    forge unseen by the deterministic picks (eligible), the random draws among them, and the
    probability one draw replays the forged segment (`analysis.segments.forgery_detection`)."""
    total = max(0, len(set(checkpoint_steps)) - 1)
    fixed = sum(1 for s in segments if s.end is not None and "random" not in s.reasons and "all" not in s.reasons)
    drawn = sum(1 for s in segments if "random" in s.reasons)
    if any("all" in s.reasons for s in segments):
        return {"segments": total, "eligible": 0, "random": 0, "one_segment_forgery_detection": 1.0}
    eligible = max(0, total - fixed)
    return {"segments": total, "eligible": eligible, "random": drawn, "one_segment_forgery_detection": forgery_detection(eligible, min(drawn, eligible))}
