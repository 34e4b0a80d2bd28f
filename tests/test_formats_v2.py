"""Format version 2 (docs/formats.md, "Format version 2"): the precommitment (v4/v5), the
manifest (v4/v5) and step records (v3) are RFC 8785; legacy (version 1) evidence stays
readable; a document's version tag picks its one canonical form (no malleability). The page's
vectors are recomputed here and checked with the `rfc8785` package, an implementation that is
not ours."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import blake3
import pytest
import rfc8785

from computewatch.crypto.canonical import canonical_json, canonical_json_v2, parse_canonical_json_tagged
from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, pae, sign_envelope, statement
from computewatch.crypto.errors import FormatError
from computewatch.crypto.signing import SigningKey
from computewatch.formats.dataset import DatasetCommitment, sample_hash
from computewatch.formats.layout import ShardLayout
from computewatch.formats.manifest import (
    DIGEST_BLAKE3,
    MANIFEST_FILE,
    MANIFEST_PREDICATE_V4,
    Manifest,
    read_manifest,
    write_manifest,
)
from computewatch.formats.precommitment import Precommitment
from computewatch.formats.program import code_digest_of
from computewatch.formats.seed import derive_run_seed
from computewatch.formats.steps import StepLog, StepRecord, batch_root, records_root
from computewatch.formats.storage import RunStorage, StoreError

PAGE = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text()
SAMPLES = [b"hello", b"world", b"chinchilla"]
KEY = SigningKey.from_seed(bytes(range(32)))


def _block(tag: str) -> str:
    m = re.search(rf"```json {tag}\n(.*?)\n```", PAGE, re.S)
    assert m, tag
    return m.group(1)


def _quoted(label: str) -> str:
    m = re.search(re.escape(label) + r"[^`\n]*`([0-9a-f]{64,})`", PAGE)
    assert m, label
    return m.group(1)


def _precommitment(canonical: int = 2) -> Precommitment:
    commitment = DatasetCommitment.from_samples(SAMPLES)
    nonce = bytes(range(16))
    layout = ShardLayout.dim0_sharded([("w", (3, 2), "F32"), ("b", (3,), "F32")], 2)
    env = {"torch": "2.13.0+cpu", "python": "3.11.7", "machine": "x86_64", "cpu_capability": "AVX2", "threads": 1, "deterministic": True}
    return Precommitment("test-vector-run", {"lr": 1e-05, "momentum": 0.0, "steps": 4},
                         code_digest_of({"train.py": b"# the training program\n"}), commitment.summary_json(), nonce,
                         derive_run_seed(commitment.root, nonce), 2, layout, "train:make_program", env, canonical=canonical)


def _sample_hashes() -> str:
    return blake3.blake3(b"".join(blake3.blake3(s).digest() for s in SAMPLES)).hexdigest()


def test_precommitment_v4_vector_and_the_other_implementation() -> None:
    pre = _precommitment()
    text = _block("precommitment-v4")
    assert pre.version == 4 and pre.encode().decode() == text
    # rfc8785 (not ours) canonicalizes the parsed document to the same bytes, so the digest any
    # RFC 8785 implementation computes is the one the chip logs.
    assert rfc8785.dumps(json.loads(text)) == text.encode()
    assert blake3.blake3(text.encode()).hexdigest() == pre.digest().hex() == _quoted("precommitment v4 digest:")
    # Read back: momentum comes back as the integer 0, and the digest is unchanged.
    again = Precommitment.from_json(json.loads(text))
    assert again.hyperparameters["momentum"] == 0 and again.canonical == 2 and again.digest() == pre.digest()
    # The same values in the legacy encoding are other bytes (v2 with "1e-05" and "0.0"): the
    # version decides the digest.
    legacy = _precommitment(canonical=1)
    assert legacy.version == 2 and b'"lr":1e-05' in legacy.encode() and b'"momentum":0.0' in legacy.encode()
    assert legacy.digest() != pre.digest()


def test_step_record_v3_vector() -> None:
    root = batch_root([sample_hash(SAMPLES[2]), sample_hash(SAMPLES[0])]).hex()
    record = StepRecord(0, (2, 0), root, 1e-05, 2.0, "11" * 32)
    text = _block("step-v3")
    assert record.encode() == text.encode() + b"\n" and rfc8785.dumps(json.loads(text)) == text.encode()
    back = StepRecord.decode(text.encode())
    assert back.canonical == 2 and back.lr == 1e-05 and back.leaf() == text.encode()
    # A v3 record's leaf is its RFC 8785 bytes; the legacy record of the same step another leaf.
    legacy = replace(record, canonical=1)
    assert b'"v"' not in legacy.leaf() and records_root([record]) != records_root([legacy])


def test_a_line_must_be_its_own_versions_encoding(tmp_path: Path) -> None:
    root = "ab" * 32
    v3 = StepRecord(0, (0,), root, 1e-05, 0.0, "cd" * 32)
    # The same v3 record written with legacy numbers ("1e-05", "0.0"): refused, not re-read.
    forged = canonical_json(v3.to_json())
    assert forged != v3.leaf()
    with pytest.raises(FormatError, match="RFC 8785"):
        StepRecord.decode(forged)
    # A legacy record (no "v") written with RFC 8785 numbers: refused as well.
    legacy = replace(v3, canonical=1)
    with pytest.raises(FormatError, match="version 1"):
        StepRecord.decode(canonical_json_v2(legacy.to_json()))
    # And both encodings of their own version read back; a segment may hold them in order.
    log = StepLog(RunStorage(tmp_path / "run"))
    log.write_segment([legacy, replace(v3, step=1)])
    assert [r.canonical for r in log.read()] == [1, 2]
    with pytest.raises(FormatError, match="only v3"):
        StepRecord.from_json({**v3.to_json(), "v": 2})


def test_manifest_v4_vector_reads_back(tmp_path: Path) -> None:
    pre = _precommitment()
    storage = RunStorage(tmp_path / "run")
    env = write_manifest(storage, Manifest(pre, (None, None), _sample_hashes()), KEY)
    payload = env.payload
    tail = re.search(r"the payload ends in\n`([^`]+)`", PAGE).group(1)  # type: ignore[union-attr]
    assert payload.decode().endswith(tail) and MANIFEST_PREDICATE_V4 in tail
    assert len(payload) == int(re.search(r"and is (\d+) bytes long; manifest v4", PAGE).group(1))  # type: ignore[union-attr]
    assert blake3.blake3(payload).hexdigest() == _quoted("manifest v4 payload BLAKE3:")
    assert KEY.sign(pae(PAYLOAD_TYPE_INTOTO, payload)).hex() == _quoted("manifest v4 signature:")
    assert rfc8785.dumps(json.loads(payload)) == payload
    manifest = read_manifest(storage, [KEY.public_key])
    assert manifest.precommitment.digest() == pre.digest() and manifest.predicate_type == MANIFEST_PREDICATE_V4


def _signed(tmp_path: Path, name: str, predicate_type: str, predicate: dict[str, Any], digest: str, encode: Any) -> RunStorage:
    storage = RunStorage(tmp_path / name)
    stmt = statement([("precommitment", {DIGEST_BLAKE3: digest})], predicate_type, predicate)
    storage.write_atomic(MANIFEST_FILE, sign_envelope(PAYLOAD_TYPE_INTOTO, encode(stmt), KEY).to_json())
    return storage


def test_a_manifest_is_refused_in_the_other_versions_encoding_or_with_the_other_precommitment(tmp_path: Path) -> None:
    pre, legacy = _precommitment(), _precommitment(canonical=1)
    good = Manifest(pre, (None, None), _sample_hashes())
    # A v4 statement signed in the legacy encoding (floats as "1e-05", "0.0"): refused.
    storage = _signed(tmp_path, "a", MANIFEST_PREDICATE_V4, good.predicate(), pre.digest().hex(), canonical_json)
    with pytest.raises(StoreError, match="RFC 8785"):
        read_manifest(storage, [KEY.public_key])
    # A legacy v2 statement signed in RFC 8785: refused.
    old = Manifest(legacy, (None, None), _sample_hashes())
    storage = _signed(tmp_path, "b", old.predicate_type, old.predicate(), legacy.digest().hex(), canonical_json_v2)
    with pytest.raises(StoreError, match="version 1"):
        read_manifest(storage, [KEY.public_key])
    # A v4 manifest carrying a legacy precommitment (or the reverse): refused.
    storage = _signed(tmp_path, "c", MANIFEST_PREDICATE_V4, old.predicate(), legacy.digest().hex(), canonical_json_v2)
    with pytest.raises(StoreError, match="carries a precommitment v2"):
        read_manifest(storage, [KEY.public_key])
    # The legacy manifest written by the legacy writer still reads.
    storage = RunStorage(tmp_path / "d")
    write_manifest(storage, old, KEY)
    assert read_manifest(storage, [KEY.public_key]).precommitment.canonical == 1


def test_tagged_parse_takes_the_version_from_the_tag() -> None:
    def tag(obj: Any) -> int:
        return 2 if obj.get("v") == 2 else 1

    both = b'{"a":1,"v":2}'  # no float: the same bytes under both versions
    assert parse_canonical_json_tagged(both, tag) == ({"a": 1, "v": 2}, 2)
    assert parse_canonical_json_tagged(b'{"a":0.5,"v":1}', tag)[1] == 1
    with pytest.raises(FormatError):
        parse_canonical_json_tagged(b'{"a":2.0,"v":2}', tag)  # RFC 8785 writes 2
    with pytest.raises(FormatError):
        parse_canonical_json_tagged(b'{"a":2,"v":1} ', tag)  # not canonical at all


def test_snapshot_records_v2_are_rfc8785_and_legacy_lines_still_read(tmp_path: Path) -> None:
    from computewatch.formats.snapshot_records import encode_snapshot_record, read_snapshot_records, snapshot_file

    rec = {"rank": 0, "chip_id": "CW-1", "counter": 4, "step": 0, "clock_ns": "123", "shard_digest": "ab" * 32,
           "regions": [], "object": "cd" * 32, "stall_s": 1.5e-05}
    v2 = encode_snapshot_record(dict(rec, v=2))
    assert v2 == rfc8785.dumps(dict(rec, v=2)) + b"\n" and b'"stall_s":0.000015' in v2
    legacy = encode_snapshot_record(rec)
    assert legacy == canonical_json(rec) + b"\n"
    storage = RunStorage(tmp_path / "run", create=True)
    storage.write_atomic(snapshot_file(0), legacy + v2)
    got = read_snapshot_records(storage, 0)
    assert [r.get("v") for r in got] == [None, 2] and all(r["stall_s"] == 1.5e-05 for r in got)
    for line in (canonical_json(dict(rec, v=2)), rfc8785.dumps(rec)):  # bytes not in their tag's encoding
        storage.write_atomic(snapshot_file(0), line + b"\n")
        with pytest.raises(StoreError, match="line 1 is malformed"):
            read_snapshot_records(storage, 0)
