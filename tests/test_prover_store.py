"""Transcript storage: content addressing, atomic writes, and clear errors on damaged files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.errors import FormatError
from computewatch.crypto.hashing import blake3_bytes
from computewatch.formats.checkpoint import (
    CheckpointIndex,
    capture,
    decode_checkpoint,
    encode_checkpoint,
)
from computewatch.formats.layout import ShardLayout
from computewatch.formats.steps import StepLog, StepRecord
from computewatch.formats.storage import (
    CorruptObjectError,
    ObjectStore,
    RunStorage,
    StoreError,
)


def _record(step: int) -> StepRecord:
    return StepRecord(step, (step, step + 1), "ab" * 32, 0.01, 1.5, "cd" * 32)


def test_put_get_is_content_addressed(tmp_path: Path) -> None:
    store = ObjectStore(RunStorage(tmp_path))
    digest = store.put(b"weights")
    assert digest == blake3_bytes(b"weights").hex()
    assert store.put(b"weights") == digest  # idempotent
    assert store.get(digest) == b"weights"
    assert store.digests() == [digest]
    assert Path(store.path_of(digest)).read_bytes() == b"weights"


def test_fsspec_memory_store_round_trip() -> None:
    storage = RunStorage("memory://computewatch-test-store")
    store = ObjectStore(storage)
    digest = store.put(b"remote bytes")
    assert store.get(digest) == b"remote bytes"
    storage.write_atomic("a/b.json", b"{}")
    storage.append("a/log.jsonl", b"1\n")
    storage.append("a/log.jsonl", b"2\n")
    assert storage.read("a/log.jsonl") == b"1\n2\n"
    assert storage.listdir("a") == ["b.json", "log.jsonl"]


def test_corrupted_object_names_digest_and_path(tmp_path: Path) -> None:
    store = ObjectStore(RunStorage(tmp_path))
    digest = store.put(b"checkpoint bytes")
    Path(store.path_of(digest)).write_bytes(b"checkpoint bytez")
    with pytest.raises(CorruptObjectError) as err:
        store.get(digest)
    assert digest in str(err.value) and store.path_of(digest) in str(err.value)


def test_missing_and_malformed_digests(tmp_path: Path) -> None:
    store = ObjectStore(RunStorage(tmp_path))
    with pytest.raises(StoreError, match="missing"):
        store.get("00" * 32)
    with pytest.raises(StoreError, match="64 lowercase hex"):
        store.get("../../etc/passwd")


def test_crash_mid_write_keeps_old_file_and_temp_is_cleaned(tmp_path: Path) -> None:
    storage = RunStorage(tmp_path)
    storage.write_atomic("index.json", b"old")

    class Crash(Exception):
        pass

    def crash() -> None:
        raise Crash

    with pytest.raises(Crash):
        storage.write_atomic("index.json", b"new contents", _partial_hook=crash)
    assert storage.read("index.json") == b"old"
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []
    # A temp file left by a killed process is never listed as an object, and can be swept.
    objects = tmp_path / "objects" / "ab"
    objects.mkdir(parents=True)
    (objects / ".abcd.1234.tmp").write_bytes(b"half")
    assert ObjectStore(storage).digests() == []
    assert storage.clean_temp_files("objects") == 1
    assert not (objects / ".abcd.1234.tmp").exists()


def test_step_log_reports_gaps_and_damage(tmp_path: Path) -> None:
    storage = RunStorage(tmp_path)
    log = StepLog(storage)
    log.write_segment([_record(0), _record(1)])
    log.write_segment([_record(2)])
    assert [r.step for r in log.read()] == [0, 1, 2]
    log.truncate(1)
    assert [r.step for r in log.read()] == [0]
    with pytest.raises(FormatError, match="consecutive"):
        log.write_segment([_record(1), _record(3)])
    log.write_segment([_record(2)])
    with pytest.raises(StoreError, match="starts at step 2, expected 1"):
        list(log.read())
    seg = tmp_path / "steps" / "0000000000-0000000000.jsonl"
    seg.write_bytes(seg.read_bytes()[:-5])
    with pytest.raises(StoreError, match="truncated"):
        list(log.read())
    seg.write_bytes(b'{"step": 0}\n')
    with pytest.raises(StoreError, match="line 1 is malformed"):
        list(log.read())


def test_checkpoint_bytes_are_canonical_and_damage_is_reported(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    data = encode_checkpoint(capture(1, model, opt, None))
    assert data == encode_checkpoint(capture(1, model, opt, None))
    back = decode_checkpoint(data)
    assert back.step == 1 and torch.equal(back.model["weight"], model.weight)
    with pytest.raises(FormatError, match="exceeds the file"):
        decode_checkpoint(data[:100])
    with pytest.raises(FormatError, match="too short"):
        decode_checkpoint(b"abc")
    storage = RunStorage(tmp_path)
    storage.write_atomic("checkpoints/rank-00000.json", b"{not json")
    with pytest.raises(StoreError, match=r"checkpoint index .* is malformed"):
        CheckpointIndex(storage, 0).entries()
    storage.write_atomic("checkpoints/rank-00000.json", canonical_json({"v": 1, "rank": 3, "checkpoints": []}))
    with pytest.raises(StoreError, match="not the v1 index of rank 0"):
        CheckpointIndex(storage, 0).entries()


def test_layout_reassembles_and_rejects_mismatches() -> None:
    full = {"w": torch.arange(21.0).reshape(7, 3), "b": torch.arange(3.0)}
    layout = ShardLayout.dim0_sharded([("w", (7, 3), "F32"), ("b", (3,), "F32")], 4)
    shards = {r: layout.slice_shard(full, r) for r in range(4)}
    assert [t.shape[0] for t in shards[0]] == [2, 1] and [t.shape[0] for t in shards[3]] == [1, 0]
    back = layout.reassemble(shards)
    assert all(torch.equal(back[k], full[k]) for k in full)
    assert ShardLayout.from_json(layout.to_json()) == layout
    with pytest.raises(FormatError, match="rank 2 is missing"):
        layout.reassemble({0: shards[0], 1: shards[1], 3: shards[3]})
    replicas = ShardLayout.replicated([("w", full["w"])], 2, "ddp")
    bad = full["w"].clone()
    bad[0, 0] = 99.0
    with pytest.raises(FormatError, match="replicas of 'w' disagree"):
        replicas.reassemble({0: [full["w"]], 1: [bad]})
    signed_zero = full["w"].clone()
    signed_zero[0, 0] = -0.0  # equal as numbers, not bit for bit: the shard digests would differ
    with pytest.raises(FormatError, match="replicas of 'w' disagree"):
        replicas.reassemble({0: [full["w"]], 1: [signed_zero]})
    with pytest.raises(FormatError, match="F64, layout says"):
        replicas.reassemble({0: [full["w"]], 1: [full["w"].double()]})
    doc = layout.to_json()
    doc["chips"][0]["regions"][0]["stop"] = 999
    with pytest.raises(FormatError, match="does not fit"):
        ShardLayout.from_json(doc)


def test_format_doc_test_vector() -> None:
    from computewatch.formats.dataset import DatasetCommitment, sample_hash
    from computewatch.formats.precommitment import Precommitment
    from computewatch.formats.program import code_digest_of
    from computewatch.formats.seed import derive_run_seed
    from computewatch.formats.steps import batch_root

    doc = (Path(__file__).resolve().parent.parent / "docs" / "formats.md").read_text()
    pre_text = re.search(r"```json precommitment\n(.*?)\n```", doc, re.S).group(1)  # type: ignore[union-attr]
    step_text = re.search(r"```json step\n(.*?)\n```", doc, re.S).group(1)  # type: ignore[union-attr]
    stated = re.search(r"precommitment digest: `([0-9a-f]{64})`", doc).group(1)  # type: ignore[union-attr]
    samples = [b"hello", b"world", b"chinchilla"]
    commitment = DatasetCommitment.from_samples(samples)
    nonce = bytes(range(16))
    layout = ShardLayout.dim0_sharded([("w", (3, 2), "F32"), ("b", (3,), "F32")], 2)
    code = code_digest_of({"train.py": b"# the training program\n"})
    assert code == re.search(r"program code digest: `([0-9a-f]{64})`", doc).group(1)  # type: ignore[union-attr]
    env = {"torch": "2.13.0+cpu", "python": "3.11.7", "machine": "x86_64", "cpu_capability": "AVX2", "threads": 1, "deterministic": True}
    pre = Precommitment("test-vector-run", {"lr": 0.001, "steps": 4}, code, commitment.summary_json(), nonce,
                        derive_run_seed(commitment.root, nonce), 2, layout, "train:make_program", env)
    assert pre.encode().decode() == pre_text
    assert pre.digest().hex() == stated
    assert Precommitment.from_json(json.loads(pre_text)) == pre
    root = batch_root([sample_hash(samples[2]), sample_hash(samples[0])]).hex()
    assert StepRecord(0, (2, 0), root, 0.001, 2.5, "11" * 32).encode().decode() == step_text + "\n"
