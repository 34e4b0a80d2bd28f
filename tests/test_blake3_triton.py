"""The Triton BLAKE3 kernels, checked on the CPU by Triton's interpreter.

Triton decides at import time whether ``@triton.jit`` compiles or interprets, so the kernels
run in a subprocess started with TRITON_INTERPRET=1 (this process may already hold compiled
ones). The subprocess hashes every case below in one go and prints the digests; the tests
compare them with the ``blake3`` package and with the official BLAKE3 test vectors. The
interpreter executes the same kernel source the GPU compiles, tile for tile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import numpy as np
import pytest
import torch

from computewatch.crypto import blake3_triton
from computewatch.crypto._blake3_plan import build_plan
from computewatch.crypto.blake3_triton import KernelConfig

_VECTORS = Path(__file__).parent / "vectors" / "blake3" / "test_vectors.json"
# Small tiles: several programs per launch, tiles that straddle region boundaries; and the
# other message-load mode (a [tile, 16] tile split through shared memory on the GPU).
_SMALL = {"chunk_tile": 64, "tail_tile": 64, "parent_tile": 16, "chunk_warps": 1, "quads": False}
_WIDE = {"chunk_tile": 1024, "tail_tile": 2, "parent_tile": 512}
# Additions as plain adds (IADD3 on the GPU) instead of multiply-adds by a run-time one.
_PLAIN_ADDS = {"chunk_tile": 256, "tail_tile": 64, "parent_tile": 128, "fma_adds": False}


def _pattern(n: int) -> np.ndarray:
    """The official vectors' input: byte i is i % 251."""
    return (np.arange(n) % 251).astype(np.uint8)


@dataclass(frozen=True)
class _Case:
    """Regions of one flat buffer, hashed by one ``blake3_flat`` call."""

    buffer: np.ndarray
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]
    config: dict

    def expected(self) -> list[str]:
        return [blake3.blake3(self.buffer[o:o + n].tobytes()).hexdigest()
                for o, n in zip(self.offsets, self.lengths, strict=True)]


def _packed(chunks: list[np.ndarray], gaps: list[int], config: dict) -> _Case:
    """Lay ``chunks`` out in one buffer, ``gaps[i]`` filler bytes before chunk i."""
    rng = np.random.default_rng(7)
    parts, offsets, pos = [], [], 0
    for data, gap in zip(chunks, gaps, strict=True):
        parts.append(rng.integers(0, 256, gap, dtype=np.uint8))
        offsets.append(pos + gap)
        parts.append(data)
        pos += gap + data.size
    parts.append(rng.integers(0, 256, 5, dtype=np.uint8))  # trailing bytes nobody hashes
    return _Case(np.concatenate(parts), tuple(offsets), tuple(c.size for c in chunks), config)


def _flat_cases() -> dict[str, _Case]:
    rng = np.random.default_rng(2023)
    cases: dict[str, _Case] = {}
    # One region per call, through the default launch shape (a lone region is the fast path).
    for n in (0, 1, 63, 64, 1025):
        cases[f"single-{n}"] = _Case(_pattern(n), (0,), (n,), {})
    cases["single-1000-chunks"] = _Case(rng.integers(0, 256, 1000 * 1024, dtype=np.uint8), (0,),
                                        (1000 * 1024,), _WIDE)
    # The sizes the issue names plus odd ones, at offsets that are not all word-aligned.
    sizes = [0, 1, 63, 64, 1023, 1024, 1025, 2048, 3 * 1024, 3, 5, 127, 999, 1537, 4097, 9001]
    cases["sizes-unaligned"] = _packed([rng.integers(0, 256, n, dtype=np.uint8) for n in sizes],
                                       [i % 4 + 4 * (i % 3) for i in range(len(sizes))], {})
    vector_lengths = [c["input_len"] for c in json.loads(_VECTORS.read_text())["cases"]]
    cases["official-vectors"] = _packed([_pattern(n) for n in vector_lengths],
                                        [(-n) % 16 for n in [0, *vector_lengths[:-1]]],
                                        _PLAIN_ADDS)
    # The top bit set in every word (and all ones): a rotation done as an arithmetic shift on
    # signed words would smear it; two chunks and a partial word, so every kernel sees it.
    top = np.full(2 * 1024 + 7, 0xFF, dtype=np.uint8)
    top[3::8] = 0x80
    cases["top-bit-words"] = _Case(top, (0, 4), (top.size, top.size - 4), {})
    # 100 small regions in one call.
    small = [int(n) for n in rng.integers(0, 2100, 100)]
    small[:4] = [0, 1024, 2048, 1]
    cases["many-small"] = _packed([rng.integers(0, 256, n, dtype=np.uint8) for n in small],
                                  [(-n) % 4 for n in [0, *small[:-1]]], _SMALL)
    return cases


