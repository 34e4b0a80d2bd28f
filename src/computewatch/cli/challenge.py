"""`computewatch challenge` (Verifier) and `computewatch respond` (Prover): the step-challenge exchange."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from computewatch.cli._common import (
    EXIT_UNUSABLE,
    check_output_dir,
    check_output_file,
    fail,
    guard,
    out,
    print_json,
    write_output,
)

__all__ = ["challenge", "respond"]


class _Mode(enum.StrEnum):
    exact = "exact"
    tolerance = "tolerance"


def _read_seed(path: Path, as_json: bool) -> bytes:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"--seed-file {path}: cannot read ({getattr(exc, 'strerror', None) or exc})", as_json=as_json)
    if len(text) != 64 or not all(c in "0123456789abcdef" for c in text.lower()):
        fail(f"--seed-file {path}: expected the Verifier's 32-byte secret as 64 hex digits, as `inspect commit --seed-out` writes it", as_json=as_json)
    return bytes.fromhex(text)


def challenge(
    run: Annotated[Path, typer.Argument(help="The Prover's run directory (its committed transcript).", show_default=False)],
    seed_file: Annotated[Path, typer.Option("--seed-file", help="The Verifier's secret, hex text (as `inspect commit --seed-out` writes it).")],
    steps: Annotated[int, typer.Option("--steps", min=0, max=1_000_000, help="K: random steps to draw from the secret.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write CHALLENGE.json (never overwritten).")],
    top_q: Annotated[int, typer.Option("--top-q", min=0, max=10_000, help="Q: also draw the Q steps with the largest committed update norms (PoL's top-Q).")] = 2,
    mode: Annotated[_Mode, typer.Option("--mode", help="exact (answers are judged by digest) or tolerance (the state after each step is asked too, judged by distance).")] = _Mode.exact,
    deadline_s: Annotated[int, typer.Option("--deadline-s", min=1, max=365 * 86400, help="Seconds the Prover has to answer; later answers are violations.")] = 24 * 3600,
    prover_pub: Annotated[list[Path] | None, typer.Option("--prover-pub", help="Pinned Prover public key (PEM) the manifest must verify under; repeatable.")] = None,
    at: Annotated[list[int] | None, typer.Option("--at", help="Also challenge this step (a bisection round's midpoint, as `verify` names it in `localized[].next_challenge`); repeatable.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the challenge as JSON.")] = False,
) -> None:
    """Draw the steps the Prover must answer for, after it has committed (Verifier side)."""
    from computewatch.crypto.signing import VerifyKey
    from computewatch.verifier.challenges import make_challenge
    from computewatch.crypto.errors import ComputewatchError
    from computewatch.verifier._audit import inventory
    from computewatch.verifier._run import staged_run

    if not (run / "manifest.dsse.json").is_file():
        fail(f"{run}: not a transcript (no manifest.dsse.json)", as_json=as_json)
    check_output_file(out_path, "--out", overwrite=False)
    secret = _read_seed(seed_file, as_json)
    if not prover_pub:
        fail("no Prover key pinned: give --prover-pub FILE (a key found beside the evidence is never trusted)", as_json=as_json)
    with guard(EXIT_UNUSABLE, as_json=as_json):
        keys = [VerifyKey.load(p) for p in prover_pub]
        try:  # the judge's own reading of a staged copy: no Prover code runs
            with staged_run(str(run.resolve()), keys, checkpoints="all") as staged:
                inv = inventory(staged)
        except ComputewatchError as exc:
            fail(f"{run}: the transcript is not authentic or not readable: {exc}", as_json=as_json)
        summary = inv.get("step_commitments") or {}
        try:
            doc = make_challenge(summary, inv["run_id"], inv["precommitment_digest"], secret, steps, top_q=top_q, mode=mode.value, deadline_s=deadline_s,
                                 at=at or ())
        except ValueError as exc:
            fail(str(exc), as_json=as_json)
    from computewatch.formats.challenge import encode_challenge

    write_output(out_path, encode_challenge(doc), "--out")
    if as_json:
        print_json(doc)
        return
    drawn = ", ".join(f"{s['step']} ({'+'.join(s['reasons'])})" for s in doc["steps"][:20])
    out.print(f"challenge for run {doc['run_id']}: {len(doc['steps'])} of {doc['steps_count']} steps: {drawn}{' ...' if len(doc['steps']) > 20 else ''}")
    out.print(f"answer due within {deadline_s} s; written to {out_path}")


def respond(
    run: Annotated[Path, typer.Argument(help="The Prover's run directory.", show_default=False)],
    challenge_file: Annotated[Path, typer.Argument(help="CHALLENGE.json from the Verifier.", show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", help="The response folder to write (new or empty).")],
    data: Annotated[Path | None, typer.Option("--data", help="The raw data folder, for a program that reads files.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a summary as JSON.")] = False,
) -> None:
    """Answer a step challenge: the state before each drawn step, recomputed from the nearest checkpoint (Prover side)."""
    from computewatch.cli._common import progress as bar
    from computewatch.prover.respond import load_challenge, respond as do_respond

    if not (run / "manifest.dsse.json").is_file():
        fail(f"{run}: not a transcript (no manifest.dsse.json)", as_json=as_json)
    if data is not None and not data.is_dir():
        fail(f"--data {data}: not a folder", as_json=as_json)
    check_output_dir(out_dir, "--out", may_exist=False)
    with guard(EXIT_UNUSABLE, as_json=as_json):
        doc = load_challenge(challenge_file)
        with bar("recomputing challenged states", total=len(doc["steps"])) as tick:
            path = do_respond(run, doc, out_dir, data_dir=str(data) if data else None, progress=lambda d, t: tick(d))
    summary: dict[str, Any] = {"run_id": doc["run_id"], "answered": len(doc["steps"]), "response": str(path)}
    if as_json:
        print_json(summary)
    else:
        out.print(f"answered {summary['answered']} challenged steps of run {doc['run_id']}: {path}")
