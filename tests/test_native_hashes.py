"""The chip-log extension's hashes, backend by backend (computewatch._native._chiplog, issue 24).

The extension hashes every line twice with SHA-256 (the chain hash, and the RFC 9162 leaf hash of
0x00 || line, read with no copy of the line), every Merkle node (0x01 || l || r), and every
snapshot's shard document with BLAKE3. Each hash has several implementations: SHA-256 by the x86
SHA extensions ("sha-ni"), by hashlib's libcrypto ("libcrypto") or by portable C ("builtin");
the BLAKE3 compression by AVX-512VL ("avx512"), SSE4.1 ("sse4.1") or portable C ("portable").
The module picks the fastest this machine runs; these tests force each one in turn and hold it
to hashlib, to the published BLAKE3 vectors and to the `blake3` package, at every length up to
300 bytes, around every block and chunk boundary, at odd alignments, and through the audit's
read-ahead and the audit itself (which must take the same lines natively and give the same
report whichever backend is in use)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import blake3
import pytest

from computewatch import _native
from computewatch.chip import Chip, audit_log, provision_chips, verify_chip_certificate
from computewatch.chip.exercise import run_steps, small_shard
from computewatch.crypto.merkle import leaf_hash, root_from_leaves
from computewatch.formats import _audit_prescan, schedule
from computewatch.formats.chip_audit import LogVerifier
from computewatch.formats.chip_entry import split_log
from _chips import TEST_SECRET_SEED

VECTORS = Path(__file__).parent / "vectors" / "blake3" / "test_vectors.json"

# Every length up to 300 bytes, and a few either side of each 64-byte block (SHA-256 and the
# BLAKE3 compression) and each 1024-byte chunk (BLAKE3's tree) further out.
LENGTHS = sorted({*range(301), *(b + d for b in range(320, 2200, 64) for d in (-2, -1, 0, 1, 2)),
                  *(c + d for c in (1024, 2048, 3072, 4096, 5120, 8192) for d in (-65, -64, -1, 0, 1, 64, 65))})


# The backends this machine runs, each tested (test_the_fastest_backends_this_machine_has_are_in_use
# holds the lists to the CPU's flags, so a missing one fails there rather than being skipped here).
_BUILT = _native.chiplog()
SHA_BACKENDS = _BUILT.sha256_backends() if _BUILT is not None else ["builtin"]
B3_BACKENDS = _BUILT.blake3_backends() if _BUILT is not None else ["portable"]


@pytest.fixture(scope="module")
def module() -> Iterator[ModuleType]:
    mod = _native.chiplog()
    assert mod is not None
    sha, b3 = mod.sha256_backend(), mod.blake3_backend()
    yield mod
    mod.set_sha256_backend(sha)
    mod.set_blake3_backend(b3)


@contextmanager
def _backends(mod: ModuleType, sha: str | None = None, b3: str | None = None) -> Iterator[None]:
    old = mod.sha256_backend(), mod.blake3_backend()
    try:
        if sha is not None:
            mod.set_sha256_backend(sha)
        if b3 is not None:
            mod.set_blake3_backend(b3)
        yield
    finally:
        mod.set_sha256_backend(old[0])
        mod.set_blake3_backend(old[1])


def _at_odd_offsets(data: bytes) -> Iterator[memoryview]:
    """The same bytes starting 1 to 7 bytes past an aligned allocation."""
    for off in range(1, 8):
        buf = bytearray(off + len(data))
        buf[off:] = data
        yield memoryview(buf)[off:]


# ------------------------------------------------------------------ which backends there are
def test_the_fastest_backends_this_machine_has_are_in_use(module: ModuleType) -> None:
    shas, b3s = module.sha256_backends(), module.blake3_backends()
    assert shas[0] == "builtin" and b3s[0] == "portable"  # the portable code is always there
    assert set(shas) <= {"builtin", "libcrypto", "sha-ni"} and set(b3s) <= {"portable", "sse4.1", "avx512"}
    assert module.sha256_backend() == shas[-1] and module.blake3_backend() == b3s[-1]
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " sha_ni" in flags and " sse4_1" in flags:
        assert "sha-ni" in shas
    if " avx512vl" in flags:
        assert "avx512" in b3s
    for setter, name in ((module.set_sha256_backend, "md5"), (module.set_blake3_backend, "avx1024")):
        with pytest.raises(ValueError, match="not available"):
            setter(name)
    assert module.sha256_backend() == shas[-1] and module.blake3_backend() == b3s[-1]


# ------------------------------------------------------------------ each hash against its oracle
def _against_oracle(mod: ModuleType, native: Any, oracle: Any, odd_lengths: tuple[int, ...], seed: str) -> None:
    """native(data) == oracle(data) at every length of LENGTHS, and at odd alignments."""
    rng = random.Random(seed)
    for n in LENGTHS:
        data = rng.randbytes(n)
        assert native(data) == oracle(data), (seed, n)
    for n in odd_lengths:
        data = rng.randbytes(n)
        assert all(native(view) == oracle(data) for view in _at_odd_offsets(data)), (seed, n)


@pytest.mark.parametrize("backend", SHA_BACKENDS)
def test_sha256_is_hashlib_s_at_every_length_and_alignment(module: ModuleType, backend: str) -> None:
    with _backends(module, sha=backend):
        assert module.sha256_backend() == backend
        _against_oracle(module, module.sha256, lambda d: hashlib.sha256(d).digest(),
                        (0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 854), backend)


@pytest.mark.parametrize("backend", B3_BACKENDS)
def test_blake3_is_the_published_vectors_and_the_blake3_package(module: ModuleType, backend: str) -> None:
    with _backends(module, b3=backend):
        assert module.blake3_backend() == backend
        for case in json.loads(VECTORS.read_text())["cases"]:
            data = bytes(i % 251 for i in range(case["input_len"]))
            assert module.blake3(data).hex() == case["hash"][:64], (backend, case["input_len"])
        _against_oracle(module, module.blake3, lambda d: blake3.blake3(d).digest(),
                        (0, 1, 63, 64, 65, 428, 1023, 1024, 1025), backend)


@pytest.mark.parametrize("backend", B3_BACKENDS)
def test_shard_documents_hashed_eight_at_a_time_are_blake3_of_each(module: ModuleType, backend: str) -> None:
    """The prescan hashes snapshots' shard documents in batches of 8 (AVX2 lanes), lanes of
    different lengths side by side: every document from empty regions to one full chunk, in
    batches of mixed lengths, is the blake3 package's digest of that document; longer ones are
    refused (the prescan hashes them one by one)."""
    head, tail = b'{"hash":"blake3-256","regions":', b',"v":1}'
    most = 1024 - len(head) - len(tail)
    rng = random.Random(8)
    sizes = [*range(0, most + 1, 7), most, *(rng.randrange(most + 1) for _ in range(60))]
    rng.shuffle(sizes)
    regions = [bytes(rng.randrange(256) for _ in range(n)) for n in sizes]
    with _backends(module, b3=backend):
        got = module.shard_digests(regions)
    assert got == [blake3.blake3(head + r + tail).digest() for r in regions]
    assert module.shard_digests(regions[:3]) == got[:3]  # a batch not full
    with pytest.raises(ValueError):
        module.shard_digests([b"x" * (most + 1)])


def test_blake3_in_pieces_is_blake3_of_their_concatenation(module: ModuleType) -> None:
    """The audit hashes each shard document as three pieces (a fixed head, the line's regions, a
    fixed tail) without joining them: cuts anywhere, including at and next to block and chunk
    boundaries, and empty pieces, give the hash of the whole."""
    rng = random.Random(3)
    for n in (0, 1, 64, 65, 200, 1024, 1025, 2100, 4097):
        data = rng.randbytes(n)
        want = blake3.blake3(data).digest()
        cuts = {0, n, *(c for c in (1, 31, 32, 63, 64, 65, 128, 1023, 1024, 1025, 2048) if c <= n)}
        cuts |= {rng.randrange(n + 1) for _ in range(8)}
        for backend in module.blake3_backends():
            with _backends(module, b3=backend):
                for a in sorted(cuts):
                    for b in sorted(c for c in cuts if c >= a):
                        assert module.blake3(data[:a], data[a:b], data[b:]) == want, (backend, n, a, b)
                assert module.blake3() == blake3.blake3(b"").digest()


def test_the_schedule_s_xof_draws_are_the_same_under_every_backend(module: ModuleType) -> None:
    """The schedule's arrivals are BLAKE3 keyed-hash XOF output (all 16 words of each
    compression, a block counter): the C draws equal formats.schedule's under each compression."""
    rng = random.Random(9)
    cases = [(rng.randbytes(32), rate, rng.randrange(10**12)) for rate in (48.0, 1000.0, 7.25)]
    for backend in module.blake3_backends():
        with _backends(module, b3=backend):
            for seed, rate, start in cases:
                end = start + int(86_400e9 * 40 / rate)  # about 40 arrivals: several XOF blocks
                assert _audit_prescan.arrivals(seed, rate, start, end) == schedule.arrivals(seed, rate, start, end)


