"""The honest world the attacks cheat in: a register with a chipmaker and two owners, chips,
small honest training runs, and the Verifier called the way an agency would call it.

Everything here is the real thing (the registry on SQLite, chips with their firmware and logs,
`computewatch.prover.runner.train`, `computewatch.verifier.verify`), scaled down: the tiniest
preset, 16 steps, simulated chip time at a high snapshot rate so that every run logs snapshots.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RUN",
    "ChipWorld",
    "chip_world",
    "copy_run",
    "failed_checks",
    "honest_run",
    "party_key",
    "register_run_chips",
    "train_run",
    "use_chip",
    "verdict_trial",
    "verify_runs",
]

# 16 steps of the tiny MLP on a 16 KiB corpus, a checkpoint every 4 steps, half an hour of chip
# time per step at 24 snapshots a day: about one snapshot every other step.
RUN: dict[str, Any] = {
    "preset": "mlp",
    "steps": 16,
    "checkpoint_every": 4,
    "snapshots_per_day": 24.0,
    "chip_seconds_per_step": 1800.0,
    "overrides": {"corpus_bytes": 1 << 14},
    "threads": 1,
}
_SECRET = b"computewatch attack suite chips."
VERIFIER_SEED = b"computewatch attack suite seed.."


def party_key(name: str) -> Any:
    """A fixed Ed25519 key per party name (a reproducible world)."""
    from computewatch.crypto.signing import SigningKey

    return SigningKey.from_seed(hashlib.sha256(b"computewatch attack party " + name.encode()).digest())


# ------------------------------------------------------------------------------------ runs
def train_run(out: Path, *, secret: bytes = _SECRET, **changes: Any) -> Path:
    """One honest monitored run (one process, one chip) into `out`; returns `out`."""
    from computewatch.prover.runner import TrainConfig, train

    train(TrainConfig(out=out, chip_secret_seed=secret, **{"nproc": 1, "strategy": "ddp", **RUN, **changes}))
    return out


def honest_run(ctx: Any, key: str = "honest", **changes: Any) -> Path:
    """The context's shared honest run (trained once per suite run); never modify it: copy it."""
    return ctx.shared(f"run:{key}", lambda: train_run(ctx.scratch(f"run-{key}") / "run", **changes))


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def verify_runs(runs: Sequence[Path], *, chips: Sequence[Path] | None = None, prover: Path | None = None, **options: Any) -> dict[str, Any]:
    """The Verifier on submitted runs against inspected chips. Trust roots are the chipmaker
    roots of the chips (pinned as a registry would) and the Prover's registered key (the honest
    run's key unless `prover` names another run whose key to pin). The Prover's program runs in
    the Verifier's sandbox; the checks are decided in this process."""
    from computewatch.crypto.signing import VerifyKey
    from computewatch.verifier import VerifyRequest, verify

    runs = [Path(r) for r in runs]
    chip_dirs = [Path(c) for c in chips] if chips is not None else [r / "chips" for r in runs]
    roots: list[VerifyKey] = []
    for c in chip_dirs:
        pub = c / "chipmaker" / "chipmaker.pub" if (c / "chipmaker").is_dir() else c.parent / "chipmaker" / "chipmaker.pub"
        if pub.exists():
            key = VerifyKey.load(pub)
            if key.raw not in {k.raw for k in roots}:
                roots.append(key)
    pinned = prover if prover is not None else runs[0]
    request = VerifyRequest(
        runs=runs,
        chips=chip_dirs,
        chipmaker_roots=roots,
        prover_keys=[VerifyKey.load(pinned / "keys" / "prover.pub")],
        seed=options.pop("seed", VERIFIER_SEED),
        sandbox=options.pop("sandbox", True),
        **options,
    )
    return verify(request)


def failed_checks(doc: dict[str, Any]) -> list[str]:
    """Failed checks of a verdict, as `verifier.<name>`, in the Verifier's order."""
    return [f"verifier.{c['name']}" for c in doc["checks"] if c["passed"] is False]


def verdict_trial(doc: dict[str, Any], expected: str | None) -> Any:
    """A Trial from a verdict: caught when the verdict is a violation."""
    from computewatch.adversary.suite import Trial, primary_check

    failed = failed_checks(doc)
    by = primary_check(failed, expected)
    detail = ""
    if by is not None:
        name = by.split(".", 1)[1]
        detail = next((c["detail"] for c in doc["checks"] if c["name"] == name), "")
    return Trial(doc["verdict"] == "violation", by, tuple(failed), detail[:300])


