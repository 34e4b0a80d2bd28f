"""`computewatch train` and `transcript show/export-hashes` from the command line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from computewatch.cli import app
from computewatch.crypto.canonical import parse_canonical_json
from computewatch.crypto.dsse import Envelope, verify_envelope
from computewatch.crypto.signing import VerifyKey

runner = CliRunner()


def _text(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines at the terminal width


def test_train_show_export(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--preset", "mlp", "--steps", "12", "--checkpoint-every", "5",
                                 "--snapshots-per-day", "24", "--chip-seconds-per-step", "1800", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"transcript: {out}" in result.output and "chip log (rank 0)" in result.output
    shown = runner.invoke(app, ["transcript", "show", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "12 steps" in _text(shown.output) and "4 checkpoints" in _text(shown.output)
    target = tmp_path / "hashes.json"
    exported = runner.invoke(app, ["transcript", "export-hashes", str(out), "--out", str(target)])
    assert exported.exit_code == 0, exported.output
    doc = parse_canonical_json(target.read_bytes())
    assert doc["kind"] == "computewatch/hashed-transcript" and doc["steps"]["count"] == 12
    assert [c["step"] for c in doc["checkpoints"]] == [0, 5, 10, 12]
    signed = runner.invoke(app, ["transcript", "export-hashes", str(out), "--out", str(tmp_path / "s.json"), "--signed"])
    assert signed.exit_code == 0, signed.output
    envelope = Envelope.from_json((tmp_path / "s.json").read_bytes())
    statement = parse_canonical_json(verify_envelope(envelope, [VerifyKey.from_pem((out / "keys" / "prover.pub").read_bytes())]))
    assert statement["predicate"] == doc
    again = runner.invoke(app, ["train", "--preset", "mlp", "--steps", "12", "--out", str(out)])
    assert again.exit_code == 2 and "already holds a run" in _text(again.output)


def test_show_reports_a_non_transcript_clearly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["transcript", "show", str(tmp_path)])
    assert result.exit_code == 2 and "holds no transcript" in _text(result.output)


