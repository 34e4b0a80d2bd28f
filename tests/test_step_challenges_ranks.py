"""Step challenges of a distributed run (issue 19): `respond` answers every rank's state, the judge
replays a drawn step with all ranks in one sandboxed executor job (DDP, gloo) and names the rank
whose committed state the replay does not reproduce."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from computewatch.adversary.transcript import edit_steps
from computewatch.crypto.digest import blake3_bytes
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.challenge import challenge_tag, read_response, response_object, write_response
from computewatch.formats.manifest import prover_key, read_manifest, write_manifest
from computewatch.formats.steps import StepLog, records_root
from computewatch.formats.storage import RunStorage
from computewatch.prover.respond import respond
from computewatch.prover.runner import TrainConfig, train
from computewatch.verifier._audit import inventory
from computewatch.verifier._run import staged_run
from computewatch.verifier.challenges import make_challenge
from computewatch.verifier.sandbox import sandbox_problem
from computewatch.verifier.spot_checks import judge_responses
from computewatch.verifier.step_replay import judge_steps

SECRET = bytes(range(32))
DRAWN = [2, 5]


def _forge_rank(run_dir: Path, rank: int, step: int) -> None:
    """Rank `rank` claims another state after `step` than the program makes (the records
    rewritten and the manifest re-signed, as the Prover can)."""
    storage = RunStorage(run_dir, create=False)

    def fix(records: list[Any]) -> list[Any]:
        rec = records[step]
        state = list(rec.state)
        state[rank] = replace(state[rank], weights=blake3_bytes(b"forged").hex())
        records[step] = replace(rec, state=tuple(state))
        return records

    edit_steps(run_dir, fix)
    records = list(StepLog(storage).read())
    manifest = read_manifest(storage)
    root = records_root(records)
    write_manifest(storage, replace(manifest, steps={"count": len(records), "records_root": root.hex() if root else None}), prover_key(storage))


def _challenge(inv: dict[str, Any]) -> dict[str, Any]:
    """The Verifier's challenge of the steps DRAWN (tagged with its secret)."""
    challenge = make_challenge(inv["step_commitments"], inv["run_id"], inv["precommitment_digest"], SECRET, 0, top_q=0, now_ns=0)
    challenge["steps"] = [{"step": t, "reasons": ["chosen"]} for t in DRAWN]
    challenge["tag"] = challenge_tag(challenge, SECRET)
    return challenge


def _judge(run_dir: Path, response: Path, work: Path) -> tuple[dict[str, Any], list[str]]:
    keys = [VerifyKey.load(run_dir / "keys" / "prover.pub")]
    with staged_run(str(run_dir), keys, checkpoints="all") as staged:
        inv = inventory(staged)
        challenge = _challenge(inv)
        answered = read_response(response)
        objects = {name: response_object(response, name) for a in answered["answers"] for name in (a["before"], a["ops"])}
        folder = work / f"response-{run_dir.name}"
        write_response(folder, challenge, answered["answers"], objects)
        findings: list[str] = []
        runs = {inv["run_id"]: dict(inv, run_dir=str(run_dir), steps=inv["step_commitments"]["count"])}
        spot, localized = judge_responses(runs, [str(folder)], SECRET, lambda specs: judge_steps(staged, specs, sandbox=sandbox_problem() is None),
                                          lambda n, d: findings.append(d), lambda n, d: None, now_ns=60 * 10**9)
    return dict(spot, localized=localized), findings


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("ranks")
    run = work / "honest"
    train(TrainConfig(out=run, preset="mlp", steps=8, checkpoint_every=4, nproc=2, strategy="ddp", monitor=False, threads=1,
                      nonce=b"ranks", overrides={"corpus_bytes": 1 << 14}))
    # The Prover answers the honest challenge once (two gloo processes); the forged run's
    # answers are the same states (only its claimed commitment differs).
    inv_keys = [VerifyKey.load(run / "keys" / "prover.pub")]
    with staged_run(str(run), inv_keys, checkpoints="all") as staged:
        inv = inventory(staged)
    respond(run, _challenge(inv), work / "response")
    return run, work / "response"


def test_every_rank_answers_and_a_forged_rank_is_caught_and_named(ddp: tuple[Path, Path], tmp_path: Path) -> None:
    """One judge pass over a run whose rank 1 claims a forged state after step 5: the honest
    step 2 passes on both ranks, step 5 passes on rank 0 and fails on rank 1, named."""
    run, response = ddp
    answers = read_response(response)["answers"]
    assert sorted((a["step"], a["rank"]) for a in answers) == [(t, r) for t in DRAWN for r in (0, 1)]
    forged = tmp_path / "forged"
    shutil.copytree(run, forged)
    _forge_rank(forged, 1, 5)
    spot, findings = _judge(forged, response, tmp_path)
    assert [(f["step"], f["rank"]) for f in spot["failed"]] == [(5, 1)], findings
    assert spot["drawn"] == spot["replayed_steps"] == len(DRAWN) and spot["passed"] == 1
    assert spot["cost_share"] == pytest.approx(len(DRAWN) / 8, rel=0.05)
    assert len(findings) == 1 and "step 5 rank 1" in findings[0] and "does not reproduce" in findings[0]
    (loc,) = spot["localized"]
    assert loc["step"] == 5 and loc["rank"] == 1