# ------------------------------------------------------------------------------------ chips
def use_chip(chip_dir: Path, steps: int, start: int = 0, busy_seconds: float = 1800.0, shard_seed: int = 0) -> int:
    """The owner trains on the chip for `steps` steps (weights change each step); returns the
    snapshots logged."""
    from computewatch.chip import Chip
    from computewatch.chip.exercise import run_steps, small_shard

    chip = Chip.open(chip_dir)
    chip.boot()
    try:
        chip.attach(small_shard(shard_seed), chip_dir.parent / f"{chip_dir.name}-storage")
        return run_steps(chip, steps, busy_seconds, start)
    finally:
        chip.close()


@dataclass
class ChipWorld:
    """A register (SQLite) with chipmaker `maker` and owners `acme` and `beta`, and a pool of
    unregistered chips of `maker` handed out one at a time."""

    root: Path
    reg: Any
    keys: dict[str, Any]
    maker_dir: Path
    _next: int = 0
    _made: list[Path] = field(default_factory=list)

    def new_chip(self, rate: float = 100.0) -> Path:
        """A freshly manufactured chip (logging firmware at `rate` snapshots a day), not registered."""
        from computewatch.chip import provision_chips

        [chip] = provision_chips(self.root / "chips", 1, snapshots_per_day=rate, chipmaker_dir=self.maker_dir,
                                 secret_seed=_SECRET, first_index=self._next)
        self._next += 1
        self._made.append(chip)
        return chip

    def owned_chip(self, owner: str = "acme", rate: float = 100.0) -> tuple[str, Path]:
        """A new chip registered from its certificate and shipped to `owner`: (serial, dir)."""
        chip = self.new_chip(rate)
        serial = self.reg.register_chip(chip)["serial"]
        self.reg.ship(serial, owner, self.keys["maker"], self.keys[owner])
        return serial, chip

    def owner(self, name: str) -> str:
        """Register owner `name` (a fixed key) unless it is registered already."""
        if name not in self.keys:
            self.keys[name] = party_key(name)
            self.reg.add_owner(name, self.keys[name].public_key)
        return name

    def fresh_owner(self, prefix: str) -> str:
        """A new owner `prefix<n>` that holds nothing yet."""
        n = 0
        while f"{prefix}{n}" in self.keys:
            n += 1
        return self.owner(f"{prefix}{n}")

    def close(self) -> None:
        self.reg.close()


def chip_world(ctx: Any, name: str = "chips") -> ChipWorld:
    """The context's register world (made once; attacks add their own chips and owners)."""
    return ctx.shared("world:register", lambda: _make_world(ctx))


def _make_world(ctx: Any) -> ChipWorld:
    from computewatch.chip import Chipmaker
    from computewatch.crypto.signing import SigningKey
    from computewatch.registry import Registry

    root = ctx.scratch("register")
    maker = Chipmaker.create(root / "chips" / "chipmaker")
    reg = Registry.open(f"sqlite:///{root / 'registry.db'}")
    keys = {"maker": SigningKey.load(root / "chips" / "chipmaker" / "chipmaker.key"), "acme": party_key("acme"), "beta": party_key("beta")}
    reg.add_chipmaker("maker", maker.public_key)
    reg.add_owner("acme", keys["acme"].public_key)
    reg.add_owner("beta", keys["beta"].public_key)
    return ChipWorld(root, reg, keys, root / "chips" / "chipmaker")


def register_run_chips(world: ChipWorld, run_dir: Path, owner: str) -> list[tuple[str, Path]]:
    """Register the chips a run trained on (their chipmaker too, once) and ship them to `owner`:
    [(serial, chip dir)] in rank order."""
    from computewatch.crypto.signing import SigningKey, VerifyKey

    maker_dir = run_dir / "chips" / "chipmaker"
    pub = VerifyKey.load(maker_dir / "chipmaker.pub")
    name = "maker-" + pub.keyid[:12]
    if name not in world.keys:
        world.keys[name] = SigningKey.load(maker_dir / "chipmaker.key")
        world.reg.add_chipmaker(name, pub)
    world.owner(owner)
    out = []
    for chip in sorted(p for p in (run_dir / "chips").iterdir() if p.name.startswith("chip-")):
        serial = world.reg.register_chip(chip)["serial"]
        world.reg.ship(serial, owner, world.keys[name], world.keys[owner])
        out.append((serial, chip))
    return out
