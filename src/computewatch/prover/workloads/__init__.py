"""Demo workloads for the Prover: byte-level text from the stdlib, a tiny MLP, a small transformer.

`preset(name)` gives a `Workload` ("mlp", "tiny", "small"); see presets.py for the training step
and determinism.py for what exact replay needs.
"""

from computewatch.prover.workloads.char_transformer import CharTransformer
from computewatch.prover.workloads.determinism import (
    deterministic_cpu,
    replay_environment,
)
from computewatch.prover.workloads.mlp import TinyMLP
from computewatch.prover.workloads.presets import PRESETS, Workload, preset
from computewatch.prover.workloads.text import STDLIB_SOURCE, TextCorpus, stdlib_files

__all__ = [
    "PRESETS",
    "STDLIB_SOURCE",
    "CharTransformer",
    "TextCorpus",
    "TinyMLP",
    "Workload",
    "deterministic_cpu",
    "preset",
    "replay_environment",
    "stdlib_files",
]
