"""computewatch.formats: the published formats of docs/formats.md, as code.

Everything a party needs to read, write and check the bytes the chip and the Prover produce:
chip log entries and their audit, certificates, firmware manifests, snapshot schedules,
attestation evidence; the dataset commitment and PoTD seed derivation, the precommitment, the
signed run manifest, step records, checkpoints, shard layouts, snapshot records and run
storage. It imports only `computewatch.crypto` (and torch, safetensors, fsspec), never the
actors: the chip and the Prover write through it, and the Verifier reads through it, so that a
Verifier built on it audits evidence from any implementation of these formats. Names are
imported lazily, so `import computewatch.formats.<module>` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from computewatch._lazy import lazy_exports

if TYPE_CHECKING:  # the names as the type checker sees them; at run time _WHERE loads them on first use
    from computewatch.formats.attestation import AttestationClaims, verify_attestation
    from computewatch.formats.checkpoint import Checkpoint, CheckpointIndex
    from computewatch.formats.chip_audit import AuditReport, LogVerifier, Problem, audit_log, verify_covered_entry
    from computewatch.formats.chip_entry import LogEntry
    from computewatch.formats.dataset import DatasetCommitment
    from computewatch.formats.errors import AttestationError, BootError
    from computewatch.formats.identity import ChipCertificate, verify_chip_certificate
    from computewatch.formats.layout import ShardLayout
    from computewatch.formats.manifest import Manifest, read_manifest
    from computewatch.formats.precommitment import Precommitment, code_digest
    from computewatch.formats.seed import batches, derive_run_seed, init_generator
    from computewatch.formats.steps import StepLog, StepRecord
    from computewatch.formats.storage import ObjectStore, RunStorage, StoreError

_WHERE = {
    "AttestationClaims": "attestation",
    "AttestationError": "errors",
    "AuditReport": "chip_audit",
    "BootError": "errors",
    "ChipCertificate": "identity",
    "Checkpoint": "checkpoint",
    "CheckpointIndex": "checkpoint",
    "DatasetCommitment": "dataset",
    "LogEntry": "chip_entry",
    "LogVerifier": "chip_audit",
    "Manifest": "manifest",
    "ObjectStore": "storage",
    "Precommitment": "precommitment",
    "Problem": "chip_audit",
    "RunStorage": "storage",
    "ShardLayout": "layout",
    "StepLog": "steps",
    "StepRecord": "steps",
    "StoreError": "storage",
    "audit_log": "chip_audit",
    "batches": "seed",
    "code_digest": "precommitment",
    "derive_run_seed": "seed",
    "init_generator": "seed",
    "read_manifest": "manifest",
    "verify_attestation": "attestation",
    "verify_chip_certificate": "identity",
    "verify_covered_entry": "chip_audit",
}
__all__ = [
    "AttestationClaims",
    "AttestationError",
    "AuditReport",
    "BootError",
    "Checkpoint",
    "CheckpointIndex",
    "ChipCertificate",
    "DatasetCommitment",
    "LogEntry",
    "LogVerifier",
    "Manifest",
    "ObjectStore",
    "Precommitment",
    "Problem",
    "RunStorage",
    "ShardLayout",
    "StepLog",
    "StepRecord",
    "StoreError",
    "audit_log",
    "batches",
    "code_digest",
    "derive_run_seed",
    "init_generator",
    "read_manifest",
    "verify_attestation",
    "verify_chip_certificate",
    "verify_covered_entry",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
