"""What a training program may claim (issue 18): sampling that samples, identity binding, no
check that passes on nothing, busy time the chip measures, templates and audited programs."""

from __future__ import annotations

import itertools

import pytest

from computewatch.analysis.segments import forgery_detection, segments_for_detection
from computewatch.verifier.selection import select_segments, selection_summary


# ------------------------------------------------------------------------------ sampling (item 7)
def _norms(steps: list[int], big: int) -> list[list[float]]:
    return [[a, b, 9.0 if a == big else 1.0] for a, b in itertools.pairwise(steps)]


def test_top_q_skips_a_segment_already_chosen_for_a_snapshot() -> None:
    steps = list(range(0, 130, 10))  # twelve segments
    # The largest update is the first segment, which a snapshot already selects.
    chosen = select_segments("run", steps, [5], _norms(steps, 0), b"k" * 32, count=0)
    reasons = {(s.start, s.end): s.reasons for s in chosen}
    assert reasons[(0, 10)] == ["snapshot"]
    assert [k for k, r in reasons.items() if "top-q" in r] == [(10, 20)]  # the next largest, not the first again


def test_default_draw_meets_the_stated_target_and_the_measured_rate_agrees() -> None:
    steps = list(range(0, 130, 10))
    norms = _norms(steps, 0)
    chosen = select_segments("run", steps, [], norms, b"k" * 32)
    summary = selection_summary(chosen, steps)
    # top-q takes (0, 10); 11 eligible segments; half of them (rounded up) drawn at random.
    assert summary["eligible"] == 11 and summary["random"] == segments_for_detection(11, 0.5) == 6
    assert summary["one_segment_forgery_detection"] == pytest.approx(6 / 11)
    forged = 70
    hits = sum(any(s.start == forged for s in select_segments("run", steps, [], norms, bytes([i]) * 32)) for i in range(256))
    assert abs(hits / 256 - 6 / 11) < 0.1
    high = select_segments("run", steps, [], norms, b"k" * 32, detection_target=0.9)
    assert selection_summary(high, steps)["one_segment_forgery_detection"] >= 0.9


def test_forgery_detection_closed_form() -> None:
    assert forgery_detection(10, 1) == pytest.approx(0.1)
    assert forgery_detection(10, 3, forged=2) == pytest.approx(1 - (8 * 7 * 6) / (10 * 9 * 8))
    assert forgery_detection(0, 0) == 1.0 and forgery_detection(5, 5) == 1.0
    assert segments_for_detection(12, 0.99) == 12 and segments_for_detection(0) == 0
    with pytest.raises(ValueError, match="target"):
        segments_for_detection(4, 0.0)


# ----------------------------------------------------------------------- identity binding (item 6)
def test_register_refuses_a_run_id_another_owner_holds(registry) -> None:
    from computewatch.registry import RegistryError

    reg = registry.reg
    a, b = registry.register(0, to="acme"), registry.register(1, to="beta")
    reg.declare_run("acme", "frontier-1", [a], precommitment="ab" * 32)
    with pytest.raises(RegistryError, match="already held by 'acme'"):
        reg.declare_run("beta", "frontier-1", [b], precommitment="cd" * 32)
    assert [r["owner"] for r in reg.runs()] == ["acme"]
    from computewatch.verifier.binding import RunBinding, held_conflicts, register_bindings

    (held,) = register_bindings(reg)
    assert held == RunBinding("frontier-1", registry.keys["acme"].public_key.keyid, "ab" * 32, held.source)
    beta_run = {"frontier-1": {"provers": [registry.keys["beta"].public_key.keyid], "precommitment_digest": "cd" * 32}}
    assert "another Prover's run id" in held_conflicts(beta_run, [held])[0]


def test_held_conflicts_name_another_provers_run_id() -> None:
    from computewatch.verifier.binding import RunBinding, held_conflicts

    runs = {"r": {"provers": ["b" * 64], "precommitment_digest": "d" * 64}}
    held = [RunBinding("r", "a" * 64, "d" * 64, source="policy approval")]
    (finding,) = held_conflicts(runs, held)
    assert "held by Prover aaaa" in finding and "another Prover's run id" in finding
    assert held_conflicts(runs, [RunBinding("r", "b" * 64, "d" * 64)]) == []
    assert "one id names one run" in held_conflicts(runs, [RunBinding("r", "b" * 64, "e" * 64)])[0]
    assert held_conflicts(runs, [RunBinding("r")]) == []  # unbound: decides nothing


# ------------------------------------------------------------- no check passes on nothing (item 5)
def test_null_or_missing_losses_are_findings_unless_the_replay_diverged_too() -> None:
    from computewatch.verifier.losses import loss_findings

    assert loss_findings("r", [[0, 1.0], [1, 0.9]], 2, []) == []
    (null,) = loss_findings("r", [[0, None], [1, None]], 2, [[0, 1.2]])
    assert "2 of 2 steps record a null loss" in null
    assert loss_findings("r", [[0, None], [1, 0.9]], 2, [[0, None]]) == []  # both diverged: consistent
    (missing,) = loss_findings("r", [[0, 1.0]], 3, [])
    assert "no loss recorded for steps 1, 2" in missing


