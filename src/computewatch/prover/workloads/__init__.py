"""Demo workloads for the Prover: byte-level text from the stdlib, a tiny MLP, a small transformer.

`preset(name)` gives a `Workload` ("mlp", "tiny", "small"); see presets.py for the training step.
These files are also the demo's training program (docs/formats.md, "Training program"): the
entry `program:make_program` rebuilds a Workload from the precommitted hyperparameters, so a
Verifier replays the demo through the same contract as any lab's code. They import each other
relatively, because the Verifier imports them from a private copy bound by the code digest.
"""

from .char_transformer import CharTransformer
from .mlp import TinyMLP
from .presets import PRESETS, Workload, preset
from .text import STDLIB_SOURCE, TextCorpus, stdlib_files

__all__ = [
    "PRESETS",
    "STDLIB_SOURCE",
    "CharTransformer",
    "TextCorpus",
    "TinyMLP",
    "Workload",
    "preset",
    "stdlib_files",
]
