"""`RunConfig`: declared once, validated naming the field, loaded from a dict or TOML, taken by the
Recorder (the integrations' entry points are covered in tests/test_integrations_*.py), and the
flat keyword options of before still working, deprecated."""

from __future__ import annotations

import dataclasses
import pickle
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from _run_config import SHARED

import computewatch
from computewatch.chip.chip import MAX_STEP_BUSY_S
from computewatch.formats.dataset import DatasetCommitment
from computewatch.formats.program import deterministic_cpu
from computewatch.prover import config as config_module
from computewatch.prover import distributed
from computewatch.prover.config import (
    CheckpointConfig,
    ChipConfig,
    ConfigError,
    DistributedConfig,
    RunConfig,
    resolve_config,
)
from computewatch.prover.recorder import Recorder
from computewatch.prover.runner import demo_program, isolated_torch_state
from computewatch.prover.transcript import Transcript

FULL = RunConfig(
    run_id="run-1",
    nonce=b"\x01\x02",
    resume=True,
    threads=2,
    chip=ChipConfig(dir=Path("chips"), snapshots_per_day=12.5, seconds_per_step=None, secret_seed=b"s" * 32, copyout_dir=Path("co"), ids=("a", None)),
    checkpoint=CheckpointConfig(every=7, step_commitments=False),
    distributed=DistributedConfig(strategy="fsdp", world_size=2, rank=1),
)


def test_every_field_round_trips_through_a_dict_and_pickles() -> None:
    assert RunConfig.from_dict(FULL.to_dict()) == FULL
    assert RunConfig.from_dict({}) == RunConfig()
    assert pickle.loads(pickle.dumps(FULL)) == FULL  # Lightning's spawned ranks get a copy
    # Every field of every section is one the dict form carries (nothing declared twice or lost).
    for name in ("chip", "checkpoint", "distributed"):
        assert set(FULL.to_dict()[name]) == {f.name for f in dataclasses.fields(getattr(FULL, name))}


def test_a_toml_file_gives_the_same_configuration(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'run_id = "run-1"\nnonce = "0102"\nresume = true\nthreads = 2\n'
        '[chip]\ndir = "chips"\nsnapshots_per_day = 12.5\nseconds_per_step = "measured"\n'
        f'secret_seed = "{(b"s" * 32).hex()}"\ncopyout_dir = "co"\nids = ["a"]\n'
        "[checkpoint]\nevery = 7\nstep_commitments = false\n"
        '[distributed]\nstrategy = "fsdp"\nworld_size = 2\nrank = 1\n'
    )
    # TOML has no null: a chip id that is unknown up front cannot be written there.
    assert RunConfig.from_toml(path) == FULL.replace(**{"chip.ids": ("a",)})
    (tmp_path / "bad.toml").write_text("[checkpoint\n")
    with pytest.raises(ConfigError, match="not TOML"):
        RunConfig.from_toml(tmp_path / "bad.toml")


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"checkpoint": {"evry": 5}}, "'checkpoint.evry'"),
        ({"chips": {}}, "'chips'"),
        ({"distributed": {"strategy": "zero3"}}, "distributed.strategy"),
        ({"distributed": {"world_size": 2, "rank": 2}}, "distributed.rank 2 outside distributed.world_size 2"),
        ({"checkpoint": {"every": 0}}, "checkpoint.every"),
        ({"checkpoint": {"every": -5}}, "checkpoint.every"),
        ({"checkpoint": {"every": True}}, "checkpoint.every"),
        ({"chip": {"seconds_per_step": -1.0}}, "chip.seconds_per_step"),
        ({"chip": {"seconds_per_step": MAX_STEP_BUSY_S + 1}}, "chip.seconds_per_step"),
        ({"chip": {"snapshots_per_day": 0}}, "chip.snapshots_per_day"),
        ({"chip": {"snapshots_per_day": float("nan")}}, "chip.snapshots_per_day"),
        ({"chip": {"secret_seed": "zz"}}, "chip.secret_seed"),
        ({"chip": {"enabled": False, "dir": "chips"}}, "chip.dir"),
        ({"chip": 3}, "chip must be a table"),
        ({"threads": 0}, "threads"),
        ({"nonce": ""}, "nonce"),
        ({"resume": "yes"}, "resume"),
    ],
)
def test_impossible_or_unknown_values_are_refused_naming_the_field(data: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("(", r"\(")):
        RunConfig.from_dict(data)


def test_sections_validate_when_built_directly_and_replace_checks_names() -> None:
    with pytest.raises(ConfigError, match=r"checkpoint\.every"):
        CheckpointConfig(every=-1)
    with pytest.raises(ConfigError, match=r"distributed\.strategy"):
        DistributedConfig(strategy="zero")
    assert RunConfig().replace(**{"checkpoint.every": 5}).checkpoint.every == 5
    with pytest.raises(ConfigError, match=r"'chip\.every'"):
        RunConfig().replace(**{"chip.every": 5})
    with pytest.raises(ConfigError, match=r"checkpoint\.every"):
        RunConfig().replace(**{"checkpoint.every": 0})


