"""Compile the BLAKE3 kernels for a CUDA architecture without a GPU, and count the SASS
instructions of the chunk kernel's hot loop (private; used by the tests and docs/gpu.md).

Triton ships ptxas and nvdisasm, so the exact machine code a Hopper would run can be
produced and inspected on any machine. BLAKE3 there is bound by the integer ALU pipe (every
XOR and rotation must issue on it), so the ALU count per loop iteration (one compression per
lane) is the number to drive down. ``python -m computewatch.crypto._blake3_aot`` prints it
for each launch shape of the benchmark's sweep.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import subprocess
import sys
import tempfile
from typing import Any
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from computewatch.crypto import _blake3_kernels as _k
from computewatch.crypto.blake3_triton import DEFAULT_CONFIG, KernelConfig

__all__ = ["SWEEPS"]

# Launch shapes to compare: `main` prints each one's hot loop; benchmarks/bench_gpu_hash.py times
# them on a GPU and reports the fastest (all must give the CPU digest).
SWEEPS: dict[str, tuple[KernelConfig, ...]] = {
    "none": (DEFAULT_CONFIG,),
    "small": (DEFAULT_CONFIG,
              KernelConfig(fma_adds=False),
              KernelConfig(quads=False),
              KernelConfig(chunk_tile=32, chunk_warps=1),
              KernelConfig(chunk_tile=128, chunk_warps=2),
              KernelConfig(chunk_tile=128, chunk_warps=4)),
    # At most two chunks per thread: beyond that the state no longer fits in registers.
    "full": tuple(KernelConfig(chunk_tile=t, chunk_warps=w, quads=q, fma_adds=f)
                  for t in (32, 64, 128, 256) for w in (1, 2, 4, 8) if 32 * w <= t <= 64 * w
                  for q in (True, False) for f in (True, False)),
}

# SASS opcodes that issue on the integer ALU pipe (IMAD goes to the FMA pipe).
_ALU = {"SHF", "LOP3", "IADD3", "PRMT", "SEL", "ISETP", "LEA", "VIADD", "PLOP3", "MOV", "IABS"}
_ALIGNED = [["tt.divisibility", 16]]


def _compile(fn: object, signature: dict[str, str], constexprs: dict[str, object], num_warps: int,
             arch: int) -> object:
    pointers = [i for i, ty in enumerate(signature.values()) if ty.startswith("*")]
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs,
                    attrs={(i,): _ALIGNED for i in pointers})
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


def compile_kernels(config: KernelConfig = DEFAULT_CONFIG, arch: int = 90) -> dict[str, Any]:
    """The three kernels compiled for ``sm_{arch}``, keyed by name (``.asm`` holds ptx/cubin)."""
    fma = config.fma_adds
    chunk = _compile(_k._chunk_kernel, {
        "base_ptr": "*u8", "region_word_off": "*i64", "region_cv_base": "*i64", "main_prefix": "*i64",
        "cv_ptr": "*i32", "n_regions": "i32", "search_steps": "i32", "total_main": "i64", "one": "i32",
        "TILE": "constexpr", "ALIGN16": "constexpr", "FMA_ADDS": "constexpr", "QUADS": "constexpr",
    }, {"TILE": config.chunk_tile, "ALIGN16": True, "FMA_ADDS": fma, "QUADS": config.quads},
        config.chunk_warps, arch)
    tail = _compile(_k._tail_kernel, {
        "base_ptr": "*u8", "region_word_off": "*i64", "region_len": "*i64", "region_nchunks": "*i64",
        "region_cv_base": "*i64", "cv_ptr": "*i32", "n_regions": "i32", "max_blocks": "i32", "one": "i32",
        "TILE": "constexpr", "FMA_ADDS": "constexpr",
    }, {"TILE": config.tail_tile, "FMA_ADDS": fma}, 1, arch)
    parent = _compile(_k._parent_kernel, {
        "src_ptr": "*i32", "dst_ptr": "*i32", "src_base": "*i64", "dst_base": "*i64",
        "region_nodes": "*i64", "jobs_prefix": "*i64", "n_regions": "i32", "search_steps": "i32",
        "total_jobs": "i64", "one": "i32", "TILE": "constexpr", "FMA_ADDS": "constexpr",
    }, {"TILE": config.parent_tile, "FMA_ADDS": fma}, config.parent_warps, arch)
    return {"chunk": chunk, "tail": tail, "parent": parent}


def _disassemble(cubin: bytes) -> list[str]:
    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(nvdisasm), "-c", f.name], capture_output=True, text=True,
                              check=True).stdout
    return text.splitlines()


def hot_loop_histogram(cubin: bytes) -> collections.Counter[str]:
    """Opcode counts of the longest backward-branch loop in the kernel (the 16-block loop)."""
    labels: dict[str, int] = {}
    instrs: list[str] = []
    for line in _disassemble(cubin):
        label = re.match(r"^\.(L_x_\d+):", line.strip())
        if label:
            labels[label.group(1)] = len(instrs)
            continue
        found = re.match(r"^\s+/\*[0-9a-f]+\*/\s+(.*)$", line)
        if found:
            instrs.append(found.group(1))
    best = (0, -1)
    for i, ins in enumerate(instrs):
        target = re.search(r"BRA\s+`\(\.(L_x_\d+)\)", ins)
        start = labels.get(target.group(1), i + 1) if target else i + 1
        if start < i and i - start > best[1] - best[0]:  # a backward branch: a loop
            best = (start, i)
    body = instrs[best[0]:best[1] + 1]
    return collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", x).split()[0].split(".")[0] for x in body)


def alu_count(histogram: collections.Counter[str]) -> int:
    return sum(n for op, n in histogram.items() if op in _ALU)


def default_report(arch: int = 90) -> dict[str, object]:
    """Compile the default configuration's kernels; the chunk loop's opcode counts."""
    kernels = compile_kernels(DEFAULT_CONFIG, arch)
    hist = hot_loop_histogram(kernels["chunk"].asm["cubin"])
    return {"compiled": sorted(kernels), "loop": dict(hist), "alu": alu_count(hist),
            "shared_bytes": kernels["chunk"].metadata.shared}


def main() -> None:
    sweep = sys.argv[1] if len(sys.argv) > 1 else "small"
    for config in SWEEPS[sweep]:
        hist = hot_loop_histogram(compile_kernels(config)["chunk"].asm["cubin"])
        print(f"{dataclasses.asdict(config)}: {sum(hist.values())} instructions/iteration, "
              f"ALU {alu_count(hist)}, IMAD {hist['IMAD']}, BAR {hist['BAR']}")


if __name__ == "__main__":
    main()
