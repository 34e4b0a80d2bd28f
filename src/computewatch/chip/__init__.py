"""computewatch.chip: a software model of an ML chip and its monitoring firmware (paper §4).

The Prover's API: `provision_chips`, `Chip.open(...).boot()`, `attach`, `log_precommitment`,
`log_memory_map`, `step_boundary`, `close`. Verifiers use `audit_log` and `verify_attestation`.
Formats: docs/formats.md.
"""

from __future__ import annotations

from computewatch.chip.chip import (
    MAX_STEP_BUSY_S,
    Chip,
    load_certificate,
    manufacture_chip,
    provision_chips,
)
from computewatch.chip.chipmaker import Chipmaker
from computewatch.chip.clock import (
    ClockReading,
    HostMonotonicClock,
    SecureClock,
    SimulatedClock,
)
from computewatch.chip.errors import (
    AttestationError,
    BootError,
    ChipError,
    ChipFrozenError,
    ReportError,
)
from computewatch.chip.snapshot import SnapshotRecord
from computewatch.chip.transport import (
    FailingTransport,
    InProcessReceiver,
    SilentTransport,
    Transport,
)
from computewatch.formats.attestation import AttestationClaims, verify_attestation
from computewatch.formats.chip_audit import AuditReport, LogVerifier, Problem, audit_log
from computewatch.formats.chip_entry import LogEntry
from computewatch.formats.firmware import FirmwareImage, FirmwarePolicy
from computewatch.formats.identity import ChipCertificate, verify_chip_certificate

__all__ = [
    "MAX_STEP_BUSY_S",
    "AttestationClaims",
    "AttestationError",
    "AuditReport",
    "BootError",
    "Chip",
    "ChipCertificate",
    "ChipError",
    "ChipFrozenError",
    "Chipmaker",
    "ClockReading",
    "FailingTransport",
    "FirmwareImage",
    "FirmwarePolicy",
    "HostMonotonicClock",
    "InProcessReceiver",
    "LogEntry",
    "LogVerifier",
    "Problem",
    "ReportError",
    "SecureClock",
    "SilentTransport",
    "SimulatedClock",
    "SnapshotRecord",
    "Transport",
    "audit_log",
    "load_certificate",
    "manufacture_chip",
    "provision_chips",
    "verify_attestation",
    "verify_chip_certificate",
]
