"""Step commitments (issue 19, item 1): per-rank state digests and update norms in every step
record, pinned by checkpoints and chip snapshots, signed by the manifest (v3)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from _runs import honest_run
from computewatch.crypto.errors import FormatError
from computewatch.crypto.hashing import hash_regions, shard_digest
from computewatch.formats.checkpoint import CheckpointIndex
from computewatch.formats.commitments import ShardHasher, StateCommitment, checkpoint_commitment
from computewatch.formats.manifest import MANIFEST_PREDICATE_V3, MANIFEST_PREDICATE_V5, read_manifest
from computewatch.formats.steps import StepLog, StepRecord, records_root
from computewatch.formats.storage import ObjectStore, RunStorage
from computewatch.verifier._run import staged_run
from computewatch.verifier.challenges import commitment_summary
from computewatch.crypto.signing import VerifyKey


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return honest_run(tmp_path_factory.mktemp("commit") / "run")


def _records(run: Path) -> list[StepRecord]:
    return list(StepLog(RunStorage(run, create=False)).read())


def _summary(run: Path) -> dict:
    with staged_run(str(run), [VerifyKey.load(run / "keys" / "prover.pub")], checkpoints="all") as staged:
        return commitment_summary(staged)


def test_shard_hasher_is_the_chips_shard_digest() -> None:
    tensors = [torch.randn(3, 4), torch.randn(5).to(torch.bfloat16), torch.zeros(0, dtype=torch.int64), torch.tensor(2.0)]
    hasher = ShardHasher()
    assert hasher.digest(tensors) == shard_digest(hash_regions(tensors)).hex()
    tensors[0].add_(1.0)  # updated in place: the prepared views see the new bytes
    assert hasher.digest(tensors) == shard_digest(hash_regions(tensors)).hex()
    tensors[1] = torch.randn(7).to(torch.bfloat16)  # new storage and shape: prepared again
    assert hasher.digest(tensors) == shard_digest(hash_regions(tensors)).hex()
    odd = [torch.randn(4, 3).t()]  # not contiguous: the general path
    assert hasher.digest(odd) == shard_digest(hash_regions(odd)).hex()


def test_every_record_commits_the_state_after_its_step(run: Path) -> None:
    records = _records(run)
    assert records and all(r.state is not None and [c.rank for c in r.state] == [0] for r in records)
    assert len({r.state[0].weights for r in records}) == len(records)  # the weights change every step
    assert all(r.state[0].update_norm > 0 for r in records)
    storage = RunStorage(run, create=False)
    manifest = read_manifest(storage)
    names = [reg.param for reg in manifest.precommitment.layout.chips[0]]
    index = CheckpointIndex(storage, 0)
    for entry in index.entries()[1:]:
        ckpt = index.load(ObjectStore(storage), entry["step"])
        committed = records[entry["step"] - 1].state[0]
        assert checkpoint_commitment(ckpt.model, names, ckpt.optimizer_tensors) == (committed.weights, committed.optimizer)


def test_a_logged_snapshot_pins_the_chain(run: Path) -> None:
    records = _records(run)
    snaps = [json.loads(line) for line in (run / "snapshots" / "rank-00000.jsonl").read_text().splitlines()]
    assert snaps
    for s in snaps:
        assert s["shard_digest"] == records[s["step"] - 1].state[0].weights
    assert _summary(run)["pins"] == len(snaps)


def test_the_manifest_signs_the_step_records(run: Path) -> None:
    storage = RunStorage(run, create=False)
    manifest = read_manifest(storage)
    assert manifest.predicate_type == MANIFEST_PREDICATE_V5  # v3's predicate in RFC 8785 (format version 2)
    assert all(r.canonical == 2 for r in _records(run))
    records = _records(run)
    assert manifest.steps == {"count": len(records), "records_root": records_root(records).hex()}
    summary = _summary(run)
    assert summary["committed"] and summary["problems"] == []


def test_a_rewritten_commitment_breaks_the_signed_root_and_the_checkpoint(run: Path, tmp_path: Path) -> None:
    import shutil

    from computewatch.adversary.transcript import edit_steps

    forged = shutil.copytree(run, tmp_path / "forged")
    bad = replace(_records(run)[3].state[0], weights="00" * 32)

    def mutate(records: list[StepRecord]) -> list[StepRecord]:
        records[3] = replace(records[3], state=(bad,))
        return records

    edit_steps(forged, mutate)
    problems = " | ".join(_summary(forged)["problems"])
    assert "manifest signs" in problems and "checkpoint at step 4 does not match" in problems


def test_step_record_versions() -> None:
    v1 = {"batch_root": "ab" * 32, "loss": 1.5, "lr": 0.001, "rng": "cd" * 32, "sample_ids": [1, 2], "step": 0}
    assert StepRecord.from_json(v1).state is None
    assert StepRecord.from_json(v1).to_json() == v1
    state = [{"optimizer": "11" * 32, "rank": 0, "update_norm": 0.25, "weights": "22" * 32}]
    rec = StepRecord.from_json(dict(v1, state=state))
    assert rec.state == (StateCommitment(0, "22" * 32, "11" * 32, 0.25),)
    assert rec.to_json() == dict(v1, state=state)
    for broken in ([], [dict(state[0], rank=1)], [dict(state[0], weights="zz" * 32)], [dict(state[0], update_norm=-1.0)], [dict(state[0], extra=1)]):
        with pytest.raises(FormatError):
            StepRecord.from_json(dict(v1, state=broken))


def test_distributed_runs_commit_per_rank(tmp_path: Path) -> None:
    out = honest_run(tmp_path / "fsdp", nproc=2, strategy="fsdp", steps=4, checkpoint_every=2)
    records = _records(out)
    assert all([c.rank for c in r.state] == [0, 1] for r in records)
    assert all(r.state[0].weights != r.state[1].weights for r in records)  # each rank its own shard
    summary = _summary(out)
    assert summary["committed"] and summary["problems"] == [], summary["problems"]


def test_formats_page_vectors() -> None:
    import re

    from computewatch.crypto.canonical import canonical_json
    from computewatch.formats.commitments import optimizer_digest, weights_digest

    page = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text()

    def quoted(label: str) -> str:
        m = re.search(re.escape(label) + r"\s*`([0-9a-f]{64})`", page)
        assert m, label
        return m.group(1)

    weights = weights_digest([torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([[1.0, -1.0], [0.5, 0.25]])])
    opt = optimizer_digest({"0/step": torch.tensor(3.0), "1/exp_avg": torch.zeros(2, 2), "0/exp_avg": torch.full((4,), 0.5)})
    assert quoted("give weights digest") == weights and quoted("give optimizer digest") == opt
    block = re.search(r"```json step-v2\n(.*?)\n```", page, re.S).group(1)  # type: ignore[union-attr]
    record = StepRecord.from_json(json.loads(block))
    assert record.state == (StateCommitment(0, weights, opt, 0.125),)
    assert canonical_json(record.to_json()).decode() == block
    assert "`urn:computewatch:transcript-manifest:v3`" in page and MANIFEST_PREDICATE_V3 == "urn:computewatch:transcript-manifest:v3"
