"""computewatch.chip: a software model of an ML chip and its monitoring firmware (paper §4).

The Prover's API: `provision_chips`, `Chip.open(...).boot()`, `attach`, `log_precommitment`,
`log_memory_map`, `step_boundary`, `close`. Verifiers use `audit_log` and `verify_attestation`.
Formats: docs/formats.md.

Names are imported on first use: the simulator (`Chip`, `provision_chips`, `SnapshotRecord`)
needs torch, while a Verifier that only audits logs (`audit_log`, `LogEntry`, `verify_attestation`)
does not load it.
"""

from __future__ import annotations

from computewatch._lazy import lazy_exports

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

_WHERE = {
    "MAX_STEP_BUSY_S": "chip",
    "AttestationClaims": "computewatch.formats.attestation",
    "AttestationError": "errors",
    "AuditReport": "computewatch.formats.chip_audit",
    "BootError": "errors",
    "Chip": "chip",
    "ChipCertificate": "computewatch.formats.identity",
    "ChipError": "errors",
    "ChipFrozenError": "errors",
    "Chipmaker": "chipmaker",
    "ClockReading": "clock",
    "FailingTransport": "transport",
    "FirmwareImage": "computewatch.formats.firmware",
    "FirmwarePolicy": "computewatch.formats.firmware",
    "HostMonotonicClock": "clock",
    "InProcessReceiver": "transport",
    "LogEntry": "computewatch.formats.chip_entry",
    "LogVerifier": "computewatch.formats.chip_audit",
    "Problem": "computewatch.formats.chip_audit",
    "ReportError": "errors",
    "SecureClock": "clock",
    "SilentTransport": "transport",
    "SimulatedClock": "clock",
    "SnapshotRecord": "snapshot",
    "Transport": "transport",
    "audit_log": "computewatch.formats.chip_audit",
    "load_certificate": "chip",
    "manufacture_chip": "chip",
    "provision_chips": "chip",
    "verify_attestation": "computewatch.formats.attestation",
    "verify_chip_certificate": "computewatch.formats.identity",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