# ------------------------------------------------------------------ the read-ahead's hashes
def test_the_prescan_s_leaf_chain_and_node_hashes_are_the_same_under_every_backend(module: ModuleType) -> None:
    """A line's chain hash is SHA-256(line) and its leaf hash SHA-256(0x00 || line), computed
    together (interleaved with SHA-NI), at lengths on both sides of every block boundary, where
    the leaf's extra byte moves the padding into another block; the subtrees' nodes likewise."""
    rng = random.Random(24)
    lines = [rng.randbytes(n) for n in LENGTHS[:403]]  # 25 chunks of 16 lines, and one of 3
    want_leaf = [leaf_hash(line) for line in lines]
    want_chain = [hashlib.sha256(line).digest() for line in lines]
    subtrees = [(lo, size) for size in (2, 4, 8, 16) for lo in range(0, len(lines) - size + 1, size)]
    want_nodes = [root_from_leaves(lines[lo : lo + size]) for lo, size in subtrees]
    for sha in module.sha256_backends():
        with _backends(module, sha=sha):
            pre = module.prescan(lines, 0, 4)
            assert [pre.leaf(i) for i in range(len(lines))] == want_leaf, sha
            assert [pre.chain(i) for i in range(len(lines))] == want_chain, sha
            assert [pre.node(lo, size) for lo, size in subtrees] == want_nodes, sha


