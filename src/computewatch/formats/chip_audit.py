"""Offline audit of a chip log, written as a Verifier would: from the published formats only.

Inputs: the log bytes, the chip certificate and the chipmaker root public key. The audit trusts
nothing else: boot keys come from boot certificates signed by the certified device key,
firmware policy (the snapshot rate f) from manifests signed by the chipmaker root. Every
problem is reported against the position of the entry in the file (0-based), with what is wrong.

Attribution (what ties an entry to the chip): a version 1 entry carries its own signature. A
version 2 entry is attributed by the next signature of its own boot session that hash-chains to
it: a signed checkpoint (or, under report-mode firmware, the entry's own signature), whose `prev`
binds every line before it. Entries no such signature covers (a tail after the last checkpoint,
or a boot's entries after its last checkpoint when the next boot begins) are reported as a
problem: nothing the chip signed vouches for them. A later boot's checkpoint does not vouch for
an earlier boot's entries (its firmware only read them back from storage).

Speed (issue 24): `audit_log` hands runs of ordinary snapshot, schedule and checkpoint entries to the native fast path
(`LogVerifier.fast_forward`, computewatch._native), which accepts only what `feed` would accept
with no problem; every other line, and every problem message, comes from `feed`. Background
threads read the log ahead (formats._audit_prescan: each line's two SHA-256, each snapshot's
strict read and shard digest, the Merkle subtrees), so that work runs on the other cores. Big
logs also have their signatures verified ahead in worker processes (formats._audit_ahead).
All of them read the lines where they lie in the log's bytes (`_split`: the native LogLines, a
newline index), not split into a bytes object each first.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from computewatch import _native
from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.crypto.canonical import encode_parsed
from computewatch.crypto.digest import blake3_bytes
from computewatch.crypto.regions import SHARD_HASH, SHARD_VERSION, Region
from computewatch.crypto.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from computewatch.crypto.signing import VerifyKey
from computewatch.formats._audit_ahead import SignaturesAhead, default_workers
from computewatch.formats._audit_prescan import PrescannedTree, prescan
from computewatch.formats._audit_prescan import arrivals as _arrivals
from computewatch.formats.chip_entry import (
    ENTRY_KINDS,
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
from computewatch.formats.schedule import commitment

__all__ = ["NO_KNOWN_HEAD", "AuditReport", "LogVerifier", "Problem", "audit_log", "verify_covered_entry"]


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
    # Entries [0, attributed) are tied to the chip by a verified signature (their own, v1, or a
    # checkpoint of their boot that chains to them, v2); signed checkpoints verified (v2), each
    # by its own Ed25519 signature or by a later verified checkpoint of its boot that covers its
    # bytes (see `audit_log`); `signatures_verified`: the Ed25519 verifications actually made
    # for entries and checkpoints (boot certificates not counted).
    attributed: int = 0
    checkpoints_verified: int = 0
    signatures_verified: int = 0

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
            "attributed": self.attributed,
            "checkpoints_verified": self.checkpoints_verified,
            "signatures_verified": self.signatures_verified,
        }


@dataclass
class _Epoch:
    index: int
    entry: int
    start_ns: int
    commitment: bytes
    rate: float
    triggers: dict[int, int] = field(default_factory=dict)  # trigger busy ns -> snapshot entry


# The native fast path takes numbers below this (int64 in C, with room for the next one).
_NATIVE_MAX = 1 << 62
_SNAPSHOT_FIELDS = {"epoch", "triggers", "step", "step_start_busy_ns", "hash", "shard_digest", "regions", "copy_out"}
_SHARD_DOC_HEAD = b'{"hash":"' + SHARD_HASH.encode() + b'","regions":'
_SHARD_DOC_TAIL = b',"v":%d}' % SHARD_VERSION
_REGION_DIGEST = re.compile(rb'"digest":"[0-9a-f]{64}"')
# How every line the native fast path accepts begins (the canonical text of a snapshot entry, a
# schedule commit, a schedule reveal and a checkpoint): audit_log calls it for no other line.
_CHECKPOINT_HEAD = b'{"body":{"root":"'
_SNAPSHOT_HEAD = (b'{"body":{"copy_out":', b'{"body":{"commitment":', b'{"body":{"end_busy_ns":', b'{"body":{"root":')


def _regions_bytes(line: bytes, body: dict[str, Any]) -> bytes | None:
    """The canonical bytes of a snapshot entry's `regions` array, cut from its (canonical) line,
    or None when the body does not have exactly the snapshot fields.

    Keys sort `copy_out, epoch, hash, regions, shard_digest, ...`, a string holds no unescaped
    quote and the fields before `regions` hold no nested value, so the first `,"regions":[` is
    the body's; a region (checked to have exactly its five fields) holds no `shard_digest` key, so
    the first `],"shard_digest":"` after it ends the array (tests/test_chip_log_v2.py compares
    the cut with the encoding over every snapshot entry)."""
    if body.keys() != _SNAPSHOT_FIELDS or any(isinstance(body[k], (dict, list)) for k in ("copy_out", "epoch", "hash")):
        return None  # a nested value before `regions` could hold a decoy `,"regions":[`
    start = line.find(b',"regions":[')
    end = line.find(b'],"shard_digest":"', start)
    return line[start + 11 : end + 1] if start >= 0 and end >= 0 else None


def _shard_doc(regions: bytes) -> bytes:
    """The canonical JSON `shard_digest` hashes, `{"hash", "regions", "v"}`, around the canonical
    bytes of a regions array each of whose entries passed `Region.from_json` (so each is exactly a
    `Region.to_json()`)."""
    return _SHARD_DOC_HEAD + regions + _SHARD_DOC_TAIL


def _check_layout(regions: list[Any]) -> str:
    """Check every region (`Region.from_json` raises FormatError on a malformed one) and that they
    are packed in order; returns the packing problem, "" if none."""
    for r in regions:
        Region.from_json(r)
    offset = 0
    for k, r in enumerate(regions):
        if r["offset"] != offset:
            return f"region {k} starts at offset {r['offset']}, not {offset}: regions must be packed in order"
        offset += r["nbytes"]
    return ""


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
        self._version = 0  # entry version of this boot session (0 before the first boot entry)
        self._newest_version = 0
        self._report_mode = False
        # Log v2: the first entry of this boot session that no signature covers yet (None: all
        # covered), and the end of the attributed prefix (entries [0, attributed) are tied to
        # the chip by a verified signature; what a receiver marks as "pending" lies beyond it).
        self._pending: int | None = None
        self.attributed = 0
        self.checkpoints_verified = 0
        self.signatures_verified = 0
        # Deferred checkpoint signatures (audit_log's first pass; off for a receiver feeding
        # entries one by one): the latest bound checkpoint of this boot, verified when the boot
        # ends; a failure there (or any problem) sends audit_log to the reference pass.
        self._defer = False
        self._deferred: tuple[VerifyKey, dict[str, Any] | None, bytes] | None = None
        self.deferred_failed = False
        self._line = b""
        self._layouts: dict[bytes, str] = {}  # region layouts checked -> their packing problem
        self._ahead: SignaturesAhead | None = None  # signatures verified in worker processes
        # The log's lines read ahead (formats._audit_prescan), when audit_log made one, and the
        # lines it read (a list, or the native LogLines of the log's buffer): `feed` takes a
        # line's hashes from it only when the line is that very list item, or when the audit
        # (`_verify_lines`) says the line is the prescanned one at this position.
        self._pre: Any = None
        self._pre_lines: Sequence[bytes] = []

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
        i, pre_lines = self.position, self._pre_lines
        # (A LogLines makes a new bytes object per item: never `line`, so such a line is hashed here.)
        return self._feed(line, self._pre is not None and i < len(pre_lines) and line is pre_lines[i])

    def _feed(self, line: bytes, ahead: bool) -> list[Problem]:
        """`feed`; `ahead`: the line is the prescanned line at this position (its hashes are read ahead)."""
        i = self.position
        out: list[Problem] = []
        self._line = line
        try:
            self._check(i, line, out)
        finally:
            pre = self._pre
            if ahead and pre is not None:  # hashed ahead
                self._prev = pre.chain(i).hex()
                self.tree.append_hash(pre.leaf(i))
            else:
                self._prev = hashlib.sha256(line).hexdigest()
                self.tree.append(line)
            self.position += 1
        return out

    def fast_forward(self, lines: Sequence[bytes], start: int) -> int:
        """Accept ordinary entries `lines[start:]` (snapshots, schedule commits and reveals, and,
        in an audit that read the log ahead, checkpoints) through the native fast path while it
        accepts them; returns the position of the first line it did not take (`start` when none,
        or when the fast path is off or the state is one it does not handle). Entries it takes
        are exactly those `feed` would accept with no problem and the same state change
        (tests/test_chip_audit_native.py, tests/test_chip_audit_schedule.py compare reports);
        every other line goes to `feed`. A checkpoint's signature is checked here, by
        `_take_checkpoint`, as `feed` checks it."""
        # With a prescan the native module was on when the audit began (no environment lookup per call).
        native, ep = (_native.chiplog() if self._pre is None else _native.loaded()), self._epoch
        nxt = self._next_epoch
        if (
            native is None
            or start != self.position
            or self._version != 2
            or self._report_mode
            or self._boot < 0
            or not self.cert.serial.isascii()
            or type(nxt) is not int
            or max(self._counter, self._boot, self._clock, self._busy, abs(nxt)) >= _NATIVE_MAX
        ):
            return start
        epoch = None
        if ep is not None:
            if not (
                type(ep.index) is int
                and abs(ep.index) < _NATIVE_MAX
                and 0 <= ep.start_ns < _NATIVE_MAX
                and type(ep.rate) is float
                and type(ep.triggers) is dict
            ):
                return start
            epoch = (ep.index, ep.entry, ep.start_ns, ep.commitment, ep.rate, ep.triggers)
        # A commit is taken only where `_on_schedule_commit` has a signed policy that logs to match.
        rate = self._rate if self._logging and type(self._rate) is float else None
        pre = self._pre if lines is self._pre_lines else None
        # Checkpoints need the prescan's subtrees for their roots (and a tree made of its leaves).
        memo = self.tree._perfect if pre is not None and isinstance(self.tree, PrescannedTree) else None
        last_cp = self._checkpoints[-1][0] if self._checkpoints else -1
        taken: list[int] = []  # checkpoints taken in this run

        def on_checkpoint(i: int, line: bytes) -> bool:
            return self._take_checkpoint(i, line, start, taken)

        end, prev, leaves, counter, clock, busy, epoch, nxt, snapshots, reveals, commits, _ = native.scan_entries(
            pre, lines, start, len(lines), bytes.fromhex(self._prev), self.cert.serial.encode("ascii"), self._counter,
            self._boot, self._clock, self._busy, epoch, self._layouts, nxt, rate, commitment, _arrivals, memo,
            last_cp if type(last_cp) is int and abs(last_cp) < _NATIVE_MAX else 0, on_checkpoint,
        )  # fmt: skip
        if end == start:
            return start
        # What `feed` leaves behind after these entries (each unsigned: the span waits for the
        # next checkpoint to attribute it).
        if leaves is not None:
            for leaf in leaves:
                self.tree.append_hash(leaf)
        elif isinstance(self.tree, PrescannedTree):  # every line taken was read ahead: its leaf is the prescan's
            self.tree.extend_prescanned(start, end)
        elif pre is not None:  # (a tree restored from a saved state)
            for k in range(start, end):
                self.tree.append_hash(pre.leaf(k))
        self.position, self._prev, self._line = end, prev.hex(), lines[end - 1]
        self._counter, self._clock, self._busy = counter, clock, busy
        self.snapshots += snapshots
        if commits or reveals:
            self._epoch = None if epoch is None else _Epoch(*epoch)
            self._next_epoch = nxt
            self.epochs_checked += reveals
            if commits:
                self._unclean_since_commit = False
        # The unsigned entries after the last signature taken wait for the next one.
        first = taken[-1] + 1 if taken else start
        if self._pending is None and end > first:
            self._pending = first
        return end

    def _take_checkpoint(self, i: int, line: bytes, start: int, taken: list[int]) -> bool:
        """The native scan's call at checkpoint line `i` of a run from `start`, once it found
        everything but the signature as `feed` requires (shape, chain, counter, serial, boot,
        clock, tree size and root): the signature step, `_check_sig_v2` itself, in the state
        `feed` would leave before line `i`. True when it reported nothing (the line is taken and
        the checkpoint recorded), else False with the state as it was (the scan stops; `feed`
        then reads the line and names the problem)."""
        pending, position = self._pending, self.position
        first = taken[-1] + 1 if taken else start  # the run's unsigned entries before line i
        if pending is None and i > first:
            self._pending = first
        if self._defers_checkpoints:
            if self._defer_checkpoint(i, line, taken):
                return True
            self._pending = pending
            return False
        problems: list[str] = []
        self.position = i  # (signatures verified ahead are looked up by position)
        try:
            # The scan read the line in the strict canonical checkpoint shape, which passes every
            # check of parse_entry_line but the signature's base64 (checked here); its value is
            # the native reader's, as parse_entry_line would return it.
            native = _native.loaded()
            read: dict[str, Any] | None = native.parse_line(line) if native is not None else None
            e = parse_entry_line(line) if read is None else read
            from_b64(e["sig"], "entry sig")
            self._check_sig_v2(i, e, lambda msg, entry=i: problems.append(msg), line, True)
        except (ComputewatchError, KeyError, TypeError, ValueError) as exc:
            problems.append(str(exc))
        finally:
            self.position = position
        if problems:
            self._pending = pending
            return False
        self._checkpoints.append((i, bytes.fromhex(e["body"]["root"])))
        taken.append(i)
        return True

    def _defer_checkpoint(self, i: int, line: bytes, taken: list[int]) -> bool:
        """`_take_checkpoint` where `_check_sig_v2` would only defer the signature (audit_log's
        first pass): the same state change, from the line's own bytes. The scan read it in the
        strict checkpoint shape, `{"body":{"root":"<64 hex>","tree_size":N},...,"sig":"<sig>",
        "v":2}`, so what is left of parse_entry_line's checks is the signature's base64."""
        end = b'","v":2}'
        cut = line.rfind(b',"sig":"')
        if not (line.startswith(_CHECKPOINT_HEAD) and line.endswith(end) and cut > 0):
            return False  # (not the shape the scan reads: feed decides)
        try:
            base64.b64decode(line[cut + 8 : len(line) - len(end)], validate=True)
        except binascii.Error:
            return False  # feed names it
        assert self._boot_key is not None
        self._deferred = (self._boot_key, None, line)
        self._attribute_through(i, checkpoint=True)
        self._checkpoints.append((i, bytes.fromhex(line[17:81].decode("ascii"))))
        taken.append(i)
        return True

    def _check(self, i: int, line: bytes, out: list[Problem]) -> None:
        def bad(msg: str, entry: int = i) -> None:
            out.append(Problem(entry, msg))

        try:
            e = parse_entry_line(line)
        except ComputewatchError as exc:
            bad(f"malformed entry: {exc}")
            if self._pending is None and self._version >= 2:
                self._pending = i
            return
        bound = True  # the entry sits where its chain, counter, serial and boot say it does
        if e["serial"] != self.cert.serial:
            bad(f"entry belongs to chip {e['serial']!r}, not {self.cert.serial!r} (spliced from another chip)")
            bound = False
        if e["counter"] != self._counter:
            bound = False
            if e["counter"] < self._counter:
                bad(f"counter {e['counter']} where {self._counter} was due: duplicated or reordered entry")
            else:
                bad(f"counter jumps from {self._counter - 1} to {e['counter']}: entries dropped before this one")
        self._counter = e["counter"] + 1
        if e["prev"] != self._prev:
            what = "the genesis value" if i == 0 else f"the hash of entry {i - 1}"
            bad(f"prev does not match {what}: an entry was dropped, reordered or altered")
            # A signature after the break binds nothing before it: the entries pending before it
            # stay unattributed (this problem names them), a new span starts here.
            if self._pending is not None:
                self._pending = i
            bound = False
        kind, body = e["kind"], e["body"]
        try:
            if kind == "boot":
                self._settle_deferred()
                self._unattributed(i, "the next boot began", bad)
                self._check_version(e, bad, boot=True)
                self._check_boot(e, body, bad)
            else:
                self._check_version(e, bad, boot=False)
                if self._boot < 0:
                    bad(f"entry of boot {e['boot']} precedes every boot entry")
                elif e["boot"] != self._boot:
                    bad(f"entry claims boot {e['boot']} during boot {self._boot}")
            bound = bound and e["boot"] == self._boot
            if e["v"] == 1:
                self._check_sig(e, bad, line)
            else:
                self._check_sig_v2(i, e, bad, line, bound)
            self._check_clock(e, bad)
            handler = _HANDLERS.get(kind)
            if handler is not None:
                handler(self, i, e, body, bad)
        except (ComputewatchError, KeyError, TypeError, ValueError) as exc:
            bad(f"{kind} entry rejected: {exc}")

    def _check_version(self, e: dict[str, Any], bad: Any, *, boot: bool) -> None:
        v = e["v"]
        if boot:
            if v < self._newest_version:
                bad(f"boot entry in log version {v} after version {self._newest_version} entries: a format downgrade")
            self._version = v
        elif self._version and v != self._version:
            bad(f"version {v} entry in a boot session written in version {self._version}")
        self._newest_version = max(self._newest_version, v)

    def _verify_sig(self, key: VerifyKey, e: dict[str, Any], line: bytes) -> None:
        """Raise ComputewatchError unless the entry's signature verifies under `key`; a signature
        a worker already verified under the same key (audit_log's `workers`) is not verified twice."""
        if self._ahead is not None and self._ahead.verified(self.position, key):
            self.signatures_verified += 1
            return
        # The signed bytes are cut from the (already canonical) line, not encoded again.
        key.verify(from_b64(e["sig"], "sig"), entry_signing_input_from_line(line, e))
        self.signatures_verified += 1

    @property
    def _defers_checkpoints(self) -> bool:
        """Whether a bound checkpoint's signature waits for the end of its boot (audit_log's
        first pass, a boot key known, firmware that signs checkpoints only)."""
        return self._defer and self._boot_key is not None and not self._report_mode

    def _attribute_through(self, i: int, checkpoint: bool) -> None:
        """Entry i's signature, bound at its place, attributes it and every entry of its boot
        before it (a checkpoint's counted as verified, directly or through the boot's last)."""
        self._pending = None
        self.attributed = i + 1
        self.checkpoints_verified += checkpoint

    def _settle_deferred(self) -> None:
        """Verify the deferred checkpoint (the boot's last bound one) now that its boot ended."""
        deferred, self._deferred = self._deferred, None
        if deferred is None:
            return
        key, e, line = deferred
        try:
            if e is None:  # deferred by the native scan (_defer_checkpoint): read only now
                e = parse_entry_line(line)
            key.verify(from_b64(e["sig"], "sig"), entry_signing_input_from_line(line, e))
        except ComputewatchError:
            self.deferred_failed = True
        else:
            self.signatures_verified += 1

    def _check_sig(self, e: dict[str, Any], bad: Any, line: bytes) -> None:
        if self._boot_key is None:
            bad("entry precedes any valid boot entry: no boot key to verify it")
            return
        try:
            self._verify_sig(self._boot_key, e, line)
        except ComputewatchError:
            bad("signature does not verify under the boot key of this boot (altered or forged entry)")
        else:
            self.attributed = self.position + 1

    def _check_sig_v2(self, i: int, e: dict[str, Any], bad: Any, line: bytes, bound: bool) -> None:
        checkpoint = e["kind"] == "checkpoint"
        if "sig" not in e:
            if self._report_mode:
                bad("unsigned entry under report-mode firmware, which signs every entry it reports (forged entry)")
            if self._pending is None:
                self._pending = i
            return
        what = "checkpoint" if checkpoint else "entry"
        if checkpoint and bound and self._defers_checkpoints:
            # Its signature is checked when the boot ends, on the boot's last checkpoint only:
            # that one signs a prev and a root over every earlier line of the boot as the
            # firmware wrote them (it keeps them in memory), this checkpoint's bytes included.
            assert self._boot_key is not None
            self._deferred = (self._boot_key, e, line)
            self._attribute_through(i, checkpoint=True)
            return
        if self._boot_key is None:
            bad(f"{what} precedes any valid boot entry: no boot key to verify it")
        else:
            try:
                self._verify_sig(self._boot_key, e, line)
            except ComputewatchError:
                bad(
                    f"{what} signature does not verify under the boot key of this boot (altered or forged, or "
                    "signed by another chip)"
                )
            else:
                if bound:
                    # Signed in this boot at this place in the chain: it attributes itself and,
                    # through its prev, every entry of this boot before it.
                    self._attribute_through(i, checkpoint)
                    return
                bad(f"{what} signature is genuine but the {what} does not belong here (replayed from elsewhere)")
        if self._pending is None:
            self._pending = i

    def _unattributed(self, end: int, why: str, bad: Any) -> None:
        """Report the pending entries [pending, end) as covered by no signature of their boot."""
        start, self._pending = self._pending, None
        if start is None or start >= end:
            return
        span = f"entry {start}" if end - start == 1 else f"entries {start}-{end - 1}"
        bad(
            f"{span} of boot {self._boot} covered by no signed checkpoint of that boot ({why}): not attributable "
            "to the chip (altered, inserted or forged, or written after the boot's last checkpoint)",
            start,
        )

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
        self._report_mode = fw.policy.log_mode == "report"
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
        size, root = uint(body["tree_size"], "checkpoint tree_size"), from_hex(body["root"], "checkpoint root", 32)
        if self._checkpoints and size < self._checkpoints[-1][0]:
            bad(f"checkpoint tree size {size} goes backwards from the previous checkpoint's {self._checkpoints[-1][0]}")
            return
        if size != i:
            bad(f"checkpoint covers {size} entries but sits at position {i}")
            return
        if self.tree.root(size) != root:
            bad(f"checkpoint root does not match the {size} entries before it")
            return
        for old_size, old_root in self._checkpoints[-1:]:
            if old_size > 0:
                # Both roots are this append-only tree's own (each matched `tree.root` when it
                # was recorded), so its consistency proof between them always verifies: skipped.
                continue
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
        if not isinstance(body["copy_out"], str):
            bad("snapshot copy_out must name the copy-out file (a string)")
        regions = body["regions"]
        if not isinstance(regions, list):
            raise FormatError("snapshot regions must be a list")
        cut = _regions_bytes(self._line, body)
        if cut is None:
            packing = _check_layout(regions)
            doc = encode_parsed({"v": SHARD_VERSION, "hash": SHARD_HASH, "regions": regions})
        else:
            # A chip snapshots one shard layout over and over; only the region digests change. The
            # layout is the regions' canonical text without their digest fields: the same text
            # is the same offsets, dtypes, shapes and sizes (JSON types included), checked once.
            # A digest that is not 64 lowercase hex characters stays in the text, so it misses.
            layout = _REGION_DIGEST.sub(b"", cut)
            cached = self._layouts.get(layout)
            packing = _check_layout(regions) if cached is None else cached
            self._layouts[layout] = packing
            doc = _shard_doc(cut)
        if packing:
            bad(packing)
        if body["hash"] != "blake3-256" or blake3_bytes(doc).hex() != body["shard_digest"]:
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
        expected = _arrivals(seed, ep.rate, ep.start_ns, end)
        for t in expected:
            if t not in ep.triggers:
                bad(f"epoch {ep.index}: scheduled snapshot at busy {t} ns has no snapshot entry")
        scheduled = set(expected)
        if ep.triggers.keys() != scheduled:  # (equal sets: neither loop has anything to report)
            for t, j in sorted(ep.triggers.items()):
                if t not in scheduled:
                    bad(f"trigger at busy {t} ns is not in epoch {ep.index}'s revealed schedule", j)
        self.epochs_checked += 1

    def finish(self) -> list[Problem]:
        """End of the log: the problems only its end shows (version 2 entries no signature covers)."""
        self._settle_deferred()
        if self._epoch is not None:
            n = len(self._epoch.triggers)
            self.warnings.append(
                Problem(self._epoch.entry, f"epoch {self._epoch.index} not revealed yet: {n} snapshot(s) unchecked")
            )
        out: list[Problem] = []
        start, end = self._pending, self.position
        if start is not None and start < end:
            self._pending = None
            span = f"entry {start}" if end - start == 1 else f"entries {start}-{end - 1}"
            out.append(
                Problem(
                    start,
                    f"the log does not end in a checkpoint over all its entries: {span} after the last signed "
                    "checkpoint are covered by none: not attributable to the chip (the log was cut after its "
                    "last checkpoint, or is still being written; the chip checkpoints at every attestation, "
                    "inspection and shutdown)",
                )
            )
        return out


# Entry kind -> its LogVerifier check (an unknown kind was refused by the parse).
_HANDLERS = {
    k: getattr(LogVerifier, "_on_" + k.replace("-", "_")) for k in ENTRY_KINDS if hasattr(LogVerifier, "_on_" + k.replace("-", "_"))
}

NO_KNOWN_HEAD = (
    "no tree head seen earlier was given: a log cut back to an earlier clean stop, or rolled back "
    "together with the chip's sealed state, verifies on its own (give attestation evidence or "
    "checkpoints seen earlier to rule that out)"
)


def _log_end(lines: Sequence[bytes]) -> str:
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


def _verify_lines(
    lines: Sequence[bytes], cert: ChipCertificate, chipmaker_root: VerifyKey, workers: int, threads: int | None, defer: bool
) -> tuple[LogVerifier, list[Problem], list[Problem]]:
    """Run a LogVerifier over `lines`: (the verifier, the entries' problems, the end's problems)."""
    v = LogVerifier(cert, chipmaker_root)
    v._defer = defer
    problems: list[Problem] = []
    i, n = 0, len(lines)
    v._ahead = SignaturesAhead(lines, cert.device_key, workers) if workers > 0 and n else None
    # Every line's hashes, snapshot shape and the tree's subtrees, read ahead of the in-order
    # checks by background threads (formats._audit_prescan); None where the native module is
    # off. Started after the workers above are forked (a fork must not copy running threads).
    v._pre = prescan(lines, threads)
    if v._pre is not None:
        v._pre_lines, v.tree = lines, PrescannedTree(v._pre)
    ahead = v._pre is not None  # each line fed below is lines[v.position], the prescan's own
    try:
        while i < n:
            line = lines[i]  # (made once: a LogLines makes a bytes object per item)
            if line.startswith(_SNAPSHOT_HEAD):  # (the fast path takes no other line: no call for those)
                j = v.fast_forward(lines, i)  # ordinary snapshot entries, native; the rest through feed
                if j != i:
                    if j >= n:
                        break
                    i, line = j, lines[j]
            problems.extend(v._feed(line, ahead))
            i += 1
    finally:
        if v._ahead is not None:
            v._ahead.close()
            v._ahead = None
    return v, problems, v.finish()


def _split(data: bytes) -> tuple[Sequence[bytes], int]:
    """The log's lines and torn tail as `split_log` gives them: with the native module, a LogLines
    that indexes the lines in `data` itself (no bytes object per line; the prescan and the fast
    path read them where they lie), else split_log's list."""
    native = _native.chiplog()
    log_lines = getattr(native, "log_lines", None)
    if log_lines is None or type(data) is not bytes:
        return split_log(data)
    lines = log_lines(data)
    return lines, lines.torn


def audit_log(
    data: bytes,
    cert: ChipCertificate,
    chipmaker_root: VerifyKey,
    *,
    known_heads: Iterable[tuple[int, bytes]] = (),
    require_end: bool = False,
    workers: int | None = None,
    threads: int | None = None,
    every_signature: bool = False,
) -> AuditReport:
    """Audit a whole log. `known_heads` are (size, root) tree heads seen earlier (attestation
    evidence, exported checkpoints): the log must extend each of them. An empty log is a
    problem (nothing vouches for the chip). With `require_end`, so is a log that does not end
    in a checkpoint over all its entries (entries no signed tree head covers yet).

    Checkpoint signatures (log v2): a first pass verifies, of each boot's checkpoints, only the
    last one. The firmware signs a checkpoint over the `prev` and the tree root of the lines it
    wrote in this boot (kept in memory, never read back), so when the last checkpoint's
    signature verifies and every line before it chains to it and matches its root, each earlier
    checkpoint of the boot is byte for byte one the firmware wrote, signature included: verifying
    it again proves nothing more (the way a Certificate Transparency monitor verifies the latest
    signed tree head and checks that the tree extends the earlier ones). When that pass finds any
    problem, or a boot's last checkpoint does not verify, the audit runs again verifying every
    signature (`every_signature=True` does that from the start), so a report with problems names
    each failing signature exactly as before. Reports are the same either way, except for
    `signatures_verified` (tests/test_chip_audit_deferred.py).

    `workers`: processes that verify the log's signatures ahead of the audit (None: as many as
    `formats._audit_ahead.default_workers` gives, none below 20,000 entries; 0: none); they
    serve a pass that verifies every signature, and a version 1 log's first pass. `threads`: threads that read the log ahead
    (hashes, snapshot shapes, Merkle subtrees; None: one per core,
    formats._audit_prescan.audit_threads). The report depends on neither."""
    lines, torn = _split(data)
    report = AuditReport(serial=cert.serial, entries=len(lines), torn_tail_bytes=torn, end=_log_end(lines))
    n = len(lines)
    workers = default_workers(n) if workers is None else workers
    v: LogVerifier | None = None
    if not every_signature:
        # Workers verify ahead only what the first pass verifies: a log that starts in version 1
        # (every entry signed; canonical keys sort "v" last) has signatures it cannot defer.
        ahead = workers if lines and lines[0].endswith(b',"v":1}') else 0
        v, problems, tail = _verify_lines(lines, cert, chipmaker_root, ahead, threads, True)
    if v is None or problems or tail or v.deferred_failed:
        v, problems, tail = _verify_lines(lines, cert, chipmaker_root, workers, threads, False)
    report.problems.extend(problems)
    report.problems.extend(tail)
    report.problems.sort(key=lambda p: (p.entry if p.entry is not None else -1))
    known_heads = list(known_heads)
    if n == 0:
        report.problems.append(Problem(None, "the log is empty (or missing): no entry to audit; a chip logs from its first boot"))
    elif require_end and report.end == "open" and not tail:
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
    report.attributed, report.checkpoints_verified = v.attributed, v.checkpoints_verified
    report.signatures_verified = v.signatures_verified
    return report


def verify_covered_entry(
    line: bytes, index: int, checkpoint_line: bytes, proof: list[bytes], boot_key: VerifyKey, serial: str
) -> dict[str, Any]:
    """Attribute one version 2 entry to the chip without the whole log: `checkpoint_line` is a
    checkpoint of the same chip and boot whose signature verifies under `boot_key` (the key of
    that boot's certificate, which the caller verified), and `proof` the RFC 9162 inclusion
    proof of `line` at position `index` in the checkpoint's tree. Returns the parsed entry;
    raises FormatError naming what fails. (What a v1 entry's own signature gave, through the
    checkpoint that covers it.)"""
    entry, cp = parse_entry_line(line), parse_entry_line(checkpoint_line)
    if cp["kind"] != "checkpoint" or cp["v"] != 2 or "sig" not in cp:
        raise FormatError("the covering line is not a signed version 2 checkpoint")
    try:
        boot_key.verify(from_b64(cp["sig"], "sig"), entry_signing_input_from_line(checkpoint_line, cp))
    except ComputewatchError:
        raise FormatError("checkpoint signature does not verify under the given boot key") from None
    size = uint(cp["body"].get("tree_size"), "checkpoint tree_size")
    root = from_hex(cp["body"].get("root"), "checkpoint root", 32)
    if cp["serial"] != serial or entry["serial"] != serial:
        raise FormatError(f"entry or checkpoint is not of chip {serial!r}")
    if entry["boot"] != cp["boot"]:
        raise FormatError(
            f"entry of boot {entry['boot']} is not attributed by a checkpoint of boot {cp['boot']} "
            "(a boot vouches only for its own entries)"
        )
    if not 0 <= index < size or entry["counter"] != index:
        raise FormatError(f"entry {entry['counter']} at index {index} is not inside the checkpoint's {size} entries")
    try:
        verify_inclusion(leaf_hash(line), index, size, proof, root)
    except ComputewatchError as exc:
        raise FormatError(f"entry is not in the checkpoint's tree: {exc}") from None
    return entry
