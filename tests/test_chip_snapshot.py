"""Snapshots: the logged digest is computed from the chip's memory and equals BLAKE3 of the
copied-out shard; precommitment and memory-map entries; the Prover-facing API."""

from __future__ import annotations

import struct

import blake3
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from computewatch.chip import Chip, ChipError, provision_chips
from computewatch.chip import snapshot as snapshot_module
from _chips import booted_chip, run_steps
from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.hashing import hash_regions, shard_digest


def test_logged_digest_equals_blake3_of_the_copied_out_shard(tmp_path) -> None:
    chip = booted_chip(tmp_path, rate=200.0)
    records = []
    for step in range(12):
        chip._tensors[0].add_(1.0)  # type: ignore[index]
        records += chip.step_boundary(step, 1800.0)
    assert len(records) >= 3
    entries = {e.counter: e for e in chip.log}
    for rec in records:
        entry = entries[rec.counter]
        assert entry.kind == "snapshot" and entry.body["shard_digest"] == rec.shard_digest
        assert entry.body["step"] == rec.step and entry.body["copy_out"] == rec.path.name
        assert rec.stall_s > 0 and rec.busy_ns == entry.busy_ns
        copied = load_file(rec.path)
        tensors = [copied[f"region.{i:05d}"] for i in range(len(copied))]
        assert shard_digest(hash_regions(tensors)).hex() == rec.shard_digest
        # Each region digest is plain BLAKE3 of the copied bytes; the data section is the packed shard.
        raw = rec.path.read_bytes()
        head = struct.unpack("<Q", raw[:8])[0]
        data = raw[8 + head :]
        for region, logged in zip(rec.regions, entry.body["regions"], strict=True):
            chunk = data[region.offset : region.offset + region.nbytes]
            assert blake3.blake3(chunk).hexdigest() == logged["digest"] == region.digest.hex()
        with safe_open(rec.path, "pt") as fh:
            meta = fh.metadata()
        assert meta["shard_digest"] == rec.shard_digest and meta["step"] == str(rec.step)
    # Different steps saw different weights.
    assert len({r.shard_digest for r in records}) == len(records)
    chip.close()
    assert chip.audit().ok


def test_digest_comes_from_chip_memory_not_from_the_copy(tmp_path, monkeypatch) -> None:
    real = snapshot_module._write_copy_out

    def corrupting_host(path, tensors, regions, meta):  # the owner's storage path is hostile
        real(path, [t + 1 for t in tensors], regions, meta)

    monkeypatch.setattr(snapshot_module, "_write_copy_out", corrupting_host)
    chip = booted_chip(tmp_path, rate=500.0)
    memory_digest = shard_digest(hash_regions(chip._tensors)).hex()  # type: ignore[arg-type]
    (rec,) = chip.step_boundary(0, 3600.0)
    assert rec.shard_digest == memory_digest
    copied = load_file(rec.path)
    assert shard_digest(hash_regions([copied[k] for k in sorted(copied)])).hex() != rec.shard_digest


def test_several_triggers_in_one_step_coalesce(tmp_path) -> None:
    chip = booted_chip(tmp_path, rate=400.0)
    (rec,) = chip.step_boundary(7, 6 * 3600.0)  # ~100 expected triggers inside one long step
    assert len(rec.triggers) > 20 and rec.step == 7
    assert sorted(rec.triggers) == list(rec.triggers)
    snaps = [e for e in chip.log if e.kind == "snapshot"]
    assert len(snaps) == 1 and len(snaps[0].body["triggers"]) == len(rec.triggers)


def test_precommitment_and_memory_map_entries(tmp_path) -> None:
    chip = booted_chip(tmp_path, rate=1.0)
    digest = bytes(range(32))
    e1 = chip.log_precommitment(digest, "run-7")
    mm = {"region.00000": "fc.weight", "region.00001": "fc.bias"}
    e2 = chip.log_memory_map(mm, "run-7")
    assert (e1.kind, e1.body) == ("precommitment", {"run_id": "run-7", "digest": digest.hex()})
    assert e2.body["digest"] == blake3.blake3(canonical_json(mm)).hexdigest()
    with pytest.raises(ChipError):
        chip.log_precommitment(b"short", "run-7")
    chip.close()
    assert chip.audit().ok


