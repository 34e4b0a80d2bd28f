"""The one run configuration the entry-point tests share (tests/test_prover_config.py, test_integrations_*.py):
one thread, no chips, a checkpoint every 2 steps."""

from computewatch.prover.config import CheckpointConfig, ChipConfig, RunConfig

SHARED = RunConfig(threads=1, chip=ChipConfig(enabled=False), checkpoint=CheckpointConfig(every=2))
