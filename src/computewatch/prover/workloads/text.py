"""Byte-level text from the Python standard library's own source: a corpus every machine has.

File rule (stable, documented in docs/formats.md): the ``*.py`` files directly inside
``sysconfig.get_paths()["stdlib"]``, not recursing into any sub-folder (so ``site-packages``,
``test``, ``idlelib``, ``lib2to3`` ... never enter), sorted by file name as Unicode code points,
read as raw bytes and concatenated with nothing between them, truncated to ``max_bytes``.
The vocabulary is the 256 byte values, the same everywhere; the stdlib's content does differ
across Python versions, and the dataset commitment (per-sample hashes) records exactly which
bytes were used, so a Verifier holding another Python notices at once.

Samples are the non-overlapping windows ``data[i*(B+1) : (i+1)*(B+1)]`` of ``B + 1`` bytes
(``B`` = block size): inputs are the first ``B`` bytes, targets the last ``B``. A trailing
partial window is dropped.
"""

from __future__ import annotations

import functools
import sys
import sysconfig
from pathlib import Path

from computewatch.crypto.errors import ComputewatchError, FormatError

__all__ = ["STDLIB_SOURCE", "TextCorpus", "stdlib_files"]

STDLIB_SOURCE = "python-stdlib-toplevel-py"


def stdlib_files(stdlib_dir: str | Path | None = None) -> list[Path]:
    """The corpus files in order: top-level ``*.py`` of the stdlib folder, sorted by name."""
    folder = Path(sysconfig.get_paths()["stdlib"] if stdlib_dir is None else stdlib_dir)
    if not folder.is_dir():
        raise ComputewatchError(f"Python standard library folder {folder} not found")
    return sorted((p for p in folder.glob("*.py") if p.is_file()), key=lambda p: p.name)


@functools.lru_cache(maxsize=4)
def _stdlib_bytes(max_bytes: int) -> bytes:
    # Cached: presets and tests ask for the same corpus many times in one process.
    parts: list[bytes] = []
    total = 0
    for path in stdlib_files():
        if total >= max_bytes:
            break
        data = path.read_bytes()[: max_bytes - total]
        parts.append(data)
        total += len(data)
    return b"".join(parts)


class TextCorpus:
    """Fixed-length byte windows over a text; ``sample(i)`` is the i-th window's raw bytes."""

    def __init__(self, data: bytes, block_size: int, *, source: str = "bytes") -> None:
        if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
            raise FormatError(f"block_size must be a positive integer, got {block_size!r}")
        if not isinstance(data, (bytes, bytearray)):
            raise FormatError(f"corpus data must be bytes, got {type(data).__name__}")
        self._data = bytes(data)
        self.block_size = block_size
        self.sample_size = block_size + 1
        self.source = source
        self._count = len(self._data) // self.sample_size
        if self._count == 0:
            raise FormatError(f"corpus of {len(self._data)} bytes holds no sample of {self.sample_size} bytes")

    @classmethod
    def from_stdlib(cls, block_size: int, max_bytes: int) -> TextCorpus:
        """The standard-library corpus (see the module docstring for the file rule)."""
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
            raise FormatError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        return cls(_stdlib_bytes(max_bytes), block_size, source=STDLIB_SOURCE)

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes covered by samples (the tail that fills no window is excluded)."""
        return self._count * self.sample_size

    def sample(self, index: int) -> bytes:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self._count:
            raise FormatError(f"sample index {index!r} outside 0..{self._count - 1}")
        start = index * self.sample_size
        return self._data[start : start + self.sample_size]

    def describe(self) -> dict[str, object]:
        """What the hyperparameters record about the corpus (the commitment records the bytes)."""
        info: dict[str, object] = {"source": self.source, "sample_bytes": self.sample_size, "samples": self._count}
        if self.source == STDLIB_SOURCE:
            # The stdlib's text is per Python release: say which one supplied it.
            info["python"] = ".".join(map(str, sys.version_info[:3]))
        return info

    def __repr__(self) -> str:
        return f"TextCorpus(source={self.source!r}, samples={self._count}, sample_bytes={self.sample_size})"
