"""Samples as bytes: token blocks, and where a program finds them (docs/integrations.md).

A sample is one token block, encoded ``computewatch/token-block-v1``: the UTF-8 canonical JSON
``{"input_ids":[...],"labels":[...]}`` (keys sorted, no whitespace, integers only). Its BLAKE3
hash is what the dataset commitment binds; the trainer itself is fed these bytes through
`collate_micro`, so the bytes a Verifier rebuilds are exactly what the model saw.

Sources (the ``data`` record of the hyperparameters):

- ``{"kind": "synthetic-tokens", "seed", "size", "block_size", "vocab_size"}``: made here from
  the record alone (sample i: an arithmetic sequence mod ``vocab_size`` whose start and stride
  come from BLAKE2b of ``"<seed>/<i>"``), for tests and examples: no download, no files;
- ``{"kind": "sample-file", "file", "size"}``: line i of ``<data_dir>/<file>`` is sample i's
  bytes (the Prover's raw data, handed to the trusted cluster as ``data_dir``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ENCODING",
    "SampleFile",
    "SyntheticTokens",
    "collate_micro",
    "data_source",
    "decode_block",
    "encode_block",
    "micro_batches",
]

ENCODING = "computewatch/token-block-v1"
_KEYS = ("input_ids", "labels")


def encode_block(input_ids: Sequence[int], labels: Sequence[int] | None = None) -> bytes:
    ids = [int(t) for t in input_ids]
    lab = ids if labels is None else [int(t) for t in labels]
    if not ids or len(lab) != len(ids):
        raise ValueError("a token block needs at least one token and as many labels as tokens")
    return json.dumps({"input_ids": ids, "labels": lab}, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode_block(sample: bytes) -> dict[str, list[int]]:
    try:
        block = json.loads(sample)
    except ValueError:
        block = None
    ok = isinstance(block, dict) and tuple(sorted(block)) == _KEYS and all(isinstance(block[k], list) for k in _KEYS)
    if not ok or encode_block(block["input_ids"], block["labels"]) != bytes(sample):
        raise ValueError(f"sample is not a {ENCODING} block")
    return block


def collate_micro(samples: Sequence[bytes]) -> dict[str, torch.Tensor]:
    """One micro-batch: int64 tensors [len(samples), block] per key (what the trainer is fed)."""
    blocks = [decode_block(s) for s in samples]
    return {k: torch.tensor([b[k] for b in blocks], dtype=torch.long) for k in _KEYS}


def micro_batches(samples: Sequence[bytes], size: int) -> list[dict[str, torch.Tensor]]:
    """Consecutive micro-batches of `size` samples (the last one shorter when `size` does not
    divide): a rank's part of a global batch is exactly its accumulation steps, and a Verifier's
    single-sample batch (memorization test) is one micro-batch."""
    if not samples or size < 1:
        raise ValueError(f"cannot make micro-batches of {size} from {len(samples)} samples")
    return [collate_micro(samples[i : i + size]) for i in range(0, len(samples), size)]


class SyntheticTokens:
    """A seeded synthetic corpus of learnable token blocks, rebuilt from its record alone."""

    KIND = "synthetic-tokens"

    def __init__(self, seed: int, size: int, block_size: int, vocab_size: int) -> None:
        if size < 1 or block_size < 2 or vocab_size < 2:
            raise ValueError("synthetic tokens need size >= 1, block_size >= 2, vocab_size >= 2")
        self.seed, self.size, self.block_size, self.vocab_size = int(seed), int(size), int(block_size), int(vocab_size)

    @property
    def spec(self) -> dict[str, Any]:
        return {"kind": self.KIND, "seed": self.seed, "size": self.size, "block_size": self.block_size, "vocab_size": self.vocab_size}

    def __len__(self) -> int:
        return self.size

    def sample(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise IndexError(f"sample {index} outside 0..{self.size - 1}")
        h = hashlib.blake2b(f"{self.seed}/{index}".encode(), digest_size=16).digest()
        start = int.from_bytes(h[:8], "little") % self.vocab_size
        stride = 1 + int.from_bytes(h[8:], "little") % (self.vocab_size - 1)
        return encode_block([(start + stride * j) % self.vocab_size for j in range(self.block_size)])


class SampleFile:
    """Samples stored one per line in a file of the data folder."""

    KIND = "sample-file"

    def __init__(self, data_dir: Path | None, file: str, size: int) -> None:
        if data_dir is None:
            raise ValueError(f"this run's samples are in {file!r} of the Prover's data folder; pass that folder as data_dir")
        if "/" in file or "\\" in file or file in ("", ".", ".."):
            raise ValueError(f"sample file name {file!r} must be a plain file name")
        lines = (Path(data_dir) / file).read_bytes().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        if len(lines) != size:
            raise ValueError(f"{Path(data_dir) / file} holds {len(lines)} samples, the record says {size}")
        self.folder, self.file, self.size, self._lines = Path(data_dir), file, size, lines

    @property
    def spec(self) -> dict[str, Any]:
        return {"kind": self.KIND, "file": self.file, "size": self.size}

    def __len__(self) -> int:
        return self.size

    def sample(self, index: int) -> bytes:
        return self._lines[index]


def data_source(spec: Any, data_dir: Path | None) -> SyntheticTokens | SampleFile:
    """The sample source a ``data`` record names."""
    if not isinstance(spec, dict):
        raise ValueError(f"data record must be an object, got {spec!r}")
    try:
        if spec.get("kind") == SyntheticTokens.KIND:
            return SyntheticTokens(spec["seed"], spec["size"], spec["block_size"], spec["vocab_size"])
        if spec.get("kind") == SampleFile.KIND:
            return SampleFile(data_dir, spec["file"], spec["size"])
    except KeyError as exc:
        raise ValueError(f"data record lacks {exc}") from None
    raise ValueError(f"unknown data source {spec.get('kind')!r}; known: {SyntheticTokens.KIND!r}, {SampleFile.KIND!r}")
