"""`computewatch demo`: the main job, end to end on embedded defaults (local files, CPU).

1. the analysis: how many chips a Verifier must inspect (Table 1, footnote 5, Figure 2, MC);
2. the chip: manufacture, signed firmware, verified boot, attestation against a fresh nonce;
3. the Prover: train a character-level transformer under monitoring, keeping its transcript;
4. the inspection: audit the chip's log against the chipmaker root, check every logged
   snapshot against its copy-out, and show that the transcript explains it by exact replay;
5. many chips: an FSDP run over two gloo ranks, one chip each; every chip's snapshot is its
   own slice of the weights reassembled from the transcript's shard layout.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import typer

__all__ = ["demo", "run_demo"]

# A 120-step run at 600 simulated busy seconds a step is 20 busy hours; at 12 snapshots per busy
# day the chip expects 10 snapshots (none at all has probability e^-10).
_DEMO_RATE = 12.0
_DEMO_SECONDS_PER_STEP = 600.0


def demo(
    out: Path = typer.Option(Path("computewatch-demo"), "--out", help="Folder for everything the demo writes."),
    steps: int = typer.Option(120, "--steps", min=2, help="Optimizer steps of the monitored run."),
    preset: str = typer.Option("tiny", "--preset", help="Workload: tiny, small or mlp."),
    as_json: bool = typer.Option(False, "--json", help="Also print the summary as JSON."),
    chip_secret_seed: str = typer.Option(
        "", "--chip-secret-seed", hidden=True, help="Derive the chips' secrets from this text (reproducible runs; tests)."
    ),
) -> None:
    """Run the end-to-end demonstration: analysis, chip, monitored training, inspection."""
    from rich.console import Console

    from computewatch.crypto.errors import ComputewatchError

    console = Console()
    try:
        seed = chip_secret_seed.encode() or None
        summary = run_demo(console, out, steps=steps, preset=preset, chip_secret_seed=seed)
    except ComputewatchError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    if not summary["ok"]:
        raise typer.Exit(1)


def run_demo(
    console: Any, out: Path, *, steps: int = 120, preset: str = "tiny", chip_secret_seed: bytes | None = None
) -> dict[str, Any]:
    """The demo's steps; returns a summary (also written to OUT/summary.json).

    ``chip_secret_seed`` makes the chips' snapshot schedules reproducible (tests); by default
    every chip gets fresh secrets, as real chips do."""
    from rich.rule import Rule

    from computewatch.crypto.errors import ComputewatchError

    out = Path(out)
    if (out / "run").exists():
        raise ComputewatchError(f"{out} already holds a demo run; remove it or pass --out NEW_DIR")
    out.mkdir(parents=True, exist_ok=True)

    console.print(Rule("1. How many chips must the Verifier inspect? (paper §3.2, App. B, C)"))
    from computewatch.analysis.showcase import showcase

    analysis = showcase(console, out / "analysis")

    console.print(Rule("2. The chip: root of trust, signed firmware, attestation (§4)"))
    chip_dir, root_pub = _provision_and_attest(console, out, chip_secret_seed)

    console.print(Rule("3. The Prover trains under monitoring and keeps a transcript (§5)"))
    run_dir = _train(console, out, chip_dir, steps, preset)

    console.print(Rule("4. Inspection: audit the log, explain every snapshot (§3.1, App. D)"))
    inspection = _inspect(console, chip_dir, root_pub, run_dir, out)

    console.print(Rule("5. Many chips: FSDP over two gloo ranks, each rank one chip (§4 weight shards)"))
    sharded = _sharded_run(console, out, chip_secret_seed)

    summary = {
        "ok": inspection["ok"] and sharded["ok"],
        "sharded_run": sharded,
        "out": str(out),
        "analysis": {k: analysis[k] for k in ("footnote5", "figure2_worst") if k in analysis},
        "chip": str(chip_dir),
        "run": str(run_dir),
        **inspection,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    verdict = "[green]every snapshot on every chip explained[/green]" if summary["ok"] else "[red]inspection FAILED[/red]"
    console.print(f"\n{verdict}. Everything is under {out}/ (summary.json, analysis/, chips/, run/).")
    return summary


def _provision_and_attest(console: Any, out: Path, secret_seed: bytes | None) -> tuple[Path, Any]:
    from computewatch.chip import Chip, Chipmaker, provision_chips, verify_attestation
    from computewatch.chip.errors import AttestationError

    (chip_dir,) = provision_chips(out / "chips", 1, snapshots_per_day=_DEMO_RATE, secret_seed=secret_seed)
    maker = Chipmaker.load(out / "chips" / "chipmaker")
    chip = Chip.open(chip_dir)
    chip.boot()
    nonce = secrets.token_bytes(32)
    claims = verify_attestation(chip.attest(nonce), nonce, maker.public_key)
    console.print(
        f"chip {claims.serial} ({claims.model}, {claims.peak_flops:.3g} FLOP/s), certified by chipmaker key "
        f"{maker.public_key.keyid[:16]}; firmware {claims.firmware_version} (security version "
        f"{claims.security_version}, measurement {claims.firmware_measurement[:16]}...) attested against a fresh nonce"
    )
    try:
        verify_attestation(chip.attest(nonce), secrets.token_bytes(32), maker.public_key)
        stale = "ACCEPTED (wrong)"
    except AttestationError:
        stale = "rejected"
    console.print(f"the same evidence against another nonce (a replay): {stale}")
    console.print(f"snapshot rate f = {_DEMO_RATE:g}/busy day (signed into the firmware policy; Table 1 uses 0.1)")
    chip.close()
    return chip_dir, maker.public_key


def _train(console: Any, out: Path, chip_dir: Path, steps: int, preset: str) -> Path:
    from rich.progress import Progress

    from computewatch.prover.runner import TrainConfig, train

    run_dir = out / "run"
    config = TrainConfig(
        out=run_dir,
        preset=preset,
        steps=steps,
        chips_dir=chip_dir.parent,
        snapshots_per_day=_DEMO_RATE,
        chip_seconds_per_step=_DEMO_SECONDS_PER_STEP,
        checkpoint_every=max(steps // 6, 1),
    )
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"training {preset} on one monitored chip", total=steps)
        train(config, progress=lambda done, total: progress.update(task, completed=done))
    console.print(
        f"{steps} steps in {time.perf_counter() - t0:.1f} s; {_DEMO_SECONDS_PER_STEP:g} simulated busy seconds "
        f"per step ({steps * _DEMO_SECONDS_PER_STEP / 3600:g} busy hours); transcript in {run_dir}"
    )
    return run_dir


def _inspect(console: Any, chip_dir: Path, root_pub: Any, run_dir: Path, out: Path) -> dict[str, Any]:
    from rich.table import Table

    from computewatch.chip import audit_log, load_certificate
    from computewatch.cli.chip import print_audit_report
    from computewatch.formats.identity import verify_chip_certificate
    from computewatch.prover.export import export_hashes
    from computewatch.prover.replay import explain_snapshot
    from computewatch.prover.transcript import Transcript

    cert = verify_chip_certificate(load_certificate(chip_dir), root_pub)
    report = audit_log((chip_dir / "log" / "chip.log").read_bytes(), cert, root_pub)
    console.print("chip log audit against the chipmaker root:")
    print_audit_report(console, report)

    transcript = Transcript(run_dir)
    counts = transcript.verify()
    console.print(
        f"transcript: {counts['steps']} step records, {counts['checkpoints']} checkpoints, "
        f"{counts['samples']} committed samples, {counts['snapshots']} copied-out shards; every digest re-checked"
    )
    table = Table(title="Logged snapshots, explained by replaying the transcript")
    for col in ("log entry", "step", "replayed from", "logged shard digest", "replayed digest", "explained"):
        table.add_column(col)
    explained = []
    for entry in transcript.snapshots():
        result = explain_snapshot(transcript, entry)
        explained.append(result.explained)
        table.add_row(
            str(entry.get("counter")),
            str(result.step),
            f"checkpoint {result.from_checkpoint} (+{result.replayed_steps})",
            result.logged_digest[:16] + "...",
            result.replayed_digest[:16] + "...",
            "[green]yes[/green]" if result.explained else "[red]NO[/red]",
        )
    console.print(table)
    hashes = out / "transcript-hashes.json"
    hashes.write_text(json.dumps(export_hashes(transcript), indent=2, sort_keys=True) + "\n")
    console.print(f"hashed transcript for the Verifier (digests only, App. D step 2): {hashes}")
    ok = report.ok and bool(explained) and all(explained) and report.snapshots == len(explained)
    return {
        "ok": ok,
        "log_entries": report.entries,
        "snapshots_logged": report.snapshots,
        "snapshots_explained": sum(explained),
        "log_audit_ok": report.ok,
        "hashed_transcript": str(hashes),
    }


def _sharded_run(console: Any, out: Path, secret_seed: bytes | None, steps: int = 10) -> dict[str, Any]:
    from rich.table import Table

    from computewatch.chip import Chip, provision_chips
    from computewatch.prover.replay import shard_from_checkpoints
    from computewatch.prover.runner import TrainConfig, train
    from computewatch.prover.transcript import Transcript

    # Two hours of busy time a step at 12/day: each chip expects 10 snapshots in 10 steps.
    chips = provision_chips(out / "fsdp-chips", 2, snapshots_per_day=_DEMO_RATE, secret_seed=secret_seed)
    run_dir = out / "fsdp-run"
    t0 = time.perf_counter()
    train(
        TrainConfig(
            out=run_dir, preset="tiny", steps=steps, nproc=2, strategy="fsdp", chips_dir=chips[0].parent,
            snapshots_per_day=_DEMO_RATE, chip_seconds_per_step=7200.0, checkpoint_every=1, threads=1,
        )
    )
    transcript = Transcript(run_dir)
    layout = transcript.layout
    held = [sum(reg.stop - reg.start for reg in layout.chips[r]) for r in range(2)]
    console.print(
        f"{steps} FSDP steps on 2 ranks in {time.perf_counter() - t0:.1f} s; chip 0 holds {held[0]:,} and "
        f"chip 1 {held[1]:,} of the model's {sum(p.numel for p in layout.params):,} parameters"
    )
    table = Table(title="Each chip's snapshots against its slice of the reassembled weights")
    for col in ("chip", "snapshots", "explained", "log audit"):
        table.add_column(col)
    ok = True
    results = {}
    for rank, chip_dir in enumerate(chips):
        entries = transcript.snapshots(rank)
        good = sum(shard_from_checkpoints(transcript, e).explained for e in entries)
        audit = Chip.open(chip_dir).audit()
        ok = ok and audit.ok and bool(entries) and good == len(entries) == audit.snapshots
        results[audit.serial] = {"snapshots": len(entries), "explained": good, "log_audit_ok": audit.ok}
        table.add_row(audit.serial, str(len(entries)), str(good), "ok" if audit.ok else "[red]FAILED[/red]")
    console.print(table)
    return {"ok": ok, "chips": results, "run": str(run_dir)}
