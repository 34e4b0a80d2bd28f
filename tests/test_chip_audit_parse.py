"""The native strict reader of log lines (`_chiplog.parse_line`, issue 24) and the native tree root.

`chip_entry._parse_line` asks the native reader first; whatever it takes must read exactly as the
Python paths read it (json.loads with the re-encoding check, or the careful RFC 8785 parse), and
whatever it declines goes to them as before. Compared here over every line of a real log, lines
of every shape JSON allows, and random byte mutations."""

from __future__ import annotations

import json
import os
import random
from typing import Any
from unittest import mock

import pytest

from computewatch import _native
from computewatch.chip import Chip, provision_chips
from computewatch.chip.exercise import run_steps, small_shard
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.merkle import MerkleTree
from computewatch.formats import chip_entry
from computewatch.formats.chip_entry import split_log
from _chips import TEST_SECRET_SEED


def _native_off() -> Any:
    """The Python paths alone (the native module turned off)."""
    return mock.patch.dict(os.environ, {"COMPUTEWATCH_NATIVE": "0"})


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    root = tmp_path_factory.mktemp("parse")
    (state,) = provision_chips(root, 1, snapshots_per_day=48.0, checkpoint_every=4, secret_seed=TEST_SECRET_SEED)
    chip = Chip.open(state)
    chip.boot()
    chip.attach(small_shard(0), root / "storage")
    run_steps(chip, 8, 4 * 3600.0)
    chip.attest(bytes(16))
    chip.close()
    return split_log(chip.log_path.read_bytes())[0]


def _read(line: bytes) -> list[tuple[str, Any]]:
    """What `_parse_line` and `parse_entry_line` make of a line: ("ok", value) or ("error", message)."""
    out: list[tuple[str, Any]] = []
    for read in (chip_entry._parse_line, chip_entry.parse_entry_line):
        try:
            out.append(("ok", read(line)))
        except ComputewatchError as exc:
            out.append(("error", str(exc)))
    return out


def _same(line: bytes) -> Any:
    """The native reader's value (None: declined) after checking both paths read `line` alike."""
    module = _native.chiplog()
    assert module is not None
    value = module.parse_line(line)
    native = _read(line)
    with _native_off():
        reference = _read(line)
    assert native == reference, line[:200]
    if value is not None:  # taken: exactly the value json gives, and the line is its encoding
        assert value == json.loads(line) and chip_entry._dumps(value).encode() == line
        assert type(value) is dict and not chip_entry._has_float(value)
    return value


def test_every_line_of_a_log_is_read_natively_and_alike(lines: list[bytes]) -> None:
    kinds = set()
    for line in lines:
        assert _same(line) is not None
        kinds.add(json.loads(line)["kind"])
    assert {"boot", "snapshot", "checkpoint", "schedule-commit", "schedule-reveal", "shutdown"} <= kinds


@pytest.mark.parametrize(
    "text",
    [
        b"{}",
        b'{"a":[]}',
        b'{"a":{}}',
        b'{"a":[1,true,false,null,"x",{"b":[[]]}]}',
        b'{"a":1,"a":2}',  # duplicate key
        b'{"b":1,"a":2}',  # unsorted
        b'{"a":1,"ab":2,"b":3}',
        b'{"ab":1,"a":2}',
        b'{"a":1.0}',
        b'{"a":1e3}',
        b'{"a":1E3}',
        b'{"a":-1}',
        b'{"a":-0}',
        b'{"a":01}',
        b'{"a":0}',
        b'{"a":123456789012345}',  # 15 digits: taken
        b'{"a":1234567890123456}',  # 16 digits: declined (may exceed 2**53)
        b'{"a":9007199254740993}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a": 1}',
        b'{ "a":1}',
        b'{"a":1} ',
        b'{"a":1}x',
        b'{"a":1,}',
        b'{"a":[1,]}',
        b'{"a":"\\u0041"}',
        b'{"a":"\\n"}',
        b'{"a":"/"}',
        b'{"a":"\x7f"}',
        b'{"a":"\x1f"}',
        b'{"a":"caf\xc3\xa9"}',
        b'{"\xc3\xa9":1}',
        b'{"a":"x:1234567890123456"}',  # a long number only in a string
        b'{"a":tru}',
        b'{"a":nul}',
        b'{"a":[1}',
        b'{"a"',
        b"{",
        b"",
        b"[]",
        b"1",
        b'"a"',
        b"{" * 40 + b"}" * 40,
        b'{"a":' * 17 + b"1" + b"}" * 17,
        b'{"a":' * 15 + b"1" + b"}" * 15,
    ],
)
def test_shapes_json_allows_are_read_alike(text: bytes) -> None:
    _same(text)


def test_random_byte_mutations_are_read_alike(lines: list[bytes]) -> None:
    rng = random.Random(2425)
    alphabet = b'0123456789abcdefABCDEF"\\,:{}[]-+. eEnulltrfs\x00\x1f\x7f\xc3'
    taken = 0
    for _ in range(1500):
        line = rng.choice(lines)
        pos = rng.randrange(len(line))
        changed = line[:pos] + bytes([rng.choice(alphabet)]) + line[pos + 1 :]
        taken += _same(changed) is not None
    assert taken > 100  # (mutations inside strings and digits keep the shape)


def test_the_native_tree_root_is_the_tree_s(lines: list[bytes]) -> None:
    """Every size, with chunks of 1, 2 and 512 lines, and the memo of larger subtrees reused."""
    module = _native.chiplog()
    assert module is not None
    tree = MerkleTree(lines)
    for chunk_log in (0, 1, 9):
        pre, memo = module.prescan(lines, 1, chunk_log), dict[tuple[int, int], bytes]()
        for _ in range(2):
            for size in range(1, len(lines) + 1):
                assert module.tree_root(pre, size, memo) == tree.root(size), (chunk_log, size)
        assert all(memo[key] == tree._hash(key[0], key[0] + key[1]) for key in memo)
        assert bool(memo) == (chunk_log < 5)
        for bad in (0, len(lines) + 1):
            with pytest.raises(ValueError):
                module.tree_root(pre, bad, memo)
