"""The judge's comparisons of what an executor returned with what the Prover recorded.

Pure functions over tensors the judge holds: shard digests in the layout's memory order, bit
equality, and distances normalised by the segment's update size. Nothing here runs Prover code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from computewatch.crypto.errors import FormatError
from computewatch.crypto.hashing import hash_regions
from computewatch.crypto.regions import shard_digest
from computewatch.formats.layout import ShardLayout

__all__ = ["bits_equal", "distance", "distance_parts", "rank_tensors", "shard_digest_of", "states_equal"]


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.detach().contiguous().reshape(-1).view(torch.uint8), b.detach().contiguous().reshape(-1).view(torch.uint8))


def states_equal(live: Mapping[str, torch.Tensor], recorded: Mapping[str, torch.Tensor]) -> bool:
    return set(live) == set(recorded) and all(bits_equal(live[k], recorded[k]) for k in live)


def rank_tensors(layout: ShardLayout, rank: int, tensors: Mapping[str, torch.Tensor]) -> list[torch.Tensor] | None:
    """The rank's tensors in its chip's memory order, each of its region's shape (None if any is
    missing or has another shape or dtype than the layout says)."""
    out = []
    for reg in layout.chips[rank]:
        t = tensors.get(reg.param)
        spec = layout.spec(reg.param)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(reg.shape):
            return None
        try:
            from computewatch.crypto.hashing import dtype_name

            if dtype_name(t.dtype) != spec.dtype:
                return None
        except FormatError:
            return None
        out.append(t)
    return out


def shard_digest_of(tensors: Sequence[torch.Tensor]) -> str:
    return shard_digest(hash_regions([t.contiguous() for t in tensors])).hex()


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors]) if tensors else torch.zeros(0, dtype=torch.float64)


def distance_parts(replayed: Sequence[torch.Tensor], recorded: Sequence[torch.Tensor], begin: Sequence[torch.Tensor]) -> dict[str, float]:
    """Sums that add up over disjoint shards: |r - c|^2, |c - b|^2, |r - b|^2 and <r - b, c - b>."""
    if len(replayed) != len(recorded) or len(replayed) != len(begin) or any(
        a.shape != b.shape or a.shape != c.shape for a, b, c in zip(replayed, recorded, begin, strict=True)
    ):
        return {"diff2": math.inf, "update2": 0.0, "replayed2": 0.0, "dot": 0.0}
    r, c, b = _flat(replayed), _flat(recorded), _flat(begin)
    upd_r, upd_c = r - b, c - b
    return {
        "diff2": float(torch.dot(r - c, r - c)),
        "update2": float(torch.dot(upd_c, upd_c)),
        "replayed2": float(torch.dot(upd_r, upd_r)),
        "dot": float(torch.dot(upd_r, upd_c)),
    }


def distance(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """L2 of the difference, that L2 relative to the recorded update, and the true cosine of the
    replayed and recorded updates (PoL's cosine divided by the first norm twice)."""
    diff2, update2, replayed2, dot = (sum(p[k] for p in parts) for k in ("diff2", "update2", "replayed2", "dot"))
    l2, update = math.sqrt(diff2), math.sqrt(update2)
    denom = math.sqrt(replayed2) * update
    return {
        "l2": l2,
        "update": update,
        "relative": l2 / update if update > 0 else (0.0 if l2 == 0 else math.inf),
        "cosine": dot / denom if denom > 0 else (1.0 if l2 == 0 else 0.0),
    }