# Regions far into one buffer: byte offsets past 2**31 and 2**32, word offsets past 2**31 (a
# region 8 GiB in), where any 32-bit offset arithmetic in the kernels would wrap. The buffer is
# 8 GiB of address space, but only the pages of these regions are ever touched.
_FAR = (((1 << 33) + 16, 3 * 1024 + 5), ((1 << 31) - 512, 2048 + 7), ((1 << 32) + 4, 9))


def _far_region_bytes() -> list[np.ndarray]:
    rng = np.random.default_rng(31)
    return [rng.integers(0, 256, n, dtype=np.uint8) for _, n in _FAR]


def _far_offsets_digests() -> list[str] | None:
    """Hash the far regions in place (None when this machine will not map 8 GiB)."""
    from computewatch.crypto.blake3_triton import blake3_flat

    try:
        far = torch.empty(_FAR[0][0] + 8192, dtype=torch.uint8)
    except (RuntimeError, MemoryError):
        return None
    for (offset, n), data in zip(_FAR, _far_region_bytes(), strict=True):
        far[offset:offset + n] = torch.from_numpy(data)
    digests = blake3_flat(far, [o for o, _ in _FAR], [n for _, n in _FAR])
    del far
    return [d.hex() for d in digests]


def _tensor_case() -> list[torch.Tensor]:
    """Tensors of several dtypes and layouts for ``blake3_regions``."""
    g = torch.Generator().manual_seed(5)
    return [
        torch.randn(3, 5, generator=g),
        torch.randn(1000, generator=g).to(torch.bfloat16),
        torch.arange(300, dtype=torch.int64) * 7919,
        torch.tensor([True, False, True, True, False, False, True]),
        torch.empty(0),
        torch.tensor(2.5, dtype=torch.float64),
        torch.randn(40, 30, generator=g).t(),  # non-contiguous: hashed in C order
    ]


def _shared_storage_case() -> list[torch.Tensor]:
    """Views into one storage: hashed in place from word offsets computed from data_ptr()
    differences, the arithmetic the CUDA path uses for separate allocations."""
    big = torch.arange(4096, dtype=torch.float32) * 0.5
    return [big[3:1500], big[1500:1500], big[2000:2600].view(300, 2), big[2600:2700].view(torch.int64),
            big[4000:4096].view(torch.bfloat16)[2:150], big[5:6]]


def _tensor_bytes(t: torch.Tensor) -> bytes:
    flat = t.contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def _worker() -> None:
    """Runs in the interpreted subprocess: hash every case, print digests as JSON."""
    from computewatch.crypto.blake3_triton import (
        blake3_flat,
        blake3_regions,
        interpreted,
    )

    assert interpreted(), "TRITON_INTERPRET=1 must be set before Triton is imported"
    out: dict[str, list[str]] = {}
    start = time.perf_counter()
    for name, case in _flat_cases().items():
        buffer = torch.from_numpy(case.buffer.copy())
        digests = blake3_flat(buffer, case.offsets, case.lengths, config=KernelConfig(**case.config))
        out[name] = [d.hex() for d in digests]
    out["regions-api"] = [d.hex() for d in blake3_regions(_tensor_case(), config=KernelConfig(**_SMALL))]
    packed = blake3_triton._hash_packed
    blake3_triton._hash_packed = None  # views of one storage must be hashed in place, not packed
    out["regions-shared"] = [d.hex() for d in blake3_regions(_shared_storage_case())]
    blake3_triton._hash_packed = packed
    out["far-offsets"] = _far_offsets_digests()
    out["_seconds"] = [f"{time.perf_counter() - start:.1f}"]
    print(json.dumps(out))