def test_epsilon_is_capped_and_a_false_accept_rate_above_the_bound_is_a_finding() -> None:
    from computewatch.verifier.tolerance import EPSILON_CAP, bound_tolerance, tolerance_findings

    honest = {"epsilon": 2.4e-4, "honest_relative": [2.4e-5], "spoof_relative": [9e-3, 0.25], "false_accept_rate": 0.0, "false_reject_rate": 0.0}
    assert bound_tolerance(honest)["epsilon"] == 2.4e-4 and tolerance_findings(bound_tolerance(honest)) == []
    # A program that adds noise only under other thread counts (the calibration replays).
    inflated = {"epsilon": 15.1, "honest_relative": [1.51], "spoof_relative": [0.3, 1.4], "false_accept_rate": 1.0, "false_reject_rate": 0.0}
    bounded = bound_tolerance(inflated)
    assert bounded["epsilon"] == EPSILON_CAP and bounded["epsilon_calibrated"] == 15.1
    assert bounded["false_accept_rate"] == 0.0 and bounded["false_reject_rate"] == 1.0  # against the cap
    findings = tolerance_findings(bounded)
    assert len(findings) == 1 and "above the cap" in findings[0]
    # A false-accept rate above the bound, epsilon under the cap: the spoofs pass, a finding.
    loose = bound_tolerance({"epsilon": 5e-4, "spoof_relative": [4e-4, 0.3], "false_accept_rate": 0.5})
    assert any("cannot tell a forgery from noise" in f for f in tolerance_findings(loose))


# ---------------------------------------------------------------- trusted templates (item 3)
def test_precommitment_v3_vector_names_the_template_and_v2_stays_readable() -> None:
    import json
    import re
    from dataclasses import replace
    from pathlib import Path

    from computewatch.crypto.canonical import canonical_json
    from computewatch.crypto.errors import FormatError
    from computewatch.formats.precommitment import Precommitment

    page = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text()
    text = re.search(r"```json precommitment-v3\n(.*?)\n```", page, re.S).group(1)  # type: ignore[union-attr]
    pre = Precommitment.from_json(json.loads(text))
    assert (pre.program_template, pre.program_kind) == ("computewatch/demo-preset", "template")
    assert canonical_json(pre.to_json()).decode() == text
    assert pre.digest().hex() == re.search(r"precommitment v3 digest: `([0-9a-f]{64})`", page).group(1)  # type: ignore[union-attr]
    custom = replace(pre, program_template=None)
    assert custom.to_json()["v"] == 2 and custom.program_kind == "custom"  # a custom program: v2, digest unchanged
    assert Precommitment.from_json(custom.to_json()) == custom
    bad = dict(json.loads(text), program={"entry": "program:make_program"})
    with pytest.raises(FormatError, match="v3: program must be"):
        Precommitment.from_json(bad)


def test_a_template_runs_the_verifiers_pinned_code_not_the_provers_files() -> None:
    from computewatch.formats.program import ProgramError, load_program
    from computewatch.formats.templates import get_template
    from computewatch.prover.runner import demo_program

    t = get_template("computewatch/demo-preset")
    assert demo_program().template == t.name and demo_program().code_digest == t.code_digest
    # The Prover's copy says something else; named as the template, the Verifier's copy runs.
    hostile = dict(t.files(), **{"program.py": b"raise SystemExit('the Prover's code ran')\n"})
    with load_program(hostile, t.entry, t.code_digest, t.name) as loaded:
        assert loaded.factory.__module__.endswith(".program") and callable(loaded.factory)
    with pytest.raises(ProgramError, match="pins version"), load_program(hostile, t.entry, "00" * 32, t.name):
        pass


