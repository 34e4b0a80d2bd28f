"""The integrations' building blocks: samples, W0 initialisation, program files, optimizer check."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from computewatch.formats.program import (
    code_digest_of,
    load_program,
    read_program_files,
)
from computewatch.integrations.datasets import (
    CommittedSampler,
    SampleFile,
    SyntheticTokens,
    write_sample_file,
)
from computewatch.integrations.program.data import (
    collate_micro,
    decode_block,
    encode_block,
    micro_batches,
)
from computewatch.integrations.program.init import init_weights
from computewatch.integrations.session import (
    IntegrationError,
    check_same_optimizer,
    commit_samples,
    program_of,
    staged_program,
    verify_command,
)


def test_import_computewatch_stays_free_of_torch_and_frameworks() -> None:
    code = (
        "import sys, computewatch, computewatch.integrations as ci\n"
        "assert 'torch' not in sys.modules, 'torch'\n"
        "assert callable(computewatch.monitor) and computewatch.monitor is ci.monitor\n"
        "assert 'transformers' not in sys.modules and 'lightning' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_token_blocks_are_canonical_and_strict() -> None:
    sample = encode_block([3, 1, 2])
    assert sample == b'{"input_ids":[3,1,2],"labels":[3,1,2]}'
    assert decode_block(sample) == {"input_ids": [3, 1, 2], "labels": [3, 1, 2]}
    for bad in (b'{"labels":[3,1,2],"input_ids":[3,1,2]}', b'{"input_ids": [1], "labels": [1]}', b"[1,2]", b'{"input_ids":[1]}'):
        with pytest.raises(ValueError, match="token-block"):
            decode_block(bad)
    batch = collate_micro([encode_block([1, 2]), encode_block([3, 4], [-100, 4])])
    assert batch["input_ids"].dtype == torch.long and batch["labels"].tolist() == [[1, 2], [-100, 4]]
    assert [len(mb["input_ids"]) for mb in micro_batches([sample] * 4, 2)] == [2, 2]
    assert [len(mb["input_ids"]) for mb in micro_batches([sample] * 4, 3)] == [3, 1]  # a Verifier's odd-sized batch
    with pytest.raises(ValueError, match="micro-batches"):
        micro_batches([], 3)


def test_synthetic_tokens_rebuild_from_their_record() -> None:
    data = SyntheticTokens(seed=7, size=20, block_size=8, vocab_size=16)
    again = SyntheticTokens(**{k: v for k, v in data.spec.items() if k != "kind"})
    assert [again.sample(i) for i in range(20)] == [data.sample(i) for i in range(20)]
    assert len({data.sample(i) for i in range(20)}) > 10  # the samples differ
    assert SyntheticTokens(8, 20, 8, 16).sample(0) != data.sample(0)
    ids = decode_block(data.sample(3))["input_ids"]
    assert all(0 <= t < 16 for t in ids) and len({(b - a) % 16 for a, b in itertools.pairwise(ids)}) == 1  # learnable
    with pytest.raises(IndexError):
        data.sample(20)


def test_sample_file_round_trip_and_errors(tmp_path: Path) -> None:
    rows = [encode_block([i, i + 1]) for i in range(5)]
    source = write_sample_file(rows, tmp_path / "data")
    assert [source.sample(i) for i in range(5)] == rows and source.spec == {"kind": "sample-file", "file": "samples.jsonl", "size": 5}
    assert commit_samples(SampleFile(tmp_path / "data", "samples.jsonl", 5)).root == commit_samples(source).root
    with pytest.raises(ValueError, match="holds 5 samples, the record says 6"):
        SampleFile(tmp_path / "data", "samples.jsonl", 6)
    with pytest.raises(ValueError, match="pass that folder as data_dir"):
        SampleFile(None, "samples.jsonl", 5)
    with pytest.raises(ValueError, match="token-block"):
        write_sample_file([b"not json"], tmp_path / "bad")
    assert not (tmp_path / "bad" / "samples.jsonl").exists()


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight  # tied: drawn once


def test_init_weights_rule_and_determinism() -> None:
    a, b = _Net(), _Net()
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    init_weights(a, torch.Generator().manual_seed(5), 0.02)
    assert torch.equal(torch.get_rng_state(), rng)  # W0 never touches the global RNG
    init_weights(b, torch.Generator().manual_seed(5), 0.02)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name
    assert torch.equal(a.norm.weight, torch.ones(4)) and torch.equal(a.norm.bias, torch.zeros(4)) and torch.equal(a.lin.bias, torch.zeros(4))
    assert a.head.weight is a.emb.weight
    # Parameters in named_parameters order from one stream: emb, then lin.
    g = torch.Generator().manual_seed(5)
    assert torch.equal(a.emb.weight, torch.empty(10, 4).normal_(0, 0.02, generator=g))
    assert torch.equal(a.lin.weight, torch.empty(4, 4).normal_(0, 0.02, generator=g))
    init_weights(b, torch.Generator().manual_seed(6), 0.02)
    assert not torch.equal(a.lin.weight, b.lin.weight)


def test_program_of_binds_the_defining_file_and_its_imported_siblings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "model.py").write_text("SIZE = 3\n")
    (tmp_path / "pkg" / "unused.py").write_text("")
    (tmp_path / "train.py").write_text(
        textwrap.dedent(
            """
            from pkg import model
            class Program:
                def __init__(self, hp, data_dir=None):
                    self.size = hp["n"] * model.SIZE
            class Outer:
                class Inner: ...
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("train", "pkg", "pkg.model"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import train  # type: ignore[import-not-found]

    root, module, files = program_of(train.Program)
    assert root == tmp_path.resolve() and module == "train"
    assert files == ("pkg/__init__.py", "pkg/model.py", "train.py")  # not pkg/unused.py, not torch
    with pytest.raises(IntegrationError, match="top level"):
        program_of(train.Outer.Inner)
    with staged_program("train:Program", [("", root, files), ("user", root, ("train.py",))]) as source:
        staged = source.read()
        assert set(staged) == {"pkg/__init__.py", "pkg/model.py", "train.py", "user/train.py"}
    # The staged files load as a program package wherever the Verifier puts them.
    digest = code_digest_of(staged)
    with load_program(staged, "user.train:Program", digest) as loaded:
        assert loaded.factory.__module__.endswith(".user.train")
    target = tmp_path / "copy"
    target.mkdir()
    for rel, data in staged.items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_bytes(data)
    assert code_digest_of(read_program_files(target)) == digest


def test_check_same_optimizer_names_the_difference() -> None:
    net = _Net()
    params = list(net.parameters())

    def build(lr: float = 1e-3, split: bool = False, step_lr: bool = False) -> tuple[torch.optim.Optimizer, object]:
        groups = [{"params": params[:1]}, {"params": params[1:]}] if split else [{"params": params}]
        opt = torch.optim.AdamW(groups, lr=lr)
        if step_lr:  # same learning rate now, another schedule
            return opt, torch.optim.lr_scheduler.StepLR(opt, 10)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    check_same_optimizer(*build(), *build())
    with pytest.raises(IntegrationError, match=r"group 0.*'lr'"):
        check_same_optimizer(*build(lr=2e-3), *build())
    with pytest.raises(IntegrationError, match="groups the parameters differently"):
        check_same_optimizer(*build(split=True), *build())
    with pytest.raises(IntegrationError, match="scheduler"):
        check_same_optimizer(*build(step_lr=True), *build())
    opt, _ = build()
    with pytest.raises(IntegrationError, match="uses SGD"):
        check_same_optimizer(torch.optim.SGD(params, lr=1e-3), None, opt, None)


def test_committed_sampler_remembers_what_it_handed_out() -> None:
    sampler = CommittedSampler([[3, 1], [0, 2]])
    assert len(sampler) == 4
    it = iter(sampler)
    assert [next(it), next(it), next(it)] == [3, 1, 0]
    assert sampler.take(2) == [3, 1] and sampler.take(2) == [0]


def test_verify_command_names_the_run_keys_and_chips(tmp_path: Path) -> None:
    cmd = verify_command(tmp_path / "my run")
    assert cmd.startswith("computewatch verify ") and f"'{tmp_path}/my run/keys/prover.pub'" in cmd
    assert f"--chipmaker-pub '{tmp_path}/my run/chips/chipmaker/chipmaker.pub'" in cmd and "--mode exact" in cmd


def test_docs_quote_the_sample_vectors() -> None:
    from computewatch.formats.dataset import sample_hash

    doc = (Path(__file__).resolve().parents[1] / "docs" / "integrations.md").read_text()
    block = encode_block([3, 1, 2])
    data = SyntheticTokens(seed=0, size=4, block_size=8, vocab_size=16)
    for value in (block.decode(), sample_hash(block).hex(), data.sample(0).decode(), sample_hash(data.sample(0)).hex(), commit_samples(data).root.hex()):
        assert value in doc, value


def test_verify_command_names_the_data_folder_of_a_sample_file_run(tmp_path: Path) -> None:
    cmd = verify_command(tmp_path / "run", data=("abc123", tmp_path / "data"))
    assert cmd.endswith(f"--data abc123={tmp_path}/data")
