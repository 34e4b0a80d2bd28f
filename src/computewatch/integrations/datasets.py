"""The committed dataset as the frameworks see it, and the sample sources of the programs.

- `SyntheticTokens` (made from its record alone) and `SampleFile` (one sample per line of a
  file in the Prover's data folder) are the programs' own sources (`program/data.py`);
  `write_sample_file` stores a lab's own token blocks that way and returns the `SampleFile`.
- `CommittedSamples`: a map-style dataset whose item i is sample i's bytes, which the program's
  `collate_micro` turns into tensors: the trainer is fed exactly the committed bytes.
- `CommittedSampler`: the sample ids in the committed order, remembering what it handed out so
  that each recorded step can be checked against what the data loader really drew.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from computewatch.crypto.atomic import atomic_write
from computewatch.integrations.program.data import (
    ENCODING,
    SampleFile,
    SyntheticTokens,
    collate_micro,
    decode_block,
    encode_block,
)

__all__ = [
    "ENCODING",
    "CommittedSampler",
    "CommittedSamples",
    "SampleFile",
    "SyntheticTokens",
    "collate_micro",
    "decode_block",
    "encode_block",
    "write_sample_file",
]

SAMPLE_FILE = "samples.jsonl"


def write_sample_file(samples: Iterable[bytes], data_dir: str | os.PathLike[str], file: str = SAMPLE_FILE) -> SampleFile:
    """Store token blocks (`encode_block` bytes), one per line, atomically; the source reads them back."""
    rows = [bytes(s) for s in samples]
    for i, row in enumerate(rows):
        decode_block(row)  # refuses anything that is not a canonical token block (no newlines inside)
        if not row:
            raise ValueError(f"sample {i} is empty")
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / file, b"".join(r + b"\n" for r in rows))
    return SampleFile(folder, file, len(rows))


class CommittedSamples(torch.utils.data.Dataset):
    """The committed samples as a dataset: item i is sample i's bytes."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> bytes:
        return self.source.sample(int(index))


class CommittedSampler(torch.utils.data.Sampler[int]):
    """Sample ids step by step in the committed order (``order[t]``: this rank's ids of step t).

    The order may be filled in after construction (Lightning knows the world size only once its
    processes run). Ids handed out wait in `drawn` until `take` checks them against a step."""

    def __init__(self, order: Sequence[Sequence[int]] = ()) -> None:
        self.order: list[list[int]] = [list(ids) for ids in order]
        self.drawn: deque[int] = deque()

    def __len__(self) -> int:
        return sum(len(ids) for ids in self.order)

    def __iter__(self) -> Iterator[int]:
        for ids in self.order:
            for i in ids:
                self.drawn.append(i)
                yield i

    def take(self, count: int) -> list[int]:
        """The next `count` ids the data loader drew (fewer if it has not drawn them)."""
        return [self.drawn.popleft() for _ in range(min(count, len(self.drawn)))]