def test_the_sandboxed_executor_runs_the_named_templates_pinned_copy(tmp_path) -> None:
    """The executor gets the precommitment's template in its Hello and imports the Verifier's
    pinned copy; the staged files, here the Prover's hostile ones, are not what runs."""
    from computewatch.formats.program import code_digest_of
    from computewatch.formats.templates import get_template
    from computewatch.prover.runner import TrainConfig, _workload, run_hyperparameters
    from computewatch.verifier.cluster import ExecutorFailure, ExecutorSession
    from computewatch.verifier.protocol import Hello, decode, encode
    from computewatch.verifier.sandbox import Limits, sandbox_problem

    t = get_template("computewatch/demo-preset")
    hello = Hello("hello", t.entry, t.code_digest, {}, "00" * 32, 1, "single", 1, None, t.name)
    assert decode(encode(hello), Hello) == hello  # the field travels the typed channel
    if sandbox_problem() is not None:
        pytest.fail(f"no sandbox here: {sandbox_problem()} (Debian: apt-get install bubblewrap)", pytrace=False)  # a core path: never skipped
    config = TrainConfig(out=tmp_path, steps=2)
    hp = run_hyperparameters(_workload(config), config)
    hostile = dict(t.files(), **{"program.py": b"raise SystemExit('the Prover code ran')\n"})
    limits = Limits(cpu_seconds=120, address_space=6 << 30, file_size=64 << 20, processes=128)
    outcomes = {}
    for template, digest in ((t.name, t.code_digest), (None, code_digest_of(hostile))):
        session = ExecutorSession(sandbox=True, limits=limits, max_output=1 << 20)
        for rel, data in hostile.items():
            session.put(f"program/{rel}", data)
        with session:
            try:
                outcomes[template] = session.start(Hello("hello", t.entry, digest, hp, "00" * 32, 1, "single", 1, None, template), 120).batch_size
            except ExecutorFailure as exc:
                outcomes[template] = str(exc)
    assert isinstance(outcomes[t.name], int) and outcomes[t.name] > 0  # the pinned copy answered Ready
    assert not isinstance(outcomes[None], int)  # the control: the staged files themselves do not start


def test_a_template_of_another_version_is_undecided_not_replayed_with_the_provers_copy() -> None:
    from types import SimpleNamespace

    from computewatch.formats.templates import get_template
    from computewatch.verifier._examine import _template_problem

    t = get_template("computewatch/demo-preset")
    pre = SimpleNamespace(program_entry=t.entry, code_digest="00" * 32, program_template=t.name)
    run = SimpleNamespace(precommitment=pre, program_files=t.files)
    assert "pins version" in (_template_problem(run) or "")
    assert _template_problem(SimpleNamespace(precommitment=SimpleNamespace(program_entry=t.entry, code_digest=t.code_digest, program_template=t.name), program_files=t.files)) is None


# ------------------------------------------------------------------ audited programs (item 4)
def test_the_scan_lists_what_a_custom_program_does() -> None:
    from computewatch.verifier.program_scan import BLOB_BYTES, scan_program

    src = (
        "import os, socket\nfrom torch.utils._python_dispatch import TorchDispatchMode\nfrom .model import Net\n"
        "import torch\nTEXT = '" + "x" * (BLOB_BYTES + 1) + "'\n"
        "def f():\n    open('w.bin').read()\n    torch._C._DisableTorchDispatch()\n    n = torch.get_num_threads()\n"
        "    os.system('ls')\n    exec('1')\n    import computewatch.verifier.flops\n"
    )
    scan = scan_program({"train.py": src.encode(), "weights.bin": bytes(BLOB_BYTES + 1), "model.py": b"import torch\n"})
    assert scan["uses"] == ["file", "socket", "process", "dispatch", "dynamic", "environment", "blob", "verifier"]
    assert scan["imports"] == ["computewatch", "os", "socket", "torch"]  # `.model` is the program's own
    assert "train.py:8: dispatch: uses _DisableTorchDispatch" in scan["findings"]
    assert scan["counts"]["blob"] == 2
    clean = scan_program({"train.py": b"import torch\nfrom torch import nn\ndef f(x):\n    return nn.functional.relu(x)\n"})
    assert clean["uses"] == [] and clean["imports"] == ["torch"]


def test_policies_read_the_program_facts() -> None:
    from computewatch.verifier.rules import Policy, RunFacts

    policy = Policy.from_toml(
        '[policy]\nname = "p"\nthreshold_flops = 1.0\n[[rules]]\nid = "t"\nkind = "requirement"\n'
        "require = 'program.kind == \"template\" or (\"socket\" not in program.uses and len(program.imports) < 3)'\n"
    )
    outcome = lambda **program: policy.evaluate(RunFacts("r", 10, program=program))[0].outcome  # noqa: E731
    assert outcome(kind="template", uses=[], imports=[]) == "ok"
    assert outcome(kind="custom", uses=["file"], imports=["torch"]) == "ok"
    assert outcome(kind="custom", uses=["socket"], imports=["torch"]) == "violation"
    assert policy.evaluate(RunFacts("r", 10))[0].outcome == "error"  # not established: never a pass


def test_the_detection_target_is_the_default_for_users() -> None:
    """`verify` on the command line and the service's verify job draw by the detection target
    unless a number (or all) is asked for; the library's default is the same."""
    import inspect

    from computewatch.cli.verify import _segments, verify
    from computewatch.service.models import VerifyJob
    from computewatch.verifier import VerifyRequest

    assert inspect.signature(verify).parameters["segments"].default == "auto"
    assert _segments("auto", False) is None and _segments("3", False) == 3 and _segments("all", False) == "all"
    assert VerifyJob(runs=["inputs/a/run"], chips=["inputs/a/chip"]).segments == "auto"
    assert VerifyRequest(runs=[], chips=[], chipmaker_roots=[], prover_keys=[], seed=b"").segments is None
