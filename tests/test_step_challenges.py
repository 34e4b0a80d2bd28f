"""Step challenges (issue 19, items 2-4): challenge/respond, the judge's `steps` check and
`spot_checks`, bisection to one operator, and the attacks they stop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import rfc8785
from typer.testing import CliRunner

from _runs import honest_run, run_verify
from computewatch.adversary._step_forgery_runs import _keys, challenge_and_judge, detection_closed_form, forged_run
from computewatch.adversary.suite import Context, run_attack
from computewatch.cli import app
from computewatch.verifier.bisection import bisect_operators, bisect_steps
from computewatch.verifier.challenges import draw_steps

SECRET = bytes(range(32))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return honest_run(tmp_path_factory.mktemp("challenge") / "run")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory):
    with Context(tmp_path_factory.mktemp("attacks")) as c:
        yield c


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "240"})


@pytest.fixture(scope="module")
def answered(run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("exchange")
    seed = work / "seed.txt"
    seed.write_text(SECRET.hex() + "\n")
    challenge = work / "CHALLENGE.json"
    res = _cli("challenge", str(run), "--seed-file", str(seed), "--steps", "2", "--out", str(challenge), "--prover-pub", str(run / "keys" / "prover.pub"), "--json")
    assert res.exit_code == 0, res.output
    res = _cli("respond", str(run), str(challenge), "--out", str(work / "response"), "--json")
    assert res.exit_code == 0, res.output
    return challenge, work / "response"


def test_honest_answers_pass_and_the_verdict_reports_spot_checks(run: Path, answered: tuple[Path, Path]) -> None:
    challenge, response = answered
    drawn = [s["step"] for s in json.loads(challenge.read_bytes())["steps"]]
    for path in (challenge, response / "response.json"):  # format version 2: RFC 8785 (not our encoder)
        data = path.read_bytes()
        assert json.loads(data)["v"] == 2 and rfc8785.dumps(json.loads(data)) == data
    doc = run_verify(run, seed=SECRET, responses=[str(response)])
    steps = next(c for c in doc["checks"] if c["name"] == "steps")
    assert steps["passed"] is True, steps
    spot = doc["spot_checks"]
    assert spot["drawn"] == len(drawn) == spot["passed"] == spot["replayed_steps"] and spot["failed"] == []
    assert spot["cost_share"] == pytest.approx(len(drawn) / 16, rel=0.05)
    assert doc["localized"] == [] and doc["verdict"] == "compliant"


def test_an_altered_challenge_or_a_foreign_secret_is_refused(run: Path, answered: tuple[Path, Path], tmp_path: Path) -> None:
    _, response = answered
    doc = run_verify(run, seed=b"another secret for the tests....", responses=[str(response)])
    assert "tag does not verify" in next(c for c in doc["checks"] if c["name"] == "steps")["detail"]
    altered = shutil.copytree(response, tmp_path / "altered")
    resp = json.loads((altered / "response.json").read_bytes())
    resp["challenge"]["steps"] = resp["challenge"]["steps"][:1]  # the Prover drops a drawn step
    (altered / "response.json").write_text(json.dumps(resp))
    doc = run_verify(run, seed=SECRET, responses=[str(altered)], segments=0)
    assert doc["verdict"] == "violation"


def test_records_changed_after_the_challenge_are_a_violation(run: Path, answered: tuple[Path, Path], tmp_path: Path) -> None:
    from computewatch.adversary.transcript import edit_steps

    _, response = answered
    changed = shutil.copytree(run, tmp_path / "changed")
    edit_steps(changed, lambda records: [r if r.step != 15 else type(r)(**{**r.__dict__, "loss": 9.0}) for r in records])
    doc = run_verify(changed, seed=SECRET, responses=[str(response)], segments=0)
    detail = next(c for c in doc["checks"] if c["name"] == "steps")["detail"]
    assert "changed after the challenge" in detail


def test_cli_refuses_bad_input_in_one_line(run: Path, tmp_path: Path, answered: tuple[Path, Path]) -> None:
    seed = tmp_path / "seed.txt"
    seed.write_text("not hex\n")
    res = _cli("challenge", str(run), "--seed-file", str(seed), "--steps", "2", "--out", str(tmp_path / "c.json"), "--prover-pub", str(run / "keys" / "prover.pub"))
    assert res.exit_code == 2 and "--seed-file" in res.output and not (tmp_path / "c.json").exists()
    seed.write_text(SECRET.hex())
    res = _cli("challenge", str(run), "--seed-file", str(seed), "--steps", "2", "--out", str(answered[0]), "--prover-pub", str(run / "keys" / "prover.pub"))
    assert res.exit_code == 2 and "exists" in res.output
    res = _cli("respond", str(run), str(seed), "--out", str(tmp_path / "r"))
    assert res.exit_code == 2 and "challenge" in res.output


def test_challenge_tags_are_over_the_encoding_the_version_names() -> None:
    """A v2 challenge's tag is HMAC over its RFC 8785 encoding (recomputed here with `rfc8785`);
    a legacy v1 challenge, tagged over canonical JSON version 1, still verifies."""
    import hashlib
    import hmac

    from computewatch.crypto.canonical import canonical_json
    from computewatch.crypto.errors import FormatError
    from computewatch.formats.challenge import CHALLENGE_KIND, challenge_tag, check_challenge, encode_challenge

    key = hashlib.sha256(b"computewatch step challenge v1\x00" + SECRET).digest()
    doc = {"v": 2, "kind": CHALLENGE_KIND, "run_id": "r", "precommitment_digest": "ab" * 32, "records_root": "cd" * 32,
           "steps_count": 8, "mode": "exact", "issued_ns": "1", "deadline_s": 60,
           "steps": [{"step": 3, "reasons": ["random"]}], "tag": ""}
    for version, encode in ((2, rfc8785.dumps), (1, canonical_json)):
        doc = dict(doc, v=version, tag="")
        body = {k: v for k, v in doc.items() if k != "tag"}
        doc["tag"] = challenge_tag(doc, SECRET)
        assert doc["tag"] == hmac.new(key, encode(body), hashlib.sha256).hexdigest()
        assert check_challenge(doc, SECRET) is doc and encode_challenge(doc) == encode(doc)
    with pytest.raises(FormatError, match="not a v1 or v2"):
        check_challenge(dict(doc, v=3), SECRET)


def test_draws_are_secret_keyed_distinct_and_include_top_q() -> None:
    norms = [1.0] * 100
    norms[37] = 50.0
    a = draw_steps(SECRET, "run", 100, 10, norms, top_q=1)
    assert len({s["step"] for s in a}) == len(a) and any(s["step"] == 37 and "top-q" in s["reasons"] for s in a)
    assert sum("random" in s["reasons"] for s in a) == 10
    assert draw_steps(SECRET, "run", 100, 10) == draw_steps(SECRET, "run", 100, 10)
    assert draw_steps(SECRET, "run", 100, 10) != draw_steps(b"x" * 32, "run", 100, 10)


def test_bisection_stays_within_its_round_bounds() -> None:
    for bad in (0, 1, 17, 63):
        found = bisect_steps(0, 64, lambda a, b, bad=bad: b <= bad)
        assert found.step == bad and found.rounds <= found.bound == 6
    mine = [["op", f"{i:064x}"] for i in range(100)]
    for first in (0, 41, 99):
        theirs = [list(op) for op in mine]
        for op in theirs[first:]:
            op[1] = "f" * 64
        found = bisect_operators(mine, theirs)
        assert found.index == first and found.rounds == found.bound == 7
    assert bisect_operators(mine, mine).index is None
    assert bisect_operators(mine, [*mine, ["mul_", "0" * 64]]).index == 100


def test_a_forged_step_is_caught_and_localized_to_its_operator(tmp_path: Path) -> None:
    run = forged_run(tmp_path / "forged", 24, [13], "break", checkpoint_every=8)
    spot, localized, _findings, _challenge = challenge_and_judge(run, _keys(run.run_dir), SECRET, 24, tmp_path / "judge")
    assert [f["step"] for f in spot["failed"]] == [13] and spot["passed"] == 23
    (loc,) = localized
    assert loc["step"] == 13 and loc["operator"] == "mul_" and loc["rounds"] <= loc["round_bound"]
    from computewatch.verifier.report import render_html

    page = render_html({"verdict": "violation", "spot_checks": spot, "localized": localized}, figures={})
    assert "mul_" in page and "13" in page and f"{loc['rounds']} of at most {loc['round_bound']}" in page


def test_closed_form() -> None:
    assert detection_closed_form(100, 1, 10) == pytest.approx(0.1)
    assert detection_closed_form(100, 10, 91) == 1.0
    assert pytest.approx(detection_closed_form(2000, 20, 20), abs=0.005) == 1 - 0.99**20


@pytest.mark.parametrize("name", ["step-responder-refuses", "step-responder-late", "step-responder-wrong-state", "step-update-jump"])
def test_attacks_are_caught_by_the_steps_check(ctx: Context, name: str) -> None:
    result = run_attack(name, context=ctx)
    assert result.ok and result.detected_by == "verifier.steps", result.detail


def test_a_failed_segment_names_the_first_step_off_the_committed_chain(tmp_path: Path) -> None:
    from computewatch.crypto.signing import VerifyKey
    from computewatch.verifier import VerifyRequest, verify

    run = forged_run(tmp_path / "forged", 24, [13], "break", checkpoint_every=8)
    request = VerifyRequest(runs=[run.run_dir], chips=[], chipmaker_roots=[], prover_keys=[VerifyKey.load(run.run_dir / "keys" / "prover.pub")],
                            seed=SECRET, in_process=True, segments="all")
    doc = verify(request)
    assert doc["verdict"] == "violation"
    assert [(loc["segment"], loc["step"]) for loc in doc["localized"]] == [([8, 16], 13)]


def test_tolerance_mode_judges_by_distance_to_the_answered_after_state(tmp_path: Path) -> None:
    run = forged_run(tmp_path / "forged", 12, [5], "break", checkpoint_every=4)
    spot, localized, findings, _ = challenge_and_judge(run, _keys(run.run_dir), SECRET, 0, tmp_path / "judge", steps=[3, 5], mode="tolerance")
    assert [f["step"] for f in spot["failed"]] == [5] and spot["passed"] == 1, findings
    (loc,) = localized
    assert loc["step"] == 5 and loc["distance"] > 1e-4 and loc["operator"] == "mul_"


def test_top_q_ranks_a_late_jump_above_early_large_updates() -> None:
    norms = [10.0] * 20 + [0.99**i for i in range(300)]
    norms[250] *= 10  # far below the warm-up's norms in absolute terms
    drawn = draw_steps(SECRET, "run", len(norms), 0, norms, top_q=1)
    assert [s["step"] for s in drawn] == [250]


def test_verify_with_responses_but_no_secret_is_unusable_input(run: Path, answered: tuple[Path, Path]) -> None:
    res = _cli("verify", str(run), "--chips", str(run / "chips"), "--chipmaker-pub", str(run / "chips" / "chipmaker" / "chipmaker.pub"),
               "--prover-pub", str(run / "keys" / "prover.pub"), "--responses", str(answered[1]))
    assert res.exit_code == 2 and "--seed" in res.output


def test_the_judge_hashes_an_answered_state_before_the_sandboxed_replay(run: Path, answered: tuple[Path, Path]) -> None:
    """judge_steps: a state that matches its commitment is replayed in the executor (digests of
    the returned state, the operator trace); one that does not is never replayed."""
    from computewatch.crypto.signing import VerifyKey
    from computewatch.verifier._audit import inventory
    from computewatch.verifier._run import staged_run
    from computewatch.verifier.step_replay import judge_steps

    _, response = answered
    answer = json.loads((response / "response.json").read_bytes())["answers"][0]
    t = answer["step"]
    with staged_run(str(run), [VerifyKey.load(run / "keys" / "prover.pub")], checkpoints="all") as staged:
        summary = inventory(staged)["step_commitments"]
        expected = summary["initial"][0] if t == 0 else summary["state"][t - 1][0]
        spec = {"step": t, "rank": 0, "response_dir": str(response), "before": answer["before"], "after": None}
        good, wrong = judge_steps(staged, [dict(spec, expected_before=expected), dict(spec, expected_before=["0" * 64, "0" * 64])])
    assert good["before"] == expected and good["replayed"] is True and good["after"] == summary["state"][t][0]
    assert good["lr_ok"] and good["samples_ok"] and good["ops"] and all(len(op) == 2 for op in good["ops"])
    assert wrong["before"] == expected and wrong["replayed"] is False and "after" not in wrong


def test_a_tolerance_mode_segment_is_bisected_to_the_forged_step_and_operator(tmp_path: Path) -> None:
    """segment_bisection: the failed segment [0, 8) of a run forged at step 6, bisected by distance
    over the cheater's answered states in ceil(log2 8) = 3 rounds, names step 6 and the cheater's
    nudge; with no answered state it names the first step to challenge instead."""
    from computewatch.crypto.signing import VerifyKey
    from computewatch.prover.respond import respond
    from computewatch.verifier._audit import inventory
    from computewatch.verifier._run import staged_run
    from computewatch.verifier.challenges import make_challenge
    from computewatch.verifier.sandbox import sandbox_problem
    from computewatch.verifier.segment_bisection import answered_states, bisect_tolerance_segment

    run = forged_run(tmp_path / "forged", 12, [6], "break", checkpoint_every=8)
    with staged_run(str(run.run_dir), [VerifyKey.load(run.run_dir / "keys" / "prover.pub")], checkpoints="all") as staged:
        inv = inventory(staged)
        summary = inv["step_commitments"]
        assert bisect_tolerance_segment(staged, "r", 0, 8, summary, {}, 1e-4)["next_challenge"] == 4
        challenge = make_challenge(summary, inv["run_id"], inv["precommitment_digest"], SECRET, 0, top_q=0, mode="tolerance", at=range(1, 8))
        respond(run.run_dir, challenge, tmp_path / "answers", step_fn=run.step_fn)
        answers = answered_states([str(tmp_path / "answers")], SECRET)[inv["run_id"]]
        assert answered_states([str(tmp_path / "answers")], b"\x00" * 32) == {}  # not the Verifier's challenge
        entry = bisect_tolerance_segment(staged, "r", 0, 8, summary, answers, 1e-4, sandbox=sandbox_problem() is None)
    assert (entry["step"], entry["operator"], entry["via"]) == (6, "mul_", "bisection"), entry
    assert entry["rounds"] == entry["round_bound"] == 3 and entry["distance"] > 1e-4
    assert entry["operator_rounds"] <= entry["operator_round_bound"]


def test_the_report_shows_a_localized_dispute_and_the_next_bisection_round() -> None:
    from computewatch.verifier.report_steps import render_steps

    loc = {"run": "r", "segment": [0, 8], "step": None, "operator": None, "rounds": None, "round_bound": 3, "distance": None, "next_challenge": 4}
    html = render_steps({"spot_checks": None, "localized": [loc]})
    assert "challenge step 4 next" in html and "[0, 8]" in html
    assert "nothing to localize" in render_steps({"spot_checks": {"drawn": 1, "passed": 1, "failed": []}, "localized": []})
