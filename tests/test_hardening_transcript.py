"""Issue 12, transcripts: `verify()` checks checkpoint indexes, snapshot records and step records
as far as the transcript alone can, and `transcript show` says what it could not verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _chips import TEST_SECRET_SEED
from computewatch.cli import app
from computewatch.crypto.canonical import canonical_json
from computewatch.formats.steps import batch_root
from computewatch.formats.storage import StoreError
from computewatch.prover.runner import TrainConfig, train
from computewatch.prover.transcript import Transcript

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hardening") / "run"
    train(TrainConfig(out=out, preset="mlp", steps=6, checkpoint_every=2, threads=1, snapshots_per_day=24.0,
                      chip_seconds_per_step=3600.0, chip_secret_seed=TEST_SECRET_SEED, nonce=b"hardening"))
    assert len(Transcript(out).snapshots()) >= 2
    return out


@pytest.fixture
def copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "copy"))


def _index(run: Path) -> Path:
    return run / "checkpoints" / "rank-00000.json"


def _rewrite_index(run: Path, edit) -> None:
    doc = json.loads(_index(run).read_bytes())
    edit(doc["checkpoints"])
    _index(run).write_bytes(canonical_json(doc))


def _records(run: Path) -> tuple[Path, list[dict]]:
    seg = sorted((run / "steps").iterdir())[0]
    return seg, [json.loads(x) for x in seg.read_bytes().split(b"\n") if x]


def test_the_intact_run_verifies_with_every_check(run_dir: Path) -> None:
    counts = Transcript(run_dir).verify(data_order=True)
    assert counts["steps"] == 6 and counts["checkpoints"] == 4 and counts["rng_checked"] == 3


@pytest.mark.parametrize(
    "edit, error",
    [
        (lambda c: c.pop(), "lacks step 6"),  # the tail of the index cut off
        (lambda c: c.pop(1), "lacks step 2"),  # an entry in the middle deleted
        (lambda c: c.pop(0), "lacks W0"),
        (lambda c: c[1].update(nbytes=c[1]["nbytes"] - 1), "the index says"),
        (lambda c: c[1].update(digest=c[2]["digest"]), "says step 4"),  # another checkpoint's object
    ],
    ids=["tail-cut", "middle-deleted", "w0-deleted", "size", "swapped-object"],
)
def test_a_damaged_checkpoint_index_fails(copy: Path, edit, error: str) -> None:
    _rewrite_index(copy, edit)
    with pytest.raises(StoreError, match=error):
        Transcript(copy).verify()


def test_a_deleted_checkpoint_index_fails(copy: Path) -> None:
    _index(copy).unlink()
    with pytest.raises(StoreError, match="lacks W0"):
        Transcript(copy).verify()


def test_duplicated_snapshot_records_fail(copy: Path) -> None:
    snaps = copy / "snapshots" / "rank-00000.jsonl"
    lines = snaps.read_bytes().split(b"\n")
    snaps.write_bytes(lines[0] + b"\n" + snaps.read_bytes())
    with pytest.raises(StoreError, match="appears twice"):
        Transcript(copy).verify()


def test_a_snapshot_record_for_another_chip_fails(copy: Path) -> None:
    snaps = copy / "snapshots" / "rank-00000.jsonl"
    rec = json.loads(snaps.read_bytes().split(b"\n")[0])
    rec["chip_id"] = "CW-SOMEONE-ELSE"
    snaps.write_bytes(canonical_json(rec) + b"\n")
    with pytest.raises(StoreError, match="binds rank 0 to chip"):
        Transcript(copy).verify()


def test_edited_step_records_fail(copy: Path, run_dir: Path) -> None:
    seg, recs = _records(copy)
    hashes = Transcript(run_dir).sample_hashes()
    recs[1]["sample_ids"] = list(reversed(recs[1]["sample_ids"]))  # batch root recomputed to match
    recs[1]["batch_root"] = batch_root([hashes[i] for i in recs[1]["sample_ids"]]).hex()
    seg.write_bytes(b"".join(canonical_json(r) + b"\n" for r in recs))
    Transcript(copy).verify()  # self-consistent as far as batch roots go ...
    with pytest.raises(StoreError, match="step 1: its sample ids are not the batch the committed seed's data order gives"):
        Transcript(copy).verify(data_order=True)  # ... but not the committed data order
    seg, recs = _records(Path(shutil.copytree(run_dir, copy.parent / "rng")))
    recs[0]["rng"] = "ab" * 32
    seg.write_bytes(b"".join(canonical_json(r) + b"\n" for r in recs))
    with pytest.raises(StoreError, match="step 0: its rng digest"):
        Transcript(copy.parent / "rng").verify()


def test_show_says_what_was_verified_and_what_was_not(copy: Path) -> None:
    snaps = copy / "snapshots" / "rank-00000.jsonl"
    snaps.write_bytes(b"".join(x + b"\n" for x in snaps.read_bytes().split(b"\n")[:-2]))  # a record deleted
    r = runner.invoke(app, ["transcript", "show", str(copy)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())
    assert "data order" in text and "step RNG states" in text
    assert "not verified" in text and "deleted records leave no trace here" in text and "replay" in text
    r = runner.invoke(app, ["transcript", "show", str(copy), "--no-verify"], env={"COLUMNS": "300"})
    assert "nothing (--no-verify)" in " ".join(r.stdout.split())
    _rewrite_index(copy, lambda c: c.pop())
    r = runner.invoke(app, ["transcript", "show", str(copy)])
    assert r.exit_code == 1 and "lacks step 6" in r.stderr
