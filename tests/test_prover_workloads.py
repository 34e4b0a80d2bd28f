"""Demo workloads: stable corpus, seeded W0, falling loss, bit-identical replay on the CPU."""

from __future__ import annotations

import itertools
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.errors import FormatError
from computewatch.crypto.hashing import blake3_bytes
from computewatch.formats.seed import batches, derive_run_seed, init_generator
from computewatch.prover.workloads import (
    CharTransformer,
    TextCorpus,
    Workload,
    preset,
    stdlib_files,
)
from computewatch.formats.program import current_environment

SEED = derive_run_seed(bytes(range(32)), b"workload tests")
OTHER_SEED = derive_run_seed(bytes(range(32)), b"another nonce")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # One intra-op thread: these models are too small to gain from two, and OpenMP threads that
    # spin-wait slow down by orders of magnitude when other processes share the cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _state_digest(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> bytes:
    """BLAKE3 over every parameter's bytes (and Adam's moments), in state_dict order."""
    parts = [t.detach().contiguous().view(torch.uint8).numpy().tobytes() for t in model.state_dict().values()]
    if optimizer is not None:
        for state in optimizer.state_dict()["state"].values():
            parts += [state[k].contiguous().view(torch.uint8).numpy().tobytes() for k in ("exp_avg", "exp_avg_sq")]
    return blake3_bytes(b"".join(parts))


def _train(workload: Workload, seed: bytes, steps: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, list[float]]:
    corpus = workload.dataset()
    model = workload.build_model(init_generator(seed))
    optimizer = workload.build_optimizer(model)
    scheduler = workload.build_scheduler(optimizer)
    losses = []
    for _, ids in batches(seed, len(corpus), workload.batch_size, steps):
        batch = workload.collate([corpus.sample(i) for i in ids])
        losses.append(workload.train_step(model, optimizer, scheduler, batch))
    return model, optimizer, losses


def test_stdlib_file_rule_is_top_level_and_sorted() -> None:
    files = stdlib_files()
    names = [p.name for p in files]
    assert names == sorted(names) and all(n.endswith(".py") for n in names)
    assert "os.py" in names
    stdlib = sysconfig.get_paths()["stdlib"]
    assert all(str(p.parent) == stdlib for p in files)  # nothing from site-packages, test/, idlelib/


def test_corpus_samples_are_non_overlapping_windows() -> None:
    corpus = TextCorpus(bytes(range(100)), block_size=9)
    assert len(corpus) == 10 and corpus.sample_size == 10
    assert corpus.sample(0) == bytes(range(10)) and corpus.sample(9) == bytes(range(90, 100))
    assert len(TextCorpus(bytes(range(109)), block_size=9)) == 10  # partial tail dropped
    with pytest.raises(FormatError, match="outside"):
        corpus.sample(10)
    with pytest.raises(FormatError, match="no sample"):
        TextCorpus(b"abc", block_size=8)

    stdlib = TextCorpus.from_stdlib(block_size=63, max_bytes=10_000)
    assert len(stdlib) == 10_000 // 64
    first = stdlib_files()[0].read_bytes()
    assert stdlib.sample(0) == first[:64]
    assert stdlib.describe()["python"] == ".".join(map(str, sys.version_info[:3]))


@pytest.mark.parametrize("name", ["mlp", "tiny", "small"])
def test_w0_comes_from_the_seed_alone(name: str) -> None:
    workload = preset(name)
    rng_before = torch.random.get_rng_state()
    a = workload.build_model(init_generator(SEED))
    b = workload.build_model(init_generator(SEED))
    c = workload.build_model(init_generator(OTHER_SEED))
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the global RNG was not used
    assert _state_digest(a) == _state_digest(b)
    assert _state_digest(a) != _state_digest(c)
    for (name_a, p_a), (_, p_c) in zip(a.named_parameters(), c.named_parameters(), strict=True):
        if not torch.all(p_a == p_a.flatten()[0]):  # randomly drawn, not constant-filled
            assert not torch.equal(p_a, p_c), name_a


def test_transformer_is_causal() -> None:
    model = preset("tiny").build_model(init_generator(SEED)).eval()
    idx = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[:, 40:] = (changed[:, 40:] + 1) % 256
    with torch.no_grad():
        out, out_changed = model(idx), model(changed)
    assert out.shape == (2, 64, 256)
    assert torch.equal(out[:, :40], out_changed[:, :40])
    assert not torch.equal(out[:, 40:], out_changed[:, 40:])
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple"):
        CharTransformer(n_head=3, n_embd=64)


