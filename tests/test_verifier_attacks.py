"""Every spoof of issue 8's list is a violation, named by the check that catches it.

Each case starts from a copy of one honest run (or trains a cheating one) and edits it the way a
cheating Prover would, keeping its own digests and signatures consistent (computewatch.adversary),
so only the Verifier's checks against the chip logs, the committed seed and the precommitment can
catch it. The honest run's snapshots land at steps 4, 6 and 10 (fixed chip secret), so steps 12-16
form a segment far from any snapshot."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from _runs import copy_run, failed, honest_run, run_verify

from computewatch.adversary import (
    Deviation,
    edit_checkpoint,
    edit_snapshot_records,
    edit_steps,
    interpolate_checkpoints,
    resign_manifest,
    train_with_deviation,
)
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.formats.dataset import DatasetCommitment
from computewatch.formats.manifest import read_manifest
from computewatch.formats.storage import RunStorage
from computewatch.verifier import VerifyRequest, verify

SECRET = b"t" * 32
FAR = (13, 14)  # two steps inside the segment 12 -> 16, which holds no snapshot
NEAR = (5, 6)  # the snapshot at step 6 is taken right after these


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = honest_run(tmp_path_factory.mktemp("honest") / "run", secret=SECRET)
    doc = run_verify(run, segments=0)
    assert doc["verdict"] == "compliant", failed(doc)
    steps = sorted(s["step"] for s in doc["runs"][0]["snapshots"])
    assert steps == [4, 6, 10], steps  # the layout the cases below rely on
    return run


@pytest.fixture
def copy(honest: Path, tmp_path: Path) -> Path:
    return copy_run(honest, tmp_path / "run")


def _caught(doc: dict, check: str) -> str:
    assert doc["verdict"] == "violation", doc["checks"]
    bad = failed(doc)
    assert check in bad, bad
    return bad[check]


def _sample_hashes() -> list[bytes]:
    from computewatch.prover.workloads import preset

    work = preset("mlp", total_steps=16, corpus_bytes=1 << 14)
    corpus = work.dataset()
    return DatasetCommitment.from_samples(corpus.sample(i) for i in range(len(corpus))).sample_hashes


# ------------------------------------------------------------------------ the Prover's records
def test_an_edited_checkpoint_with_address_and_index_fixed_up(copy: Path) -> None:
    def nudge(ckpt) -> None:
        name = next(k for k, v in ckpt.model.items() if v.is_floating_point())
        ckpt.model[name] = ckpt.model[name] + 1e-3

    edit_checkpoint(copy, 0, 8, nudge)
    detail = _caught(run_verify(copy, segments=0), "segments")
    assert "8" in detail


def test_a_checkpoint_chain_interpolated_between_w0_and_the_final_weights(copy: Path) -> None:
    assert interpolate_checkpoints(copy) == [4, 8, 12]
    doc = run_verify(copy, segments=0)
    _caught(doc, "snapshots")
    assert doc["snapshots"]["explained"] < doc["snapshots"]["logged"]


@pytest.mark.parametrize("edit", ["swap", "insert", "remove"])
def test_batches_swapped_inserted_or_removed_in_the_records(copy: Path, edit: str) -> None:
    hashes = _sample_hashes()

    def mutate(recs):
        recs = list(recs)
        if edit == "swap":
            a, b = FAR
            recs[a], recs[b] = replace(recs[b], step=a), replace(recs[a], step=b)
        elif edit == "insert":
            recs[14] = replace(recs[14], sample_ids=[*recs[14].sample_ids[:-1], (recs[14].sample_ids[-1] + 1) % len(hashes)])
        else:
            recs[14] = replace(recs[14], sample_ids=recs[14].sample_ids[:-1])
        return recs

    edit_steps(copy, mutate, hashes=hashes)
    _caught(run_verify(copy, segments=0), "data")


def test_an_altered_learning_rate_in_the_records(copy: Path) -> None:
    edit_steps(copy, lambda recs: [replace(r, lr=r.lr * 3) if r.step == 13 else r for r in recs])
    detail = _caught(run_verify(copy, segments=0), "hyperparameters")
    assert "13" in detail


def test_a_duplicated_snapshot_record(copy: Path) -> None:
    edit_snapshot_records(copy, 0, lambda recs: [*recs, recs[0]])
    _caught(run_verify(copy, segments=0), "snapshots")


def test_a_redirected_snapshot_record(copy: Path) -> None:
    # The record of the step-10 snapshot claims step 4's: replaying 0->4 reproduces step 4's
    # weights, which are not what the chip hashed at step 10.
    edit_snapshot_records(copy, 0, lambda recs: [dict(r, step=4) if r["step"] == 10 else r for r in recs])
    _caught(run_verify(copy, segments=0), "snapshots")


def test_a_manifest_resigned_with_another_key_and_that_key_beside_the_run(honest: Path, copy: Path) -> None:
    resign_manifest(copy, SigningKey.generate())
    # The copy's own keys/prover.pub now matches its manifest; the Verifier pins the original key.
    detail = _caught(run_verify(copy, prover=honest / "keys" / "prover.pub", segments=0), "precommitment")
    assert "not authentic" in detail


def test_a_withheld_transcript(honest: Path) -> None:
    # The chips logged snapshots of the run; no transcript is handed over.
    doc = verify(VerifyRequest(
        runs=[], chips=[honest / "chips"],
        chipmaker_roots=[VerifyKey.load(honest / "chips" / "chipmaker" / "chipmaker.pub")],
        prover_keys=[VerifyKey.load(honest / "keys" / "prover.pub")],
        seed=b"s" * 32,
    ))
    detail = _caught(doc, "snapshots")
    assert "withheld" in detail or "no transcript" in detail, detail


POLICY = """
[policy]
name = "compute-cap"
version = 3
threshold_flops = {h}

