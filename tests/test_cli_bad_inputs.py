"""Bad input through the real command line: a clear one-line error, the right exit status, no
traceback, and nothing already stored changed or lost (docs/cli.md).

The table is a list of `Case`s; other command groups append theirs (`CASES += [...]`). Paths in
`args` are templates over the fixture world:

  {chip}  a chip that booted and stopped cleanly      {pub}   its chipmaker's public key
  {chip2} a second chip of the same chipmaker           {ev}    evidence from {chip}
  {ev2}   evidence from {chip2}                          {fresh} a chip that never booted
  {other_pub} another chipmaker's key                    {run}   a finished monitored run
  {file}  a regular text file                            {new}   a fresh empty folder per case
  {ro}    a folder this process cannot write             {bad_*} damaged copies (see `_damage`)

Every file under the world is hashed before and after each case and must be unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from computewatch.chip import Chip, Chipmaker, FirmwarePolicy, manufacture_chip
from _chips import TEST_SECRET_SEED
from computewatch.cli import app
from computewatch.crypto.canonical import canonical_json
from computewatch.formats.steps import batch_root
from computewatch.prover.runner import TrainConfig, train
from computewatch.prover.transcript import Transcript

NONCE = "00112233445566778899aabbccddeeff"


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    code: int  # 1: a negative finding, 2: unusable input
    needle: str  # what the one error line must say (case-insensitive)
    json: bool = False  # --json was given: stdout must be one JSON document naming the error


def _c(name: str, args: str, code: int, needle: str, *, as_json: bool = False) -> Case:
    return Case(name, tuple(args.split()), code, needle, as_json)


P = "sampling plan --flops 5.76e23 --chips 1e5"
S = "sampling simulate --flops 5.76e23 --chips 1e5 --trials 10"
D = "sampling detection-plot --flops 5.76e23 --chips 1e5"
VA = f"chip verify-attestation {{ev}} --nonce {NONCE} --chipmaker-pub {{pub}}"
VL = "chip verify-log {chip} --chipmaker-pub {pub}"
T = "train --preset mlp --steps 2 --out {new}/run"

CASES: list[Case] = [
    # sampling plan
    _c("plan-zero-flops", "sampling plan --flops 0 --chips 1e5", 2, "H must be a positive"),
    _c("plan-negative-flops", "sampling plan --flops -1 --chips 1e5", 2, "H must be a positive"),
    _c("plan-nan-flops", "sampling plan --flops nan --chips 1e5", 2, "H must be a positive finite"),
    _c("plan-inf-flops", "sampling plan --flops inf --chips 1e5", 2, "H must be a positive finite"),
    _c("plan-text-flops", "sampling plan --flops lots --chips 1e5", 2, "--flops"),
    _c("plan-zero-chips", "sampling plan --flops 1e24 --chips 0", 2, "C must be a positive"),
    _c("plan-negative-chips", "sampling plan --flops 1e24 --chips -5", 2, "C must be a positive"),
    _c("plan-p-zero", f"{P} --probability 0", 2, "p must lie strictly between 0 and 1"),
    _c("plan-p-one", f"{P} --probability 1", 2, "p must lie strictly between 0 and 1"),
    _c("plan-p-big", f"{P} --probability 1.5", 2, "p must lie strictly between 0 and 1"),
    _c("plan-zero-run", f"{P} --run-days 0", 2, "T must be a positive"),
    _c("plan-negative-period", f"{P} --period-days -3", 2, "T_m must be a positive"),
    _c("plan-zero-rate", f"{P} --snapshots-per-day 0", 2, "f must be a positive"),
    _c("plan-negative-a", f"{P} --chip-flops-per-day -1", 2, "a must be a positive"),
    _c("plan-unknown-formula", f"{P} --formula quadratic", 2, "--formula"),
    _c("plan-missing-chips", "sampling plan --flops 1e24", 2, "--chips"),
    _c("plan-underflow", "sampling plan --flops 1e-300 --chips 1e300", 2, "b = H/(a*T*C)"),
    _c("plan-more-samples-than-chips", "sampling plan --flops 1e21 --chips 1000", 1, "more than the stockpile"),
    _c("plan-more-samples-json", "sampling plan --flops 1e21 --chips 1000 --formula exact --json", 1, "more than the stockpile"),
    _c("plan-b-above-one", "sampling plan --flops 9.9e24 --chips 1000 --formula exact", 1, ">= 1"),
    _c("plan-json-bad-p", f"{P} --probability 2 --json", 2, "p must lie", as_json=True),
    _c("plan-unknown-option", f"{P} --foo 1", 2, "--foo"),
    # sampling simulate
    _c("sim-zero-trials", "sampling simulate --flops 5.76e23 --chips 1e5 --trials 0", 2, "--trials"),
    _c("sim-negative-trials", "sampling simulate --flops 5.76e23 --chips 1e5 --trials -5", 2, "--trials"),
    _c("sim-huge-trials", "sampling simulate --flops 5.76e23 --chips 1e5 --trials 1000000000", 2, "--trials"),
    _c("sim-text-trials", "sampling simulate --flops 5.76e23 --chips 1e5 --trials many", 2, "--trials"),
    _c("sim-negative-seed", f"{S} --seed -1", 2, "--seed"),
    _c("sim-negative-samples", f"{S} --samples -1", 2, "--samples"),
    _c("sim-samples-above-chips", "sampling simulate --flops 1e23 --chips 1000 --samples 2000 --trials 10", 2, "samples per period"),
    _c("sim-fractional-chips", "sampling simulate --flops 1e23 --chips 1500.5 --samples 10 --trials 10", 2, "whole number of chips"),
    _c("sim-too-many-chips", "sampling simulate --flops 5.76e23 --chips 1e10 --samples 100 --trials 10", 2, "below 1e+09 chips"),
    _c("sim-unknown-strategy", f"{S} --strategy sideways", 2, "--strategy"),
    _c("sim-factor-below-one", f"{S} --strategy fewer-longer --factor 0.5", 2, "strategy factor k"),
    _c("sim-factor-nan", f"{S} --strategy fewer-longer --factor nan", 2, "strategy factor k"),
    _c("sim-negative-offset", f"{S} --start-offset -1", 2, "start offset"),
    _c("sim-offset-at-period", f"{S} --start-offset 30", 2, "start offset"),
    _c("sim-needs-more-chips", "sampling simulate --flops 9.9e24 --chips 1e4 --samples 5 --trials 10 --strategy more-shorter --factor 10", 2, "times the stockpile"),
    _c("sim-infeasible-default-samples", "sampling simulate --flops 9.9e24 --chips 1000 --trials 10", 2, ">= 1"),
    _c("sim-json-bad-trials-value", f"{S} --seed 1 --probability 0 --json", 2, "p must lie", as_json=True),
    # sampling table1 and figures
    _c("table1-unknown-formula", "sampling table1 --formula cubic", 2, "--formula"),
    _c("fig2-no-extension", "sampling figure2 --out {new}/fig", 2, "must end in"),
    _c("fig2-wrong-extension", "sampling figure2 --out {new}/fig.txt", 2, "must end in"),
    _c("fig2-out-is-folder", "sampling figure2 --out {new}", 2, "is a folder"),
    _c("fig2-missing-folder", "sampling figure2 --out {new}/missing/fig.png", 2, "does not exist"),
    _c("fig2-parent-is-file", "sampling figure2 --out {file}/fig.png", 2, "is not a folder"),
    _c("fig2-unwritable", "sampling figure2 --out {ro}/fig.png", 2, "not writable"),
    _c("plot-zero-max", f"{D} --out {{new}}/p.png --max-samples 0", 2, "--max-samples"),
    _c("plot-bad-p", f"{D} --out {{new}}/p.png --probability 2", 2, "p must lie"),
    _c("plot-missing-out", D, 2, "--out"),
    _c("plot-no-extension", f"{D} --out {{new}}/plot", 2, "must end in"),
    # chip manufacture
    _c("make-empty-serial", "chip manufacture --out {new}/c --serial=", 2, "cannot be empty"),
    _c("make-bad-serial", "chip manufacture --out {new}/c --serial bad/serial", 2, "letters, digits"),
    _c("make-long-serial", "chip manufacture --out {new}/c --serial " + "X" * 65, 2, "1 to 64"),
    _c("make-negative-rate", "chip manufacture --out {new}/c --snapshots-per-day -1", 2, "--snapshots-per-day"),
    _c("make-huge-rate", "chip manufacture --out {new}/c --snapshots-per-day 1e300", 2, "--snapshots-per-day"),
    _c("make-nan-rate", "chip manufacture --out {new}/c --snapshots-per-day nan", 2, "--snapshots-per-day"),
    _c("make-over-existing-chip", "chip manufacture --out {chip}", 2, "not empty"),
    _c("make-out-is-file", "chip manufacture --out {file}", 2, "is a file"),
    _c("make-missing-key", "chip manufacture --out {new}/c --chipmaker-key {new}/missing.key", 2, "missing.key"),
    _c("make-key-not-pem", "chip manufacture --out {new}/c --chipmaker-key {file}", 2, "key"),
    _c("make-missing-out", "chip manufacture", 2, "--out"),
    _c("make-unwritable", "chip manufacture --out {ro}/c", 2, "not writable"),
    # chip attest
    _c("attest-nonce-not-hex", "chip attest {chip} --nonce zz --out {new}/ev.json", 2, "not hex"),
    _c("attest-nonce-short", "chip attest {chip} --nonce 0011 --out {new}/ev.json", 2, "at least 8 bytes"),
    _c("attest-nonce-empty", "chip attest {chip} --nonce= --out {new}/ev.json", 2, "at least 8 bytes"),
    _c("attest-missing-chip", f"chip attest {{new}}/nochip --nonce {NONCE} --out {{new}}/ev.json", 2, "not a folder"),
    _c("attest-not-a-chip", f"chip attest {{new}} --nonce {NONCE} --out {{new}}/ev.json", 2, "not a chip state directory"),
    _c("attest-out-exists", f"chip attest {{chip}} --nonce {NONCE} --out {{ev}}", 2, "exists"),
    _c("attest-out-is-folder", f"chip attest {{chip}} --nonce {NONCE} --out {{new}}", 2, "is a folder"),
    _c("attest-out-missing-folder", f"chip attest {{chip}} --nonce {NONCE} --out {{new}}/no/ev.json", 2, "does not exist"),
    _c("attest-out-under-file", f"chip attest {{chip}} --nonce {NONCE} --out {{file}}/ev.json", 2, "is not a folder"),
    _c("attest-out-unwritable", f"chip attest {{chip}} --nonce {NONCE} --out {{ro}}/ev.json", 2, "not writable"),
    _c("attest-missing-nonce", "chip attest {chip} --out {new}/ev.json", 2, "--nonce"),
    # chip verify-attestation
    _c("va-wrong-nonce", f"chip verify-attestation {{ev}} --nonce {'ff' * 16} --chipmaker-pub {{pub}}", 1, "nonce mismatch"),
    _c("va-other-chipmaker", f"chip verify-attestation {{ev}} --nonce {NONCE} --chipmaker-pub {{other_pub}}", 1, "chipmaker key"),
    _c("va-other-serial", f"{VA} --serial CW-SOMEONE-ELSE", 1, "not the expected chip"),
    _c("va-empty-serial", f"{VA} --serial=", 2, "cannot be empty"),
    _c("va-missing-evidence", f"chip verify-attestation {{new}}/ev.json --nonce {NONCE} --chipmaker-pub {{pub}}", 2, "ev.json"),
    _c("va-not-json", f"chip verify-attestation {{file}} --nonce {NONCE} --chipmaker-pub {{pub}}", 2, "not JSON"),
    _c("va-field-missing", f"chip verify-attestation {{bad_ev_field}} --nonce {NONCE} --chipmaker-pub {{pub}}", 2, "lacks the field(s) 'evidence'"),
    _c("va-bad-signature", f"chip verify-attestation {{bad_ev_sig}} --nonce {NONCE} --chipmaker-pub {{pub}}", 1, "does not verify under the boot key"),
    _c("va-min-security", f"{VA} --min-security-version 5", 1, "below the required 5"),
    _c("va-negative-min-security", f"{VA} --min-security-version -1", 2, "--min-security-version"),
    _c("va-pub-not-a-key", f"chip verify-attestation {{ev}} --nonce {NONCE} --chipmaker-pub {{file}}", 2, "key"),
    _c("va-json-short-nonce", "chip verify-attestation {ev} --nonce 00 --chipmaker-pub {pub} --json", 2, "at least 8 bytes", as_json=True),
    _c("va-json-wrong-nonce", f"chip verify-attestation {{ev}} --nonce {'ee' * 16} --chipmaker-pub {{pub}} --json", 1, "nonce mismatch", as_json=True),
    _c("va-damage-reported", f"chip verify-attestation {{bad_chip_ev}} --nonce {NONCE} --chipmaker-pub {{pub}}", 1, "log damage"),
    # chip show-log
    _c("show-log-missing", "chip show-log {new}/nochip", 2, "not a folder"),
    _c("show-log-not-a-chip", "chip show-log {new}", 2, "not a chip state directory"),
    # chip verify-log
    _c("vl-no-root", "chip verify-log {chip}", 2, "--chipmaker-pub"),
    _c("vl-two-roots", "chip verify-log {chip} --chipmaker-pub {pub} --trust-chip-copy", 2, "exclude each other"),
    _c("vl-missing-root", "chip verify-log {chip} --chipmaker-pub {new}/missing.pub", 2, "missing.pub"),
    _c("vl-other-root", "chip verify-log {chip} --chipmaker-pub {other_pub}", 1, "does not verify under the given chipmaker root"),
    _c("vl-missing-log-file", f"{VL} --log {{new}}/missing.log", 2, "no such file"),
    _c("vl-junk-evidence", f"{VL} --evidence {{file}}", 2, "not an evidence bundle"),
    _c("vl-evidence-of-other-chip", f"{VL} --evidence {{ev2}}", 1, "not the expected chip"),
    _c("vl-dropped-entry", f"{VL} --log {{bad_log_dropped}}", 1, "entry 1"),
    _c("vl-empty-log", f"{VL} --log {{bad_log_empty}}", 1, "the log is empty"),
    _c("vl-cut-mid-session", f"{VL} --log {{bad_log_open}}", 1, "does not end in a checkpoint"),
    _c("vl-never-booted", "chip verify-log {fresh} --chipmaker-pub {pub}", 1, "the log is empty (or missing)"),
    _c("vl-json-no-root", "chip verify-log {chip} --json", 2, "--chipmaker-pub", as_json=True),
    _c("vl-missing-dir", "chip verify-log {new}/nochip --chipmaker-pub {pub}", 2, "not a folder"),
    _c("vl-truncated-vs-evidence", f"{VL} --log {{bad_log_first_session}} --evidence {{ev}}", 1, "truncated"),
    # train
    _c("train-unknown-preset", f"{T} --preset huge", 2, "--preset"),
    _c("train-zero-steps", "train --preset mlp --steps 0 --out {new}/run", 2, "--steps"),
    _c("train-negative-steps", "train --preset mlp --steps -1 --out {new}/run", 2, "--steps"),
    _c("train-text-steps", "train --preset mlp --steps few --out {new}/run", 2, "--steps"),
    _c("train-zero-nproc", f"{T} --nproc 0", 2, "--nproc"),
    _c("train-huge-nproc", f"{T} --nproc 10000", 2, "--nproc"),
    _c("train-unknown-strategy", f"{T} --nproc 2 --strategy zero", 2, "--strategy"),
    _c("train-negative-rate", f"{T} --snapshots-per-day -1", 2, "--snapshots-per-day"),
    _c("train-huge-rate", f"{T} --snapshots-per-day 1e300", 2, "--snapshots-per-day"),
    _c("train-negative-chip-seconds", f"{T} --chip-seconds-per-step -5", 2, "--chip-seconds-per-step"),
    _c("train-huge-chip-seconds", f"{T} --chip-seconds-per-step 1e300", 2, "--chip-seconds-per-step"),
    _c("train-zero-interval", f"{T} --checkpoint-every 0", 2, "--checkpoint-every"),
    _c("train-resume-nothing", "train --preset mlp --steps 2 --out {new}/run --resume", 2, "holds no run to resume"),
    _c("train-over-existing-run", "train --preset mlp --steps 2 --out {run}", 2, "already holds a run"),
    _c("train-out-is-file", "train --preset mlp --steps 2 --out {file}", 2, "is a file"),
    _c("train-out-under-file", "train --preset mlp --steps 2 --out {file}/run", 2, "is a file"),
    _c("train-out-unwritable", "train --preset mlp --steps 2 --out {ro}/run", 2, "not writable"),
    _c("train-chips-missing", f"{T} --chips {{new}}/nochips", 2, "not a folder"),
    _c("train-chips-empty", f"{T} --chips {{new}}", 2, "holds 0 chips"),
    # transcript
    _c("show-missing", "transcript show {new}/norun", 2, "no run directory"),
    _c("show-not-a-run", "transcript show {new}", 2, "holds no transcript"),
    _c("show-s3-without-s3fs", "transcript show s3://bucket/run", 2, "pip install s3fs"),
    _c("show-gcs-without-gcsfs", "transcript show gs://bucket/run", 2, "pip install gcsfs"),
    _c("show-unknown-protocol", "transcript show nosuch://bucket/run", 2, "unknown storage protocol"),
    _c("show-index-truncated", "transcript show {bad_run_index_cut}", 1, "checkpoint index lacks"),
    _c("show-index-deleted", "transcript show {bad_run_index_gone}", 1, "lacks W0"),
    _c("show-snapshot-duplicated", "transcript show {bad_run_snap_dup}", 1, "appears twice"),
    _c("show-sample-ids-edited", "transcript show {bad_run_ids}", 1, "data order"),
    _c("show-rng-edited", "transcript show {bad_run_rng}", 1, "rng digest"),
    _c("show-manifest-forged", "transcript show {bad_run_manifest}", 1, "does not verify"),
    _c("show-checkpoint-size", "transcript show {bad_run_nbytes}", 1, "the index says"),
    _c("export-out-is-folder", "transcript export-hashes {run} --out {new}", 2, "is a folder"),
    _c("export-out-exists", "transcript export-hashes {run} --out {file}", 2, "exists"),
    _c("export-missing-run", "transcript export-hashes {new}/norun --out {new}/h.json", 2, "no run directory"),
    _c("export-out-missing-folder", "transcript export-hashes {run} --out {new}/no/h.json", 2, "does not exist"),
    _c("export-forged-run", "transcript export-hashes {bad_run_manifest} --out {new}/h.json", 1, "does not verify"),
    _c("export-s3", "transcript export-hashes s3://b/r --out {new}/h.json", 2, "pip install s3fs"),
]

# computewatch demo: the world's folder is checked before anything is made.
CASES += [
    _c("demo-workdir-file", "demo --workdir {file}", 2, "is a file"),
    _c("demo-workdir-not-empty", "demo --workdir {chip}", 2, "not empty"),
    _c("demo-json-workdir-not-empty", "demo --workdir {chip} --json", 2, "not empty", as_json=True),
    _c("demo-workdir-unwritable", "demo --workdir {ro}/world", 2, "not writable"),
    _c("demo-zero-steps", "demo --workdir {new}/w --steps 0", 2, "--steps"),
]

# The command line's one guard (issue 20), by class: names the file system cannot hold, links as
# outputs, FIFOs where a file is read, registers that are not (yet) registers, numbers and dates
# out of range, binary files where text belongs, choices, --json on a parse error, sizes that
# would mean 10^9 rows. Subprocess classes (stdout on a full disk, memory, file size limits,
# hangs) are the tests after the table.
LONG = "n" * 300
CASES += [
    _c("long-name-attest-out", f"chip attest {{chip}} --nonce {NONCE} --out {{new}}/{LONG}.json", 2, "longer than the file system allows"),
    _c("long-name-train-out", f"train --preset mlp --steps 2 --out {{new}}/{LONG}", 2, "longer than the file system allows"),
    _c("long-name-json", f"registry init --db {{new}}/{LONG}.db --json", 2, "longer than", as_json=True),
    _c("loop-as-attest-out", f"chip attest {{chip}} --nonce {NONCE} --out {{loop}}", 2, "symbolic link"),
    _c("dangling-as-attest-out", f"chip attest {{chip}} --nonce {NONCE} --out {{dangling}}", 2, "leads nowhere"),
    _c("dangling-as-train-out", "train --preset mlp --steps 2 --out {dangling}", 2, "leads nowhere"),
    _c("loop-as-demo-workdir", "demo --workdir {loop}", 2, "symbolic link"),
    _c("loop-as-figure-out", "sampling figure2 --out {loop}", 2, "symbolic link"),
    _c("fifo-as-evidence", f"chip verify-attestation {{fifo}} --nonce {NONCE} --chipmaker-pub {{pub}}", 2, "is a FIFO"),
    _c("fifo-as-chipmaker-pub", "chip verify-log {chip} --chipmaker-pub {fifo}", 2, "is a FIFO"),
    _c("fifo-as-seed-file", "inspect plan 1 --seed-file {fifo} --db {db}", 2, "is a FIFO"),
    _c("fifo-as-db", "registry list chips --db {fifo}", 2, "is a FIFO"),
    _c("fifo-as-db-json", "registry list chips --db {fifo} --json", 2, "is a FIFO", as_json=True),
    _c("db-empty", "registry list chips --db=", 2, "--db is empty"),
    _c("db-missing", "registry list chips --db {new}/none.db", 2, "registry init"),
    _c("db-missing-show", "registry show CW-X --db {new}/none.db --json", 2, "no register at", as_json=True),
    _c("db-not-sqlite", "registry list chips --db {file}", 2, "not a SQLite database"),
    _c("db-folder", "registry list chips --db {new}", 2, "is a folder"),
    _c("db-half-written", "registry list chips --db {half_db}", 2, "malformed"),
    _c("db-unknown-revision", "registry list chips --db {future_db}", 2, "newer computewatch"),
    _c("init-on-foreign-db", "registry init --db {foreign_db}", 2, "another application's tables"),
    _c("add-on-foreign-db", "registry add-owner x --pub {pub} --db {foreign_db}", 2, "another application's tables"),
    _c("verify-db-missing", "verify {run} --chips {chip} --db {new}/none.db", 2, "registry init"),
    _c("verify-policy-cel-type", "verify {run} --chips {chip} --chipmaker-pub {pub} --prover-pub {pub} --policy {bad_policy_type}", 2,
       "rule 'cap' when: type error"),
    _c("verify-policy-cel-syntax", "verify {run} --chips {chip} --chipmaker-pub {pub} --prover-pub {pub} --policy {bad_policy_syntax} --json", 2,
       "rule 'cap' when: syntax error at column", as_json=True),
    _c("int-past-64-bits", "inspect plan 99999999999999999999999 --db {db}", 2, "out of range"),
    _c("int-past-64-bits-status", "inspect status 99999999999999999999999 --db {db} --json", 2, "out of range", as_json=True),
    _c("date-past-9999", "inspect commit --period p --flops 1e20 --seed-out {new}/s.hex --start 9999-12-31T00:00:00Z --db {db}", 2, "out of range"),
    _c("binary-seed-file", "inspect plan 1 --seed-file {binary} --db {db}", 2, "binary"),
    _c("status-not-a-choice", "registry list chips --status weird --db {db}", 2, "--status 'weird' for chips: one of"),
    _c("status-queue-choice", "registry list queue --status done --db {db} --json", 2, "pending|explained|unexplained", as_json=True),
    _c("status-no-filter", "registry list lots --status x --db {db}", 2, "not a filter"),
    _c("log-level-not-a-choice", "serve --log-level loud --db {db}", 2, "--log-level"),
    _c("serve-bad-host", "serve --host no.such.host.invalid --db {db} --data {new}/d", 2, "--host"),
    _c("serve-missing-register", "serve --db {new}/none.db --data {new}/d", 2, "registry init"),
    _c("json-bad-number", "sampling plan --flops 5.76e23 --chips lots --json", 2, "--chips", as_json=True),
    _c("json-bad-choice", "registry list chips --db {db} --json --limit 0", 2, "--limit", as_json=True),
    _c("lot-of-a-billion-dies", "registry produce fab --lot L --wafers 10000 --dies-per-wafer 100000 --db {db}", 2, "at most 1,000,000"),
    _c("seed-out-of-a-committed-plan", "inspect commit --period q --flops 1e20 --seed-out {used_seed} --db {db}", 2, "holds the seed of plan"),
]


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "scratch" not in p.relative_to(root).parts
    }


def _unwritable(root: Path) -> Path | None:
    ro = root / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if not os.access(ro, os.W_OK):
        return ro
    # Root ignores modes: a kernel folder nobody may write into serves instead.
    return Path("/proc/sys") if Path("/proc/sys").is_dir() and not os.access("/proc/sys", os.W_OK) else None


def _hostile(w: dict[str, Path], root: Path) -> None:
    """Links, a FIFO, a binary file and registers that are not (usable) registers."""
    import sqlite3

    from computewatch.registry import Registry

    h = root / "hostile"
    h.mkdir()
    (h / "loop").symlink_to(h / "loop")
    (h / "dangling").symlink_to(h / "nowhere" / "x")
    os.mkfifo(h / "fifo")
    (h / "binary.seed").write_bytes(bytes(range(256)))
    w.update(loop=h / "loop", dangling=h / "dangling", fifo=h / "fifo", binary=h / "binary.seed")
    w["db"] = h / "register.db"
    with Registry.open(str(w["db"])) as reg:
        from computewatch.crypto.signing import SigningKey

        maker, acme = SigningKey.load(root / "chipmaker" / "chipmaker.key"), SigningKey.generate()
        reg.add_fab("fab", SigningKey.generate().public_key)
        reg.add_chipmaker("maker", maker.public_key)
        reg.add_owner("acme", acme.public_key)
        reg.ship(reg.register_chip(w["chip"])["serial"], "acme", maker, acme)
        seed = bytes(range(32))
        _plan, _ = reg.commit_plan("used", None, flops=1e20, seed=seed)
    (h / "used.seed").write_text(seed.hex() + "\n")
    w["used_seed"] = h / "used.seed"
    full = (w["db"]).read_bytes()
    (h / "half.db").write_bytes(full[: len(full) // 3])
    w["half_db"] = h / "half.db"
    (h / "future.db").write_bytes(full)
    con = sqlite3.connect(h / "future.db")
    con.execute("UPDATE alembic_version SET version_num = 'z9999'")
    con.commit()
    con.close()
    w["future_db"] = h / "future.db"
    con = sqlite3.connect(h / "foreign.db")
    con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    con.commit()
    con.close()
    w["foreign_db"] = h / "foreign.db"


def _damage(world: dict[str, Path], root: Path) -> None:
    """Damaged copies of the chip's log, its evidence and the run, each a template name."""
    log = (world["chip"] / "log" / "chip.log").read_bytes()
    lines = log.split(b"\n")[:-1]
    bad = root / "bad"
    bad.mkdir()
    (bad / "dropped.log").write_bytes(b"\n".join([lines[0], *lines[2:]]) + b"\n")
    (bad / "empty.log").write_bytes(b"")
    (bad / "open.log").write_bytes(b"\n".join(lines[:3]) + b"\n")
    world["bad_log_dropped"], world["bad_log_empty"], world["bad_log_open"] = (
        bad / "dropped.log", bad / "empty.log", bad / "open.log")
    world["bad_log_first_session"] = world["first_session_log"]
    ev = json.loads(world["ev"].read_bytes())
    (bad / "ev-field.json").write_bytes(canonical_json({k: v for k, v in ev.items() if k != "evidence"}))
    sig = ev["evidence"]["signatures"][0]["sig"]
    ev["evidence"]["signatures"][0]["sig"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    (bad / "ev-sig.json").write_bytes(canonical_json(ev))
    world["bad_ev_field"], world["bad_ev_sig"] = bad / "ev-field.json", bad / "ev-sig.json"
    # a CEL policy (version 3) whose rule multiplies an int by a double: refused when it loads
    (bad / "policy-type.toml").write_text('[policy]\nname = "p"\nversion = 3\nthreshold_flops = 1e12\n'
                                          '[[rules]]\nid = "cap"\nkind = "ban"\nwhen = "compute.flops > 4 * compute.H"\n')
    (bad / "policy-syntax.toml").write_text('[policy]\nname = "p"\nversion = 3\nthreshold_flops = 1e12\n'
                                            '[[rules]]\nid = "cap"\nkind = "ban"\nwhen = "compute.flops >"\n')
    world["bad_policy_type"], world["bad_policy_syntax"] = bad / "policy-type.toml", bad / "policy-syntax.toml"

    def run_copy(name: str) -> Path:
        copy = Path(shutil.copytree(world["run"], bad / name))
        world[f"bad_run_{name}"] = copy
        return copy

    index = run_copy("index_cut") / "checkpoints" / "rank-00000.json"
    doc = json.loads(index.read_bytes())
    doc["checkpoints"] = doc["checkpoints"][:-1]
    index.write_bytes(canonical_json(doc))
    (run_copy("index_gone") / "checkpoints" / "rank-00000.json").unlink()
    snaps = run_copy("snap_dup") / "snapshots" / "rank-00000.jsonl"
    first = snaps.read_bytes().split(b"\n")[0]
    snaps.write_bytes(snaps.read_bytes() + first + b"\n")
    for name, field in (("ids", "sample_ids"), ("rng", "rng")):
        seg = sorted((run_copy(name) / "steps").iterdir())[0]
        recs = [json.loads(x) for x in seg.read_bytes().split(b"\n") if x]
        if field == "sample_ids":
            hashes = Transcript(world["run"]).sample_hashes()
            recs[1]["sample_ids"] = list(reversed(recs[1]["sample_ids"]))
            recs[1]["batch_root"] = batch_root([hashes[i] for i in recs[1]["sample_ids"]]).hex()
        else:
            recs[0]["rng"] = "00" * 32
        seg.write_bytes(b"".join(canonical_json(r) + b"\n" for r in recs))
    manifest = run_copy("manifest") / "manifest.dsse.json"
    env = json.loads(manifest.read_bytes())
    env["signatures"][0]["sig"] = ("A" if env["signatures"][0]["sig"][0] != "A" else "B") + env["signatures"][0]["sig"][1:]
    manifest.write_bytes(canonical_json(env))
    index = run_copy("nbytes") / "checkpoints" / "rank-00000.json"
    doc = json.loads(index.read_bytes())
    doc["checkpoints"][0]["nbytes"] += 1
    index.write_bytes(canonical_json(doc))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("world")
    maker = Chipmaker.create(root / "chipmaker")
    image = maker.sign_firmware(FirmwarePolicy(snapshots_per_day=1.0))
    w: dict[str, Path] = {"root": root, "pub": root / "chipmaker" / "chipmaker.pub"}
    nonce = bytes.fromhex(NONCE)
    for key, serial in (("chip", "CW-BAD-1"), ("chip2", "CW-BAD-2")):
        chip = Chip.open(manufacture_chip(maker, root / key, image, serial=serial))
        chip.boot()
        chip.close()
        if key == "chip":
            w["first_session_log"] = root / "first-session.log"
            w["first_session_log"].write_bytes((root / key / "log" / "chip.log").read_bytes())
        chip.boot()
        (root / f"{key}-ev.json").write_bytes(chip.attest(nonce))
        chip.close()
        w[key] = root / key
    w["ev"], w["ev2"] = root / "chip-ev.json", root / "chip2-ev.json"
    w["fresh"] = manufacture_chip(maker, root / "fresh", image, serial="CW-BAD-FRESH")
    # A chip whose log was cut behind the firmware's back: its next evidence reports the damage.
    damaged = Chip.open(manufacture_chip(maker, root / "damaged", image, serial="CW-BAD-DMG"))
    damaged.boot()
    damaged.close()
    log = damaged.log_path
    log.write_bytes(b"\n".join(log.read_bytes().split(b"\n")[:2]) + b"\n")
    damaged = Chip.open(root / "damaged")
    damaged.boot()
    (root / "damaged-ev.json").write_bytes(damaged.attest(nonce))
    damaged.close()
    w["bad_chip_ev"] = root / "damaged-ev.json"
    Chipmaker.create(root / "other-maker")
    w["other_pub"] = root / "other-maker" / "chipmaker.pub"
    w["file"] = root / "notes.txt"
    w["file"].write_text("not a key, not JSON, not a chip\n")
    w["run"] = root / "run"
    train(TrainConfig(out=w["run"], preset="mlp", steps=6, checkpoint_every=2, threads=1, snapshots_per_day=24.0,
                      chip_seconds_per_step=3600.0, chip_secret_seed=TEST_SECRET_SEED, nonce=b"bad-inputs"))
    _damage(w, root)
    _hostile(w, root)
    ro = _unwritable(root)
    if ro is not None:
        w["ro"] = ro
    return w


def _fill(case: Case, world: dict[str, Path], new: Path) -> list[str] | None:
    names = {k: str(v) for k, v in world.items()} | {"new": str(new)}
    out = []
    for arg in case.args:
        try:
            out.append(arg.format(**names))
        except KeyError:
            return None  # the world lacks this path here (e.g. no unwritable folder): case not applicable
    return out


def test_the_table_is_large_and_distinct() -> None:
    assert len(CASES) >= 100
    assert len({c.name for c in CASES}) == len(CASES)
    assert len({c.args for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, world: dict[str, Path], tmp_path: Path) -> None:
    new = world["root"] / "scratch" / case.name
    new.mkdir(parents=True)
    args = _fill(case, world, new)
    if args is None:
        assert case.name.endswith("unwritable")  # only those depend on the machine
        return
    before = _hashes(world["root"])
    result = CliRunner().invoke(app, args, env={"COLUMNS": "240", "TERMINAL_WIDTH": "240"})
    text = result.output
    assert "Traceback" not in text, text
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == case.code, text
    needle = case.needle.lower()
    lines = [line for line in result.stderr.splitlines() if needle in line.lower()]
    assert lines, f"no line of stderr names the problem ({case.needle!r}):\n{result.stderr}"
    assert all(len(line) < 500 for line in lines)
    if case.json:
        doc = json.loads(result.stdout)
        assert case.needle.lower() in doc["error"].lower() and doc["exit"] == case.code
    assert _hashes(world["root"]) == before, "a failed command changed what was stored"
    # Nothing was made in the case's own scratch folder either (no half-made chip, run or file).
    assert not any(new.iterdir()), sorted(new.iterdir())


# ---------------------------------------------------------------------- classes a subprocess shows
def _cli(args: list[str], *, stdout: object = subprocess.PIPE, env: dict[str, str] | None = None, preexec=None,
         timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "computewatch", *args], stdout=stdout, stderr=subprocess.PIPE,  # type: ignore[arg-type]
                          env={**os.environ, **(env or {})}, preexec_fn=preexec, timeout=timeout, check=False)


def _one_error_line(proc: subprocess.CompletedProcess[bytes], needle: str) -> None:
    text = proc.stderr.decode()
    assert "Traceback" not in text and "Exception ignored" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], text