# ------------------------------------------------------------------ the audit, backend by backend
@pytest.fixture(scope="module")
def chip_log(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One chip, one boot, a day of hourly steps (snapshots every few steps)."""
    root = tmp_path_factory.mktemp("hashes")
    (state,) = provision_chips(root, 1, snapshots_per_day=200.0, checkpoint_every=4, secret_seed=TEST_SECRET_SEED)
    chip = Chip.open(state)
    chip.boot()
    chip.attach(small_shard(0), root / "storage")
    run_steps(chip, 8, 3600.0)
    chip.close()
    raw = chip.log_path.read_bytes()
    cert = verify_chip_certificate(Chip.open(state).certificate, chip.chipmaker_root)
    return {"raw": raw, "cert": cert, "root": chip.chipmaker_root, "lines": split_log(raw)[0]}


def test_the_audit_takes_the_same_lines_and_gives_the_same_report_under_every_backend(
    module: ModuleType, chip_log: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong SHA-256 would break the chain and a wrong BLAKE3 the shard digest: the native path
    would then hand those lines back to Python, so besides the report the number of lines it
    took natively must not change."""
    monkeypatch.delenv("COMPUTEWATCH_NATIVE", raising=False)
    taken: list[int] = []
    forward = LogVerifier.fast_forward

    def counted(self: LogVerifier, lines: list[bytes], start: int) -> int:  # lines accepted natively
        end = forward(self, lines, start)
        taken.append(end - start)
        return end

    monkeypatch.setattr(LogVerifier, "fast_forward", counted)

    def audit() -> tuple[Any, int]:
        taken.clear()
        report = audit_log(chip_log["raw"], chip_log["cert"], chip_log["root"], workers=0).to_json()
        return report, sum(taken)

    reference, took = audit()
    assert reference["ok"] and took >= 3
    with mock.patch.dict(os.environ, {"COMPUTEWATCH_NATIVE": "0"}):
        assert audit()[0] == reference  # the Python verifier agrees
    for sha in module.sha256_backends():
        for b3 in module.blake3_backends():
            with _backends(module, sha=sha, b3=b3):
                assert audit() == (reference, took), (sha, b3)
