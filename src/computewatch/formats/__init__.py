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

from computewatch._lazy import lazy_exports

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
__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