def test_prover_api_misuse_is_refused(tmp_path) -> None:
    (state,) = provision_chips(tmp_path, 1, snapshots_per_day=1.0)
    chip = Chip.open(state)
    with pytest.raises(ChipError, match="not booted"):
        chip.step_boundary(0, 1.0)
    chip.boot()
    with pytest.raises(ChipError, match="attach"):
        chip.step_boundary(0, 1.0)
    with pytest.raises(ChipError):
        chip.attach([], tmp_path)
    chip.attach([torch.zeros(3)], tmp_path / "s")
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ChipError, match="finite"):
            chip.step_boundary(0, bad)
        with pytest.raises(ChipError, match="finite"):
            chip.idle(bad)
    assert chip.busy_ns == 0
    with pytest.raises(ChipError, match="32 bytes"):
        chip.log_precommitment("ab" * 16, "run")  # type: ignore[arg-type]
    with pytest.raises(ChipError, match="nonce is bytes"):
        chip.attest(16)  # type: ignore[arg-type]
    with pytest.raises(ChipError, match="already booted"):
        chip.boot()
    with chip:
        assert chip.step_boundary(0, 1.0) == []
    assert not chip.booted


def test_snapshots_every_step_keep_a_run_consistent(tmp_path) -> None:
    chip = booted_chip(tmp_path, rate=5000.0, checkpoint_every=3)
    n = run_steps(chip, 20, 600.0)
    assert n == 20  # at this rate every 10-minute step holds a trigger
    chip.close()
    report = chip.audit()
    assert report.ok and report.snapshots == 20


def test_cuda_shards_take_the_gpu_snapshot_path(tmp_path, monkeypatch) -> None:
    """Wiring of the CUDA path, checked on the CPU: a shard on one CUDA device gets pinned host
    buffers once, at attach; each snapshot is hashed and copied by
    gpu_snapshot.snapshot_cuda_regions into those buffers, and the log gets its region digests."""
    from computewatch.chip import chip as chip_module
    from computewatch.chip import gpu_snapshot
    from computewatch.crypto.hashing import blake3_tensor

    calls = []
    pinned_sets = []

    def fake_allocate_pinned(tensors):
        bufs = [torch.empty(t.numel() * t.element_size(), dtype=torch.uint8) for t in tensors]
        pinned_sets.append(bufs)
        return bufs

    def fake_cuda_snapshot(tensors, host=None):
        assert host is pinned_sets[-1]  # the buffers from attach, never fresh ones
        calls.append(len(tensors))
        for t, h in zip(tensors, host, strict=True):
            h.copy_(t.detach().reshape(-1).view(torch.uint8))
        return gpu_snapshot.CudaSnapshot([blake3_tensor(t) for t in tensors], host, 0.0, 0.0)

    monkeypatch.setattr(snapshot_module, "on_one_cuda_device", lambda tensors: True)
    monkeypatch.setattr(chip_module, "on_one_cuda_device", lambda tensors: True)
    monkeypatch.setattr(gpu_snapshot, "allocate_pinned", fake_allocate_pinned)
    monkeypatch.setattr(gpu_snapshot, "snapshot_cuda_regions", fake_cuda_snapshot)
    chip = booted_chip(tmp_path, rate=500.0)
    expected = shard_digest(hash_regions(chip._tensors)).hex()  # type: ignore[arg-type]
    (rec,) = chip.step_boundary(0, 3600.0)
    assert calls == [3] and rec.shard_digest == expected and len(pinned_sets) == 1
    copied = load_file(rec.path)
    assert shard_digest(hash_regions([copied[f"region.{i:05d}"] for i in range(3)])).hex() == expected
