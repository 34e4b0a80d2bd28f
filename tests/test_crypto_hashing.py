"""BLAKE3-256 over tensor memory: official vectors through every dtype and view, regions, shards."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from computewatch.crypto import (
    ComputewatchError,
    FormatError,
    Region,
    blake3_bytes,
    blake3_tensor,
    hash_regions,
    hashing,
    sha256_bytes,
    shard_digest,
    tensor_memory,
)

_CASES = json.loads((Path(__file__).parent / "vectors" / "blake3" / "test_vectors.json").read_text())["cases"]
_IDS = [str(c["input_len"]) for c in _CASES]


def _input(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.int64).remainder(251).to(torch.uint8)


def _want(case: dict) -> bytes:
    # The vectors give an extended output; BLAKE3-256 is its first 32 bytes.
    return bytes.fromhex(case["hash"])[:32]


@pytest.mark.parametrize("case", _CASES, ids=_IDS)
def test_official_vectors_uint8(case: dict) -> None:
    t = _input(case["input_len"])
    assert blake3_tensor(t) == _want(case)
    assert blake3_tensor(t, threads=2) == _want(case)
    assert blake3_bytes(bytes(t.numpy())) == _want(case)


@pytest.mark.parametrize("case", _CASES, ids=_IDS)
def test_official_vectors_other_dtypes(case: dict) -> None:
    n = case["input_len"]
    t = _input(n)
    views = [t.view(torch.int8)]
    for dtype in (torch.int16, torch.float16, torch.bfloat16, torch.int32, torch.float32, torch.int64, torch.float64):
        size = torch.empty(0, dtype=dtype).element_size()
        if n % size == 0:
            views.append(t.view(dtype))
            if n // size >= 4 and (n // size) % 2 == 0:
                views.append(t.view(dtype).reshape(2, -1))
    for v in views:
        assert blake3_tensor(v) == _want(case), v.dtype


@pytest.mark.parametrize("case", _CASES, ids=_IDS)
def test_official_vectors_offset_and_strided(case: dict) -> None:
    n = case["input_len"]
    data = _input(n)
    # A contiguous slice that starts inside a larger storage (non-zero storage offset).
    big = torch.zeros(n + 7, dtype=torch.uint8)
    big[3 : 3 + n] = data
    assert blake3_tensor(big[3 : 3 + n]) == _want(case)
    # Every other byte of an interleaved buffer: strided, so a contiguous copy is hashed.
    inter = torch.zeros(n, 2, dtype=torch.uint8)
    inter[:, 1] = data
    strided = inter[:, 1]
    assert not strided.is_contiguous() or n <= 1
    assert blake3_tensor(strided) == _want(case)
    # A column-major 2-D layout of the same logical matrix.
    if n >= 4 and n % 2 == 0:
        matrix = data.reshape(2, n // 2)
        col_major = matrix.t().contiguous().t()
        assert not col_major.is_contiguous()
        assert blake3_tensor(col_major) == _want(case)


def test_tensor_memory_is_zero_copy_for_contiguous() -> None:
    t = torch.arange(1024, dtype=torch.bfloat16)
    view = tensor_memory(t)
    assert view.readonly and view.nbytes == 2048
    assert np.shares_memory(np.asarray(view), t.view(torch.uint8).numpy())
    t[0] = 5.0  # the view sees later writes: it is the tensor's own memory
    assert bytes(view[:2]) == t[:1].view(torch.uint8).numpy().tobytes()


def test_tensor_memory_handles_grad_and_conj() -> None:
    w = torch.ones(3, requires_grad=True)
    assert bytes(tensor_memory(w)) == np.ones(3, dtype=np.float32).tobytes()
    z = torch.tensor([1 + 2j], dtype=torch.complex64).conj()
    assert bytes(tensor_memory(z)) == np.array([1 - 2j], dtype=np.complex64).tobytes()


def test_empty_tensor_is_a_region() -> None:
    empty = torch.empty(0, 5, dtype=torch.float32)
    assert blake3_tensor(empty) == bytes.fromhex(_CASES[0]["hash"])[:32]
    (r,) = hash_regions([empty])
    assert (r.offset, r.dtype, r.shape, r.nbytes) == (0, "F32", (0, 5), 0)


def test_hash_regions_offsets_dtypes_and_shard_digest() -> None:
    tensors = [torch.zeros(3, dtype=torch.float32), torch.ones(2, 2, dtype=torch.bfloat16), torch.tensor([True, False])]
    regions = hash_regions(tensors)
    assert [r.offset for r in regions] == [0, 12, 20]
    assert [r.dtype for r in regions] == ["F32", "BF16", "BOOL"]
    assert [r.nbytes for r in regions] == [12, 8, 2]
    assert regions[1].digest == blake3_tensor(tensors[1])
    assert all(Region.from_json(r.to_json()) == r for r in regions)
    d = shard_digest(regions)
    # Changing any region parameter (here: shape only, same bytes) changes the shard digest.
    reshaped = hash_regions([tensors[0], tensors[1].reshape(4), tensors[2]])
    assert shard_digest(reshaped) != d
    assert shard_digest(list(reversed(regions))) != d


def test_region_rejects_bad_fields() -> None:
    good = {"offset": 0, "dtype": "F32", "shape": [1], "nbytes": 4, "digest": "00" * 32}
    assert Region.from_json(good).nbytes == 4
    for field, value, why in [
        ("dtype", "float32", "dtype"),
        ("digest", "AB" * 32, "lowercase hex"),
        ("digest", "zz" * 32, "not valid hex"),
        ("offset", -1, "offset"),
        ("shape", "1", "shape"),
        ("nbytes", 8, "does not match shape"),
    ]:
        with pytest.raises(FormatError, match=why):
            Region.from_json({**good, field: value})
    with pytest.raises(FormatError, match="unexpected \\['extra'\\]"):
        Region.from_json({**good, "extra": 1})


def test_unsupported_inputs_named() -> None:
    with pytest.raises(FormatError, match="no safetensors name"):
        hash_regions([torch.zeros(1, dtype=torch.complex128)])
    with pytest.raises(FormatError, match=r"expected a torch.Tensor"):
        tensor_memory(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="CPU tensor"):
        tensor_memory(torch.zeros(1, device="meta"))
    with pytest.raises(FormatError, match="dense"):
        tensor_memory(torch.eye(2).to_sparse())
    with pytest.raises(FormatError, match="threads"):
        blake3_bytes(b"x", threads=0)


def test_gpu_kernel_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "computewatch.crypto.blake3_triton", None)
    with pytest.raises(ComputewatchError, match="GPU BLAKE3 kernel"):
        hashing._gpu_digests([torch.zeros(1)])


def test_sha256() -> None:
    assert sha256_bytes(b"abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_region_item_sizes_without_torch_match_torch() -> None:
    # crypto.regions validates regions without torch; its table must agree with torch's dtypes.
    from computewatch.crypto.regions import ITEMSIZE

    for dtype, name in hashing._DTYPE_NAMES.items():
        assert ITEMSIZE[name] == torch.empty(0, dtype=dtype).element_size(), name
    assert set(ITEMSIZE) >= set(hashing._DTYPE_NAMES.values())