def test_one_declaration_of_the_limits_the_chip_and_sharding_use() -> None:
    assert config_module.MAX_STEP_BUSY_S == MAX_STEP_BUSY_S
    assert distributed.STRATEGIES is config_module.STRATEGIES
    assert {computewatch.RunConfig, computewatch.ChipConfig, computewatch.CheckpointConfig, computewatch.DistributedConfig} == {
        RunConfig, ChipConfig, CheckpointConfig, DistributedConfig
    }
    assert {"RunConfig", "ChipConfig", "CheckpointConfig", "DistributedConfig"} <= set(computewatch.__all__)
    from computewatch import integrations

    assert {"RunConfig", "ChipConfig", "CheckpointConfig", "DistributedConfig"} <= set(integrations.__all__)
    assert integrations.RunConfig is RunConfig


def test_the_flat_options_of_before_map_onto_the_config_with_a_deprecation_warning() -> None:
    accepted = ("chips", "checkpoint_every", "chip_seconds_per_step", "strategy", "threads")
    with pytest.warns(DeprecationWarning, match=r"checkpoint_every -> checkpoint\.every"):
        got = resolve_config("X", None, {"chips": False, "checkpoint_every": 5, "strategy": "fsdp"}, accepted)
    assert got == RunConfig(chip=ChipConfig(enabled=False), checkpoint=CheckpointConfig(every=5), distributed=DistributedConfig(strategy="fsdp"))
    with pytest.warns(DeprecationWarning):
        assert resolve_config("X", None, {"chips": "somewhere"}, accepted).chip.dir == Path("somewhere")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no options: no warning; the entry point's old defaults apply
        assert resolve_config("X", None, {}, accepted, {"chip_seconds_per_step": None}).chip.seconds_per_step is None
        assert resolve_config("X", FULL, {}, accepted) is FULL
    with pytest.raises(TypeError, match="not both"):
        resolve_config("X", FULL, {"threads": 1}, accepted)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
        resolve_config("X", None, {"nonsense": 1}, accepted)
    with pytest.raises(ConfigError, match="config must be a RunConfig"):
        resolve_config("X", {"threads": 1}, {}, accepted)  # type: ignore[arg-type]
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match=r"checkpoint\.every"):
        resolve_config("X", None, {"checkpoint_every": 0}, accepted)


def _record(out: Path, **kwargs: Any) -> Transcript:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(out, model=model, optimizer=opt, scheduler=None, hyperparameters={"lr": 0.1},
                  dataset=DatasetCommitment.from_samples([b"a", b"b"]), nonce=b"n", program=demo_program(), **kwargs) as rec:
        for step in range(3):
            model(torch.ones(1, 2)).sum().backward()
            opt.step()
            rec.step(step, [step % 2])
    return Transcript(out)


def test_the_recorder_takes_the_config_and_records_a_run_that_verifies(tmp_path: Path) -> None:
    config = SHARED.replace(run_id="cfg-run", **{"checkpoint.step_commitments": False})  # as the integrations' tests
    with isolated_torch_state():
        deterministic_cpu(1)
        t = _record(tmp_path / "new", config=config)
    with isolated_torch_state(), pytest.raises(ValueError, match=r"config\.threads is 1, but this process runs 2"):
        torch.set_num_threads(2)
        _record(tmp_path / "threads", config=config)
    assert t.verify()["steps"] == 3
    assert t.manifest.precommitment.run_id == "cfg-run" and [e["step"] for e in t.checkpoints(0)] == [0, 2, 3]
    with pytest.warns(DeprecationWarning, match="Recorder"):
        old = _record(tmp_path / "old", checkpoint_every=2, run_id="cfg-run", step_commitments=False)
    assert old.verify()["steps"] == 3 and [e["step"] for e in old.checkpoints(0)] == [0, 2, 3]
    assert old.manifest.precommitment.checkpoint_every == t.manifest.precommitment.checkpoint_every == 2
    with pytest.raises(ConfigError, match=r"distributed\.rank"):
        RunConfig(distributed=DistributedConfig(world_size=2, rank=3))
    with pytest.raises(ValueError, match=r"config\.nonce differs"):
        _record(tmp_path / "nonce", config=RunConfig(nonce=b"other"))


def test_a_framework_whose_place_disagrees_with_the_config_is_refused() -> None:
    d = DistributedConfig(world_size=2)
    assert d.place(1, 2) == (1, 2)
    with pytest.raises(ConfigError, match=r"distributed\.world_size is 2, but the framework has world_size 1"):
        d.place(0, 1, "the framework")


def test_the_integrations_page_documents_every_field() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "integrations.md").read_text()
    for name, value in FULL.to_dict().items():
        names = [f"{name}.{sub}" for sub in value] if isinstance(value, dict) else [name]
        for dotted in names:
            assert f"`{dotted}`" in doc, dotted