# Batches of 8 keep the tiny transformer's 30 steps cheap; the model and optimizer are the preset's.
@pytest.mark.parametrize("name", ["mlp", "tiny"])
def test_loss_decreases(name: str) -> None:
    _, _, losses = _train(preset(name, batch_size=8), SEED, 30)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0, losses


@pytest.mark.parametrize("name", ["mlp", "tiny"])
def test_fresh_models_train_bit_identically(name: str) -> None:
    model_a, opt_a, losses_a = _train(preset(name, batch_size=8), SEED, 5)
    model_b, opt_b, losses_b = _train(preset(name, batch_size=8), SEED, 5)
    assert losses_a == losses_b
    assert _state_digest(model_a, opt_a) == _state_digest(model_b, opt_b)
    model_c, opt_c, _ = _train(preset(name, batch_size=8), OTHER_SEED, 5)
    assert _state_digest(model_c, opt_c) != _state_digest(model_a, opt_a)


def test_two_threads_also_train_bit_identically() -> None:
    torch.set_num_threads(2)  # the fixture restores the count afterwards
    model_a, opt_a, _ = _train(preset("mlp"), SEED, 5)
    model_b, opt_b, _ = _train(preset("mlp"), SEED, 5)
    assert _state_digest(model_a, opt_a) == _state_digest(model_b, opt_b)


_CHILD = """
import sys
sys.path.insert(0, sys.argv[2])
from test_prover_workloads import SEED, _state_digest, _train
from computewatch.formats.program import deterministic_cpu
from computewatch.prover.workloads import preset
deterministic_cpu(int(sys.argv[1]))  # what a Verifier's exact replay sets up
model, optimizer, _ = _train(preset("mlp"), SEED, 5)
print(_state_digest(model, optimizer).hex())
"""


def test_a_fresh_process_reproduces_the_weights() -> None:
    model, optimizer, _ = _train(preset("mlp"), SEED, 5)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(torch.get_num_threads()), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert child.stdout.strip() == _state_digest(model, optimizer).hex()


def test_schedule_warms_up_then_decays() -> None:
    workload = preset("mlp", warmup_steps=4, total_steps=20, lr=1.0)
    model = workload.build_model(init_generator(SEED))
    optimizer = workload.build_optimizer(model)
    scheduler = workload.build_scheduler(optimizer)
    lrs = []
    for _ in range(25):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))
    assert lrs[20:] == pytest.approx([workload.min_lr_ratio] * 5)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [workload.weight_decay, 0.0]


def test_hyperparameters_rebuild_the_workload() -> None:
    for name in ("mlp", "tiny", "small"):
        workload = preset(name, total_steps=123)
        hp = workload.hyperparameters
        canonical_json(hp)  # recordable as is
        assert Workload.from_hyperparameters(hp) == workload
        assert hp["schedule"]["total_steps"] == 123
    hp = preset("tiny").hyperparameters
    with pytest.raises(FormatError):
        Workload.from_hyperparameters({**hp, "grad_clip": 2.0, "extra": 1})
    with pytest.raises(FormatError, match="missing"):
        Workload.from_hyperparameters({k: v for k, v in hp.items() if k != "optimizer"})


def test_collate_and_bad_input() -> None:
    tiny, mlp = preset("tiny"), preset("mlp")
    corpus = tiny.dataset()
    x, y = tiny.collate([corpus.sample(0), corpus.sample(1)])
    assert x.shape == y.shape == (2, 64) and torch.equal(x[:, 1:], y[:, :-1])
    x, y = mlp.collate([mlp.dataset().sample(3)])
    assert x.shape == (1, 8) and y.shape == (1,)
    with pytest.raises(FormatError, match="65-byte"):
        tiny.collate([b"short"])
    with pytest.raises(FormatError, match="unknown workload preset"):
        preset("huge")
    with pytest.raises(FormatError, match="bad override"):
        preset("tiny", no_such_field=1)
    with pytest.raises(FormatError, match="Generator"):
        tiny.build_model(1234)  # type: ignore[arg-type]
    assert current_environment()["torch"] == torch.__version__
