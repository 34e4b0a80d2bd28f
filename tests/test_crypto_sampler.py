"""The one XOF rejection sampler (crypto.sampler): its docs/formats.md vector, its rejection,
and the two draws built on it (data order, inspection draw) unchanged from before it existed."""

from __future__ import annotations

import hashlib
import json

import pytest

from computewatch.crypto import FormatError, XofSampler
from computewatch.formats.seed import data_order
from computewatch.registry.errors import PlanError
from computewatch.registry.planning import draw

_KEY, _MESSAGE = bytes(32), b"computewatch sampler vector"
_WORDS = "c4a0a78c5c6d052b 119f3ee52695c185 157dfc0e1ba45a68 6e55a9ee1c62d4f0 923e1d6d49858989 ec47b8a063d03e1a 5eafcb593aecb536 a81dccdb5c4f2eca"
_SEED = bytes(range(32))
_PLAN = hashlib.sha256(b"plan").hexdigest()


def _digest(values: list[int]) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:32]


def test_vector_words_and_draws() -> None:
    sampler = XofSampler(_KEY, _MESSAGE)
    assert [f"{sampler.word():016x}" for _ in range(8)] == _WORDS.split()
    sampler = XofSampler(_KEY, _MESSAGE)
    assert [sampler.below(b) for b in (1, 2, 6, 1000, 2**63 + 1)] == [0, 1, 2, 400, 6822895544590710070]


@pytest.mark.parametrize("read_words", [1, 3, 4096])
def test_rejection_consumes_words_and_chunking_never_changes_the_stream(read_words: int) -> None:
    sampler = XofSampler(_KEY, _MESSAGE, read_words=read_words)
    words = [int(w, 16) for w in _WORDS.split()]
    for _ in range(4):
        sampler.word()
    # words 5 and 6 are >= 2**63 + 1 (rejected); word 7 is accepted
    assert words[4] >= 2**63 + 1 and words[5] >= 2**63 + 1 and words[6] < 2**63 + 1
    assert sampler.below(2**63 + 1) == words[6]
    assert sampler.word() == words[7]


def test_bad_bounds_and_keys_are_refused() -> None:
    sampler = XofSampler(_KEY, _MESSAGE)
    for bound in (0, -1, 2**64 + 1, True, 1.5):
        with pytest.raises(FormatError, match="bound"):
            sampler.below(bound)  # type: ignore[arg-type]
    assert sampler.below(2**64) == int(_WORDS.split()[0], 16)  # the whole word, nothing rejected
    with pytest.raises(FormatError, match="32 bytes"):
        XofSampler(b"short", _MESSAGE)
    with pytest.raises(PlanError):
        draw(_SEED, _PLAN, 2**64 + 1, 1)


def test_data_order_unchanged() -> None:
    # Outputs of formats.seed.data_order before it used the shared sampler (main at cc39427).
    assert data_order(_SEED, 10, 0) == [7, 2, 0, 8, 3, 4, 9, 6, 1, 5]
    assert data_order(_SEED, 10, 3) == [3, 5, 1, 9, 2, 0, 7, 6, 8, 4]
    assert _digest(data_order(_SEED, 20000, 1)) == "33766f3f5c71483718d4844556fb6912"
    assert _digest(data_order(_SEED, 8193, 0)) == "5e39ca7353045c65616f64ceb8ad9b79"


def test_inspection_draw_unchanged() -> None:
    # Outputs of registry.planning.draw before it used the shared sampler (main at cc39427).
    assert draw(_SEED, _PLAN, 100, 10) == [79, 60, 7, 37, 54, 53, 25, 75, 27, 81]
    assert draw(_SEED, _PLAN, 5, 5) == [4, 3, 2, 1, 0]
    assert draw(_SEED, _PLAN, 3, 0) == []
    assert _digest(draw(_SEED, _PLAN, 10**6, 5000)) == "e8a313a142703bea41f5b5f120a48465"
    assert _digest(draw(_SEED, _PLAN, 2**40, 100)) == "2e668bfb9ea61ae9c6e571aaa1e9eb2e"
    assert _digest(draw(_SEED, _PLAN, 2**63 + 1, 50)) == "2cd2a27057914777a2b91c9c5c47bfb4"  # rejection exercised
