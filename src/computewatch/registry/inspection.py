"""The inspection procedure of §3.1, as checks over what a presented chip gives the inspector.

`present` operates the chip as an inspector with physical access does (power on, verified
boot, `inspect(nonce)`: reveal the schedule epoch, checkpoint, attest; read the log; clean
stop). `check` decides from what was presented alone, against what the register expects: the
registered certificate and device key, the pinned chipmaker root, and the tree heads the
register's witness saw before. `check` is deterministic, so a stored inspection can be
re-verified later from its stored inputs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from computewatch.crypto.dsse import Envelope
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.merkle import MerkleTree, verify_consistency
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.attestation import verify_attestation
from computewatch.formats.chip_audit import audit_log
from computewatch.formats.chip_entry import LogEntry, envelope_from_obj, split_log
from computewatch.formats.identity import verify_chip_certificate
from computewatch.registry.errors import RegistryError

__all__ = ["Expected", "InspectionResult", "KnownHead", "Presented", "check", "present"]


@dataclass(frozen=True)
class Expected:
    """What the register holds on the requested chip."""

    serial: str
    device_key: bytes
    certificate: bytes  # the registered certificate envelope
    root: VerifyKey  # the pinned chipmaker root


@dataclass(frozen=True)
class KnownHead:
    """A tree head the witness saw earlier."""

    size: int
    root: str
    seen_at: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "root": self.root, "seen_at": self.seen_at, "source": self.source}


@dataclass(frozen=True)
class Presented:
    """What the chip gave the inspector: evidence answering `nonce`, and its log."""

    nonce: bytes
    evidence: bytes | None
    log: bytes
    boot_error: str | None = None


@dataclass
class InspectionResult:
    outcome: str  # "clean" or "finding"
    problems: list[dict[str, Any]]
    notes: list[dict[str, Any]]
    tree_size: int
    root: str
    attested: dict[str, Any] | None  # the chip-signed head (size, root), when the evidence verified
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # logged since `since`


def present(chip_dir: str | os.PathLike[str], nonce: bytes) -> Presented:
    """Operate the chip in `chip_dir`: boot, inspect(nonce), read the log, stop cleanly.

    The log is read before the stop, so it is exactly the log the evidence attests to. A chip
    whose verified boot fails still hands over its log (the failure becomes a finding)."""
    # The chip model needs torch: load it only to inspect.
    from computewatch.chip import Chip

    path = os.fspath(chip_dir)
    if not os.path.isdir(os.path.join(path, "sealed")):
        raise RegistryError(f"{path!r} is not a chip state directory (no sealed state): nothing to present")
    try:
        chip = Chip.open(path)
    except ComputewatchError as exc:
        # A chip that does not power on (e.g. its log no longer parses) is a finding, not an
        # aborted inspection: the inspector still takes the raw log for the audit.
        raw = Path(path) / "log" / "chip.log"
        log = raw.read_bytes() if raw.is_file() else b""
        return Presented(nonce, None, log, f"the chip does not power on: {exc}")
    evidence, boot_error = None, None
    try:
        try:
            chip.boot()
            evidence = chip.inspect(nonce)
        except ComputewatchError as exc:
            boot_error = str(exc)
        log = chip.log_path.read_bytes() if chip.log_path.exists() else b""  # never booted: no log yet
    finally:
        chip.close()
    return Presented(nonce, evidence, log, boot_error)


def _problem(check: str, problem: str, entry: int | None = None) -> dict[str, Any]:
    return {"check": check, "entry": entry, "problem": problem}


def check(expected: Expected, presented: Presented, known: list[KnownHead], since: int) -> InspectionResult:
    """Decide the inspection. `known`: the witness's earlier heads; `since`: entries of the log
    covered by the previous inspection (snapshots from there on are returned for explanation)."""
    problems: list[dict[str, Any]] = []
    cert = verify_chip_certificate(Envelope.from_json(expected.certificate), expected.root)
    attested = _check_evidence(expected, presented, problems)
    wrong_chip = any(p["check"] == "identity" for p in problems)
    lines, _torn = split_log(presented.log)
    tree = MerkleTree(lines)
    n = len(lines)
    notes: list[dict[str, Any]] = []
    if wrong_chip:
        problems.append(_problem("log", "not audited: the presented chip is not the requested one"))
    else:
        report = audit_log(presented.log, cert, expected.root)
        problems += [_problem("log", p.problem, p.entry) for p in report.problems]
        notes = [{"entry": w.entry, "note": w.problem} for w in report.warnings]
        if attested is not None:
            size, root = attested["size"], bytes.fromhex(attested["root"])
            if not _extends(tree, n, size, root):
                problems.append(_problem("log", f"the log read ({n} entries) is not the log the chip attested to (size {size})"))
        for head in known:
            problems += _witness(tree, n, head)
    snapshots = [] if wrong_chip else _snapshots(lines, since)
    return InspectionResult(
        outcome="finding" if problems else "clean",
        problems=problems,
        notes=notes,
        tree_size=n,
        root=tree.root(n).hex(),
        attested=attested,
        snapshots=snapshots,
    )


def _check_evidence(expected: Expected, presented: Presented, problems: list[dict[str, Any]]) -> dict[str, Any] | None:
    if presented.boot_error is not None:
        problems.append(_problem("boot", f"verified boot or inspection refused: {presented.boot_error}"))
    if presented.evidence is None:
        problems.append(_problem("attestation", "the chip gave no attestation evidence"))
        return None
    try:
        claims = verify_attestation(presented.evidence, presented.nonce, expected.root)
        presented_cert = verify_chip_certificate(
            envelope_from_obj(json.loads(presented.evidence)["certificate"], "certificate"), expected.root
        )
    except (ComputewatchError, ValueError, KeyError, TypeError) as exc:
        problems.append(_problem("attestation", f"attestation does not verify: {exc}"))
        return None
    if claims.serial != expected.serial:
        problems.append(_problem("identity", f"the presented chip is {claims.serial}, not the requested {expected.serial}"))
        return None
    if presented_cert.device_key.raw != expected.device_key:
        problems.append(
            _problem("identity", f"the presented chip's device key is not the one registered for {expected.serial}: "
                                 "another chip carrying its serial")
        )
        return None
    if claims.tamper:
        why = "its firmware found its log or sealed state damaged" if claims.log_damage else "its sensor detected physical tampering"
        problems.append(_problem("tamper", f"the chip's tamper flag is set: {why}"))
    # The firmware's own finding against sealed state and the root-of-trust counter (chip.rot):
    # a restored chip folder, a second copy of the chip, a reset counter.
    problems += [_problem("log", f"the chip's firmware reports: {d}") for d in claims.log_damage]
    return {"size": claims.log_size, "root": claims.log_root.hex()}


def _extends(tree: MerkleTree, n: int, size: int, root: bytes) -> bool:
    if size > n or size == 0:
        return size == 0
    try:
        verify_consistency(size, n, root, tree.root(n), tree.consistency_proof(size, n))
    except ComputewatchError:
        return False
    return True


def _witness(tree: MerkleTree, n: int, head: KnownHead) -> list[dict[str, Any]]:
    seen = f"seen {head.seen_at} ({head.source})"
    if head.size > n:
        return [_problem("witness", f"tree head went backwards: the log holds {n} entries, but a head of size "
                                    f"{head.size} was {seen}: the log was rolled back")]
    if not _extends(tree, n, head.size, bytes.fromhex(head.root)):
        return [_problem("witness", f"the log does not extend the tree head of size {head.size} {seen}: a fork "
                                    "(the log was restored from a backup or rewritten)")]
    return []


def _snapshots(lines: list[bytes], since: int) -> list[dict[str, Any]]:
    out = []
    for line in lines[since:]:
        try:
            e = LogEntry.from_line(line)
            if e.kind == "snapshot":
                out.append({"counter": e.counter, "step": int(e.body["step"]), "shard_digest": str(e.body["shard_digest"])})
        except (ComputewatchError, KeyError, TypeError, ValueError):
            continue  # a malformed entry is already a log problem
    return out
