"""The demo's world: a chipmaker, a fab, a register, two Provers and an inspector, and the
custody of every chip from the fab's wafer to the Prover that runs it (paper §3.1, §6).

Everything lives under one folder (docs/demo.md):

    registry.db                 the register (SQLite)
    keys/<party>.key, .pub      every party's Ed25519 key (the chipmaker's is in chipmaker/), and
                                the Verifier's (verifier.key: it signs in to the dashboard)
    chipmaker/                  the chipmaker's root key and signed firmware
    sites/<owner>/<rack>/chip-N the chips, moved to the site of the owner that holds them
    runs/<owner>/<run>          the Provers' transcripts
    verifier/                   the Verifier's seed, evidence, verdicts and reports

The register runs on a simulated clock (`WorldClock`) that starts at the real time: the demo
moves it past the end of the monitoring period before the Verifier reveals its seed, as a real
Verifier waits for the period to end (docs/registry.md, "Inspection plans").
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from computewatch.crypto.signing import SigningKey

__all__ = [
    "CHIPMAKER",
    "FAB",
    "INSPECTOR",
    "PROVER_A",
    "PROVER_B",
    "Custody",
    "World",
    "WorldClock",
    "WorldPlan",
    "build_world",
]

CHIPMAKER = "chipmaker"
FAB = "fab"
PROVER_A = "prover-a"
PROVER_B = "prover-b"
INSPECTOR = "inspector"

Say = Callable[[str], None]


class WorldClock:
    """The register's clock: real time plus an offset the demo advances (simulated days)."""

    def __init__(self) -> None:
        self._offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, days: float) -> None:
        self._offset += timedelta(days=days)


@dataclass(frozen=True)
class WorldPlan:
    """Which chips go where: per owner, its racks (facilities) and how many chips each holds."""

    racks: dict[str, dict[str, int]] = field(
        default_factory=lambda: {PROVER_A: {"cluster": 4}, PROVER_B: {"rack-1": 1, "rack-2": 1}}
    )
    snapshots_per_day: float = 24.0  # the chips' firmware rate f (Table 1 uses 0.1; see docs/demo.md)
    lot: str = "LOT-001"
    # Reproducible snapshot schedules (tests only): the chips' device secrets derive from this
    # seed. Never for real monitoring: whoever knows it predicts every snapshot.
    secret_seed: bytes | None = None

    @property
    def chips(self) -> int:
        return sum(sum(r.values()) for r in self.racks.values())


@dataclass(frozen=True)
class Custody:
    """One chip's journey: its serial, the die it was packaged from, its holder and where it sits."""

    serial: str
    die: str
    owner: str
    rack: str
    chip_dir: Path


@dataclass
class World:
    root: Path
    registry: Any  # computewatch.registry.Registry
    clock: WorldClock
    keys: dict[str, SigningKey]
    chips: list[Custody]
    plan: WorldPlan

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def db_path(self) -> Path:
        return self.root / "registry.db"

    @property
    def chipmaker_dir(self) -> Path:
        return self.root / "chipmaker"

    def key_path(self, party: str) -> Path:
        return self.chipmaker_dir / "chipmaker.key" if party == CHIPMAKER else self.root / "keys" / f"{party}.key"

    def rack(self, owner: str, rack: str) -> Path:
        return self.root / "sites" / owner / rack

    def chips_of(self, owner: str, rack: str | None = None) -> list[Custody]:
        return [c for c in self.chips if c.owner == owner and (rack is None or c.rack == rack)]

    def chip_dir(self, serial: str) -> Path:
        for c in self.chips:
            if c.serial == serial:
                return c.chip_dir
        raise KeyError(serial)


def _party_key(root: Path, name: str) -> SigningKey:
    key = SigningKey.generate()
    key.save(root / "keys" / f"{name}.key")
    key.public_key.save(root / "keys" / f"{name}.pub")
    return key


