"""The root of trust's monotonic counter (chip.rot): it only moves up, every write of sealed state
is bound to it, a chip folder restored from a copy (or a second copy of the chip, or a reset
counter) is log damage at the next boot and in every later attestation, an honest crash between
the sealed write and the counter is not, and v2 evidence (no counter) stays readable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from computewatch.chip import Chip, verify_attestation
from computewatch.chip.rot import ROT_ENV, CounterRollbackError, CounterStore, check
from computewatch.chip.state import load_identity, load_nv
from computewatch.chip.testing import booted_chip, run_steps, small_shard
from computewatch.chip.vectors import VECTOR_INPUTS
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import SigningKey

NONCE = bytes(range(16))
VECTORS = Path(__file__).parent / "vectors" / "computewatch"


def _id(state_dir: Path) -> str:
    return load_identity(state_dir).device_key.public_key.keyid


def _session(state_dir: Path, steps: int = 2, start: int = 0) -> Chip:
    chip = Chip.open(state_dir)
    chip.boot()
    chip.attach(small_shard(), state_dir.parent / "storage")
    run_steps(chip, steps, 3600.0, start)
    chip.close()
    return chip


def _claims(state_dir: Path):
    chip = Chip.open(state_dir)
    chip.boot()
    try:
        return verify_attestation(chip.attest(NONCE), NONCE, chip.chipmaker_root)
    finally:
        chip.close()


def test_the_counter_only_moves_up(tmp_path: Path) -> None:
    store, cid = CounterStore(tmp_path / "rot"), "ab" * 32
    assert store.read(cid) == 0
    store.advance(cid, 3)
    assert store.read(cid) == 3
    for lower in (3, 2, 0):
        with pytest.raises(CounterRollbackError, match="only moves up"):
            store.advance(cid, lower)
    assert store.read(cid) == 3
    (tmp_path / "rot" / f"{cid}.json").write_text("{}")
    with pytest.raises(ComputewatchError, match="malformed"):
        store.read(cid)
    with pytest.raises(ComputewatchError, match="device key id"):
        store.read("../escape")
    assert check(5, 5) is None and check(6, 5) is None  # in step; a crash after the sealed write
    assert "restored from a copy" in str(check(4, 5)) and "reset" in str(check(7, 5))


def test_every_sealed_write_is_bound_to_the_counter_and_attested(tmp_path: Path) -> None:
    chip = booted_chip(tmp_path)
    store = CounterStore.for_chip(chip.state_dir)
    assert store.folder == tmp_path / ".root-of-trust"  # beside the chip folder, not inside it
    assert not (Path(chip.state_dir) / ".root-of-trust").exists()
    run_steps(chip, 3, 3600.0)
    chip.close()
    bound = load_nv(Path(chip.state_dir)).rot_counter
    assert bound == store.read(_id(Path(chip.state_dir))) > 2
    claims = _claims(Path(chip.state_dir))
    assert claims.rot_counter is not None and claims.rot_counter > bound and not claims.tamper and claims.log_damage == ()


def _stopped_chip_and_backup(tmp_path: Path) -> tuple[Path, Path]:
    chip = booted_chip(tmp_path)
    chip.close()
    state = Path(chip.state_dir)
    return state, Path(shutil.copytree(state, tmp_path / "backup"))


def test_a_restored_chip_folder_is_damage_at_the_next_boot(tmp_path: Path) -> None:
    state, backup = _stopped_chip_and_backup(tmp_path)
    _session(state, 3)  # the covert run
    shutil.rmtree(state)
    shutil.copytree(backup, state)  # log and sealed state restored together: consistent on their own
    claims = _claims(state)
    assert claims.tamper and any("root-of-trust counter" in d and "restored" in d for d in claims.log_damage)
    again = Chip.open(state)
    assert any(e.kind == "tamper" and "root-of-trust counter" in e.body["reason"] for e in again.log)


def test_a_second_copy_of_the_chip_and_a_reset_counter_are_damage(tmp_path: Path) -> None:
    state, backup = _stopped_chip_and_backup(tmp_path)
    twin = tmp_path / "twin"
    shutil.copytree(state, twin)
    _session(twin, 2)  # the twin runs: the shared counter moves past the original's state
    assert any("another copy" in d for d in _claims(state).log_damage)
    # The whole folder moved to a rack whose root of trust never counted for this chip.
    elsewhere = tmp_path / "rack-2" / "chip"
    shutil.copytree(backup, elsewhere)
    assert any("reset" in d for d in _claims(elsewhere).log_damage)


def test_a_crash_between_the_sealed_write_and_the_counter_is_not_damage(tmp_path: Path, monkeypatch) -> None:
    chip = booted_chip(tmp_path)
    chip.close()
    state = Path(chip.state_dir)

    def crash(self, chip_id, value):  # the power fails after sealed state is written
        raise KeyboardInterrupt

    monkeypatch.setattr(CounterStore, "advance", crash)
    with pytest.raises(KeyboardInterrupt):
        Chip.open(state).boot()
    monkeypatch.undo()
    nv, counter = load_nv(state).rot_counter, CounterStore.for_chip(state).read(_id(state))
    assert nv == counter + 1
    claims = _claims(state)
    assert not claims.tamper and claims.log_damage == ()


def test_the_store_location_can_be_named_by_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(ROT_ENV, str(tmp_path / "tpm"))
    chip = booted_chip(tmp_path / "rack")
    chip.close()
    assert CounterStore(tmp_path / "tpm").read(_id(Path(chip.state_dir))) == load_nv(Path(chip.state_dir)).rot_counter > 0
    assert not (tmp_path / "rack" / ".root-of-trust").exists()


def test_v2_evidence_without_a_counter_stays_readable() -> None:
    root = SigningKey.from_seed(bytes.fromhex(VECTOR_INPUTS["chipmaker_seed"])).public_key
    nonce = bytes.fromhex(VECTOR_INPUTS["nonce"])
    old = (VECTORS / "attestation-v2" / "evidence.json").read_bytes()
    claims = verify_attestation(old, nonce, root)
    assert claims.raw.get("root_of_trust") is None and claims.rot_counter is None and claims.serial == VECTOR_INPUTS["serial"]
    new = verify_attestation((VECTORS / "chip" / "evidence.json").read_bytes(), nonce, root)
    assert new.rot_counter is not None and new.rot_counter > 0


def test_a_twin_running_beside_the_chip_is_damage_in_the_running_chip(tmp_path: Path) -> None:
    chip = booted_chip(tmp_path)  # running
    state = Path(chip.state_dir)
    twin = tmp_path / "twin"
    shutil.copytree(state, twin)  # copied while the chip runs: the twin's state is in step at first
    _session(twin, 3)  # the covert run, while the original keeps running
    run_steps(chip, 1, 3600.0)
    chip.close()  # the original's next sealed write sees the counter moved under it
    assert chip.tamper and any("another copy" in d for d in chip.log_damage)
    assert any(e.kind == "tamper" and "root-of-trust counter" in e.body["reason"] for e in Chip.open(state).log)
    assert any("another copy" in d for d in _claims(state).log_damage)


def test_a_remote_attestation_reporting_a_restore_flags_the_holder(registry) -> None:
    chip_dir = registry.fresh_chip(3)
    serial = registry.register(3, to="acme")
    backup = chip_dir.parent / "backup"
    shutil.copytree(chip_dir, backup)
    _session(chip_dir, 2)
    shutil.rmtree(chip_dir)
    shutil.copytree(backup, chip_dir)
    chip = Chip.open(chip_dir)
    chip.boot()
    evidence = chip.attest(b"remote-check-rot")
    chip.close()
    head = registry.reg.record_tree_head(serial, evidence)
    assert any("root-of-trust counter" in p for p in head["problems"])
    assert {f["kind"] for f in registry.reg.flags("acme")} == {"witness"}
