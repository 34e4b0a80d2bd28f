"""Unbiased integers from a BLAKE3 keyed-hash XOF: the one rejection sampler behind the run's
data order (`formats.seed.data_order`) and the Verifier's inspection draw
(`registry.planning.draw`).

The stream is the XOF of BLAKE3-keyed(key, message) read as consecutive 64-bit little-endian
words. `below(bound)` takes words until one, w, is below 2**64 - (2**64 mod bound) and returns
w mod bound; rejecting the top partial block keeps every value in 0..bound-1 equally likely.
The XOF is read by offset, so how many words are fetched at a time never changes the stream.
Definition and test vector: docs/formats.md ("XOF sampler").
"""

from __future__ import annotations

import blake3 as _blake3

from computewatch.crypto.errors import FormatError

__all__ = ["XofSampler"]

_WORD = 8
_TWO64 = 1 << 64


class XofSampler:
    """Draws integers below a bound from BLAKE3-keyed(key, message)'s XOF, words in order."""

    def __init__(self, key: bytes, message: bytes, *, read_words: int = 4096) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
            raise FormatError("XOF sampler key must be 32 bytes")
        if not isinstance(read_words, int) or read_words < 1:
            raise FormatError(f"read_words must be a positive integer, got {read_words!r}")
        self._xof = _blake3.blake3(bytes(message), key=bytes(key))
        self._read = read_words
        self._offset = 0
        self._words: list[int] = []
        self._next = 0

    def word(self) -> int:
        """The stream's next 64-bit word."""
        if self._next == len(self._words):
            chunk = self._xof.digest(length=_WORD * self._read, seek=self._offset)
            self._offset += len(chunk)
            self._words = [int.from_bytes(chunk[i : i + _WORD], "little") for i in range(0, len(chunk), _WORD)]
            self._next = 0
        w = self._words[self._next]
        self._next += 1
        return w

    def below(self, bound: int) -> int:
        """A uniform integer in 0..bound-1 (1 <= bound <= 2**64)."""
        if not isinstance(bound, int) or isinstance(bound, bool) or not 1 <= bound <= _TWO64:
            raise FormatError(f"sampler bound must be an integer in 1..2**64, got {bound!r}")
        limit = _TWO64 - (_TWO64 % bound)
        while True:
            w = self.word()
            if w < limit:
                return w % bound
