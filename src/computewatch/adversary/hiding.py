"""Hiding attacks: the owner keeps chips, logs or whole runs out of the Verifier's sight
(paper §3, §3.1, §6.1 and footnote 22; attack table rows "hide or withhold logs", "buy chips
secretly", "resell or lose chips").

All of them run against the register (`computewatch.registry`, SQLite) and, where a run is
involved, the Verifier: the inspection samples every chip the owner holds, declared in a run or
not, and the Verifier demands an explanation of every snapshot those chips logged.
"""

from __future__ import annotations

import shutil
from typing import Any

from computewatch.adversary.chiplog import inspect_trial
from computewatch.adversary.suite import (
    Context,
    Trial,
    get_attack,
    register,
    result_from_trials,
)
from computewatch.adversary.world import (
    chip_world,
    copy_run,
    honest_run,
    register_run_chips,
    train_run,
    use_chip,
    verdict_trial,
    verify_runs,
)

__all__: list[str] = []


@register(
    "withhold-log",
    paper_ref="§3, §3.1 (hide or withhold logs)",
    family="hiding",
    kind="caught",
    expected="inspection.witness",
    summary="Deletes the chip's log (and its sealed stamp of it) after a covert run, presenting a chip whose log "
    "starts afresh at the next inspection.",
    default_trials=1,
)
def _withhold_log(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("withhold-log")
    world = chip_world(ctx)
    out = []
    for _ in range(trials):
        serial, chip = world.owned_chip("acme")
        use_chip(chip, 4)
        world.reg.record_inspection(serial, chip)
        use_chip(chip, 3, start=4, shard_seed=5)  # the covert run
        shutil.rmtree(chip / "log")
        out.append(inspect_trial(world, serial, chip, attack.expected))
    return result_from_trials(attack, out)


@register(
    "refuse-inspection",
    paper_ref="§3 ('refusal counts as guilt'), §3.1",
    family="hiding",
    kind="caught",
    expected="inspection.refused",
    summary="Refuses the inspector access to a sampled chip (or cannot present it).",
    default_trials=1,
)
def _refuse(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("refuse-inspection")
    world = chip_world(ctx)
    out = []
    for _ in range(trials):
        serial, chip = world.owned_chip("acme")
        use_chip(chip, 4, shard_seed=5)
        result = world.reg.refuse(serial, "the owner refused access to the hall")
        caught = result["outcome"] == "refused"
        out.append(Trial(caught, "inspection.refused" if caught else None, ("inspection.refused",) if caught else (), result["problems"][0]["problem"]))
    return result_from_trials(attack, out)


@register(
    "undeclared-chips",
    paper_ref="§3, §6.1 (train on unlisted hardware)",
    family="hiding",
    kind="caught",
    expected="verifier.snapshots",
    summary="Declares an honest run on one of its chips and trains a covert run on another registered chip it "
    "never declares or submits; the inspection covers every chip the owner holds.",
    default_trials=1,
    max_trials=5,
)
def _undeclared(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("undeclared-chips")
    world = chip_world(ctx)
    out = []
    for i in range(trials):
        owner = world.fresh_owner("hider")
        if ctx.cache.get("undeclared: honest run's chips registered"):  # a chip is registered once
            declared = train_run(ctx.scratch("declared") / "run")
        else:
            declared = copy_run(honest_run(ctx), ctx.scratch("declared") / "run")
            ctx.cache["undeclared: honest run's chips registered"] = True
        covert = train_run(ctx.scratch("covert") / "run", secret=b"covert run chips, seed %04d....." % ((seed + i) % 10_000))
        chips = register_run_chips(world, declared, owner) + register_run_chips(world, covert, owner)
        world.reg.declare_run(owner, "declared", [chips[0][0]])
        inspected = []
        for serial in world.reg.chips_of(owner):  # the plan's population: every chip the owner holds
            chip_dir = next(d for s, d in chips if s == serial)
            world.reg.record_inspection(serial, chip_dir)
            inspected.append(chip_dir)
        doc = verify_runs([declared], chips=inspected)
        trial = verdict_trial(doc, attack.expected)
        queued = len(world.reg.explanation_queue(owner))
        out.append(Trial(trial.caught, trial.by, trial.checks, f"{queued} snapshots queued for explanation; {trial.detail}"))
    return result_from_trials(attack, out)


@register(
    "resell-chip",
    paper_ref="§3.1 (serial check), §6.1 (directory)",
    family="hiding",
    kind="caught",
    expected="inspection.identity",
    summary="Sells a chip off the books; when the inspection samples it, presents another of its chips in its place.",
    default_trials=1,
)
def _resell(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("resell-chip")
    world = chip_world(ctx)
    out = []
    for _ in range(trials):
        sold, _sold_dir = world.owned_chip("acme")
        _kept, kept_dir = world.owned_chip("acme")
        use_chip(kept_dir, 2)
        trial = inspect_trial(world, sold, kept_dir, attack.expected)
        found = world.reg.report_found(sold, "beta", note="seen in beta's hall")  # it turns up later
        extra = (f"registry.{found['flag']['kind']}",) if found["flag"] else ()
        out.append(Trial(trial.caught, trial.by, trial.checks + extra, trial.detail))
    return result_from_trials(attack, out)


@register(
    "lose-chip",
    paper_ref="§3.1, §6.1 (responsibility of the last holder)",
    family="hiding",
    kind="caught",
    expected="registry.reported-lost",
    summary="Reports a chip lost (a signed report, so it leaves the inspection population) and keeps training on it; "
    "an inspection of its facility finds it.",
    default_trials=1,
)
def _lose(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("lose-chip")
    world = chip_world(ctx)
    out = []
    for _ in range(trials):
        owner = world.fresh_owner("loser")
        serial, chip = world.owned_chip(owner)
        world.reg.report_with_key(serial, "lost", world.keys[owner], reason="fell off a truck")
        hidden = serial not in world.reg.chips_of(owner)
        use_chip(chip, 3, shard_seed=5)
        found = world.reg.report_found(serial, owner, note="found in the owner's hall at an inspection visit")
        flag = found["flag"]
        by = f"registry.{flag['kind']}" if flag else None
        detail = f"{flag['detail']}; responsible: {flag['responsible']}" if flag else ""
        detail += "; it had left the inspection population" if hidden else ""
        out.append(Trial(flag is not None, by, (by,) if by else (), detail))
    return result_from_trials(attack, out)


@register(
    "mass-loss",
    paper_ref="§6.1, footnote 22 (investigate mass losses)",
    family="hiding",
    kind="caught",
    expected="registry.investigation",
    summary="Reports many chips lost or destroyed at once (to move them to a covert site).",
    default_trials=1,
)
def _mass_loss(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("mass-loss")
    world = chip_world(ctx)
    threshold = int(world.reg.settings()["loss_investigation_threshold"])
    out = []
    for _ in range(trials):
        owner = world.fresh_owner("mass")
        serials = [world.owned_chip(owner)[0] for _ in range(threshold)]
        opened = None
        for serial in serials:
            opened = world.reg.report_with_key(serial, "lost", world.keys[owner], reason="warehouse fire")["investigation"] or opened
        invs = world.reg.investigations(party=owner, status="open")
        caught = opened is not None and bool(invs)
        detail = invs[0]["reason"] if invs else "no investigation opened"
        out.append(Trial(caught, "registry.investigation" if caught else None, ("registry.investigation",) if caught else (), detail))
    return result_from_trials(attack, out, extra={"threshold": threshold})


@register(
    "no-custody-trail",
    paper_ref="§6.1 (chain of custody, fab monitoring)",
    family="hiding",
    kind="caught",
    expected="registry.no-custody-trail",
    summary="Obtains a chip the chipmaker certified but never entered into the register (grey market) and trains on it; "
    "the chip turns up at the owner's site.",
    default_trials=1,
)
def _no_trail(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("no-custody-trail")
    world = chip_world(ctx)
    out = []
    for _ in range(trials):
        ghost = world.new_chip()  # certified by the chipmaker, never registered
        use_chip(ghost, 3, shard_seed=5)
        from computewatch.chip import load_certificate
        from computewatch.formats.identity import verify_chip_certificate

        serial = verify_chip_certificate(load_certificate(ghost), world.reg.owner_key("maker")).serial
        found = world.reg.report_found(serial, "beta", chip_dir=ghost)
        flag = found["flag"]
        by = f"registry.{flag['kind']}" if flag else None
        detail = f"{flag['detail']}; responsible: {flag['responsible']}" if flag else ""
        out.append(Trial(flag is not None, by, (by,) if by else (), detail))
    return result_from_trials(attack, out)
