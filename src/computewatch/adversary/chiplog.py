"""Chip-log attacks: the owner edits, cuts, splices or restores its chips' logs, rolls the root
of trust's counter back or runs two copies of one chip, or runs firmware that does not log (paper §4 and footnote 11, §3.1; attack table rows "tamper with chip
hardware", "unsigned or old firmware", "delay firmware update").

Each trial: a chip is registered and shipped to the owner, trains, and is inspected once (the
register's witness keeps its tree head); the owner trains on, cheats, and the chip is inspected
again through `Registry.record_inspection`, which boots it, attests, audits the log
(`formats.chip_audit`) and checks it against every tree head seen before.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from computewatch.adversary.suite import (
    Context,
    Trial,
    get_attack,
    primary_check,
    register,
    result_from_trials,
)
from computewatch.adversary.world import ChipWorld, chip_world, use_chip

__all__ = ["inspect_trial", "rechain"]

_STEPS = 4


def inspect_trial(world: ChipWorld, serial: str, chip_dir: Path, expected: str | None) -> Trial:
    """Inspect the presented chip and turn the finding into a Trial."""
    result = world.reg.record_inspection(serial, chip_dir)
    checks: list[str] = []
    for p in result["problems"]:
        name = f"inspection.{p['check']}"
        if name not in checks:
            checks.append(name)
    by = primary_check(checks, expected)
    detail = next((p["problem"] for p in result["problems"] if f"inspection.{p['check']}" == by), "")
    return Trial(result["outcome"] != "clean", by, tuple(checks), detail[:300])


def _inspected_chip(world: ChipWorld, steps_after: int = 3) -> tuple[str, Path, int]:
    """A chip of acme that trained, was inspected (clean), and trained on: (serial, dir, size of
    the log at the first inspection)."""
    serial, chip = world.owned_chip("acme")
    use_chip(chip, _STEPS)
    first = world.reg.record_inspection(serial, chip)
    if first["outcome"] != "clean":  # pragma: no cover - the honest world must audit clean
        raise AssertionError(f"honest chip inspected with problems: {first['problems']}")
    if steps_after:
        use_chip(chip, steps_after, start=_STEPS)
    return serial, chip, int(first["tree_size"])


def _lines(chip: Path) -> list[bytes]:
    return (chip / "log" / "chip.log").read_bytes().split(b"\n")[:-1]


def _write(chip: Path, lines: list[bytes]) -> None:
    (chip / "log" / "chip.log").write_bytes(b"".join(line + b"\n" for line in lines))


def _log_attack(name: str, edit: Callable[[list[bytes], random.Random, dict[str, Any]], list[bytes]]) -> Callable[[Context, int, int], Any]:
    """A runner: per trial, edit the log of an inspected chip, then inspect it again."""

    def run(ctx: Context, trials: int, seed: int) -> Any:
        attack = get_attack(name)
        world = chip_world(ctx, name)
        rng = random.Random(seed)
        extra: dict[str, Any] = {}
        out = []
        for _ in range(trials):
            serial, chip, size = _inspected_chip(world)
            extra["inspected_size"] = size
            _write(chip, edit(_lines(chip), rng, {"world": world, "size": size}))
            out.append(inspect_trial(world, serial, chip, attack.expected))
        return result_from_trials(attack, out)

    return run


def _flip(lines: list[bytes], rng: random.Random, _env: dict[str, Any]) -> list[bytes]:
    """Change one hex digit of a logged digest (the line stays valid JSON: the owner wants the
    log to parse), in a snapshot entry when there is one."""
    snaps = [i for i, line in enumerate(lines) if json.loads(line)["kind"] == "snapshot"]
    i = rng.choice(snaps) if snaps else rng.randrange(1, len(lines))
    text = lines[i].decode()
    key = '"shard_digest":"' if '"shard_digest":"' in text else '"prev":"'
    pos = text.index(key) + len(key) + rng.randrange(64)
    digit = text[pos]
    text = text[:pos] + rng.choice([c for c in "0123456789abcdef" if c != digit]) + text[pos + 1 :]
    return [*lines[:i], text.encode(), *lines[i + 1 :]]


def _truncate(lines: list[bytes], rng: random.Random, env: dict[str, Any]) -> list[bytes]:
    """Cut the entries logged since the last inspection (its snapshots) off the end."""
    keep = rng.randrange(env["size"], len(lines) - 1)
    return lines[:keep]


def _drop(lines: list[bytes], rng: random.Random, env: dict[str, Any]) -> list[bytes]:
    """Remove one entry logged since the last inspection, a snapshot when there is one."""
    later = list(range(env["size"], len(lines) - 1))
    snaps = [i for i in later if json.loads(lines[i])["kind"] == "snapshot"]
    i = rng.choice(snaps or later)
    return lines[:i] + lines[i + 1 :]


def _splice(lines: list[bytes], rng: random.Random, env: dict[str, Any]) -> list[bytes]:
    """Replace the entries since the last inspection by the same stretch of another of the
    owner's chips' logs (a chip that logged innocent snapshots)."""
    world: ChipWorld = env["world"]
    _serial, other = world.owned_chip("acme")
    use_chip(other, _STEPS, shard_seed=7)  # the same history: two sessions of training
    use_chip(other, 3, start=_STEPS, shard_seed=7)
    foreign = _lines(other)
    top = min(len(lines), len(foreign)) - 1
    cut = rng.randrange(env["size"], top) if top > env["size"] else min(env["size"], top)
    return lines[:cut] + foreign[cut:]


def rechain(lines: list[bytes], start: int, *, renumber: bool = False, key: Any = None) -> list[bytes]:
    """Rewrite lines[start:] as a forger does after changing the log there: every `prev` fixed
    to the new chain, counters renumbered (`renumber`), each checkpoint's size and root
    recomputed over the new lines; the chip's checkpoint signatures kept as they are (the forger
    has no boot key), or re-signed with `key` (a stolen one)."""
    from computewatch.crypto.canonical import canonical_json_v2
    from computewatch.crypto.merkle import MerkleTree
    from computewatch.formats.chip_entry import GENESIS_PREV, b64, entry_signing_input

    out = list(lines[:start])
    tree = MerkleTree(out)
    for line in lines[start:]:
        e = json.loads(line)
        if renumber:
            e["counter"] = len(out)
        e["prev"] = hashlib.sha256(out[-1]).hexdigest() if out else GENESIS_PREV
        if e["kind"] == "checkpoint":
            e["body"] = {"tree_size": e["counter"], "root": tree.root(e["counter"]).hex()}
            if key is not None:
                e.pop("sig", None)
                e["sig"] = b64(key.sign(entry_signing_input(e)))
        out.append(canonical_json_v2(e))
        tree.append(out[-1])
    return out


def _rechained(lines: list[bytes], rng: random.Random, env: dict[str, Any]) -> list[bytes]:
    """Log v2: change a snapshot logged since the last inspection (it now names another step,
    so the Prover's transcript can explain it) and repair the chain after it: every `prev`,
    every checkpoint root. Only the checkpoint signatures cannot be repaired."""
    later = [i for i in range(env["size"], len(lines)) if json.loads(lines[i])["kind"] == "snapshot"]
    i = rng.choice(later or list(range(env["size"], len(lines) - 1)))
    e = json.loads(lines[i])
    if e["kind"] == "snapshot":
        e["body"]["step"] += 1
    else:
        e["busy_ns"] = str(int(e["busy_ns"]) + 1)
    from computewatch.crypto.canonical import canonical_json_v2

    return rechain([*lines[:i], canonical_json_v2(e), *lines[i + 1 :]], i)


def _uncovered_tail(lines: list[bytes], rng: random.Random, env: dict[str, Any]) -> list[bytes]:
    """Log v2: keep every entry but cut the checkpoint the chip signed at its last stop (the
    owner hopes the entries after the previous checkpoint read as evidence without it)."""
    return lines[:-1] if json.loads(lines[-1])["kind"] == "checkpoint" else lines


def _replayed_checkpoint(lines: list[bytes], rng: random.Random, env: dict[str, Any]) -> list[bytes]:
    """Log v2: after cutting the last session's entries, end the log in a checkpoint line the chip
    signed earlier (an earlier boot of the same firmware, so the same boot key), to pass the cut
    log off as checkpointed."""
    checkpoints = [i for i, line in enumerate(lines) if json.loads(line)["kind"] == "checkpoint"]
    earlier = [i for i in checkpoints if i < env["size"]]
    keep = rng.randrange(env["size"], len(lines) - 1)
    return [*lines[:keep], lines[rng.choice(earlier or checkpoints[:1])]]


register(
    "log-flipped-byte",
    paper_ref="§4 (tamper-evident log), §3.1 (inspection)",
    family="chip log",
    kind="caught",
    expected="inspection.log",
    summary="Changes one hex digit of a logged snapshot digest in the chip's log file (the line stays valid JSON).",
    default_trials=2,
)(_log_attack("log-flipped-byte", _flip))

register(
    "log-truncated",
    paper_ref="§4 (append-only log), §3.1",
    family="chip log",
    kind="caught",
    expected="inspection.log",
    summary="Cuts the entries logged since the last inspection off the end of the log, hiding their snapshots.",
    default_trials=2,
)(_log_attack("log-truncated", _truncate))

register(
    "log-dropped-entry",
    paper_ref="§4 (hash-chained log), §3.1",
    family="chip log",
    kind="caught",
    expected="inspection.log",
    summary="Deletes one snapshot entry logged since the last inspection.",
    default_trials=2,
)(_log_attack("log-dropped-entry", _drop))

register(
    "log-spliced",
    paper_ref="§4, §3.1",
    family="chip log",
    kind="caught",
    expected="inspection.log",
    summary="Replaces the chip's recent log entries with the same stretch of another chip's (innocent) log.",
    default_trials=2,
)(_log_attack("log-spliced", _splice))


register(
    "log-rechained-entry",
    paper_ref="§4 (tamper-evident log); docs/formats.md 'Log' (version 2 attribution)",
    family="chip log",
    kind="caught",
    expected="inspection.log",
    summary="Log v2: alters a snapshot entry between two checkpoints and repairs every prev and checkpoint root "
    "after it; only the chip's checkpoint signatures cannot be repaired.",
    default_trials=1,
)(_log_attack("log-rechained-entry", _rechained))

register(
    "log-uncovered-tail",
    paper_ref="§4; docs/formats.md 'Log' (version 2 attribution)",
    family="chip log",
    kind="caught",
    expected="inspection.log",
    summary="Log v2: drops the checkpoint the chip signed at its last stop, leaving the entries after the previous "
    "checkpoint covered by no signature of their boot.",
    default_trials=1,
)(_log_attack("log-uncovered-tail", _uncovered_tail))

register(
    "log-checkpoint-replayed",
    paper_ref="§4; docs/formats.md 'Log' (version 2 attribution)",
    family="chip log",
    kind="caught",
    expected="inspection.log",
    summary="Log v2: cuts the recent entries and ends the log in a checkpoint the chip signed in an earlier boot "
    "(same firmware, same boot key), so the cut log looks checkpointed.",
    default_trials=1,
)(_log_attack("log-checkpoint-replayed", _replayed_checkpoint))


# ----------------------------------------------------------------------- restored backups
@register(
    "log-restored-backup",
    paper_ref="§4, §3.1; docs/registry.md (witness)",
    family="chip log",
    kind="caught",
    expected="inspection.witness",
    summary="Copies the chip's whole state (log and sealed state) before an inspection, trains covertly, then "
    "restores the backup before the next inspection so the covert snapshots vanish and the chip's own checks pass.",
    default_trials=2,
)
def _restored_backup(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("log-restored-backup")
    world = chip_world(ctx, attack.name)
    out = []
    for i in range(trials):
        serial, chip = world.owned_chip("acme")
        use_chip(chip, _STEPS)
        backup = chip.parent / f"{chip.name}-backup"
        shutil.copytree(chip, backup)
        if i % 2 == 0:  # the witness learns a head at an inspection ...
            world.reg.record_inspection(serial, chip)
            use_chip(chip, 3, start=_STEPS, shard_seed=5)  # the covert run's snapshots
        else:  # ... or from a remote attestation handed over during the period, after the covert run
            from computewatch.chip import Chip

            use_chip(chip, 3, start=_STEPS, shard_seed=5)
            c = Chip.open(chip)
            c.boot()
            evidence = c.attest(b"remote-attest-%02d" % i)
            c.close()
            world.reg.record_tree_head(serial, evidence)
        shutil.rmtree(chip)
        shutil.copytree(backup, chip)
        use_chip(chip, 2, start=_STEPS)  # innocent work after the restore
        out.append(inspect_trial(world, serial, chip, attack.expected))
    return result_from_trials(attack, out, extra={"variants": ["head from an inspection", "head from a remote attestation"][: min(2, trials)]})


def _restore_attack(name: str, restore: Callable[[Context, Path, Path, list[str]], Path]) -> Callable[[Context, int, int], Any]:
    """A runner: per trial, back up an inspected chip's whole folder, train covertly on it, then
    `restore(ctx, chip, backup, refused)` returns the folder presented at the next inspection
    (`refused` collects what the chip's hardware refused on the way)."""

    def run(ctx: Context, trials: int, seed: int) -> Any:
        attack = get_attack(name)
        world = chip_world(ctx, name)
        out = []
        for _ in range(trials):
            serial, chip, _size = _inspected_chip(world, steps_after=0)
            backup = chip.parent / f"{chip.name}-backup"
            shutil.copytree(chip, backup)
            use_chip(chip, 3, start=_STEPS, shard_seed=5)  # the covert run
            refused: list[str] = []
            trial = inspect_trial(world, serial, restore(ctx, chip, backup, refused), attack.expected)
            checks = ("chip.root-of-trust", *trial.checks) if refused else trial.checks
            out.append(Trial(trial.caught, trial.by, checks, trial.detail))
        return result_from_trials(attack, out)

    return run


def _put_back(ctx: Context, chip: Path, backup: Path, refused: list[str]) -> Path:
    shutil.rmtree(chip)
    shutil.copytree(backup, chip)
    return chip


def _lower_then_put_back(ctx: Context, chip: Path, backup: Path, refused: list[str]) -> Path:
    """Ask the root of trust to set the counter back to the backup's value, then restore."""
    from computewatch.chip.rot import CounterRollbackError, CounterStore
    from computewatch.chip.state import load_identity, load_nv

    store, chip_id = CounterStore.for_chip(chip), load_identity(chip).device_key.public_key.keyid
    try:
        store.advance(chip_id, load_nv(backup).rot_counter)
    except CounterRollbackError as exc:
        refused.append(str(exc))
    return _put_back(ctx, chip, backup, refused)


def _put_back_elsewhere(ctx: Context, chip: Path, backup: Path, refused: list[str]) -> Path:
    """Restore into another rack, whose root of trust never counted for this chip."""
    return Path(shutil.copytree(backup, ctx.scratch("other-rack") / chip.name))


# The restored log extends every witnessed head; what catches these is the root of trust's
# monotonic counter, which the copy did not carry (chip.rot).
register(
    "log-restored-unwitnessed",
    paper_ref="§4, §6.2 (rollback-protected storage); docs/registry.md 'Root of trust'",
    family="chip log",
    kind="caught",
    expected="inspection.log",
    summary="Takes the backup after the last inspection and restores it before the next one, with no tree head "
    "reaching the register in between (no remote attestation, on-chip log mode).",
    default_trials=1,
)(_restore_attack("log-restored-unwitnessed", _put_back))

register(
    "rot-counter-lowered",
    paper_ref="§6.2 (rollback-protected storage); docs/registry.md 'Root of trust'",
    family="chip log",
    kind="caught",
    expected="inspection.log",
    summary="Backs up the chip folder after an inspection, trains covertly, asks the root of trust to set the "
    "monotonic counter back to the backup's value (refused), then restores the backup anyway.",
    default_trials=1,
)(_restore_attack("rot-counter-lowered", _lower_then_put_back))

register(
    "rot-counter-reset",
    paper_ref="§6.2 (rollback-protected storage); docs/registry.md 'Root of trust'",
    family="chip log",
    kind="caught",
    expected="inspection.log",
    summary="Trains covertly after an inspection, then restores the earlier backup into another rack whose root "
    "of trust never counted for this chip (a counter reset to zero), and presents it from there.",
    default_trials=1,
)(_restore_attack("rot-counter-reset", _put_back_elsewhere))


@register(
    "chip-two-copies",
    paper_ref="§4, §6.2; docs/registry.md 'Root of trust'",
    family="chip log",
    kind="caught",
    expected="inspection.log",
    summary="Keeps two copies of one chip's folder: trains covertly on the twin, innocently on the original, "
    "and presents the original (then, in a second trial, the twin) at the inspection.",
    default_trials=2,
)
def _two_copies(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("chip-two-copies")
    world = chip_world(ctx, attack.name)
    out = []
    for i in range(trials):
        serial, chip, _size = _inspected_chip(world, steps_after=0)
        twin = chip.parent / f"{chip.name}-twin"
        shutil.copytree(chip, twin)
        use_chip(twin, 3, start=_STEPS, shard_seed=5)  # the covert run, on the twin
        use_chip(chip, 2, start=_STEPS)  # innocent work on the original
        presented = chip if i % 2 == 0 else twin
        out.append(inspect_trial(world, serial, presented, attack.expected))
    return result_from_trials(attack, out, extra={"presented": ["original", "twin"][: min(2, trials)]})


# ----------------------------------------------------------------------------- firmware
def _firmware_world(ctx: Context, name: str) -> tuple[ChipWorld, Any]:
    from computewatch.chip import Chipmaker

    world = chip_world(ctx, name)
    return world, Chipmaker.load(world.maker_dir)


def _try_boot(chip_dir: Path) -> str | None:
    """The owner powers the chip on to train; returns the boot refusal, if any."""
    from computewatch.chip import Chip
    from computewatch.crypto.errors import ComputewatchError

    chip = Chip.open(chip_dir)
    try:
        chip.boot()
    except ComputewatchError as exc:
        return str(exc)
    chip.close()
    return None


@register(
    "firmware-unsigned",
    paper_ref="§4, footnote 11 (signed firmware)",
    family="chip log",
    kind="caught",
    expected="inspection.boot",
    summary="Builds a logging-free firmware image signed with its own key and drops it into the chip's firmware "
    "slot (installing it is refused), hoping to train unmonitored.",
    default_trials=1,
)
def _unsigned(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.crypto.signing import SigningKey
    from computewatch.formats.firmware import FirmwarePolicy, build_image

    attack = get_attack("firmware-unsigned")
    world, _maker = _firmware_world(ctx, attack.name)
    out = []
    for _ in range(trials):
        serial, chip, _size = _inspected_chip(world, steps_after=0)
        rogue = build_image(SigningKey.generate(), "no-logging", "9.9", 99, b"code", FirmwarePolicy(logging=False))
        refused = []
        from computewatch.chip import Chip
        from computewatch.crypto.errors import ComputewatchError

        try:
            Chip.open(chip).install_firmware(rogue)
        except ComputewatchError as exc:
            refused.append(f"install refused: {exc}")
        rogue.save(chip / "firmware" / "active.json")
        boot = _try_boot(chip)
        if boot:
            refused.append(f"boot refused: {boot}")
        trial = inspect_trial(world, serial, chip, attack.expected)
        checks = ("chip.verified-boot", *trial.checks) if refused else trial.checks
        out.append(Trial(trial.caught, trial.by, checks, trial.detail))
    return result_from_trials(attack, out)


@register(
    "firmware-rollback",
    paper_ref="§4, footnote 11 (anti-rollback)",
    family="chip log",
    kind="caught",
    expected="inspection.boot",
    summary="After the logging firmware ran (fuse burned to security version 1), reinstalls the older, "
    "chipmaker-signed legacy image that does not log (refused), then smuggles it into the active slot.",
    default_trials=1,
)
def _rollback(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.chip import Chip, FirmwarePolicy
    from computewatch.crypto.errors import ComputewatchError

    attack = get_attack("firmware-rollback")
    world, maker = _firmware_world(ctx, attack.name)
    legacy = maker.sign_firmware(FirmwarePolicy(logging=False), name="legacy", version="0.9", security_version=0)
    out = []
    for _ in range(trials):
        serial, chip, _size = _inspected_chip(world, steps_after=0)
        refused = []
        try:
            Chip.open(chip).install_firmware(legacy)
        except ComputewatchError as exc:
            refused.append(str(exc))
        legacy.save(chip / "firmware" / "active.json")
        boot = _try_boot(chip)
        trial = inspect_trial(world, serial, chip, attack.expected)
        checks = ("chip.verified-boot", *trial.checks) if (refused or boot) else trial.checks
        out.append(Trial(trial.caught, trial.by, checks, trial.detail))
    return result_from_trials(attack, out)


@register(
    "firmware-late-update",
    paper_ref="§4, footnote 11 (early attestation of updates)",
    family="chip log",
    kind="caught",
    expected="inspection.log",
    summary="Trains on a chip still running the legacy, chipmaker-signed firmware that does not log, and "
    "installs the logging firmware only just before the inspection.",
    default_trials=1,
)
def _late_update(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.chip import Chip, FirmwarePolicy

    attack = get_attack("firmware-late-update")
    world, maker = _firmware_world(ctx, attack.name)
    legacy = maker.sign_firmware(FirmwarePolicy(logging=False), name="legacy", version="0.9", security_version=0)
    logging = maker.sign_firmware(FirmwarePolicy(snapshots_per_day=100.0), name="logging", version="1.0", security_version=1)
    out = []
    for _ in range(trials):
        chip_dir = ctx.scratch("late-update") / "chip"
        maker.manufacture(chip_dir)
        chip = Chip.open(chip_dir)
        chip.install_firmware(legacy)  # allowed: the logging firmware never ran on this chip
        serial = world.reg.register_chip(chip_dir)["serial"]
        world.reg.ship(serial, "acme", world.keys["maker"], world.keys["acme"])
        chip = Chip.open(chip_dir)
        chip.boot()
        from computewatch.chip.exercise import small_shard

        chip.attach(small_shard(), chip_dir.parent / "storage")
        for step in range(6):  # a covert run: no epoch, no snapshot
            chip._tensors[0].add_(0.5)
            chip.step_boundary(step, 3600.0)
        chip.install_firmware(logging)  # the update, staged (and attested) only now
        chip.close()
        out.append(inspect_trial(world, serial, chip_dir, attack.expected))
    return result_from_trials(attack, out)
