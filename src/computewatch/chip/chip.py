"""The chip: identity, verified boot, secure clock, snapshot trigger and log behind one facade.

Lifecycle: `Chip.open(dir)` -> `install_firmware` (optional) -> `boot()` -> `attach(tensors,
storage)` -> `step_boundary(...)` per optimizer step -> `close()`. Every boot starts a new
schedule epoch; an epoch also ends after the policy's epoch length of busy time and at
inspection, and its seed is revealed in the log when it ends.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import blake3
import torch

from computewatch.chip.busy import BusyMeter
from computewatch.chip.chipmaker import Chipmaker
from computewatch.chip.clock import ClockReading, SecureClock, SimulatedClock
from computewatch.chip.errors import BootError, ChipError, ChipFrozenError, ReportError
from computewatch.chip.log import ChipLog
from computewatch.chip.rot import CounterStore
from computewatch.chip.rot import check as _check_counter
from computewatch.chip.selfcheck import log_damage as _find_log_damage
from computewatch.chip.snapshot import SnapshotRecord, capture_shard, on_one_cuda_device
from computewatch.chip.state import load_identity, load_nv, save_nv
from computewatch.chip.transport import Transport, check_ack
from computewatch.chip.trigger import EpochSchedule
from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.dsse import Envelope
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.digest import blake3_bytes
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.formats.attestation import make_evidence
from computewatch.formats.chip_audit import AuditReport, audit_log
from computewatch.formats.chip_entry import ENTRY_VERSION, LogEntry, envelope_to_obj
from computewatch.formats.firmware import (
    FirmwareImage,
    FirmwarePolicy,
    VerifiedFirmware,
    verify_image,
)
from computewatch.formats.identity import (
    ChipCertificate,
    derive_boot_key,
    issue_boot_certificate,
    verify_chip_certificate,
)
from computewatch.formats.schedule import schedule_key

__all__ = ["MAX_STEP_BUSY_S", "Chip", "load_certificate", "manufacture_chip", "provision_chips"]

# Busy time one step may report: a day. At the highest signed rate (one snapshot per busy
# second) that is at most 86,400 triggers to draw and log for one step.
MAX_STEP_BUSY_S = 86_400.0


def load_certificate(state_dir: str | os.PathLike[str]) -> Envelope:
    path = Path(state_dir) / "certificate.json"
    try:
        return Envelope.from_json(path.read_bytes())
    except OSError as exc:
        raise ChipError(f"cannot read chip certificate {str(path)!r}: {exc.strerror}") from None


class Chip:
    """One ML chip running the monitoring firmware. Use `Chip.open`."""

    def __init__(
        self,
        state_dir: Path,
        clock: SecureClock | None,
        transport: Transport | None,
        rot_dir: str | os.PathLike[str] | None = None,
        log_version: int = ENTRY_VERSION,
    ) -> None:
        self.state_dir = state_dir
        self._ident = load_identity(state_dir)
        self._nv = load_nv(state_dir)
        # The root of trust's monotonic counter (outside the chip folder): see chip.rot.
        self._rot = CounterStore.for_chip(state_dir, rot_dir)
        self._rot_id = self._ident.device_key.public_key.keyid
        self._certificate = load_certificate(state_dir)
        self._own_clock = clock is None
        self._source: SecureClock = clock if clock is not None else SimulatedClock()
        self._transport = transport
        self._log = ChipLog.open(state_dir / "log" / "chip.log", self._ident.serial, log_version)
        self._lock = threading.RLock()
        self._fw: VerifiedFirmware | None = None
        self._boot_key: SigningKey | None = None
        self._boot_cert: Envelope | None = None
        self._schedule: EpochSchedule | None = None
        self._tensors: list[torch.Tensor] | None = None
        self._pinned: list[torch.Tensor] | None = None  # host buffers for a CUDA shard
        self._storage: Path | None = None
        self._pending: list[LogEntry] = []
        self._safe = True
        last = self._log.last
        # The log tail is the last durable clock reading: the clock resumes from there, never behind.
        self._clock_base = last.clock_ns if last else 0
        # A trigger that fired after the last entry (the stop cut its snapshot short) still counts:
        # the epoch is revealed up to it, so the audit names the snapshot that is missing.
        self._busy_ns = max(last.busy_ns if last else 0, self._nv.trigger_busy_ns)
        self._source_at_boot = self._source.elapsed_ns()
        self._meter = BusyMeter()  # busy time from the secure clock (chip/busy.py)
        self._open_epoch: tuple[int, int] | None = None
        self._since_checkpoint = 0
        for e in self._log:
            if e.kind == "schedule-commit":
                self._open_epoch = (e.body["epoch"], e.busy_ns)
            elif e.kind == "schedule-reveal":
                self._open_epoch = None
            self._since_checkpoint = 0 if e.kind == "checkpoint" else self._since_checkpoint + 1

    # ----------------------------------------------------------------- identity and state
    @classmethod
    def open(
        cls,
        state_dir: str | os.PathLike[str],
        clock: SecureClock | None = None,
        transport: Transport | None = None,
        *,
        rot_dir: str | os.PathLike[str] | None = None,
        log_version: int = ENTRY_VERSION,
    ) -> Chip:
        """Power on the chip whose state lives in `state_dir` (not yet booted); `rot_dir` is
        where its root of trust keeps the monotonic counter (default: see chip.rot).
        `log_version` 1 makes it write the old per-entry-signed log format (tests, benchmarks)."""
        return cls(Path(state_dir), clock, transport, rot_dir, log_version)

    @property
    def serial(self) -> str:
        return self._ident.serial

    @property
    def certificate(self) -> Envelope:
        return self._certificate

    @property
    def chipmaker_root(self) -> VerifyKey:
        """The chipmaker root the boot ROM trusts (auditors should bring their own copy)."""
        return self._ident.chipmaker_root

    @property
    def log(self) -> ChipLog:
        return self._log

    @property
    def log_path(self) -> Path:
        return self._log.path

    @property
    def booted(self) -> bool:
        return self._fw is not None

    @property
    def firmware(self) -> VerifiedFirmware | None:
        return self._fw

    @property
    def policy(self) -> FirmwarePolicy:
        return self._require_boot().policy

    @property
    def frozen(self) -> bool:
        """True while an entry awaits the receiver's acknowledgement (report-to-server mode)."""
        return bool(self._pending)

    @property
    def tamper(self) -> bool:
        """The tamper flag, as read at a physical inspection."""
        return self._nv.tamper is not None

    @property
    def security_version(self) -> int:
        """The anti-rollback counter (fuse)."""
        return self._nv.security_version

    @property
    def busy_ns(self) -> int:
        return self._busy_ns

    @property
    def rot_counter(self) -> int:
        """The root-of-trust counter value sealed state is bound to."""
        return self._nv.rot_counter

    def clock_reading(self) -> ClockReading:
        return ClockReading(self._clock_now(), self._busy_ns, self._nv.reset_count, self._nv.restart_count, self._safe)

    def _clock_now(self) -> int:
        now = self._clock_base + self._source.elapsed_ns() - self._source_at_boot
        last = self._log.last
        return max(now, last.clock_ns if last else 0)

    def _save_nv(self) -> None:
        """Write sealed state, stamped with the log's current size and root (the tree head
        every later log must extend; see chip.selfcheck)."""
        size = len(self._log)
        self._nv.log_size, self._nv.log_root = size, self._log.root(size).hex()
        # Bind the write to the next counter value: sealed state first, then the counter, so a
        # crash between the two leaves state one ahead (completed at boot), never behind.
        counter = self._rot.read(self._rot_id)
        twin = None
        if counter > self._nv.rot_counter:
            # The counter moved since this chip's last write: another copy of it is running.
            twin = _check_counter(self._nv.rot_counter, counter)
            if twin is not None and twin not in self._nv.log_damage:
                self._nv.log_damage.append(twin)
                if self._nv.tamper is None:
                    self._nv.tamper = {"reason": f"log damage: {twin}", "clock_ns": str(self._clock_now())}
        self._nv.rot_counter = counter + 1
        save_nv(self.state_dir, self._nv)
        self._rot.advance(self._rot_id, self._nv.rot_counter)
        if twin is not None and self._fw is not None:
            self._append("tamper", {"reason": f"log damage: {twin}"})

    @property
    def log_damage(self) -> list[str]:
        """Damage the firmware found in its log against sealed state (sticky; empty if none)."""
        return list(self._nv.log_damage)

    def _require_boot(self) -> VerifiedFirmware:
        if self._fw is None:
            raise ChipError(f"chip {self.serial} is not booted")
        return self._fw

    # ----------------------------------------------------------------- firmware and boot
    def _fw_path(self, which: str) -> Path:
        return self.state_dir / "firmware" / f"{which}.json"

    def install_firmware(self, image: FirmwareImage) -> None:
        """Stage a signed image for the next boot; refused now if verified boot would refuse it.
        A booted chip logs the staged update at once, so it is attested early (footnote 11)."""
        with self._lock:
            fw = verify_image(image, self._ident.chipmaker_root, self._nv.security_version)
            self._fw_path("staged").parent.mkdir(exist_ok=True)
            image.save(self._fw_path("staged"))
            if self.booted:
                self._append("firmware-staged", {"firmware": envelope_to_obj(fw.manifest)})
                self._settle()

    def boot(self) -> None:
        """Verified boot of the staged (else active) image; raises BootError and stays off if refused."""
        with self._lock:
            if self.booted:
                raise ChipError(f"chip {self.serial} is already booted")
            staged, active = self._fw_path("staged"), self._fw_path("active")
            path = staged if staged.exists() else active
            if not path.exists():
                raise BootError(f"chip {self.serial}: no firmware installed")
            try:
                image = FirmwareImage.load(path)
            except ComputewatchError as exc:
                raise BootError(f"firmware image {str(path)!r} is unreadable: {exc}") from None
            fw = verify_image(image, self._ident.chipmaker_root, self._nv.security_version)
            if fw.policy.log_mode == "report" and self._transport is None:
                raise BootError("this firmware reports every entry to a server: open the chip with a transport")
            if path == staged:
                os.replace(staged, active)
            # Before sealed state is stamped with the log as it is now: compare against the old stamp.
            damage = [d for d in _find_log_damage(self._log, self._nv, self.serial) if d not in self._nv.log_damage]
            counter = self._rot.read(self._rot_id)
            rolled_back = _check_counter(self._nv.rot_counter, counter)
            if rolled_back is not None:
                damage.append(rolled_back)  # worded with both values: each restore is reported anew
                self._nv.rot_counter = max(self._nv.rot_counter, counter)  # reported here, not again below
            self._nv.log_damage.extend(damage)
            if damage and self._nv.tamper is None:
                self._nv.tamper = {"reason": f"log damage: {damage[0]}", "clock_ns": str(self._clock_now())}
            first = self._nv.reset_count == 0
            unclean = self._nv.running
            self._nv.security_version = max(self._nv.security_version, fw.security_version)  # burn the fuse
            self._nv.reset_count += 1
            self._nv.restart_count += int(unclean)
            self._nv.running = True
            self._save_nv()
            self._safe = not unclean
            self._boot_key = derive_boot_key(self._ident.device_secret, fw.measurement)
            self._boot_cert = issue_boot_certificate(
                self._ident.device_key,
                self.serial,
                self._nv.reset_count,
                self._boot_key.public_key,
                fw.measurement,
                fw.name,
                fw.version,
                fw.security_version,
            )
            self._fw = fw
            self._clock_base, self._source_at_boot = self._clock_now(), self._source.elapsed_ns()
            self._meter.start(self._source_at_boot)  # powered on: computing until told it rests
            body = {
                "boot_certificate": envelope_to_obj(self._boot_cert),
                "firmware": envelope_to_obj(fw.manifest),
                "clock": self.clock_reading().to_json(),
                "previous_stop": "none" if first else ("unclean" if unclean else "clean"),
                "recovered_bytes": self._log.recovered_bytes,
            }
            self._append("boot", body)
            for problem in damage:
                self._append("tamper", {"reason": f"log damage: {problem}"})
            if self._open_epoch is not None:
                # An unclean stop left the last epoch open: reveal it up to the last logged busy time.
                epoch, start = self._open_epoch
                old = EpochSchedule(schedule_key(self._ident.device_secret), epoch, start, 0.0)
                self._reveal(old, "unclean-stop")
            if fw.policy.logging:
                self._commit_epoch()
            self._settle()

    # ----------------------------------------------------------------- schedule
    def _commit_epoch(self) -> None:
        fw = self._require_boot()
        epoch = self._nv.next_epoch
        # Reserve the index durably first: a reused index would reuse a seed already revealed.
        self._nv.next_epoch += 1
        self._save_nv()
        self._schedule = EpochSchedule(
            schedule_key(self._ident.device_secret), epoch, self._busy_ns, fw.policy.snapshots_per_day
        )
        body = {
            "epoch": epoch,
            "start_busy_ns": str(self._busy_ns),
            "commitment": self._schedule.commitment.hex(),
            "snapshots_per_day": fw.policy.to_json()["snapshots_per_day"],
        }
        self._append("schedule-commit", body)
        self._open_epoch = (epoch, self._busy_ns)

    def _reveal(self, schedule: EpochSchedule, reason: str) -> None:
        body = {
            "epoch": schedule.epoch,
            "seed": schedule.reveal().hex(),
            "end_busy_ns": str(self._busy_ns),
            "reason": reason,
        }
        self._append("schedule-reveal", body)
        self._schedule, self._open_epoch = None, None

    def rotate_epoch(self, reason: str = "request") -> None:
        """End the current epoch now (reveal its seed) and commit a fresh one."""
        with self._lock:
            if self._schedule is not None:
                self._reveal(self._schedule, reason)
                self._commit_epoch()
            self._settle()

    # ----------------------------------------------------------------- log
    def _append(self, kind: str, body: dict[str, Any]) -> LogEntry:
        fw = self._require_boot()
        assert self._boot_key is not None  # set together with _fw at boot
        # Version 2 signs checkpoints only; report-mode firmware (paper §4 (b): the chip signs what
        # it sends) signs every entry, so the receiver can refuse a forgery before acknowledging.
        entry = self._log.append(
            kind,
            body,
            boot=self._nv.reset_count,
            clock_ns=self._clock_now(),
            busy_ns=self._busy_ns,
            key=self._boot_key,
            sign=fw.policy.log_mode == "report",
        )
        self._since_checkpoint = 0 if kind == "checkpoint" else self._since_checkpoint + 1
        if fw.policy.log_mode == "report":
            # Queued here, sent at the end of the public operation (_settle): a missing ack must
            # not cut a firmware sequence (boot -> reveal -> commit) in half.
            self._pending.append(entry)
        if kind != "checkpoint" and self._since_checkpoint >= fw.policy.checkpoint_every:
            self.checkpoint()
        return entry

    def checkpoint(self) -> LogEntry:
        """Sign a checkpoint over the RFC 9162 tree of every entry so far (every
        `checkpoint_every` entries, at each attestation, at inspection, at shutdown)."""
        with self._lock:
            size = len(self._log)
            entry = self._append("checkpoint", {"tree_size": size, "root": self._log.root(size).hex()})
            self._settle()
            return entry

    def _settle(self) -> None:
        if self._pending:
            self.flush_reports()

    def flush_reports(self) -> None:
        """Resend unacknowledged entries; the chip resumes only when all are acknowledged."""
        with self._lock:
            while self._pending:
                e = self._pending[0]
                assert self._transport is not None
                try:
                    ack = self._transport.send(e.line)
                except OSError as exc:
                    raise ReportError(f"entry {e.counter}: link to the receiver failed ({exc}); chip frozen") from None
                check_ack(ack, self.serial, e.counter, e.line)
                self._pending.pop(0)

    def log_precommitment(self, digest: bytes, run_id: str) -> LogEntry:
        """Log the digest of a run's precommitment (hyperparameters, dataset root, memory map)."""
        if not isinstance(digest, (bytes, bytearray)) or len(digest) != 32:
            raise ChipError("a precommitment digest is 32 bytes")
        with self._lock:
            entry = self._append("precommitment", {"run_id": str(run_id), "digest": bytes(digest).hex()})
            self._settle()
            return entry

    def log_memory_map(self, memory_map: dict[str, Any], run_id: str) -> LogEntry:
        """Log BLAKE3 of the canonical JSON of the map from memory regions to parameter names."""
        digest = blake3_bytes(canonical_json(memory_map))
        with self._lock:
            entry = self._append("memory-map", {"run_id": str(run_id), "digest": digest.hex(), "hash": "blake3-256"})
            self._settle()
            return entry

    @property
    def certificate_device_key(self) -> bytes:
        """The raw public device key (as the chip certificate names it)."""
        return self._ident.device_key.public_key.raw

    def answer_location(self, landmark: str, nonce: bytes) -> bytes:
        """Sign a landmark's location nonce with the device key (formats.location.answer_input)."""
        from computewatch.formats.location import answer_input

        with self._lock:
            self._require_boot()
            return self._ident.device_key.sign(answer_input(landmark, self.serial, bytes(nonce)))

    def log_location(self, record: Envelope) -> LogEntry:
        """Log a landmark's signed record of this chip's round trips (its digest and shortest RTT)."""
        from computewatch.formats.location import read_record

        rec = read_record(record)
        if rec.serial != self.serial:
            raise ChipError(f"the landmark record is for chip {rec.serial}, not {self.serial}")
        with self._lock:
            entry = self._append("location", {"landmark": rec.landmark, "rtt_ns": str(rec.rtt_ns), "record_sha256": rec.digest})
            self._settle()
            return entry

    def trip_tamper(self, reason: str) -> None:
        """The tamper sensor fired: the flag is sticky and is read at inspection."""
        with self._lock:
            if self._nv.tamper is None:
                self._nv.tamper = {"reason": str(reason), "clock_ns": str(self._clock_now())}
                self._save_nv()
            if self.booted:
                self._append("tamper", {"reason": str(reason)})
                self._settle()

    # ----------------------------------------------------------------- training
    def attach(self, tensors: Sequence[torch.Tensor], storage_dir: str | os.PathLike[str]) -> None:
        """The device memory this chip holds (its shard's weight regions, in order) and where the
        owner's storage receives copy-outs."""
        tensors = list(tensors)
        if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
            raise ChipError("attach needs a non-empty sequence of tensors")
        storage = Path(storage_dir)
        storage.mkdir(parents=True, exist_ok=True)
        # A CUDA shard gets its pinned host buffers now: pinning locks every page and takes
        # seconds, which must not count in any snapshot's stall.
        pinned = None
        if on_one_cuda_device(tensors):
            from computewatch.chip.gpu_snapshot import allocate_pinned

            pinned = allocate_pinned(tensors)
        with self._lock:
            self._tensors, self._storage, self._pinned = tensors, storage, pinned
            self._meter.start(self._source.elapsed_ns())

    def idle(self, seconds: float) -> None:
        """Chip time passes without training (own simulated clock only): no triggers fire."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ChipError(f"idle seconds must be a finite number >= 0, got {seconds!r}")
        if self._own_clock:
            assert isinstance(self._source, SimulatedClock)
            self._meter.lap(self._source.elapsed_ns())  # the compute period so far stays busy
            self._source.advance(seconds)
            self._meter.start(self._source.elapsed_ns())

    def step_boundary(self, step: int, busy_seconds: float | None = None) -> list[SnapshotRecord]:
        """Called after each optimizer step: busy time advances by what the secure clock measured
        since the last boundary (chip/busy.py); triggers that fell inside the step snapshot the
        state at this boundary (one copy-out for all of them). `busy_seconds` is read only by a
        simulated chip that owns its clock, as the time the simulated step took."""
        if busy_seconds is None:
            busy_seconds = 0.0
        if not math.isfinite(busy_seconds) or not 0 <= busy_seconds <= MAX_STEP_BUSY_S:
            raise ChipError(f"busy_seconds must be a finite number from 0 to {MAX_STEP_BUSY_S:g} (a day), got {busy_seconds!r}")
        with self._lock:  # freeze: the owner's next step waits for this to return
            t0 = time.perf_counter()
            fw = self._require_boot()
            if self._pending:
                raise ChipFrozenError(f"chip {self.serial}: {len(self._pending)} entries await acknowledgement")
            if fw.policy.logging and self._tensors is None:
                raise ChipError("attach() the weight regions before training: the firmware must be able to snapshot")
            prev = self._busy_ns
            if self._own_clock:
                assert isinstance(self._source, SimulatedClock)
                self._source.advance(busy_seconds)
            self._busy_ns += self._meter.lap(self._source.elapsed_ns())
            records: list[SnapshotRecord] = []
            if self._schedule is not None:
                fired = self._schedule.fire_until(self._busy_ns)
                if fired:
                    # Durable before the owner can see any sign of the snapshot (stall, copy-out):
                    # killing the chip now no longer erases the trigger.
                    self._nv.trigger_busy_ns = self._busy_ns
                    self._save_nv()
                    records.append(self._snapshot(int(step), fired, prev, t0))
                if self._busy_ns - self._schedule.start_busy_ns >= fw.policy.epoch_busy_s * 10**9:
                    self.rotate_epoch("epoch-end")
            self._settle()  # report mode: the step returns only once the receiver acked
            # The stall the owner's step saw: freeze to resume, including any ack wait.
            return [dataclasses.replace(r, stall_s=time.perf_counter() - t0) for r in records]

    def _snapshot(self, step: int, fired: list[int], prev_busy: int, t0: float) -> SnapshotRecord:
        assert self._tensors is not None and self._storage is not None and self._schedule is not None
        counter = len(self._log)
        cap = capture_shard(
            self._tensors, self._storage, serial=self.serial, counter=counter, step=step, pinned=self._pinned
        )
        body = {
            "epoch": self._schedule.epoch,
            "triggers": [str(t) for t in fired],
            "step": step,
            "step_start_busy_ns": str(prev_busy),
            "hash": "blake3-256",
            "shard_digest": cap.digest.hex(),
            "regions": [r.to_json() for r in cap.regions],
            "copy_out": cap.path.name,
        }
        entry = self._append("snapshot", body)
        return SnapshotRecord(
            counter=entry.counter,
            step=step,
            clock_ns=entry.clock_ns,
            busy_ns=entry.busy_ns,
            triggers=tuple(fired),
            shard_digest=cap.digest.hex(),
            regions=tuple(cap.regions),
            path=cap.path,
            stall_s=time.perf_counter() - t0,
        )

    # ----------------------------------------------------------------- evidence and inspection
    def attest(self, nonce: bytes) -> bytes:
        """Evidence bundle (canonical JSON bytes) answering the verifier's `nonce`."""
        if not isinstance(nonce, (bytes, bytearray)):  # bytes(16) would be sixteen zero bytes
            raise ChipError(f"an attestation nonce is bytes, got {type(nonce).__name__}")
        with self._lock:
            fw = self._require_boot()
            last = self._log.last
            if self._log.version >= 2 and (last is None or last.kind != "checkpoint"):
                # Every entry the evidence's tree head covers is covered by a signed checkpoint of
                # this boot too (log v2 attributes entries only through checkpoints).
                self.checkpoint()
            staged = self._fw_path("staged")
            staged_info = None
            if staged.exists():
                img = FirmwareImage.load(staged)
                staged_info = {"measurement": img.measurement.hex()}
            size = len(self._log)
            claims = {
                "nonce": bytes(nonce).hex(),
                "serial": self.serial,
                "boot": self._nv.reset_count,
                "firmware": {
                    "measurement": fw.measurement.hex(),
                    "name": fw.name,
                    "version": fw.version,
                    "security_version": fw.security_version,
                },
                "fuse_security_version": self._nv.security_version,
                "staged_firmware": staged_info,
                "clock": self.clock_reading().to_json(),
                "log": {"size": size, "root": self._log.root(size).hex()},
                "tamper": self.tamper,
                "log_damage": list(self._nv.log_damage),
                "root_of_trust": {"counter": self._nv.rot_counter},
            }
            assert self._boot_cert is not None and self._boot_key is not None
            return make_evidence(
                self._boot_key,
                serial=self.serial,
                claims=claims,
                certificate=self._certificate,
                boot_certificate=self._boot_cert,
                firmware=fw.manifest,
            )

    def inspect(self, nonce: bytes) -> bytes:
        """Physical inspection: reveal the current epoch (and start a fresh one), checkpoint, attest."""
        with self._lock:
            self.rotate_epoch("inspection")
            self.checkpoint()
            return self.attest(nonce)

    def audit(self) -> AuditReport:
        """Offline audit of this chip's log against its certificate and its chipmaker root."""
        cert: ChipCertificate = verify_chip_certificate(self._certificate, self._ident.chipmaker_root)
        return audit_log(self._log.path.read_bytes(), cert, self._ident.chipmaker_root)

    def close(self) -> None:
        """Clean stop: reveal the open epoch, log the shutdown and a final checkpoint."""
        with self._lock:
            if not self.booted:
                return
            if self._schedule is not None:
                self._reveal(self._schedule, "stop")
            self._append("shutdown", {"clock": self.clock_reading().to_json()})
            self.checkpoint()
            self._nv.running = False
            self._save_nv()
            self._fw = None
            self._boot_key = None
            self._settle()

    def __enter__(self) -> Chip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_TEST_SECRET_CONTEXT = "computewatch v1 2026-11 reproducible chip device secret"


