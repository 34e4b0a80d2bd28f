"""Program claims: a Prover whose replay is bit-identical, but whose transcript, chip or program
claims more (or less) than it did (issue 18; paper §5.1, Appendix D).

Each attack runs end to end with the cheating Prover's tools and is verified by
`computewatch.verifier.verify`; each ends in the named check. Family "program claims".
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from computewatch.adversary.suite import Context, Trial, get_attack, register, result_from_trials
from computewatch.adversary.world import RUN, copy_run, honest_run, party_key, verdict_trial, verify_runs

__all__: list[str] = []

_FAMILY = "program claims"


def _run_attack(name: str, make: Any, **verify: Any) -> Any:
    """A runner: per trial, `make(ctx, rng) -> (runs, options)`, then the Verifier on them."""

    def run(ctx: Context, trials: int, seed: int) -> Any:
        attack = get_attack(name)
        rng = random.Random(seed)
        out: list[Trial] = []
        for _ in range(trials):
            runs, options = make(ctx, rng)
            out.append(verdict_trial(verify_runs(runs, **{**verify, **options}), attack.expected))
        return result_from_trials(attack, out)

    return run


def _claim(name: str, paper_ref: str, expected: str, make: Any, *, summary: str, max_trials: int = 5) -> None:
    register(name, paper_ref=paper_ref, family=_FAMILY, kind="caught", expected=expected, summary=summary, max_trials=max_trials)(_run_attack(name, make))


# ------------------------------------------------------------------------------ null losses
def _null_losses(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    from computewatch.adversary.transcript import edit_steps

    spoof = copy_run(honest_run(ctx), ctx.scratch("null-losses") / "run")
    edit_steps(spoof, lambda recs: [replace(r, loss=None) for r in recs])
    return [spoof], {"segments": "all"}


_claim("losses-recorded-null", "§5.1 (the transcript's losses); issue 18", "verifier.loss", _null_losses, max_trials=5,
       summary="Records every step's loss as null (the step format's 'not finite'), so the replay has nothing to compare "
               "and a policy rule on the loss nothing to read; before, the loss check passed with nothing compared.")


# ---------------------------------------------------------------------- borrowed run id
def _borrowed_id(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    from computewatch.formats.manifest import read_manifest
    from computewatch.formats.storage import RunStorage

    run = honest_run(ctx)  # Prover B's run, named like A's approved one
    pre = read_manifest(RunStorage(run, create=False)).precommitment
    prover_a = party_key("prover-a").public_key.keyid
    digest_a = bytes(rng.randrange(256) for _ in range(32)).hex()  # A's run: its own precommitment
    policy = (
        '[policy]\nname = "approvals"\nversion = 3\nthreshold_flops = 1.0\n'
        f'approvals = [{{run_id = "{pre.run_id}", prover = "{prover_a}", precommitment = "{digest_a}"}}]\n'
        '[[rules]]\nid = "needs-approval"\nkind = "approval"\n'
    )
    return [run], {"policy_text": policy}


_claim("borrowed-run-id", "§2.1 (approval requirements); issue 18 (identity binding)", "verifier.precommitment", _borrowed_id, max_trials=5,
       summary="Prover B names its run after Prover A's approved run id, hoping to inherit A's approval.")


# ------------------------------------------------------------------------- chip busy time
class _ExtraWorkChip:
    """The owner trains `factor` steps on the chip for every step its transcript records (the
    extra ones train something else; the chip's clock counts them all)."""

    def __init__(self, chip: Any, factor: int) -> None:
        self.chip, self.serial, self.factor = chip, chip.serial, factor

    def __getattr__(self, name: str) -> Any:  # attach, log_precommitment, log_memory_map: unchanged
        return getattr(self.chip, name)

    def step_boundary(self, step: int, busy_seconds: float) -> list[Any]:
        return [s for _ in range(self.factor) for s in self.chip.step_boundary(step, busy_seconds)]


def _cheat_run(ctx: Context, name: str, **kw: Any) -> Path:
    from computewatch.adversary.cheater import Deviation, train_with_deviation

    return train_with_deviation(ctx.scratch(name) / "run", Deviation(), steps=RUN["steps"], checkpoint_every=RUN["checkpoint_every"],
                                snapshots_per_day=RUN["snapshots_per_day"], overrides=dict(RUN["overrides"]), **kw)


def _zero_busy(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    return [_cheat_run(ctx, "zero-busy", chip_seconds_per_step=0.0)], {}


def _busy_beyond(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    run = _cheat_run(ctx, "busy-beyond", chip_seconds_per_step=RUN["chip_seconds_per_step"], chip_wrapper=lambda c: _ExtraWorkChip(c, 3))
    return [run], {"segments": "all"}


_claim("chip-busy-zero", "§3 (snapshots at random busy times); issue 18 (busy time the chip measures)", "verifier.snapshots", _zero_busy, max_trials=3,
       summary="The owner tells a simulated chip it was busy 0 seconds per step: no snapshot can fire, so the run leaves "
               "no trace for an inspection. (On hardware the chip's clock measures busy time and no number is taken.)")

_claim("chip-busy-beyond-transcript", "§3, §5.1 (compute accounting); issue 18", "verifier.compute", _busy_beyond, max_trials=3,
       summary="The chip trains three steps for every step the transcript records (48 beside 16): its clock shows three "
               "times the busy time the transcript explains, while every snapshot still replays.")


# ------------------------------------------------------------------ custom training programs
_INIT = "        model.init_weights(generator)\n"


def _custom_program(ctx: Context, name: str, replace_init: str = _INIT, extra: str = "", edits: tuple[tuple[str, str], ...] = ()) -> Any:
    """The demo workloads as a custom program, edited as the cheating Prover wants."""
    import shutil

    from computewatch.formats.program import ProgramSource
    from computewatch.formats.templates import get_template

    folder = ctx.scratch(name) / "program"
    shutil.copytree(get_template("computewatch/demo-preset").root, folder, ignore=shutil.ignore_patterns("__pycache__"))
    presets = folder / "presets.py"
    text = presets.read_text()
    assert _INIT in text, "the demo preset's build_model changed: update this attack"
    for old, new in edits:
        assert old in text, "the demo preset changed: update this attack"
        text = text.replace(old, new)
    presets.write_text(text.replace(_INIT, replace_init) + extra)
    return ProgramSource.from_folder(folder, "program:make_program")


# Run splitting (§5.1): W0 drawn from the committed generator, then overwritten by "run 1's final
# weights" carried in the program (here a deterministic shift stands in for the embedded state).
_SPLIT_INIT = _INIT + "        with torch.no_grad():\n            for p in model.parameters():\n                p.mul_(0.5).add_(0.01)\n"
# A helper that hides work from a FLOP counter; never called here: the scan reads, it does not run.
_HIDE = "\n\ndef _off_the_books(fn):\n    with torch._C._DisableTorchDispatch():\n        return fn()\n"


# Tolerance inflation: noise only under another thread count than the recorded one (1), that is
# only in the Verifier's calibration replays; the recorded run and an exact replay are clean.
_STEP = "        scheduler.step()\n        return loss.item()\n"
_NOISY_STEP = (
    "        scheduler.step()\n        if torch.get_num_threads() != 1:\n            with torch.no_grad():\n"
    "                for p in model.parameters():\n                    p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(7)) * 0.05)\n"
    "        return loss.item()\n"
)


def _inflated_tolerance(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    program = _custom_program(ctx, "inflate-epsilon", edits=((_STEP, _NOISY_STEP),))
    run = _cheat_run(ctx, "inflate-epsilon", chip_seconds_per_step=RUN["chip_seconds_per_step"], program=program)
    return [run], {"mode": "tolerance", "segments": 0}


# Training on text the program carries instead of the committed samples: `collate` swaps every
# sample for a window of embedded text (the sample ids and their hashes stay the committed ones).
_COLLATE = "        tokens = torch.frombuffer(bytearray(b\"\".join(samples))"
_EMBEDDED_COLLATE = "        samples = [_EMBEDDED[i * size % 4096 : i * size % 4096 + size] for i, _ in enumerate(samples)]\n" + _COLLATE
_EMBEDDED_TEXT = "\n\n_EMBEDDED = " + repr(bytes(range(32, 127)) * 100) + "\n"


def _embedded_text(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    program = _custom_program(ctx, "embedded-text", extra=_EMBEDDED_TEXT, edits=((_COLLATE, _EMBEDDED_COLLATE),))
    run = _cheat_run(ctx, "embedded-text", chip_seconds_per_step=RUN["chip_seconds_per_step"], program=program)
    policy = (
        '[policy]\nname = "no blobs"\nversion = 3\nthreshold_flops = 1.0\n'
        '[[rules]]\nid = "no-embedded-data"\nkind = "requirement"\nrequire = \'program.kind == "template" || !("blob" in program.uses)\'\n'
    )
    return [run], {"policy_text": policy, "segments": "all"}


# A loss that flatters: the program's loss() adds 10, so its gradients (and the replay) are
# unchanged while the final model looks far weaker to a rule capping its capability.
_LOSS = "        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))\n"
_LOSS_PLUS_10 = _LOSS.replace("targets.reshape(-1))", "targets.reshape(-1)) + 10.0")


def _flattering_loss(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    program = _custom_program(ctx, "loss-plus-10", edits=((_LOSS, _LOSS_PLUS_10),))
    run = _cheat_run(ctx, "loss-plus-10", chip_seconds_per_step=RUN["chip_seconds_per_step"], program=program)
    policy = (
        '[policy]\nname = "capability cap"\nversion = 3\nthreshold_flops = 1.0\n'
        '[benchmarks.final_loss]\nsamples = 8\n'
        '[[rules]]\nid = "not-beyond"\nkind = "requirement"\nrequire = "benchmarks.final_loss > 10.0"\n'
        'text = "the final model may not be trained beyond a loss of 10 on the committed data"\n'
    )
    return [run], {"policy_text": policy}


def _split_run(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    program = _custom_program(ctx, "split-run", _SPLIT_INIT)
    return [_cheat_run(ctx, "split-run", chip_seconds_per_step=RUN["chip_seconds_per_step"], program=program)], {}


def _custom_under_policy(ctx: Context, rng: random.Random) -> tuple[list[Path], dict[str, Any]]:
    program = _custom_program(ctx, "custom-program", extra=_HIDE)
    run = _cheat_run(ctx, "custom-program", chip_seconds_per_step=RUN["chip_seconds_per_step"], program=program)
    policy = (
        '[policy]\nname = "templates"\nversion = 3\nthreshold_flops = 1.0\n'
        '[[rules]]\nid = "templates-only"\nkind = "requirement"\nrequire = \'program.kind == "template"\'\n'
        '[[rules]]\nid = "no-dispatch-tricks"\nkind = "requirement"\nrequire = \'!("dispatch" in program.uses)\'\n'
    )
    return [run], {"policy_text": policy}


_claim("split-run-embedded-init", "§5.1 (a long run as several short runs); issue 18", "verifier.init", _split_run, max_trials=3,
       summary="A custom program whose build_model draws from the committed generator and then loads weights it carries "
               "(run 1's end): replaying the same code agrees with itself, but the architecture is a template's and W0 "
               "is not the template's initialisation from the committed seed.")

_claim("custom-program-banned-by-policy", "§2.1 (mandated mitigations); issue 18 (templates, audited programs)", "verifier.rules",
       _custom_under_policy, max_trials=3,
       summary="A custom program (the demo workloads plus a helper that disables torch dispatch) under a policy that "
               "requires a trusted template and bans dispatch manipulation: the scan lists it, the rules fail it.")

_claim("tolerance-inflated-by-threads", "ANCHORS (Fang et al.), docs/verifier.md (tolerance mode); issue 18", "verifier.segments",
       _inflated_tolerance, max_trials=3,
       summary="A custom program that adds noise only when the thread count differs from the recorded one, that is only "
               "in the Verifier's calibration replays, to inflate epsilon until forgeries pass: epsilon is capped "
               "absolutely and a calibration above the cap (or accepting a spoof) fails segments.")

_claim("collate-embedded-text", "§5.1 (training data); issue 18", "verifier.rules", _embedded_text, max_trials=3,
       summary="A custom program whose collate() trains on text embedded in the program instead of the committed samples "
               "(sample ids and hashes stay the committed ones, the replay is bit for bit): the scan lists the blob and "
               "a policy that bans blobs in custom programs fails it. Without such a policy, only templates rule it out.")

_claim("loss-plus-ten", "§2.1 (benchmark rules on the final weights); issue 18", "verifier.rules", _flattering_loss, max_trials=3,
       summary="A custom program whose loss() returns the loss + 10 (same gradients, so the replay agrees) to pass a rule "
               "capping the final model's capability: its architecture is a template's, so the final loss is computed "
               "with the template's loss, and the rule fails.")


# ------------------------------------------------------------- compute the program hides
# 20 extra training passes on every other step (the step's own optimizer, the same batch): the
# replay does them too, so every state reproduces; only the compute they cost is at stake.
_EXTRA_PASSES = 20
# Hidden: 60, so that the hidden CPU time (about 0.7 s of the tiny preset's replay per 20 passes
# on an idle core) stands well clear of the measurement's floor (FLOOR_S, 0.5 s a run).
_HIDDEN_PASSES = 60
_PASSES = (
    "\n\ndef _extra_passes(workload, model, optimizer, batch):\n"
    "    import contextlib\n"
    "    hide = torch._C._DisableTorchDispatch() if HIDDEN else contextlib.nullcontext()\n"
    "    with hide:\n"
    "        for _ in range(PASSES):\n"
    "            optimizer.zero_grad(set_to_none=True)\n"
    "            workload.loss(model, batch).backward()\n"
    "            optimizer.step()\n"
)
_EXTRA_STEP = "        if scheduler.last_epoch % 2 == 1:\n            _extra_passes(self, model, optimizer, batch)\n" + _STEP
# Visible passes: the suite's demo MLP run (16 steps, 3.2e8 FLOPs honest, about 11 times that
# with the passes). Hidden passes: the tiny transformer preset, 4 steps of 16 samples, whose
# step's arithmetic (8e8 FLOPs) outweighs its Python and dispatch overhead, as in any run that
# matters (on the demo MLP, 0.2 MFLOP per sample, a pass's CPU time is mostly overhead).
_VISIBLE_RUN: dict[str, Any] = {"preset_name": RUN["preset"], "steps": RUN["steps"], "checkpoint_every": RUN["checkpoint_every"],
                                "overrides": dict(RUN["overrides"])}
_HIDDEN_RUN: dict[str, Any] = {"preset_name": "tiny", "steps": 4, "checkpoint_every": 2, "overrides": {"corpus_bytes": 1 << 14, "batch_size": 16}}


def _ban_2h(h: float) -> str:
    """A policy banning runs of 2H FLOPs and more."""
    return (f'[policy]\nname = "ban at 2H"\nversion = 2\nthreshold_flops = {h:.1e}\n'
            '[[rules]]\nid = "no-run-of-2H"\nkind = "ban"\nwhen = "compute.flops >= 2 * compute.H"\n'
            'text = "no training run of 2H FLOPs or more"\n')


def _verify_cli(run: Path, policy_text: str | None, scratch: Path) -> dict[str, Any]:
    """`computewatch verify ... --segments all --json` through the real command line (the
    program runs in the Verifier's sandbox)."""
    import json
    import subprocess
    import sys

    from computewatch.adversary.world import VERIFIER_SEED

    chips = run / "chips"
    args = [sys.executable, "-m", "computewatch", "verify", str(run), "--chips", str(chips),
            "--chipmaker-pub", str(chips / "chipmaker" / "chipmaker.pub"), "--prover-pub", str(run / "keys" / "prover.pub"),
            "--mode", "exact", "--segments", "all", "--seed", VERIFIER_SEED.hex(), "--json"]
    if policy_text is not None:
        policy = scratch / "policy.toml"
        policy.write_text(policy_text)
        args += ["--policy", str(policy)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    try:
        doc: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        doc = {"verdict": None, "checks": [], "runs": [], "error": proc.stderr.strip()[-300:]}
    return doc


def _hidden_compute(name: str, hidden: bool) -> Any:
    settings, policy = (_HIDDEN_RUN, _ban_2h(2e9)) if hidden else (_VISIBLE_RUN, _ban_2h(1e9))

    def run(ctx: Context, trials: int, seed: int) -> Any:
        # Imported here: registering the attack must not load torch (`attack list` stays light).
        from computewatch.adversary.cheater import Deviation, train_with_deviation

        attack = get_attack(name)
        out: list[Trial] = []
        figures: list[dict[str, Any]] = []
        for k in range(trials):
            passes = _HIDDEN_PASSES if hidden else _EXTRA_PASSES
            program = _custom_program(ctx, f"{name}-{k}", extra=f"\n\nHIDDEN = {hidden}\nPASSES = {passes}\n" + _PASSES,
                                      edits=((_STEP, _EXTRA_STEP),))
            run_dir = train_with_deviation(ctx.scratch(f"{name}-{k}") / "run", Deviation(), snapshots_per_day=RUN["snapshots_per_day"],
                                           chip_seconds_per_step=RUN["chip_seconds_per_step"], program=program, **settings)
            doc = _verify_cli(run_dir, policy, ctx.scratch(f"{name}-{k}"))
            out.append(verdict_trial(doc, attack.expected))
            first = (doc.get("runs") or [{}])[0]
            compute = first.get("compute") or {}
            figures.append({"total_flops": first.get("total_flops"), "executor_count": compute.get("executor_count"),
                            "measured": (compute.get("measured") or {}).get("flops"), "judge_estimate": compute.get("judge_estimate")})
        return result_from_trials(attack, out, extra={"trials": figures})

    return run


register("extra-passes-every-other-step", paper_ref="§2.1, §3.2 (compute thresholds); issue 18 (compute the Verifier measures)",
         family=_FAMILY, kind="caught", expected="verifier.rules", max_trials=2,
         summary="A custom program that trains 20 extra passes on every other step (the replay does them too, so every "
                 "state reproduces) under a policy banning runs of 2H: counted on the first step of a segment only, the "
                 "run looked 11 times smaller; counted on every replayed step, its total is past 2H and the ban fails it.",
         )(_hidden_compute("extra-passes-every-other-step", False))

register("extra-passes-hidden-from-counter", paper_ref="§2.1, §3.2 (compute thresholds); issue 18 (compute the Verifier measures)",
         family=_FAMILY, kind="caught", expected="verifier.compute", max_trials=2,
         summary="The same extra passes (60 of them) on every other step, run with torch's dispatch modes disabled so the "
                 "executor's FLOP counter never sees them: the CPU time of the executor's processes, read by the judge "
                 "and turned into FLOPs with its reference kernel, is far above the count.",
         )(_hidden_compute("extra-passes-hidden-from-counter", True))