def build_world(root: Path, plan: WorldPlan | None = None, *, say: Say | None = None) -> World:
    """Create the parties and the register, make the chips and pass their custody to the owners.

    1. keys for the fab, the Provers and the inspector; the chipmaker's root key;
    2. the register pins them (`add_chipmaker`, `add_fab`, `add_owner`);
    3. the fab produces a lot (one wafer, a die per chip) and ships the wafer to the chipmaker
       (a transfer signed by the fab and countersigned by the chipmaker; the dies go with it);
    4. the chipmaker packages each die into a chip (`chip manufacture`: burned-in serial, device
       key, certificate, signed logging firmware) and registers it from its certificate;
    5. the chipmaker ships each chip to its owner (signed and countersigned), and the chip moves
       to the owner's site.
    """
    from computewatch.chip import Chipmaker, provision_chips
    from computewatch.registry import Registry

    plan = plan or WorldPlan()
    tell = say or (lambda _text: None)
    root = Path(root)
    (root / "keys").mkdir(parents=True, exist_ok=True)
    keys = {name: _party_key(root, name) for name in (FAB, PROVER_A, PROVER_B, INSPECTOR)}
    # The Verifier's own key (no register party): `computewatch serve --verifier-pub keys/verifier.pub`
    # and `computewatch session --key keys/verifier.key` open the dashboard on this world.
    _party_key(root, "verifier")
    maker = Chipmaker.create(root / "chipmaker")
    keys[CHIPMAKER] = SigningKey.load(root / "chipmaker" / "chipmaker.key")
    clock = WorldClock()
    reg = Registry.open(f"sqlite:///{root / 'registry.db'}", clock=clock)
    reg.add_chipmaker(CHIPMAKER, maker.public_key)
    reg.add_fab(FAB, keys[FAB].public_key, node_nm=5, site="demo fab")
    reg.add_owner(PROVER_A, keys[PROVER_A].public_key)
    reg.add_owner(PROVER_B, keys[PROVER_B].public_key)
    reg.add_owner(INSPECTOR, keys[INSPECTOR].public_key, role="inspector")
    tell(f"register {reg.register_id}: chipmaker, fab, {PROVER_A}, {PROVER_B} and an inspector pinned with their keys")

    lot = reg.produce(FAB, plan.lot, 1, plan.chips)
    wafer = f"{plan.lot}/W01"
    reg.transfer_with_keys(wafer, CHIPMAKER, keys[FAB], keys[CHIPMAKER])
    dies = [f"{wafer}/D{i:04d}" for i in range(1, plan.chips + 1)]
    tell(f"fab produced lot {lot.get('lot', plan.lot)} (wafer {wafer}, {plan.chips} dies) and shipped the wafer to the chipmaker")

    line = root / "chipmaker" / "line"
    made = provision_chips(line, plan.chips, snapshots_per_day=plan.snapshots_per_day, chipmaker_dir=root / "chipmaker",
                           secret_seed=plan.secret_seed)
    chips: list[Custody] = []
    made_iter = iter(zip(made, dies, strict=True))
    for owner, racks in plan.racks.items():
        for rack, count in racks.items():
            for _ in range(count):
                chip_dir, die = next(made_iter)
                doc = reg.register_chip(chip_dir, fab=FAB, die=die)
                reg.ship(doc["serial"], owner, keys[CHIPMAKER], keys[owner], facility=rack)
                site = root / "sites" / owner / rack
                site.mkdir(parents=True, exist_ok=True)
                dest = site / chip_dir.name
                shutil.move(os.fspath(chip_dir), os.fspath(dest))  # the chip leaves the factory
                chips.append(Custody(doc["serial"], die, owner, rack, dest))
    shutil.rmtree(line, ignore_errors=True)
    for owner in plan.racks:
        mine = [c.serial for c in chips if c.owner == owner]
        tell(f"chipmaker packaged and registered {len(mine)} chips and shipped them to {owner}: {', '.join(mine)}")
    return World(root, reg, clock, keys, chips, plan)