def test_stdout_on_a_full_disk_is_one_line_exit_2() -> None:
    for extra in ([], ["--json"]):
        with open("/dev/full", "wb") as full:
            proc = _cli(["sampling", "plan", "--flops", "5.76e23", "--chips", "1e5", *extra], stdout=full)
        assert proc.returncode == 2
        _one_error_line(proc, "cannot write standard output: No space left on device")


def test_out_of_memory_is_one_line_exit_2() -> None:
    import resource

    limit = 2 << 30  # a command whose work needs more memory than the process may have
    code = ("import typer\nfrom computewatch.cli._common import Command, guard\napp = typer.Typer()\n"
            "@app.command(cls=Command)\ndef big() -> None:\n    with guard():\n        bytearray(4 << 30)\napp()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert proc.returncode == 2
    _one_error_line(proc, "out of memory")


def test_a_run_cut_off_by_a_full_disk_is_removed(tmp_path: Path) -> None:
    import resource
    import signal

    def small_files() -> None:  # every file write past 64 KiB fails, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    out = tmp_path / "run"
    proc = _cli(["train", "--preset", "mlp", "--steps", "2", "--out", str(out)], preexec=small_files, timeout=300)
    assert proc.returncode == 2, proc.stderr.decode()
    assert "File too large" in proc.stderr.decode() and "Traceback" not in proc.stderr.decode()
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no half-written run left


def test_the_default_register_is_never_created_silently(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COMPUTEWATCH_DB"}
    proc = subprocess.run([sys.executable, "-m", "computewatch", "registry", "list", "chips"], cwd=tmp_path, env=env,
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 2 and not (tmp_path / "computewatch.db").exists()
    _one_error_line(proc, "no register at computewatch.db (the default")


def test_a_database_that_never_answers_times_out(tmp_path: Path) -> None:
    import socket
    import time

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # accepts (the kernel completes the handshake) and never answers
        port = server.getsockname()[1]
        t0 = time.monotonic()
        proc = _cli(["registry", "list", "chips", "--db", f"postgresql://cw@127.0.0.1:{port}/cw"],
                    env={"COMPUTEWATCH_DB_CONNECT_TIMEOUT": "2"}, timeout=60)
        took = time.monotonic() - t0
    assert proc.returncode == 2 and took < 40, (took, proc.stderr)
    _one_error_line(proc, "timeout")


def test_a_ray_address_that_never_answers_is_given_up_on() -> None:
    import threading

    from computewatch.verifier.ray_connect import RayConnectError, connect_ray

    never = threading.Event()

    class Hanging:
        def init(self, **_: object) -> None:
            never.wait(30)

    with pytest.raises(RayConnectError, match="did not answer within"):
        connect_ray(Hanging(), "ray://10.0.0.1:10001", timeout=0.2)
    never.set()


def test_serve_on_a_port_in_use_is_one_line_and_creates_nothing(world: dict[str, Path], tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = CliRunner().invoke(app, ["serve", "--db", str(world["db"]), "--port", str(port), "--data", str(tmp_path / "d")])
    assert r.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr, r.output
    assert not (tmp_path / "d").exists()


def test_an_interrupted_inspect_commit_is_resumed(world: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    shutil.copy(world["db"], db)
    seed_file = tmp_path / "seed.hex"
    seed_file.write_text("ab" * 32 + "\n")  # what a commit killed after writing its seed leaves
    args = ["inspect", "commit", "--period", "resumed", "--flops", "1e20", "--seed-out", str(seed_file), "--db", str(db), "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "resuming" in r.stderr and seed_file.read_text().strip() == "ab" * 32
    # The retry of a commit that went through is refused, and points at no option that does not exist.
    r = CliRunner().invoke(app, [*args[:3], "again", *args[4:]])
    assert r.exit_code == 2 and "holds the seed of plan" in r.stderr and "--force" not in r.stderr
