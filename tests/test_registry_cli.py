"""`computewatch registry ...` and `computewatch inspect ...`: the contract other tools rely on,
with keys as `openssl genpkey -algorithm ed25519` writes them, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from computewatch.cli import app

runner = CliRunner()


def _run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _openssl_key(folder: Path, name: str) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to check that its Ed25519 PEM files load (apt-get install openssl)")
    key, pub = folder / f"{name}.key", folder / f"{name}.pub"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True, capture_output=True)
    subprocess.run([openssl, "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    return key, pub


def test_openssl_ed25519_pem_files_load(tmp_path) -> None:
    from computewatch.crypto.signing import SigningKey, VerifyKey

    key, pub = _openssl_key(tmp_path, "k")
    sk, vk = SigningKey.load(key), VerifyKey.load(pub)
    assert sk.public_key == vk
    vk.verify(sk.sign(b"message"), b"message")


def test_registry_and_inspect_command_lines(db_url, registry_chips, tmp_path) -> None:
    maker_dir, chips = registry_chips
    chip = tmp_path / "chip"
    shutil.copytree(chips[0], chip)
    acme_key, acme_pub = _openssl_key(tmp_path, "acme")
    beta_key, beta_pub = _openssl_key(tmp_path, "beta")
    db = ("--db", db_url)

    r = _run("registry", "init", *db, "--loss-threshold", "2", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["settings"]["loss_investigation_threshold"] == 2
    assert _run("registry", "add-chipmaker", "maker", "--pub", maker_dir / "chipmaker.pub", *db).exit_code == 0
    assert _run("registry", "add-owner", "acme", "--pub", acme_pub, *db).exit_code == 0
    assert _run("registry", "add-owner", "beta", "--pub", beta_pub, *db).exit_code == 0
    r = _run("registry", "register-chip", chip, *db, "--json")
    assert r.exit_code == 0, r.output
    serial = json.loads(r.stdout)["serial"]
    r = _run("registry", "ship", serial, "--to", "acme", "--from-key", maker_dir / "chipmaker.key", "--to-key", acme_key,
             "--facility", "hall-1", *db)
    assert r.exit_code == 0 and "maker -> acme" in r.stdout, r.output

    # A signature that is not the holder's: refused, exit 1, with the reason.
    r = _run("registry", "transfer", serial, "--to", "beta", "--from-key", beta_key, "--to-key", beta_key, *db, "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert "no valid signature by the current holder 'acme'" in doc["error"] and doc["exit"] == 1
    assert "no valid signature by the current holder" in r.stderr and r.stderr.count("\n") == 1

    r = _run("registry", "show", serial, *db, "--json")
    doc = json.loads(r.stdout)
    assert {"serial", "holder", "custody", "inspections"} <= set(doc)
    assert (doc["serial"], doc["holder"], len(doc["custody"]), doc["inspections"]) == (serial, "acme", 2, [])

    # The owner trains; the inspector records the chip it is shown.
    from computewatch.chip import Chip
    from computewatch.chip.testing import run_steps, small_shard

    c = Chip.open(chip)
    c.boot()
    c.attach(small_shard(), tmp_path / "storage")
    run_steps(c, 3, 1800.0)
    c.close()
    r = _run("inspect", "record", serial, "--chip-dir", chip, *db, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["serial"] == serial and doc["outcome"] == "clean" and doc["problems"] == []
    assert doc["tree_size"] > 0 and len(doc["root"]) == 64 and doc["queued"] > 0
    other = tmp_path / "other"
    shutil.copytree(chips[1], other)
    r = _run("inspect", "record", serial, "--chip-dir", other, *db, "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["outcome"] == "finding"
    r = _run("registry", "show", serial, *db, "--json")
    assert [i["outcome"] for i in json.loads(r.stdout)["inspections"]] == ["clean", "finding"]
    r = _run("registry", "list", "queue", "--owner", "acme", *db, "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == doc["queued"]

    r = _run("registry", "transfer", serial, "--to", "beta", "--from-key", acme_key, "--to-key", beta_key, *db)
    assert r.exit_code == 0 and "acme -> beta" in r.stdout, r.output
    r = _run("registry", "verify", serial, *db, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"]

    # Planning: commit before the period, derive with the seed, reveal after, anyone re-derives.
    seed_file = tmp_path / "seed.hex"
    r = _run("inspect", "commit", "--period", "2020-01", "--start", "2020-01-01", "--flops", "1e20", "--owner", "beta",
             "--seed-out", seed_file, *db, "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["population"] == 1 and plan["samples"] == 1 and (seed_file.stat().st_mode & 0o777) == 0o600
    r = _run("inspect", "commit", "--period", "2020-02", "--flops", "1e20", "--seed-out", seed_file, *db)
    assert r.exit_code == 2 and "exists" in r.stderr  # a seed file is never overwritten
    r = _run("inspect", "plan", str(plan["plan"]), *db, "--json")
    assert r.exit_code == 2 and "not revealed yet" in json.loads(r.stdout)["error"]
    r = _run("inspect", "plan", str(plan["plan"]), "--seed-file", seed_file, *db, "--json")
    assert json.loads(r.stdout)["chips"] == [serial]
    r = _run("inspect", "reveal", str(plan["plan"]), "--seed-file", seed_file, *db, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["revealed"], r.output
    r = _run("inspect", "refuse", serial, "--reason", "not presented", "--plan", str(plan["plan"]), *db, "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["outcome"] == "refused"
    r = _run("inspect", "status", str(plan["plan"]), *db, "--json")
    assert json.loads(r.stdout)["counts"]["refused"] == 1
    r = _run("inspect", "status", *db, "--json")
    assert json.loads(r.stdout)["inspections"] == {"clean": 1, "finding": 1, "refused": 1}

    r = _run("registry", "report-loss", serial, "--key", beta_key, "--kind", "lost", "--reason", "fell", *db, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["holder"] == "beta"
    r = _run("registry", "list", "chips", *db, "--json")
    assert [(c["serial"], c["status"]) for c in json.loads(r.stdout)] == [(serial, "lost")]


def test_default_database_env_var_and_bad_input(tmp_path, monkeypatch, registry_chips) -> None:
    maker_dir, _ = registry_chips
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COMPUTEWATCH_DB", raising=False)
    assert _run("registry", "init").exit_code == 0
    assert (tmp_path / "computewatch.db").exists()
    other = tmp_path / "elsewhere.db"
    # Only `registry init` makes a register: another command on a missing file is refused.
    r = _run("registry", "add-chipmaker", "maker", "--pub", maker_dir / "chipmaker.pub", env={"COMPUTEWATCH_DB": str(other)})
    assert r.exit_code == 2 and "registry init" in r.stderr and not other.exists()
    assert _run("registry", "init", env={"COMPUTEWATCH_DB": str(other)}).exit_code == 0
    r = _run("registry", "add-chipmaker", "maker", "--pub", maker_dir / "chipmaker.pub", env={"COMPUTEWATCH_DB": str(other)})
    assert r.exit_code == 0 and other.exists()
    r = _run("registry", "list", "parties", "--json", env={"COMPUTEWATCH_DB": str(other)})
    assert [p["name"] for p in json.loads(r.stdout)] == ["maker"]
    r = _run("registry", "list", "parties", "--json")
    assert json.loads(r.stdout) == []
    r = _run("registry", "add-owner", "acme", "--pub", tmp_path / "missing.pub")
    assert r.exit_code == 2 and "does not exist" in r.stderr
    r = _run("registry", "show", "CW-NOPE", "--json")
    assert r.exit_code == 2 and json.loads(r.stdout)["error"] == "no item 'CW-NOPE' in the register"
    r = _run("registry", "init", "--db", str(tmp_path / "no" / "such" / "dir.db"))
    assert r.exit_code == 2 and "does not exist" in r.stderr
    r = _run("registry", "transfer", "CW-X", "--to", "acme")
    assert r.exit_code == 2 and "--envelope" in r.stderr