[[rules]]
id = "ban-over-2H"
kind = "ban"
when = "compute.detectable"
text = "No run of 2H or more."
"""


def test_a_run_above_the_policys_compute_threshold(honest: Path) -> None:
    doc = run_verify(honest, segments=0, policy_text=POLICY.format(h="1e6"))
    assert "ban-over-2H" in _caught(doc, "rules")
    assert doc["total_flops"] > 2e6
    doc = run_verify(honest, segments=0, policy_text=POLICY.format(h="1e15"))
    assert doc["verdict"] == "compliant", failed(doc)
    assert {c["name"]: c["passed"] for c in doc["checks"]}["rules"] is True


# ------------------------------------------------------------------------ runs really trained otherwise
@pytest.mark.parametrize(
    ("deviation", "segments", "check"),
    [
        (Deviation(lr_scale=3.0), 0, "snapshots"),  # trained at 3x the committed lr
        (Deviation(lr_scale=3.0, launder=True), 0, "snapshots"),  # ... and records made to look honest
        (Deviation(init_seed=b"pretrained weights, not the seed"), 0, "init"),
        (Deviation(init_seed=b"pretrained weights, not the seed", launder=True), 0, "snapshots"),
        (Deviation(swap_steps=NEAR), 0, "snapshots"),  # another data order, next to a snapshot
        (Deviation(swap_steps=FAR), "all", "segments"),  # ... far from any snapshot
        (Deviation(precommitment="missing"), 0, "precommitment"),
        (Deviation(precommitment="different"), 0, "precommitment"),
        (Deviation(precommitment="after-snapshot"), 0, "precommitment"),
    ],
    ids=["lr", "lr-laundered", "init", "init-laundered", "swap-near", "swap-far", "pc-missing", "pc-different", "pc-late"],
)
def test_a_run_trained_otherwise_than_committed(tmp_path: Path, deviation: Deviation, segments, check: str) -> None:
    run = train_with_deviation(tmp_path / "run", deviation, chip_secret_seed=SECRET)
    _caught(run_verify(run, segments=segments), check)


def test_a_swap_far_from_any_snapshot_passes_unreplayed_segments(tmp_path: Path) -> None:
    # The limit of sampling: with no random segment, the forged segment is replayed only if it
    # is among the largest updates (top-Q); the random share is tested in test_verifier_honest.
    run = train_with_deviation(tmp_path / "run", Deviation(swap_steps=FAR), chip_secret_seed=SECRET)
    doc = run_verify(run, segments=0)
    replayed = {(s["from"], s["to"]) for s in doc["runs"][0]["segments"]}
    if (12, 16) in replayed:
        _caught(doc, "segments")
    else:
        assert doc["verdict"] == "compliant", failed(doc)


def test_the_precommitted_hyperparameters_are_the_ones_replay_uses(copy: Path) -> None:
    manifest = read_manifest(RunStorage(copy, create=False))
    assert manifest.precommitment.hyperparameters["workload"]["optimizer"]["lr"] > 0
    torch.manual_seed(0)  # replay must not depend on the caller's RNG state
    doc = run_verify(copy, segments=0)
    assert doc["verdict"] == "compliant", failed(doc)


def test_another_recording_environment_makes_a_non_reproduction_inconclusive_never_compliant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import computewatch.prover.recorder as recorder
    from computewatch.formats.program import current_environment

    # The run says it was recorded under another torch: exact replay here cannot be bit-identical
    # by contract, so a segment that does not reproduce is undecided, with the reason.
    monkeypatch.setattr(recorder, "current_environment", lambda: {**current_environment(), "torch": "2.0.0+cpu"})
    run = honest_run(tmp_path / "run", secret=SECRET)
    monkeypatch.undo()

    def nudge(ckpt) -> None:
        name = next(k for k, v in ckpt.model.items() if v.is_floating_point())
        ckpt.model[name] = ckpt.model[name] + 1e-3

    edit_checkpoint(run, 0, 16, nudge)  # the last segment holds no snapshot
    from computewatch.adversary.step_forgery import recommit_checkpoint

    recommit_checkpoint(run, 0, 16)  # the step commitments agree with the edit: only replay can tell
    doc = run_verify(run, segments="all")
    assert doc["verdict"] == "inconclusive", doc["checks"]
    undecided = [c["detail"] for c in doc["checks"] if c["name"] == "segments" and c["passed"] is None]
    assert undecided and "torch" in undecided[0] and "exact replay is impossible here" in undecided[0]
    # Tolerance mode needs no identical environment: the same edit is a violation there.
    _caught(run_verify(run, segments="all", mode="tolerance"), "segments")


# ------------------------------------------------------------------------ evidence that fails is a violation
def test_a_checkpoint_index_cut_down_to_w0(copy: Path) -> None:
    from computewatch.formats.checkpoint import CheckpointIndex

    CheckpointIndex(RunStorage(copy, create=False), 0).truncate(0)
    doc = run_verify(copy, segments=0)
    assert "no checkpoint of every rank at steps [4, 8, 12, 16]" in _caught(doc, "segments")
    # The snapshots are still explained, by one replay from W0: the evidence withheld is the finding.
    assert doc["snapshots"]["explained"] == doc["snapshots"]["logged"] > 0


def test_a_well_formed_checkpoint_with_other_tensor_shapes_is_a_finding_not_a_crash(copy: Path) -> None:
    def reshape(ckpt) -> None:
        name = next(k for k, v in ckpt.model.items() if v.dim() == 2)
        ckpt.model[name] = torch.zeros(ckpt.model[name].shape[0] + 1, ckpt.model[name].shape[1])

    edit_checkpoint(copy, 0, 8, reshape)
    assert "another shape or dtype than the precommitted layout" in _caught(run_verify(copy, segments=0), "segments")


def test_a_fifo_in_the_run_is_a_violation_and_never_waited_on(copy: Path) -> None:
    import os

    index = copy / "checkpoints" / "rank-00000.json"
    index.unlink()
    os.mkfifo(index)  # nobody ever writes to it: reading it would hang for ever
    assert "not a regular file" in _caught(run_verify(copy, segments=0), "precommitment")


def test_a_garbled_or_foreign_chip_certificate_is_a_chip_logs_violation(honest: Path, tmp_path: Path) -> None:
    import shutil

    chips = tmp_path / "chips"
    shutil.copytree(honest / "chips", chips, symlinks=True)
    serial = next(p for p in chips.iterdir() if (p / "certificate.json").exists())
    (serial / "certificate.json").write_text('{"garbled": ')
    doc = verify(VerifyRequest(runs=[], chips=[chips], chipmaker_roots=[VerifyKey.load(honest / "chips" / "chipmaker" / "chipmaker.pub")],
                               prover_keys=[VerifyKey.load(honest / "keys" / "prover.pub")], seed=b"s" * 32))
    assert "malformed chip certificate" in _caught(doc, "chip-logs")
    foreign = SigningKey.generate().public_key  # the Verifier pins another chipmaker: no chip chains to it
    doc = verify(VerifyRequest(runs=[], chips=[honest / "chips"], chipmaker_roots=[foreign],
                               prover_keys=[VerifyKey.load(honest / "keys" / "prover.pub")], seed=b"s" * 32))
    assert "not signed by any pinned chipmaker root" in _caught(doc, "chip-logs")