def manufacture_chip(
    maker: Chipmaker,
    state_dir: str | os.PathLike[str],
    image: FirmwareImage,
    *,
    serial: str | None = None,
    device_secret: bytes | None = None,
) -> Path:
    """Manufacture a chip and install `image`, all or nothing: the chip is built in a hidden
    sibling folder and renamed into place once complete, so a failure or a crash never leaves a
    half-made chip at `state_dir` (a stale partial folder is cleared by the next attempt)."""
    state_dir = Path(state_dir)
    if state_dir.exists() and (not state_dir.is_dir() or any(state_dir.iterdir())):
        raise ChipError(f"{str(state_dir)!r} already exists and is not empty: choose a new folder for the chip")
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = state_dir.parent / f".{state_dir.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    try:
        maker.manufacture(partial, serial=serial, device_secret=device_secret)
        Chip.open(partial).install_firmware(image)
        os.replace(partial, state_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return state_dir


def provision_chips(
    root: str | os.PathLike[str],
    count: int,
    snapshots_per_day: float = 0.1,
    chipmaker_dir: str | os.PathLike[str] | None = None,
    *,
    log_mode: str = "on-chip",
    checkpoint_every: int = 16,
    epoch_busy_s: int = 86_400,
    secret_seed: bytes | None = None,
    first_index: int = 0,
) -> list[Path]:
    """Manufacture `count` chips under `root` (`chip-<first_index>` on) and install the
    chipmaker-signed logging firmware whose policy carries the snapshot rate f; returns the
    chips' state dirs (not yet booted). Each chip appears whole or not at all.

    `secret_seed` derives the chips' device secrets (chip i: BLAKE3 derive_key over the seed and
    i) instead of fresh randomness, so their snapshot schedules are reproducible. It exists for
    tests and reproducible demos only: whoever knows it can predict every snapshot.
    """
    root = Path(root)
    # The policy first: a bad rate is refused before any key or chip is made.
    policy = FirmwarePolicy(
        snapshots_per_day=snapshots_per_day,
        checkpoint_every=checkpoint_every,
        epoch_busy_s=epoch_busy_s,
        log_mode=log_mode,
    )
    maker = Chipmaker.load_or_create(Path(chipmaker_dir) if chipmaker_dir is not None else root / "chipmaker")
    image = maker.sign_firmware(policy)
    dirs = []
    for i in range(first_index, first_index + count):
        secret = None
        if secret_seed is not None:
            secret = blake3.blake3(secret_seed + i.to_bytes(8, "big"), derive_key_context=_TEST_SECRET_CONTEXT).digest()
        dirs.append(manufacture_chip(maker, root / f"chip-{i:04d}", image, device_secret=secret))
    return dirs
