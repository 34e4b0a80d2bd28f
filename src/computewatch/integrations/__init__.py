"""computewatch.integrations: monitoring where labs already train.

- `RunConfig` (chip, checkpoint and distributed sections): how a run is recorded, taken by
  every entry point below as ``config=``;
- `monitor` / `Monitor`: a plain PyTorch loop (also exported as ``computewatch.monitor``);
- `computewatch.integrations.hf`: `MonitoredTrainer` for the Hugging Face Trainer
  (``pip install computewatch[hf]``);
- `computewatch.integrations.lightning`: `ComputewatchCallback` for Lightning, one process or
  DDP (``pip install computewatch[lightning]``);
- `computewatch.integrations.datasets`: the committed samples as the frameworks see them;
- `computewatch.integrations.selfcheck`: replay a recorded run through its training program,
  as the Verifier will, before handing it over.

Every run recorded here names a training program (docs/formats.md, "Training program"): the
caller's own files for `monitor`, the files of `computewatch/integrations/program/` for the
frameworks. Names are imported lazily: this package never imports transformers or lightning
unless their integration is used. See docs/integrations.md.
"""

from __future__ import annotations

from computewatch._lazy import lazy_exports

__all__ = [
    "CheckpointConfig",
    "ChipConfig",
    "DistributedConfig",
    "IntegrationError",
    "Monitor",
    "MonitorOptions",
    "RunConfig",
    "SampleFile",
    "SyntheticTokens",
    "check_run",
    "encode_block",
    "monitor",
    "verify_command",
    "write_sample_file",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CheckpointConfig": "computewatch.prover.config",
        "ChipConfig": "computewatch.prover.config",
        "DistributedConfig": "computewatch.prover.config",
        "IntegrationError": "session",
        "Monitor": "plain",
        "MonitorOptions": "session",
        "RunConfig": "computewatch.prover.config",
        "SampleFile": "datasets",
        "SyntheticTokens": "datasets",
        "check_run": "selfcheck",
        "encode_block": "datasets",
        "monitor": "plain",
        "verify_command": "session",
        "write_sample_file": "datasets",
    },
)
