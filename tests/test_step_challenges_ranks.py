"""Step challenges of a distributed run (issue 19): `respond` answers every rank's state, the judge
replays a drawn step with all ranks in one sandboxed executor job (DDP, gloo) and names the rank
whose committed state the replay does not reproduce (attack `step-forged-rank`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from computewatch.adversary._step_forgery_runs import RANK_DRAWN, ddp_response, forge_rank_commitment, judge_rank_forgery
from computewatch.adversary.suite import get_attack
from computewatch.formats.challenge import read_response

SECRET = bytes(range(32))


def test_every_rank_answers_and_a_forged_rank_is_caught_and_named(tmp_path: Path) -> None:
    """One judge pass over a run whose rank 1 claims a forged state after step 5: the honest
    step 2 passes on both ranks, step 5 passes on rank 0 and fails on rank 1, named."""
    run, response = ddp_response(tmp_path / "ddp", SECRET)
    answers = read_response(response)["answers"]
    assert sorted((a["step"], a["rank"]) for a in answers) == [(t, r) for t in RANK_DRAWN for r in (0, 1)]
    forged = tmp_path / "forged"
    shutil.copytree(run, forged)
    forge_rank_commitment(forged, 1, 5)
    spot, findings = judge_rank_forgery(forged, response, SECRET, tmp_path)
    assert [(f["step"], f["rank"]) for f in spot["failed"]] == [(5, 1)], findings
    assert spot["drawn"] == spot["replayed_steps"] == len(RANK_DRAWN) and spot["passed"] == 1
    assert spot["cost_share"] == pytest.approx(len(RANK_DRAWN) / 8, rel=0.05)
    assert len(findings) == 1 and "step 5 rank 1" in findings[0] and "does not reproduce" in findings[0]
    (loc,) = spot["localized"]
    assert loc["step"] == 5 and loc["rank"] == 1
    assert get_attack("step-forged-rank").expected == "verifier.steps"