def _python(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _json_result(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def _workers() -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Both subprocesses start together (they take a core each): the interpreted kernels, and
    the compilation for sm_90 (with TRITON_INTERPRET unset, whatever this process has)."""
    plain = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = {
        "interpreted": _python(f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                               "import test_blake3_triton as t; t._worker()",
                               dict(plain, TRITON_INTERPRET="1")),
        "compiled": _python("import json; from computewatch.crypto._blake3_aot import default_report; "
                            "print(json.dumps(default_report()))", plain),
    }
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def interpreted_digests(_workers: dict[str, subprocess.Popen[str]]) -> dict[str, list[str]]:
    return _json_result(_workers["interpreted"])


@pytest.fixture(scope="module")
def hopper_report(_workers: dict[str, subprocess.Popen[str]]) -> dict:
    return _json_result(_workers["compiled"])


@pytest.mark.parametrize("name", list(_flat_cases()))
def test_interpreted_kernel_matches_blake3(interpreted_digests: dict[str, list[str]], name: str) -> None:
    assert interpreted_digests[name] == _flat_cases()[name].expected()


def test_interpreted_kernel_matches_official_vectors(interpreted_digests: dict[str, list[str]]) -> None:
    official = [c["hash"][:64] for c in json.loads(_VECTORS.read_text())["cases"]]
    assert len(official) == 35
    assert interpreted_digests["official-vectors"] == official


@pytest.mark.parametrize(("name", "make"), [("regions-api", _tensor_case),
                                            ("regions-shared", _shared_storage_case)])
def test_blake3_regions_any_dtype_and_layout(interpreted_digests: dict[str, list[str]], name: str,
                                             make: object) -> None:
    expected = [blake3.blake3(_tensor_bytes(t)).hexdigest() for t in make()]
    assert interpreted_digests[name] == expected
    # Distinct inputs, distinct digests: the regions did not bleed into one another.
    assert len(set(expected)) == len(expected)


def test_interpreted_kernel_offsets_beyond_32_bits(interpreted_digests: dict[str, list[str]]) -> None:
    if interpreted_digests["far-offsets"] is None:
        pytest.skip("this machine would not map an 8 GiB buffer")
    assert interpreted_digests["far-offsets"] == [blake3.blake3(d.tobytes()).hexdigest()
                                                  for d in _far_region_bytes()]


def test_word_offsets_from_data_pointers() -> None:
    big = torch.zeros(64, dtype=torch.float32)
    views = [big[4:8].view(torch.uint8), big[0:0].view(torch.uint8), big[9:20].view(torch.uint8)]
    base = big.data_ptr()
    assert blake3_triton._word_offsets(views, base).tolist() == [4, 0, 9]
    with pytest.raises(ValueError, match="32-bit word"):
        blake3_triton._word_offsets([big.view(torch.uint8)[2:6]], base)
    with pytest.raises(ValueError, match="32-bit word"):
        blake3_triton._word_offsets(views, base + 32)


def test_kernels_compile_for_hopper_with_a_lean_hot_loop(hopper_report: dict) -> None:
    """The compiled (not interpreted) path, down to SASS for sm_90, without a GPU: Triton
    ships ptxas. One compression per lane per iteration needs 224 rotations (one funnel
    shift each) and 232 XORs on the ALU pipe; the additions must have moved to the FMA pipe
    (IMAD), and the message split must not go through shared memory."""
    report = hopper_report
    assert report["compiled"] == ["chunk", "parent", "tail"]
    loop = report["loop"]
    assert loop["SHF"] + loop.get("PRMT", 0) <= 224  # one instruction per rotation
    assert loop.get("IADD3", 0) <= 4  # three-input adds are IMADs now
    assert loop["IMAD"] >= 224
    assert report["alu"] <= 480  # the floor is 456: rotations and XORs
    assert loop.get("BAR", 0) == 0 and report["shared_bytes"] == 0
    assert loop["LDG"] == 4  # four 16-byte loads per lane per block


# --- host-side logic, no kernel involved ------------------------------------------------------

def test_plan_tree_depth_and_root_buffer() -> None:
    lengths = np.array([0, 1024, 1025, 2048, 3 * 1024, 1000 * 1024, 5 * 1024 + 1])
    plan = build_plan(np.zeros(lengths.size, dtype=np.int64), lengths, chunk_tile=64, tail_tile=32,
                      parent_tile=64)
    nchunks = [1, 1, 2, 2, 3, 1000, 6]
    depth = [int(np.ceil(np.log2(n))) for n in nchunks]  # left-complete tree height
    assert len(plan.levels) == max(depth) == 10
    parity = plan.table[plan.root_parity_at:plan.root_parity_at + lengths.size]
    assert parity.tolist() == [d % 2 for d in depth]
    assert plan.total_main == sum(n - 1 for n in nchunks)
    assert plan.tail_blocks == 16  # a full last chunk has 16 blocks
    # Level 0 merges pairs; an odd count carries its last node (3 chunks -> 2 jobs).
    first = plan.levels[0]
    nodes = plan.table[first.nodes_at:first.nodes_at + lengths.size].tolist()
    assert nodes == nchunks
    assert first.total == sum((n + 1) // 2 for n in nchunks if n >= 2)


def test_plan_search_steps_cover_regions() -> None:
    for n_regions, steps in ((1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (1024, 10), (1025, 11)):
        plan = build_plan(np.zeros(n_regions, dtype=np.int64), np.full(n_regions, 10), chunk_tile=64,
                          tail_tile=32, parent_tile=64)
        assert plan.search_steps == steps
        assert 2 ** plan.search_steps >= n_regions


def test_interpreted_cases_cover_every_kernel_mode() -> None:
    configs = [KernelConfig(**c.config) for c in _flat_cases().values()] + [KernelConfig(**_SMALL)]
    assert {c.quads for c in configs} == {True, False}
    assert {c.fma_adds for c in configs} == {True, False}


def test_kernel_config_rejects_non_power_of_two() -> None:
    with pytest.raises(ValueError, match="chunk_tile"):
        KernelConfig(chunk_tile=48)
    with pytest.raises(ValueError, match="parent_tile"):
        KernelConfig(parent_tile=1)


def test_cpu_tensors_without_interpreter_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blake3_triton, "interpreted", lambda: False)
    with pytest.raises(blake3_triton.GpuHashError, match="CUDA tensors"):
        blake3_triton.blake3_regions([torch.zeros(4)])
    with pytest.raises(blake3_triton.GpuHashError, match="CUDA tensors"):
        blake3_triton.blake3_flat(torch.zeros(4, dtype=torch.uint8), [0], [4])


def test_flat_rejects_bad_arguments() -> None:
    buf = torch.zeros(100, dtype=torch.uint8)
    with pytest.raises(ValueError, match="outside the buffer"):
        blake3_triton.blake3_flat(buf, [90], [11])
    with pytest.raises(ValueError, match="outside the buffer"):
        blake3_triton.blake3_flat(buf, [-1], [1])
    with pytest.raises(ValueError, match="uint8"):
        blake3_triton.blake3_flat(torch.zeros(4), [0], [4])
    with pytest.raises(ValueError, match="lengths"):
        blake3_triton.blake3_flat(buf, [0, 1], [1])
    with pytest.raises(ValueError, match="one device"):
        blake3_triton.blake3_regions([torch.zeros(1), torch.zeros(1, device="meta")])
    assert blake3_triton.blake3_regions([]) == []
