"""Host-side launch plan for the Triton BLAKE3 kernels (private).

Everything a launch needs is derived from the regions' word offsets and byte lengths alone
and packed into ONE int64 table, uploaded with one copy: per-region arrays for the chunk and
tail kernels, and for every tree level the node counts and the exclusive prefix sum of jobs
per region. Work items (chunks, parent jobs) are numbered across all regions and tiled
without regard to region boundaries; each lane finds its region by binary search in the
prefix, so no per-chunk table is ever built and one launch covers any number of regions.

Chaining values live in two ping-pong buffers: level 0 (chunk CVs) in buffer 0 at
``base0[r] + i``, level L+1 in buffer ``(L+1) % 2``. Buffer 1 only ever holds at most
ceil(n/2) nodes of a region, so it is laid out with its own, half-size bases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__: list[str] = []  # private to blake3_triton

CHUNK_LEN = 1024


@dataclass(frozen=True)
class _Level:
    """One launch of the parent kernel."""

    grid: int
    total: int  # parent jobs at this level, all regions together
    src: int  # which CV buffer the level reads (0 or 1)
    nodes_at: int  # table offset of the per-region node counts at this level
    prefix_at: int  # table offset of the per-region program prefix (n_regions + 1 entries)


@dataclass(frozen=True)
class _Plan:
    """Offsets into the packed table plus the grid sizes of every launch."""

    n_regions: int
    search_steps: int
    table: np.ndarray  # int64, uploaded once
    word_off_at: int
    len_at: int
    nchunks_at: int
    nmain_at: int
    base0_at: int
    base1_at: int
    main_prefix_at: int
    root_row0_at: int
    root_row1_at: int
    root_parity_at: int
    chunk_grid: int
    total_main: int
    tail_grid: int
    tail_blocks: int
    levels: tuple[_Level, ...]
    buf0_rows: int
    buf1_rows: int


def _prefix(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -(-a // b)


def build_plan(word_off: np.ndarray, lengths: np.ndarray, *, chunk_tile: int, tail_tile: int,
               parent_tile: int) -> _Plan:
    """Plan the launches hashing regions at ``word_off`` (int32 words from the base pointer)
    of ``lengths`` bytes."""
    word_off = np.asarray(word_off, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n_regions = int(lengths.size)
    nchunks = np.maximum(_ceil_div(lengths, CHUNK_LEN), 1)
    nmain = nchunks - 1  # every chunk but the last goes through the fast kernel
    half = _ceil_div(nchunks, 2)
    base0 = _prefix(nchunks)
    base1 = _prefix(half)
    main_prefix = _prefix(nmain)
    total_main = int(main_prefix[-1])
    tail_len = lengths - nmain * CHUNK_LEN
    tail_blocks = int(np.maximum(_ceil_div(tail_len, 64), 1).max()) if n_regions else 0

    parts: list[np.ndarray] = []

    def put(arr: np.ndarray) -> int:
        at = sum(p.size for p in parts)
        parts.append(np.asarray(arr, dtype=np.int64))
        return at

    word_off_at = put(word_off)
    len_at = put(lengths)
    nchunks_at = put(nchunks)
    nmain_at = put(nmain)
    base0_at = put(base0[:-1])
    base1_at = put(base1[:-1])
    main_prefix_at = put(main_prefix)

    levels: list[_Level] = []
    nodes = nchunks.copy()
    depth = np.zeros(n_regions, dtype=np.int64)
    while n_regions and int(nodes.max()) > 1:
        merging = nodes >= 2
        jobs = np.where(merging, (nodes + 1) // 2, 0)
        prefix = _prefix(jobs)
        total = int(prefix[-1])
        levels.append(_Level(grid=-(-total // parent_tile), total=total, src=len(levels) % 2,
                             nodes_at=put(nodes), prefix_at=put(prefix)))
        depth += merging
        nodes = np.where(merging, jobs, nodes)

    # Where each region's root ends up: buffer depth % 2, at that buffer's base for the region.
    parity = depth % 2
    root_row0_at = put(np.where(parity == 0, base0[:-1], 0))
    root_row1_at = put(np.where(parity == 1, base1[:-1], 0))
    root_parity_at = put(parity)
    table = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return _Plan(
        n_regions=n_regions, search_steps=max(n_regions - 1, 0).bit_length(), table=table,
        word_off_at=word_off_at, len_at=len_at, nchunks_at=nchunks_at, nmain_at=nmain_at,
        base0_at=base0_at, base1_at=base1_at, main_prefix_at=main_prefix_at,
        root_row0_at=root_row0_at, root_row1_at=root_row1_at, root_parity_at=root_parity_at,
        chunk_grid=-(-total_main // chunk_tile), total_main=total_main,
        tail_grid=-(-n_regions // tail_tile), tail_blocks=tail_blocks,
        levels=tuple(levels), buf0_rows=int(base0[-1]) + 1, buf1_rows=int(base1[-1]) + 1,
    )
