"""Chip evidence as the Verifier reads it: certificate and log of every inspected chip.

The Verifier starts here, never from the Prover's records. For each chip it reads exactly two
files of the chip state directory (docs/formats.md, "Chip state directory"): `certificate.json`,
checked against a chipmaker root the Verifier pinned itself, and `log/chip.log`, audited in full
(`formats.chip_audit.audit_log`) and against tree heads seen earlier. From the log it then
extracts what the rest of the verification needs: every snapshot entry with the run it belongs
to (the latest `precommitment` of the same boot), every precommitment and memory-map entry, and
the busy time each run accounts for.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from computewatch.crypto.canonical import parse_canonical_json
from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.chip_audit import AuditReport, Problem, audit_log
from computewatch.formats.chip_entry import LogEntry, envelope_from_obj, split_log
from computewatch.formats.identity import ChipCertificate, verify_chip_certificate

__all__ = ["ChipEvidence", "EvidenceError", "LoggedPrecommitment", "LoggedSnapshot", "find_chip_dirs", "read_chip"]

CERTIFICATE_FILE = "certificate.json"
LOG_FILE = "log/chip.log"


class EvidenceError(ComputewatchError):
    """A chip directory cannot be read as evidence at all (missing files, unknown chipmaker)."""


@dataclass(frozen=True)
class LoggedPrecommitment:
    serial: str
    counter: int
    boot: int
    run_id: str
    digest: str  # precommitment digest (hex) the Prover handed the chip
    busy_ns: int


@dataclass(frozen=True)
class LoggedSnapshot:
    serial: str
    counter: int
    boot: int
    step: int
    shard_digest: str
    clock_ns: int
    busy_ns: int
    run_id: str | None  # the latest precommitment of the same boot, None if there is none
    precommitment_digest: str | None
    memory_map_digest: str | None  # the latest memory map of that run in this boot


@dataclass
class ChipEvidence:
    """One inspected chip: its certified identity, its audited log and what the log says."""

    serial: str
    path: Path
    certificate: ChipCertificate
    audit: AuditReport
    entries: list[LogEntry]
    precommitments: list[LoggedPrecommitment] = field(default_factory=list)
    memory_maps: list[LoggedPrecommitment] = field(default_factory=list)  # digest = memory-map digest
    snapshots: list[LoggedSnapshot] = field(default_factory=list)
    busy_before_precommitment: list[tuple[int, int]] = field(default_factory=list)  # (boot, busy ns)
    busy_by_run: dict[str, int] = field(default_factory=dict)  # run id -> busy ns under it

    @property
    def peak_flops(self) -> int:
        return self.certificate.peak_flops


def _read_regular(path: Path) -> bytes:
    # A chip owner could leave a FIFO or device where the log should be: refused, never waited on.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def find_chip_dirs(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Chip state directories: each path is one, or a folder whose sub-folders are (name order)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if os.path.lexists(path / CERTIFICATE_FILE):
            out.append(path)
            continue
        if not path.is_dir():
            raise EvidenceError(f"{path}: no such chip directory")
        # Hidden folders are a chip half-made by `chip manufacture` (".NAME.partial"), not a chip.
        found = sorted(p for p in path.iterdir() if not p.name.startswith(".") and os.path.lexists(p / CERTIFICATE_FILE))
        if not found:
            raise EvidenceError(f"{path}: neither a chip state directory ({CERTIFICATE_FILE}) nor a folder of them")
        out.extend(found)
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def _certificate(path: Path, roots: Sequence[VerifyKey]) -> tuple[ChipCertificate, VerifyKey]:
    try:
        env = envelope_from_obj(parse_canonical_json(_read_regular(path / CERTIFICATE_FILE)), "chip certificate")
    except OSError as exc:
        raise EvidenceError(f"{path / CERTIFICATE_FILE}: cannot read ({exc.strerror})") from None
    except ComputewatchError as exc:
        raise EvidenceError(f"{path / CERTIFICATE_FILE}: malformed chip certificate ({exc})") from None
    for root in roots:
        try:
            return verify_chip_certificate(env, root), root
        except ComputewatchError:
            continue
    raise EvidenceError(f"{path / CERTIFICATE_FILE}: not signed by any pinned chipmaker root")


def read_chip(
    path: str | os.PathLike[str],
    chipmaker_roots: Sequence[VerifyKey],
    known_heads: Mapping[str, Iterable[tuple[int, bytes]]] | None = None,
) -> ChipEvidence:
    """Read and audit one chip; EvidenceError when its files are missing or its certificate is
    not from a pinned chipmaker (an uncertified chip's log proves nothing). `known_heads` maps
    serials to tree heads (size, root) seen earlier, which the log must extend."""
    path = Path(path)
    cert, root = _certificate(path, chipmaker_roots)
    heads = list((known_heads or {}).get(cert.serial, ()))
    try:
        data = _read_regular(path / LOG_FILE)
    except FileNotFoundError:
        data = b""  # a missing log audits like an empty one: no boot entry, a finding
    except OSError as exc:
        raise EvidenceError(f"{path / LOG_FILE}: cannot read ({exc.strerror})") from None
    report = audit_log(data, cert, root, known_heads=heads)
    if not data:
        report.problems.append(Problem(None, "the chip's log is empty or missing: it records no boot"))
    lines, _torn = split_log(data)
    entries = []
    for line in lines:
        try:
            entries.append(LogEntry.from_line(line))
        except FormatError:
            continue  # the audit already names the malformed entry
    ev = ChipEvidence(cert.serial, path, cert, report, entries)
    _extract(ev)
    return ev


def _flush_boot(ev: ChipEvidence, boot: int, start_busy: int, first_pre_busy: int | None, end_busy: int) -> None:
    # Busy time a boot spent before its first precommitment (or in a boot with none) is compute
    # that no run declared.
    unclaimed = (first_pre_busy if first_pre_busy is not None else end_busy) - start_busy
    if unclaimed > 0:
        ev.busy_before_precommitment.append((boot, unclaimed))


def _extract(ev: ChipEvidence) -> None:
    """Attribute snapshots and busy time to runs: a run owns the boot session from its
    precommitment until the next precommitment or the end of the boot."""
    run: LoggedPrecommitment | None = None
    mmap: str | None = None
    boot, boot_busy, first_pre, busy = -1, 0, None, 0

    def close_run(until: int) -> None:
        if run is not None:
            ev.busy_by_run[run.run_id] = ev.busy_by_run.get(run.run_id, 0) + max(0, until - run.busy_ns)

    for e in ev.entries:
        if e.kind == "boot":
            close_run(busy)
            if boot >= 0:
                _flush_boot(ev, boot, boot_busy, first_pre, busy)
            run, mmap, boot, boot_busy, first_pre = None, None, e.boot, e.busy_ns, None
        elif e.kind == "precommitment":
            close_run(e.busy_ns)
            first_pre = e.busy_ns if first_pre is None else first_pre
            run = LoggedPrecommitment(ev.serial, e.counter, e.boot, str(e.body.get("run_id")), str(e.body.get("digest")), e.busy_ns)
            mmap = None
            ev.precommitments.append(run)
        elif e.kind == "memory-map":
            item = LoggedPrecommitment(ev.serial, e.counter, e.boot, str(e.body.get("run_id")), str(e.body.get("digest")), e.busy_ns)
            ev.memory_maps.append(item)
            if run is not None and item.run_id == run.run_id:
                mmap = item.digest
        elif e.kind == "snapshot":
            body: Mapping[str, Any] = e.body
            step = body.get("step")
            ev.snapshots.append(
                LoggedSnapshot(
                    ev.serial,
                    e.counter,
                    e.boot,
                    step if isinstance(step, int) and not isinstance(step, bool) else -1,
                    str(body.get("shard_digest")),
                    e.clock_ns,
                    e.busy_ns,
                    run.run_id if run else None,
                    run.digest if run else None,
                    mmap,
                )
            )
        busy = max(busy, e.busy_ns)
    close_run(busy)
    if boot >= 0:
        _flush_boot(ev, boot, boot_busy, first_pre, busy)
