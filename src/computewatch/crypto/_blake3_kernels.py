"""Triton kernels for standard BLAKE3-256 over regions of device memory.

Private to :mod:`computewatch.crypto.blake3_triton`, which plans the launches. Three kernels:

* ``_chunk_kernel``: every complete chunk that is not the last chunk of its region. Chunks of
  all regions are numbered together and one program takes ``TILE`` consecutive ones (a lane
  each, finding its region by binary search); the state words are ``uint32`` vectors of length
  ``TILE`` and the 16 blocks run in a loop with no data-dependent branch (a region's partial
  last chunk never reaches this kernel).
* ``_tail_kernel``: the last chunk of every region (partial or full, empty input included),
  one lane per region, with per-lane block counts, masks and the ROOT flag for one-chunk regions.
* ``_parent_kernel``: one level of the tree for all regions at once (adjacent pairs merged, an
  odd last node carried up unchanged, ROOT on a region's final merge).

The compression is written from the BLAKE3 specification: 7 rounds of the G function over a
4x4 state, the fixed message permutation applied between rounds (here resolved at trace time:
each round is called with its message words already in permuted order, so it costs nothing).

Flags of the compression (specification, section 2.1): CHUNK_START 1, CHUNK_END 2, PARENT 4,
ROOT 8. Why the code looks the way it does (BLAKE3 on Hopper is bound by integer instruction
issue, not memory; docs/gpu.md has the SASS counts behind each point):
* each lane reads its 64-byte message block with four 16-byte loads (``QUADS``), so the 16
  words are split inside the thread's own registers; a ``[TILE, 16]`` tile (the other mode)
  is coalesced across lanes but its split costs a shared-memory round trip and barriers;
* rotations are ``(x >> n) | (x << (32 - n))`` on ``uint32``: one funnel shift each;
* XORs and rotations can only run on the ALU pipe, so with ``FMA_ADDS`` the additions
  ``a + b + m`` are issued as multiply-adds by a run-time 1 (FMA pipe) instead of ``IADD3``;
* flags and the block length are scalars of the loop counter (uniform registers), and lanes
  past the end redo the last chunk instead of masking loads, so the hot loop has no
  data-dependent branch or predicate.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__: list[str] = []  # private: the launch planning lives in blake3_triton


@triton.jit
def _g(a, b, c, d, mx, my, one, FMA_ADDS: tl.constexpr):
    """The BLAKE3 quarter-round G on one column or diagonal.

    Additions wrap modulo 2**32 by definition, hence ``sanitize_overflow=False`` (the
    interpreter would otherwise check every one; compiled code never does outside debug).
    Rotations are written inline as ``(x >> n) | (x << (32 - n))``: LLVM turns each into one
    funnel shift (``SHF.L.W``), and the interpreter pays for every nested jit call.
    ``FMA_ADDS`` writes ``a + b + m`` as ``(a * one + b) * one + m`` with ``one`` == 1 known
    only at run time: the compiler cannot fold the multiplies away, so both additions issue as
    ``IMAD`` on the FMA pipe instead of one ``IADD3`` on the ALU pipe, which every XOR and
    rotation already saturates (docs/gpu.md). Otherwise ptxas fuses the sum into ``IADD3``.
    (Written inline: a nested jit call costs the interpreter more than the arithmetic.)"""
    if FMA_ADDS:
        a = tl.add(tl.mul(a, one, sanitize_overflow=False), b, sanitize_overflow=False)
        a = tl.add(tl.mul(a, one, sanitize_overflow=False), mx, sanitize_overflow=False)
    else:
        a = tl.add(tl.add(a, b, sanitize_overflow=False), mx, sanitize_overflow=False)
    d = d ^ a
    d = (d >> 16) | (d << 16)
    c = tl.add(c, d, sanitize_overflow=False)
    b = b ^ c
    b = (b >> 12) | (b << 20)
    if FMA_ADDS:
        a = tl.add(tl.mul(a, one, sanitize_overflow=False), b, sanitize_overflow=False)
        a = tl.add(tl.mul(a, one, sanitize_overflow=False), my, sanitize_overflow=False)
    else:
        a = tl.add(tl.add(a, b, sanitize_overflow=False), my, sanitize_overflow=False)
    d = d ^ a
    d = (d >> 8) | (d << 24)
    c = tl.add(c, d, sanitize_overflow=False)
    b = b ^ c
    b = (b >> 7) | (b << 25)
    return a, b, c, d


@triton.jit
def _round(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15,
           m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15,
           one, FMA_ADDS: tl.constexpr):
    """One round: G on the four columns, then on the four diagonals."""
    v0, v4, v8, v12 = _g(v0, v4, v8, v12, m0, m1, one, FMA_ADDS)
    v1, v5, v9, v13 = _g(v1, v5, v9, v13, m2, m3, one, FMA_ADDS)
    v2, v6, v10, v14 = _g(v2, v6, v10, v14, m4, m5, one, FMA_ADDS)
    v3, v7, v11, v15 = _g(v3, v7, v11, v15, m6, m7, one, FMA_ADDS)
    v0, v5, v10, v15 = _g(v0, v5, v10, v15, m8, m9, one, FMA_ADDS)
    v1, v6, v11, v12 = _g(v1, v6, v11, v12, m10, m11, one, FMA_ADDS)
    v2, v7, v8, v13 = _g(v2, v7, v8, v13, m12, m13, one, FMA_ADDS)
    v3, v4, v9, v14 = _g(v3, v4, v9, v14, m14, m15, one, FMA_ADDS)
    return v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15


@triton.jit
def _compress(h0, h1, h2, h3, h4, h5, h6, h7,
              m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15,
              t_lo, t_hi, block_len, flags, one, FMA_ADDS: tl.constexpr):
    """The compression function, truncated to the 8 words a chaining value (or a
    32-byte root output) needs: ``v[i] ^ v[i + 8]`` for i < 8."""
    zero = h0 * 0  # broadcast scalars to the lane shape and type of the state
    v0, v1, v2, v3, v4, v5, v6, v7 = h0, h1, h2, h3, h4, h5, h6, h7
    v8 = zero + 0x6A09E667
    v9 = zero + 0xBB67AE85
    v10 = zero + 0x3C6EF372
    v11 = zero + 0xA54FF53A
    v12 = zero + t_lo
    v13 = zero + t_hi
    v14 = zero + block_len
    v15 = zero + flags
    # The message permutation of the specification, composed round by round at trace time.
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 = _round(
        v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15,
        m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, one, FMA_ADDS)
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 = _round(
        v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15,
        m2, m6, m3, m10, m7, m0, m4, m13, m1, m11, m12, m5, m9, m14, m15, m8, one, FMA_ADDS)
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 = _round(
        v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15,
        m3, m4, m10, m12, m13, m2, m7, m14, m6, m5, m9, m0, m11, m15, m8, m1, one, FMA_ADDS)
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 = _round(
        v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15,
        m10, m7, m12, m9, m14, m3, m13, m15, m4, m0, m11, m2, m5, m8, m1, m6, one, FMA_ADDS)
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 = _round(
        v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15,
        m12, m13, m9, m11, m15, m10, m14, m8, m7, m2, m5, m3, m0, m1, m6, m4, one, FMA_ADDS)
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 = _round(
        v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15,
        m9, m14, m11, m5, m8, m12, m15, m1, m13, m3, m0, m10, m2, m6, m4, m7, one, FMA_ADDS)
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 = _round(
        v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15,
        m11, m15, m5, m0, m1, m9, m8, m6, m14, m10, m2, m12, m3, m4, m7, m13, one, FMA_ADDS)
    return v0 ^ v8, v1 ^ v9, v2 ^ v10, v3 ^ v11, v4 ^ v12, v5 ^ v13, v6 ^ v14, v7 ^ v15


@triton.jit
def _split16(x, TILE: tl.constexpr):
    """Split a ``[TILE, 16]`` tile into its 16 columns, each a ``[TILE]`` vector.

    ``tl.split`` halves a trailing dimension of size 2, so four reshape/split rounds peel the
    word index bit by bit (lowest bit first)."""
    e, o = tl.split(tl.reshape(x, [TILE, 8, 2]))  # words 2k | 2k+1
    ee, eo = tl.split(tl.reshape(e, [TILE, 4, 2]))  # 4k | 4k+2
    oe, oo = tl.split(tl.reshape(o, [TILE, 4, 2]))  # 4k+1 | 4k+3
    a0, a4 = tl.split(tl.reshape(ee, [TILE, 2, 2]))  # 8k | 8k+4
    a2, a6 = tl.split(tl.reshape(eo, [TILE, 2, 2]))  # 8k+2 | 8k+6
    a1, a5 = tl.split(tl.reshape(oe, [TILE, 2, 2]))  # 8k+1 | 8k+5
    a3, a7 = tl.split(tl.reshape(oo, [TILE, 2, 2]))  # 8k+3 | 8k+7
    m0, m8 = tl.split(a0)
    m4, m12 = tl.split(a4)
    m2, m10 = tl.split(a2)
    m6, m14 = tl.split(a6)
    m1, m9 = tl.split(a1)
    m5, m13 = tl.split(a5)
    m3, m11 = tl.split(a3)
    m7, m15 = tl.split(a7)
    return m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15


@triton.jit
def _split4(x, TILE: tl.constexpr):
    """Split a ``[TILE, 4]`` tile (16 bytes per lane) into its 4 columns."""
    e, o = tl.split(tl.reshape(x, [TILE, 2, 2]))  # words 2k | 2k+1
    w0, w2 = tl.split(e)
    w1, w3 = tl.split(o)
    return w0, w1, w2, w3


@triton.jit
def _load_block(words, row, b, TILE: tl.constexpr, QUADS: tl.constexpr):
    """Message block ``b`` of each lane's chunk as 16 ``[TILE]`` uint32 vectors.

    ``QUADS``: four ``[TILE, 4]`` loads, each lane reading 16 contiguous bytes, so the
    columns are split inside each thread's registers (no shared-memory round trip). Otherwise
    one ``[TILE, 16]`` tile, coalesced across lanes, whose split goes through shared memory."""
    if QUADS:
        q = tl.arange(0, 4)
        base = row[:, None] + b * 16 + q[None, :]
        m0, m1, m2, m3 = _split4(tl.load(words + base).to(tl.uint32, bitcast=True), TILE)
        m4, m5, m6, m7 = _split4(tl.load(words + (base + 4)).to(tl.uint32, bitcast=True), TILE)
        m8, m9, m10, m11 = _split4(tl.load(words + (base + 8)).to(tl.uint32, bitcast=True), TILE)
        m12, m13, m14, m15 = _split4(tl.load(words + (base + 12)).to(tl.uint32, bitcast=True), TILE)
    else:
        cols = tl.arange(0, 16)
        blk = tl.load(words + (row[:, None] + b * 16 + cols[None, :])).to(tl.uint32, bitcast=True)
        m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15 = _split16(blk, TILE)
    return m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15


@triton.jit
def _find_region(prefix_ptr, idx, n_regions, search_steps):
    """The region owning item ``idx`` (a chunk or a parent job; scalar or one per lane): the
    largest r < n_regions with prefix[r] <= idx, ``prefix`` being the exclusive prefix sum of
    the items per region (a region with none repeats its value, so "largest" skips it).

    Searching per lane lets one tile span many regions, so a shard of thousands of small
    tensors still fills every lane; ``search_steps`` = ceil(log2(n_regions)) dependent
    loads, against 16 x 7 rounds of compression per chunk."""
    lo = idx * 0
    hi = lo + n_regions
    for _ in range(search_steps):
        mid = (lo + hi) // 2
        below = tl.load(prefix_ptr + mid) <= idx
        lo = tl.where(below, mid, lo)
        hi = tl.where(below, hi, mid)
    return lo


@triton.jit
def _store_cv(cv_ptr, idx, mask, h0, h1, h2, h3, h4, h5, h6, h7):
    """Store 8-word chaining values at row ``idx`` of an ``[n, 8]`` int32 buffer."""
    row = cv_ptr + idx * 8
    tl.store(row + 0, h0.to(tl.int32, bitcast=True), mask=mask)
    tl.store(row + 1, h1.to(tl.int32, bitcast=True), mask=mask)
    tl.store(row + 2, h2.to(tl.int32, bitcast=True), mask=mask)
    tl.store(row + 3, h3.to(tl.int32, bitcast=True), mask=mask)
    tl.store(row + 4, h4.to(tl.int32, bitcast=True), mask=mask)
    tl.store(row + 5, h5.to(tl.int32, bitcast=True), mask=mask)
    tl.store(row + 6, h6.to(tl.int32, bitcast=True), mask=mask)
    tl.store(row + 7, h7.to(tl.int32, bitcast=True), mask=mask)


@triton.jit
def _iv_vectors(lane):
    """The IV (the SHA-256 initial words) broadcast to the lanes, as the first chaining value."""
    z = (lane * 0).to(tl.uint32)
    return (z + 0x6A09E667, z + 0xBB67AE85, z + 0x3C6EF372, z + 0xA54FF53A,
            z + 0x510E527F, z + 0x9B05688C, z + 0x1F83D9AB, z + 0x5BE0CD19)


@triton.jit(do_not_specialize=["one"])
def _chunk_kernel(base_ptr, region_word_off, region_cv_base, main_prefix, cv_ptr,
                  n_regions, search_steps, total_main, one,
                  TILE: tl.constexpr, ALIGN16: tl.constexpr, FMA_ADDS: tl.constexpr,
                  QUADS: tl.constexpr):
    """Chaining values of the full, non-final chunks: one lane per chunk, 16 blocks in a loop."""
    words = base_ptr.to(tl.pointer_type(tl.int32))
    item = tl.program_id(0).to(tl.int64) * TILE + tl.arange(0, TILE)
    live = item < total_main
    # Lanes past the last chunk redo it instead of masking every load: the hot loop stays
    # predicate-free, only the final store is masked.
    item = tl.minimum(item, total_main - 1)
    r = _find_region(main_prefix, item, n_regions, search_steps)
    chunk = item - tl.load(main_prefix + r)
    row = tl.load(region_word_off + r) + chunk * 256
    if ALIGN16:
        row = tl.multiple_of(row, 4)  # every chunk starts 16-byte aligned: 128-bit loads
    t_lo = (chunk & 0xFFFFFFFF).to(tl.uint32)
    t_hi = (chunk >> 32).to(tl.uint32)
    h0, h1, h2, h3, h4, h5, h6, h7 = _iv_vectors(chunk)
    for b in range(16):
        m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15 = _load_block(
            words, row, b, TILE, QUADS)
        flags = tl.where(b == 0, 1, 0) | tl.where(b == 15, 2, 0)
        h0, h1, h2, h3, h4, h5, h6, h7 = _compress(
            h0, h1, h2, h3, h4, h5, h6, h7,
            m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15,
            t_lo, t_hi, 64, flags, one, FMA_ADDS)
    _store_cv(cv_ptr, tl.load(region_cv_base + r) + chunk, live, h0, h1, h2, h3, h4, h5, h6, h7)


@triton.jit(do_not_specialize=["one"])
def _tail_kernel(base_ptr, region_word_off, region_len, region_nchunks, region_cv_base, cv_ptr,
                 n_regions, max_blocks, one, TILE: tl.constexpr, FMA_ADDS: tl.constexpr):
    """Chaining value (or, for a one-chunk region, the root hash) of each region's last chunk.

    One lane per region; ``max_blocks`` is the most blocks any region's last chunk has (the
    loop stops there, lanes with fewer blocks keep their value). The chunk holds 0..1024
    bytes; whole words are loaded masked, the final 1-3 bytes of an odd length are assembled
    from byte loads, so nothing past the end of a region is ever read, and the zero padding
    of the last block is what BLAKE3 prescribes."""
    words = base_ptr.to(tl.pointer_type(tl.int32))
    nbytes = base_ptr.to(tl.pointer_type(tl.uint8))
    rid = tl.program_id(0) * TILE + tl.arange(0, TILE)
    valid = rid < n_regions
    rid_c = tl.minimum(rid, n_regions - 1)
    length = tl.load(region_len + rid_c)
    nchunks = tl.load(region_nchunks + rid_c)
    last = nchunks - 1
    tail_len = length - last * 1024
    nblocks = tl.maximum((tail_len + 63) // 64, 1)
    row = tl.load(region_word_off + rid_c) + last * 256
    # The partial word (zero when the length is a multiple of 4).
    pw_idx = tail_len // 4
    rem = tail_len % 4
    partial = (tail_len * 0).to(tl.uint32)
    for k in tl.static_range(3):
        byte = tl.load(nbytes + (row + pw_idx) * 4 + k, mask=valid & (k < rem), other=0)
        partial = partial | (byte.to(tl.uint32) << (8 * k))
    cols = tl.arange(0, 16)
    t_lo = (last & 0xFFFFFFFF).to(tl.uint32)
    t_hi = (last >> 32).to(tl.uint32)
    root = tl.where(nchunks == 1, 8, 0)
    h0, h1, h2, h3, h4, h5, h6, h7 = _iv_vectors(rid)
    for b in range(max_blocks):
        widx = b * 16 + cols
        whole = valid[:, None] & ((widx[None, :] * 4 + 4) <= tail_len[:, None])
        blk = tl.load(words + (row[:, None] + widx[None, :]), mask=whole, other=0)
        blk = tl.where(widx[None, :] == pw_idx[:, None], partial[:, None], blk.to(tl.uint32, bitcast=True))
        m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15 = _split16(blk, TILE)
        block_len = tl.minimum(tl.maximum(tail_len - b * 64, 0), 64).to(tl.uint32)
        is_last = b == nblocks - 1
        flags = (tl.where(b == 0, 1, 0) | tl.where(is_last, 2 | root, 0)).to(tl.uint32)
        g0, g1, g2, g3, g4, g5, g6, g7 = _compress(
            h0, h1, h2, h3, h4, h5, h6, h7,
            m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15,
            t_lo, t_hi, block_len, flags, one, FMA_ADDS)
        active = b < nblocks
        h0 = tl.where(active, g0, h0)
        h1 = tl.where(active, g1, h1)
        h2 = tl.where(active, g2, h2)
        h3 = tl.where(active, g3, h3)
        h4 = tl.where(active, g4, h4)
        h5 = tl.where(active, g5, h5)
        h6 = tl.where(active, g6, h6)
        h7 = tl.where(active, g7, h7)
    cv_idx = tl.load(region_cv_base + rid_c) + last
    _store_cv(cv_ptr, cv_idx, valid, h0, h1, h2, h3, h4, h5, h6, h7)


@triton.jit(do_not_specialize=["one"])
def _parent_kernel(src_ptr, dst_ptr, src_base, dst_base, region_nodes, jobs_prefix,
                   n_regions, search_steps, total_jobs, one, TILE: tl.constexpr,
                   FMA_ADDS: tl.constexpr):
    """One tree level for every region: node pair (2j, 2j+1) -> node j of the next level.

    A pair of chaining values is 16 contiguous words, i.e. exactly the parent's message
    block, so it is loaded as one coalesced ``[TILE, 16]`` tile. An odd last node has no
    right sibling and is carried up unchanged (the left-complete tree of the specification);
    the merge that leaves a region with one node is its root and gets the ROOT flag."""
    item = tl.program_id(0).to(tl.int64) * TILE + tl.arange(0, TILE)
    live = item < total_jobs
    item = tl.minimum(item, total_jobs - 1)
    r = _find_region(jobs_prefix, item, n_regions, search_steps)
    job = item - tl.load(jobs_prefix + r)
    nodes = tl.load(region_nodes + r)
    has_right = 2 * job + 1 < nodes
    cols = tl.arange(0, 16)
    row = tl.multiple_of((tl.load(src_base + r) + 2 * job) * 8, 8)
    blk = tl.load(src_ptr + (row[:, None] + cols[None, :]),
                  mask=(cols[None, :] < 8) | has_right[:, None], other=0)
    m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15 = _split16(
        blk.to(tl.uint32, bitcast=True), TILE)
    flags = tl.where(nodes == 2, 4 | 8, 4).to(tl.uint32)
    h0, h1, h2, h3, h4, h5, h6, h7 = _iv_vectors(item)
    g0, g1, g2, g3, g4, g5, g6, g7 = _compress(
        h0, h1, h2, h3, h4, h5, h6, h7,
        m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15,
        0, 0, 64, flags, one, FMA_ADDS)
    _store_cv(dst_ptr, tl.load(dst_base + r) + job, live,
              tl.where(has_right, g0, m0), tl.where(has_right, g1, m1),
              tl.where(has_right, g2, m2), tl.where(has_right, g3, m3),
              tl.where(has_right, g4, m4), tl.where(has_right, g5, m5),
              tl.where(has_right, g6, m6), tl.where(has_right, g7, m7))
