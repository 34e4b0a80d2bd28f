"""`verify --db`: the Verifier pins Prover keys, chipmaker roots and witnessed tree heads from the
registry, never from the run directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _runs import failed, honest_run

from computewatch.crypto.signing import SigningKey
from computewatch.registry import Registry
from computewatch.verifier import VerifyRequest, verify


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Registry]:
    root = tmp_path_factory.mktemp("world")
    run = honest_run(root / "run", steps=8)
    reg = Registry.open(f"sqlite:///{root / 'registry.db'}")
    reg.add_chipmaker("chipmaker", run / "chips" / "chipmaker" / "chipmaker.pub")
    reg.register_chip(run / "chips" / "chip-0000")
    reg.add_owner("lab", run / "keys" / "prover.pub")
    reg.add_owner("other-lab", SigningKey.generate().public_key)
    return run, reg


def _verify(run: Path, trust: dict) -> dict:
    return verify(VerifyRequest(runs=[run], chips=[run / "chips"], seed=b"r" * 32, segments=0,
                                chipmaker_roots=trust["chipmaker_roots"], prover_keys=trust["prover_keys"],
                                known_heads=trust["known_heads"]))


def test_the_registry_pins_every_owner_key_and_chipmaker_root(world: tuple[Path, Registry]) -> None:
    run, reg = world
    trust = reg.verifier_trust()
    assert len(trust["prover_keys"]) == 2 and len(trust["chipmaker_roots"]) == 1
    assert trust["known_heads"] == {}  # no tree head witnessed yet
    doc = _verify(run, trust)
    assert doc["verdict"] == "compliant", failed(doc)


def test_a_run_signed_by_an_unregistered_key_is_not_authentic(world: tuple[Path, Registry], tmp_path: Path) -> None:
    from computewatch.adversary import resign_manifest

    run, reg = world
    copy = shutil.copytree(run, tmp_path / "run")
    resign_manifest(copy, SigningKey.generate())
    doc = _verify(copy, reg.verifier_trust())
    assert doc["verdict"] == "violation"
    assert "not authentic" in failed(doc)["precommitment"]


def test_a_chip_of_an_unregistered_chipmaker_proves_nothing(world: tuple[Path, Registry], tmp_path: Path) -> None:
    run, _ = world
    other = Registry.open(f"sqlite:///{tmp_path / 'empty.db'}")
    other.add_chipmaker("someone-else", SigningKey.generate().public_key)
    other.add_owner("lab", run / "keys" / "prover.pub")
    # The chip owner's evidence fails (a certificate from another chipmaker): a violation, not exit 2.
    doc = _verify(run, other.verifier_trust())
    assert doc["verdict"] == "violation"
    assert "not signed by any pinned chipmaker root" in failed(doc)["chip-logs"]


def test_a_chip_log_restored_from_a_backup_behind_a_witnessed_head(world: tuple[Path, Registry], tmp_path: Path) -> None:
    import json
    import os

    from computewatch.chip import Chip

    run, reg = world
    copy = shutil.copytree(run, tmp_path / "run")
    chip_dir = copy / "chips" / "chip-0000"
    backup = (chip_dir / "log" / "chip.log").read_bytes()
    chip = Chip.open(chip_dir)
    chip.boot()  # the log grows past the backup ...
    nonce = os.urandom(32)
    evidence = chip.attest(nonce)
    chip.close()
    serial = json.loads((chip_dir / "chip.json").read_text())["serial"]
    reg.record_tree_head(serial, evidence, nonce)  # ... and the registry witnesses its head
    trust = reg.verifier_trust()
    assert trust["known_heads"][serial]
    assert _verify(copy, trust)["verdict"] == "compliant"
    (chip_dir / "log" / "chip.log").write_bytes(backup)  # the owner restores the older log
    doc = _verify(copy, trust)
    assert doc["verdict"] == "violation"
    assert "chip-logs" in failed(doc), failed(doc)
