"""Report-to-server mode (the paper's §4 option b): each signed entry goes to a Verifier-trusted
receiver, and the chip does not resume until the receiver acknowledges it.

Wire format: the chip sends the entry line (canonical JSON, signed by the boot key); the
receiver answers with an ack, the canonical JSON {"v":1,"serial":..,"counter":..,"entry_sha256":..}.
The receiver checks every entry as an auditor would (chain, counter, signature) before it acks,
and keeps its own copy of each chip's log, which audits like the chip's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from computewatch.chip.errors import ReportError
from computewatch.crypto.atomic import append_durable
from computewatch.crypto.dsse import Envelope
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.chip_audit import LogVerifier
from computewatch.formats.chip_entry import expected_ack, parse_entry_line, split_log
from computewatch.formats.identity import ChipCertificate, verify_chip_certificate

log = logging.getLogger("computewatch.chip.transport")

__all__ = ["FailingTransport", "InProcessReceiver", "SilentTransport", "Transport", "check_ack", "expected_ack"]


@runtime_checkable
class Transport(Protocol):
    def send(self, line: bytes) -> bytes | None:
        """Deliver one signed entry; return the receiver's ack, None when none came (timeout),
        or raise OSError/ConnectionError when the link failed."""
        ...


class InProcessReceiver:
    """A Verifier-trusted receiver living in this process: verifies, stores durably, then acks."""

    def __init__(self, chipmaker_root: VerifyKey, store_dir: str | Path) -> None:
        self._root = chipmaker_root
        self._dir = Path(store_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._chips: dict[str, LogVerifier] = {}
        self.rejected: list[str] = []

    def register(self, certificate: Envelope) -> ChipCertificate:
        """Accept entries from this chip. A copy stored by an earlier receiver process is checked
        and resumed (its torn tail, from a crash mid-append, cut off), never started over."""
        cert = verify_chip_certificate(certificate, self._root)
        verifier = LogVerifier(cert, self._root)
        path = self.log_path(cert.serial)
        if path.exists():
            data = path.read_bytes()
            lines, torn = split_log(data)
            for line in lines:
                problems = verifier.feed(line)
                if problems:
                    raise ReportError(f"stored copy {str(path)!r}: entry {problems[0].entry}: {problems[0].problem}")
            if torn:
                with open(path, "r+b") as fh:
                    fh.truncate(len(data) - torn)
                    os.fsync(fh.fileno())
        self._chips[cert.serial] = verifier
        return cert

    def log_path(self, serial: str) -> Path:
        return self._dir / f"{serial}.log"

    def send(self, line: bytes) -> bytes | None:
        try:
            serial = parse_entry_line(line)["serial"]
        except ComputewatchError as exc:
            self.rejected.append(f"malformed entry: {exc}")
            log.warning("receiver refused a malformed entry: %s", exc)
            return None
        verifier = self._chips.get(serial)
        if verifier is None:
            self.rejected.append(f"unregistered chip {serial!r}")
            log.warning("receiver refused an entry of the unregistered chip %r", serial)
            return None
        saved = verifier.save_state()
        problems = verifier.feed(line)
        if problems:
            # A receiver that stored a bad entry would poison its copy; refuse and do not ack.
            # The refused line must not move the chain either, or the genuine entry would fail next.
            verifier.restore_state(saved)
            self.rejected.extend(p.problem for p in problems)
            log.warning("receiver refused entry of chip %s: %s", serial, problems[0].problem)
            return None
        try:
            append_durable(self.log_path(serial), line + b"\n")
        except BaseException:
            verifier.restore_state(saved)
            log.exception("receiver could not store entry of chip %s", serial)
            raise
        return expected_ack(serial, verifier.position - 1, line)


class SilentTransport:
    """A link that delivers nothing and never acknowledges (the receiver is unreachable)."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, line: bytes) -> bytes | None:
        self.sent += 1
        return None


class FailingTransport:
    """A link whose sends raise, as a dropped connection would."""

    def send(self, line: bytes) -> bytes | None:
        raise ConnectionError("link to the receiver is down")


def check_ack(ack: bytes | None, serial: str, counter: int, line: bytes) -> None:
    if ack is None:
        raise ReportError(f"entry {counter}: the receiver did not acknowledge; the chip stays frozen")
    if ack != expected_ack(serial, counter, line):
        raise ReportError(f"entry {counter}: the receiver's ack does not match the entry sent")
