"""The `computewatch/lightning` template (issue 18 item 3): a Lightning run of a module from the
Verifier's pinned library records as a template run, replays from the Verifier's own files in
the sandbox, verifies compliant, and a policy can require it; a lab's own module stays custom."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from computewatch.formats.templates import get_template
from computewatch.integrations import SyntheticTokens
from computewatch.integrations.lightning import ComputewatchCallback
from computewatch.integrations.program.lightning_modules import CausalLM
from computewatch.prover.config import CheckpointConfig, ChipConfig, RunConfig
from computewatch.prover.runner import isolated_torch_state
from computewatch.prover.transcript import Transcript

TEMPLATES_ONLY = (
    '[policy]\nname = "templates"\nversion = 2\nthreshold_flops = 1.0\n'
    '[[rules]]\nid = "templates-only"\nkind = "requirement"\nrequire = \'program.kind == "template"\'\n'
)


def _fit(out: Path, module: L.LightningModule, steps: int = 4) -> ComputewatchCallback:
    cw = ComputewatchCallback(data=SyntheticTokens(0, 64, 16, 64), out=out, micro_batch_size=4,
                              config=RunConfig(threads=1, checkpoint=CheckpointConfig(every=2), chip=ChipConfig(secret_seed=b"l" * 32)))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, callbacks=[cw], enable_checkpointing=False, logger=False,
                        use_distributed_sampler=False, enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0)
    with isolated_torch_state():
        trainer.fit(module, train_dataloaders=cw.dataloader())
    return cw


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lit-template") / "run"
    _fit(out, CausalLM(vocab_size=64, block_size=15, n_layer=1, n_head=2, n_embd=16, warmup_steps=2, total_steps=4))
    return out


def test_a_pinned_module_records_as_the_lightning_template(run: Path) -> None:
    pre = Transcript(run).manifest.precommitment
    t = get_template("computewatch/lightning")
    assert (pre.program_template, pre.program_kind, pre.program_entry, pre.code_digest) == (t.name, "template", t.entry, t.code_digest)
    assert pre.hyperparameters["module"]["module"] == "lightning_modules" and pre.hyperparameters["module"]["class"] == "CausalLM"
    assert not (run / "program" / "user").exists()  # no code of the lab's travels with it


def test_the_template_run_verifies_compliant_and_a_policy_can_require_it(run: Path) -> None:
    from computewatch.adversary.world import verify_runs

    doc = verify_runs([run], segments="all", policy_text=TEMPLATES_ONLY)
    assert doc["verdict"] == "compliant", [c for c in doc["checks"] if c["passed"] is False]
    program = doc["runs"][0]["program"]
    assert program["kind"] == "template" and program["template"] == "computewatch/lightning"
    assert all(r["outcome"] == "ok" for r in doc["rules"])


def test_a_module_outside_the_library_cannot_be_declared_to_the_template() -> None:
    from computewatch.integrations.program.init import init_spec
    from computewatch.integrations.program.lightning_program import LightningProgram

    hp = {"v": 1, "program": "computewatch/lightning", "framework": {"lightning": L.__version__},
          "module": {"module": "data", "class": "SyntheticTokens", "hparams": {}}, "init": init_spec(0.02),
          "data": {"encoding": "computewatch/token-block-v1", "source": SyntheticTokens(0, 8, 4, 8).spec, "batch_size": 2},
          "trainer": {}}
    with pytest.raises(ValueError, match="no LightningModule"):
        LightningProgram(hp)
