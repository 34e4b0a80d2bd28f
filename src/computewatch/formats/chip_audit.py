"""Offline audit of a chip log, written as a Verifier would: from the published formats only.

Inputs: the log bytes, the chip certificate and the chipmaker root public key. The audit trusts
nothing else: boot keys come from boot certificates signed by the certified device key,
firmware policy (the snapshot rate f) from manifests signed by the chipmaker root. Every
problem is reported against the position of the entry in the file (0-based), with what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.crypto.canonical import encode_parsed
from computewatch.crypto.hashing import SHARD_HASH, SHARD_VERSION, Region, blake3_bytes
from computewatch.crypto.merkle import MerkleTree, verify_consistency
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.chip_entry import (
    GENESIS_PREV,
    decimal,
    entry_signing_input_from_line,
    envelope_from_obj,
    from_b64,
    from_hex,
    int_field,
    parse_entry_line,
    split_log,
    uint,
)
from computewatch.formats.firmware import read_manifest
from computewatch.formats.identity import ChipCertificate, verify_boot_certificate
from computewatch.formats.schedule import arrivals, commitment

__all__ = ["NO_KNOWN_HEAD", "AuditReport", "LogVerifier", "Problem", "audit_log"]


@dataclass(frozen=True)
class Problem:
    entry: int | None  # position in the log file; None for whole-log problems
    problem: str

    def to_json(self) -> dict[str, Any]:
        return {"entry": self.entry, "problem": self.problem}


@dataclass
class AuditReport:
    serial: str
    entries: int
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    snapshots: int = 0
    epochs_checked: int = 0
    torn_tail_bytes: int = 0
    root: str = ""
    # How the log ends: "clean-stop" (shutdown, then a checkpoint over everything before it),
    # "checkpoint" (a checkpoint over everything before it, e.g. at an inspection), "open"
    # (entries after the last checkpoint: a running chip or an unclean stop) or "empty".
    end: str = "empty"
    # What this audit could not check, in words (e.g. no tree head seen earlier was given).
    not_checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "serial": self.serial,
            "entries": self.entries,
            "root": self.root,
            "end": self.end,
            "snapshots": self.snapshots,
            "epochs_checked": self.epochs_checked,
            "torn_tail_bytes": self.torn_tail_bytes,
            "problems": [p.to_json() for p in self.problems],
            "warnings": [w.to_json() for w in self.warnings],
            "not_checked": list(self.not_checked),
        }


@dataclass
class _Epoch:
    index: int
    entry: int
    start_ns: int
    commitment: bytes
    rate: float
    triggers: dict[int, int] = field(default_factory=dict)  # trigger busy ns -> snapshot entry


class LogVerifier:
    """Checks entries one at a time (the report-to-server receiver uses it incrementally)."""

    def __init__(self, cert: ChipCertificate, chipmaker_root: VerifyKey) -> None:
        self.cert = cert
        self.root_key = chipmaker_root
        self.tree = MerkleTree()
        self.position = 0
        self.snapshots = 0
        self.epochs_checked = 0
        self.warnings: list[Problem] = []
        self._prev = GENESIS_PREV
        self._counter = 0
        self._boot_key: VerifyKey | None = None
        self._boot = -1
        self._security_version = -1
        self._rate: float | None = None
        self._logging = False
        self._clock = 0
        self._busy = 0
        self._stopped_clean = True
        self._epoch: _Epoch | None = None
        self._next_epoch = 0
        self._unclean_since_commit = False
        self._checkpoints: list[tuple[int, bytes]] = []

    @property
    def boot_key(self) -> VerifyKey | None:
        return self._boot_key

    def save_state(self) -> dict[str, Any]:
        """A copy of the verifier's state, for `restore_state` (a receiver that refuses an entry
        must not let it shift the chain, counter or tree the next entries are checked against)."""
        state = dict(self.__dict__)
        state["warnings"] = list(self.warnings)
        state["_checkpoints"] = list(self._checkpoints)
        if self._epoch is not None:
            state["_epoch"] = dataclasses.replace(self._epoch, triggers=dict(self._epoch.triggers))
        state["tree"] = self.tree.size
        return state

    def restore_state(self, state: dict[str, Any]) -> None:
        size, tree = state["tree"], self.tree
        self.__dict__.update(state)
        self.tree = MerkleTree()
        for k in range(size):
            self.tree.append_hash(tree.leaf(k))

    def feed(self, line: bytes) -> list[Problem]:
        """Check one entry (its line without the newline); returns the problems it shows."""
        i = self.position
        out: list[Problem] = []
        try:
            self._check(i, line, out)
        finally:
            self._prev = hashlib.sha256(line).hexdigest()
            self.tree.append(line)
            self.position += 1
        return out

    def _check(self, i: int, line: bytes, out: list[Problem]) -> None:
        def bad(msg: str, entry: int = i) -> None:
            out.append(Problem(entry, msg))

        try:
            e = parse_entry_line(line)
        except ComputewatchError as exc:
            bad(f"malformed entry: {exc}")
            return
        if e["serial"] != self.cert.serial:
            bad(f"entry belongs to chip {e['serial']!r}, not {self.cert.serial!r} (spliced from another chip)")
        if e["counter"] != self._counter:
            if e["counter"] < self._counter:
                bad(f"counter {e['counter']} where {self._counter} was due: duplicated or reordered entry")
            else:
                bad(f"counter jumps from {self._counter - 1} to {e['counter']}: entries dropped before this one")
        self._counter = e["counter"] + 1
        if e["prev"] != self._prev:
            what = "the genesis value" if i == 0 else f"the hash of entry {i - 1}"
            bad(f"prev does not match {what}: an entry was dropped, reordered or altered")
        kind, body = e["kind"], e["body"]
        try:
            if kind == "boot":
                self._check_boot(e, body, bad)
            elif self._boot < 0:
                bad(f"entry of boot {e['boot']} precedes every boot entry")
            elif e["boot"] != self._boot:
                bad(f"entry claims boot {e['boot']} during boot {self._boot}")
            self._check_sig(e, bad, line)
            self._check_clock(e, bad)
            handler = getattr(self, "_on_" + kind.replace("-", "_"), None)
            if handler is not None:
                handler(i, e, body, bad)
        except (ComputewatchError, KeyError, TypeError, ValueError) as exc:
            bad(f"{kind} entry rejected: {exc}")

    def _check_sig(self, e: dict[str, Any], bad: Any, line: bytes) -> None:
        if self._boot_key is None:
            bad("entry precedes any valid boot entry: no boot key to verify it")
            return
        try:
            # The signed bytes are cut from the (already canonical) line, not encoded again.
            self._boot_key.verify(from_b64(e["sig"], "sig"), entry_signing_input_from_line(line, e))
        except ComputewatchError:
            bad("signature does not verify under the boot key of this boot (altered or forged entry)")

    def _check_clock(self, e: dict[str, Any], bad: Any) -> None:
        clock, busy = int(e["clock_ns"]), int(e["busy_ns"])
        if clock < self._clock:
            bad(f"secure clock went backwards ({self._clock} -> {clock} ns)")
        if busy < self._busy:
            bad(f"busy time went backwards ({self._busy} -> {busy} ns)")
        elif busy > self._busy and self._epoch is None and self.position > 0:
            # Monitoring firmware keeps an epoch open whenever the chip trains; busy time outside
            # every epoch was compute no snapshot could sample.
            why = "" if self._logging else " (the firmware's signed policy disables logging)"
            bad(f"busy time advanced {self._busy} -> {busy} ns with no schedule epoch open{why}: unmonitored compute")
        self._clock, self._busy = max(clock, self._clock), max(busy, self._busy)

    def _check_boot(self, e: dict[str, Any], body: dict[str, Any], bad: Any) -> None:
        self._boot_key = None
        cert = verify_boot_certificate(body["boot_certificate"], self.cert.device_key)
        fw = read_manifest(envelope_from_obj(body["firmware"], "firmware manifest"), self.root_key)
        if cert.serial != self.cert.serial:
            bad(f"boot certificate is for chip {cert.serial!r}")
        if cert.boot != e["boot"]:
            bad(f"boot number {e['boot']} differs from its boot certificate's {cert.boot}")
        elif e["boot"] <= self._boot:
            bad(f"boot number {e['boot']} does not follow boot {self._boot}")
        if fw.measurement != cert.measurement:
            bad("firmware manifest does not match the measurement in the boot certificate")
        if fw.security_version < self._security_version:
            bad(f"firmware rollback: security version {fw.security_version} after {self._security_version}")
        stop = body["previous_stop"]
        if stop not in ("none", "clean", "unclean"):
            bad(f"previous_stop {stop!r} is not none, clean or unclean")
        first = self._boot < 0 and self.position == 0
        if first and stop != "none":
            bad(
                f"the log starts at boot {e['boot']}, after a {stop} stop, not at the chip's first boot: "
                "the entries before it are missing (log wiped or cut)"
            )
        elif stop == "none" and (not first or e["boot"] != 1):
            bad(f"boot {e['boot']} claims to be the chip's first boot but is not the first entry of boot 1")
        elif stop == "clean" and self._boot >= 0 and e["boot"] != self._boot + 1:
            bad(
                f"boot {e['boot']} follows a clean stop of boot {self._boot}: the boots in between are missing "
                "(a whole session was cut out of the log)"
            )
        clean = stop in ("clean", "none")
        if self._epoch is not None and clean:
            # Only an unclean stop may leave an epoch open; the new boot must reveal it first.
            bad(f"boot while schedule epoch {self._epoch.index} was never revealed")
        if clean and not self._stopped_clean:
            bad("boot claims a clean previous stop but the log has no shutdown entry")
        if not clean:
            self.warnings.append(Problem(self.position, "boot after an unclean stop (clock safe flag false)"))
            self._unclean_since_commit = True
        if not fw.policy.logging:
            self.warnings.append(
                Problem(self.position, f"boot {e['boot']} runs firmware {fw.name} {fw.version}, whose policy disables logging")
            )
        self._boot = e["boot"]
        self._boot_key = cert.boot_key
        self._security_version = max(self._security_version, fw.security_version)
        self._rate = fw.policy.snapshots_per_day
        self._logging = fw.policy.logging
        self._stopped_clean = False

    def _on_firmware_staged(self, i: int, e: dict[str, Any], body: dict[str, Any], bad: Any) -> None:
        staged = read_manifest(envelope_from_obj(body["firmware"], "staged firmware manifest"), self.root_key)
        if staged.security_version < self._security_version:
            bad(f"staged firmware has security version {staged.security_version}, below {self._security_version}")

    def _on_precommitment(self, i: int, e: dict[str, Any], body: dict[str, Any], bad: Any) -> None:
        if not isinstance(body["run_id"], str):
            bad("run_id must be a string")
        from_hex(body["digest"], f"{e['kind']} digest", 32)

    def _on_memory_map(self, i: int, e: dict[str, Any], body: dict[str, Any], bad: Any) -> None:
        self._on_precommitment(i, e, body, bad)
        if body["hash"] != "blake3-256":
            bad(f"memory-map hash {body['hash']!r} is not blake3-256")

    def _on_tamper(self, i: int, e: dict[str, Any], body: dict[str, Any], bad: Any) -> None:
        self.warnings.append(Problem(i, f"the chip's tamper sensor fired: {body.get('reason')!r}"))

    def _on_shutdown(self, i: int, e: dict[str, Any], body: dict[str, Any], bad: Any) -> None:
        if self._epoch is not None:
            bad(f"shutdown while schedule epoch {self._epoch.index} is not revealed")
        self._stopped_clean = True

    def _on_checkpoint(self, i: int, e: dict[str, Any], body: dict[str, Any], bad: Any) -> None:
        size, root = body["tree_size"], from_hex(body["root"], "checkpoint root", 32)
        if size != i:
            bad(f"checkpoint covers {size} entries but sits at position {i}")
            return
        if self.tree.root(size) != root:
            bad(f"checkpoint root does not match the {size} entries before it")
            return
        for old_size, old_root in self._checkpoints[-1:]:
            try:
                verify_consistency(old_size, size, old_root, root, self.tree.consistency_proof(old_size, size))
            except ComputewatchError as exc:
                bad(f"checkpoint inconsistent with the checkpoint of size {old_size}: {exc}")
        self._checkpoints.append((size, root))

    def _on_schedule_commit(self, i: int, e: dict[str, Any], body: dict[str, Any], bad: Any) -> None:
        if self._epoch is not None:
            bad(f"epoch {body['epoch']} committed while epoch {self._epoch.index} is not revealed")
        if body["epoch"] < self._next_epoch:
            bad(f"schedule epoch {body['epoch']} reuses an index below {self._next_epoch}")
        elif body["epoch"] > self._next_epoch and not self._unclean_since_commit:
            # Indices are reserved before use, so only a crash between reserving and logging skips one.
            bad(
                f"schedule epoch {body['epoch']} skips index {self._next_epoch} without an unclean stop in between: "
                "epochs were cut out of the log"
            )
        self._unclean_since_commit = False
        rate = float(body["snapshots_per_day"])
        if self._rate is None:
            bad(f"schedule epoch committed at rate {rate:g}/day before any boot entry named a firmware policy")
        elif not self._logging:
            bad(f"schedule epoch committed at rate {rate:g}/day under firmware whose signed policy disables logging")
        elif rate != self._rate:
            bad(f"committed snapshot rate {rate:g}/day is not the signed firmware policy's {self._rate:g}/day")
        start = int_field(body, "start_busy_ns", "schedule-commit")
        if start != int(e["busy_ns"]):
            bad("schedule epoch start differs from the entry's busy time")
        self._next_epoch = body["epoch"] + 1
        self._epoch = _Epoch(body["epoch"], i, start, from_hex(body["commitment"], "commitment", 32), rate)

    def _on_snapshot(self, i: int, e: dict[str, Any], body: dict[str, Any], bad: Any) -> None:
        self.snapshots += 1
        ep = self._epoch
        if ep is None or body["epoch"] != ep.index:
            bad(f"snapshot names epoch {body['epoch']}, which is not the open schedule epoch")
            return
        busy = int(e["busy_ns"])
        lo = int_field(body, "step_start_busy_ns", "snapshot")
        uint(body["step"], "snapshot step")
        if not isinstance(body["triggers"], list):
            raise FormatError("snapshot triggers must be a list")
        triggers = [decimal(t, "snapshot trigger") for t in body["triggers"]]
        if not triggers:
            bad("snapshot lists no trigger")
        for t in triggers:
            if not lo < t <= busy:
                bad(f"trigger at busy {t} ns lies outside the step ({lo}, {busy}] it claims")
            if t in ep.triggers:
                bad(f"trigger at busy {t} ns already served by entry {ep.triggers[t]}")
            ep.triggers[t] = i
        if not isinstance(body["regions"], list):
            raise FormatError("snapshot regions must be a list")
        regions = [Region.from_json(r) for r in body["regions"]]
        offset = 0
        for k, r in enumerate(regions):
            if r.offset != offset:
                bad(f"region {k} starts at offset {r.offset}, not {offset}: regions must be packed in order")
                break
            offset += r.nbytes
        # Each region object passed Region.from_json, so it is exactly Region.to_json(): its
        # canonical bytes come straight from the parsed line (same digest as shard_digest).
        doc = {"v": SHARD_VERSION, "hash": SHARD_HASH, "regions": body["regions"]}
        if body["hash"] != "blake3-256" or blake3_bytes(encode_parsed(doc)).hex() != body["shard_digest"]:
            bad("shard digest does not match the listed regions")

    def _on_schedule_reveal(self, i: int, e: dict[str, Any], body: dict[str, Any], bad: Any) -> None:
        ep = self._epoch
        if ep is None or body["epoch"] != ep.index:
            bad(f"reveal of epoch {body['epoch']}, which is not the open epoch")
            return
        self._epoch = None
        seed = from_hex(body["seed"], "seed", 32)
        if commitment(seed) != ep.commitment:
            bad(f"revealed seed does not match the commitment in entry {ep.entry}")
            return
        end = int_field(body, "end_busy_ns", "schedule-reveal")
        if end != int(e["busy_ns"]):
            bad("reveal end differs from the entry's busy time")
        expected = arrivals(seed, ep.rate, ep.start_ns, end)
        for t in expected:
            if t not in ep.triggers:
                bad(f"epoch {ep.index}: scheduled snapshot at busy {t} ns has no snapshot entry")
        scheduled = set(expected)
        for t, j in sorted(ep.triggers.items()):
            if t not in scheduled:
                bad(f"trigger at busy {t} ns is not in epoch {ep.index}'s revealed schedule", j)
        self.epochs_checked += 1

    def finish(self) -> None:
        if self._epoch is not None:
            n = len(self._epoch.triggers)
            self.warnings.append(
                Problem(self._epoch.entry, f"epoch {self._epoch.index} not revealed yet: {n} snapshot(s) unchecked")
            )


NO_KNOWN_HEAD = (
    "no tree head seen earlier was given: a log cut back to an earlier clean stop, or rolled back "
    "together with the chip's sealed state, verifies on its own (give attestation evidence or "
    "checkpoints seen earlier to rule that out)"
)


def _log_end(lines: list[bytes]) -> str:
    """"clean-stop", "checkpoint", "open" or "empty" (see AuditReport.end); from the last
    entries' kinds only: whether they verify is the rest of the audit's business."""
    if not lines:
        return "empty"
    try:
        last = parse_entry_line(lines[-1])
        if last["kind"] != "checkpoint" or last["body"].get("tree_size") != len(lines) - 1:
            return "open"
        before = parse_entry_line(lines[-2])["kind"] if len(lines) > 1 else None
    except (ComputewatchError, AttributeError):
        return "open"
    return "clean-stop" if before == "shutdown" else "checkpoint"


def audit_log(
    data: bytes,
    cert: ChipCertificate,
    chipmaker_root: VerifyKey,
    *,
    known_heads: Iterable[tuple[int, bytes]] = (),
    require_end: bool = False,
) -> AuditReport:
    """Audit a whole log. `known_heads` are (size, root) tree heads seen earlier (attestation
    evidence, exported checkpoints): the log must extend each of them. An empty log is a
    problem (nothing vouches for the chip). With `require_end`, so is a log that does not end
    in a checkpoint over all its entries (entries no signed tree head covers yet)."""
    lines, torn = split_log(data)
    v = LogVerifier(cert, chipmaker_root)
    report = AuditReport(serial=cert.serial, entries=len(lines), torn_tail_bytes=torn, end=_log_end(lines))
    for line in lines:
        report.problems.extend(v.feed(line))
    v.finish()
    report.problems.sort(key=lambda p: (p.entry if p.entry is not None else -1))
    n = len(lines)
    known_heads = list(known_heads)
    if n == 0:
        report.problems.append(Problem(None, "the log is empty (or missing): no entry to audit; a chip logs from its first boot"))
    elif require_end and report.end == "open":
        report.problems.append(
            Problem(
                None,
                "the log does not end in a checkpoint over all its entries (a clean stop ends shutdown, "
                "checkpoint): its last entries are covered by no signed tree head; the chip is still running "
                "or stopped uncleanly (stop or inspect it, then audit again)",
            )
        )
    if not known_heads:
        report.not_checked.append(NO_KNOWN_HEAD)
    for size, root in known_heads:
        if size > n:
            report.problems.append(Problem(None, f"log has {n} entries but a tree head of size {size} was seen: truncated"))
            continue
        try:
            verify_consistency(size, n, root, v.tree.root(n), v.tree.consistency_proof(size, n))
        except ComputewatchError as exc:
            report.problems.append(
                Problem(None, f"log does not extend the tree head of size {size} seen earlier (history rewritten): {exc}")
            )
    if torn:
        report.warnings.append(Problem(n, f"torn tail of {torn} bytes after the last complete entry (crash mid-append)"))
    report.warnings.extend(v.warnings)
    report.snapshots, report.epochs_checked, report.root = v.snapshots, v.epochs_checked, v.tree.root().hex()
    return report
