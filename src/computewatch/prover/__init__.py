"""computewatch.prover: the data center's side (paper §5, Appendix D).

A transcript 𝕋 = {𝕄, 𝔻, 𝕎} for every run, kept by a `Recorder` wrapped around an ordinary
PyTorch loop: signed manifest and precommitment (logged by each chip before the first step),
per-step batch records, content-addressed checkpoints, and the raw shards the chips copied out.
Formats: docs/formats.md. Names are imported lazily so that `import
computewatch.prover.<module>` stays cheap.
"""

from __future__ import annotations

from computewatch._lazy import lazy_exports

__all__ = [
    "BackgroundWriter",
    "Checkpoint",
    "CheckpointIndex",
    "CorruptObjectError",
    "DatasetCommitment",
    "Manifest",
    "ObjectStore",
    "Precommitment",
    "Recorder",
    "RunStorage",
    "ShardLayout",
    "StepLog",
    "StepRecord",
    "StoreError",
    "TrainConfig",
    "Transcript",
    "batches",
    "code_digest",
    "derive_run_seed",
    "export_hashes",
    "init_generator",
    "new_nonce",
    "preset",
    "read_manifest",
    "resume_point",
    "shard_model",
    "sign_export",
    "train",
]

_WHERE = {
    "BackgroundWriter": "writer",
    "Checkpoint": "computewatch.formats.checkpoint",
    "CheckpointIndex": "computewatch.formats.checkpoint",
    "CorruptObjectError": "computewatch.formats.storage",
    "DatasetCommitment": "computewatch.formats.dataset",
    "Manifest": "computewatch.formats.manifest",
    "ObjectStore": "computewatch.formats.storage",
    "Precommitment": "computewatch.formats.precommitment",
    "Recorder": "recorder",
    "RunStorage": "computewatch.formats.storage",
    "ShardLayout": "computewatch.formats.layout",
    "StepLog": "computewatch.formats.steps",
    "StepRecord": "computewatch.formats.steps",
    "StoreError": "computewatch.formats.storage",
    "TrainConfig": "runner",
    "Transcript": "transcript",
    "batches": "computewatch.formats.seed",
    "code_digest": "computewatch.formats.precommitment",
    "derive_run_seed": "computewatch.formats.seed",
    "export_hashes": "export",
    "init_generator": "computewatch.formats.seed",
    "new_nonce": "computewatch.formats.seed",
    "preset": "workloads",
    "read_manifest": "computewatch.formats.manifest",
    "resume_point": "recorder",
    "shard_model": "distributed",
    "sign_export": "export",
    "train": "runner",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
