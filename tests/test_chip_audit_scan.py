"""The native read and in-order scan made cheaper (issue 24): leaf hashes of the lines the scan
takes stay in the prescan (formats._audit_prescan.PrescannedTree reads them when asked), and a
snapshot line's two SHA-256 and its shard document's BLAKE3 are computed in one pass.

The audit's tree must be the RFC 9162 tree of the log's lines whatever the scan took: every
leaf, root and proof equal to a MerkleTree built from the lines in Python, and reports equal
with the native path on and off, with lines read ahead or not in the middle of a run."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from computewatch.chip import audit_log, verify_chip_certificate
from computewatch import _native
from computewatch.crypto.merkle import MerkleTree, leaf_hash
from computewatch.formats import _audit_prescan, chip_audit
from computewatch.formats.chip_entry import split_log
from _chips import booted_chip, run_steps


@pytest.fixture(scope="module")
def chip_log(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One chip (checkpoint every 4 entries, f = 200/day), one boot of 10 steps."""
    chip = booted_chip(tmp_path_factory.mktemp("scan"), rate=200.0, checkpoint_every=4)
    run_steps(chip, 10, 3600.0)
    chip.close()
    cert = verify_chip_certificate(chip.certificate, chip.chipmaker_root)
    return {"data": chip.log_path.read_bytes(), "cert": cert, "root": chip.chipmaker_root}


def _verify(chip_log: dict[str, Any], lines: list[bytes]) -> chip_audit.LogVerifier:
    v, problems, end = chip_audit._verify_lines(lines, chip_log["cert"], chip_log["root"], 0, 0, False)
    assert not problems and not end
    return v


def _same_tree(tree: MerkleTree, lines: list[bytes]) -> None:
    """Every leaf, root, inclusion and consistency proof of `tree` is the Python tree's."""
    want = MerkleTree(lines)
    n = len(lines)
    assert tree.size == len(tree) == n
    assert [tree.leaf(k) for k in range(n)] == [want.leaf(k) for k in range(n)]
    assert tree.leaf(-1) == want.leaf(-1) and tree.leaf(-n) == want.leaf(0)
    for bad in (n, -n - 1):
        with pytest.raises(IndexError):
            tree.leaf(bad)
    for size in range(1, n + 1):
        assert tree.root(size) == want.root(size)
    for size in (1, 2, 3, 7, n // 2, n):
        for k in range(size):
            assert tree.inclusion_proof(k, size) == want.inclusion_proof(k, size)
        for old in range(1, size + 1):
            assert tree.consistency_proof(old, size) == want.consistency_proof(old, size)


def test_the_scan_s_leaves_stay_in_the_prescan_and_the_tree_is_the_log_s(chip_log: dict[str, Any]) -> None:
    lines = split_log(chip_log["data"])[0]
    v = _verify(chip_log, lines)
    assert isinstance(v.tree, _audit_prescan.PrescannedTree)
    leaves = v.tree._leaves
    assert isinstance(leaves, _audit_prescan._PrescannedLeaves)
    # The scan took most lines (snapshots, the schedule's lines, checkpoints): no bytes kept for them.
    assert 0 < len(leaves._own) < len(lines) // 2
    _same_tree(v.tree, lines)


def test_a_tree_restored_from_a_saved_state_is_the_same_tree(chip_log: dict[str, Any]) -> None:
    lines = split_log(chip_log["data"])[0]
    v = _verify(chip_log, lines)
    v.restore_state(v.save_state())
    assert type(v.tree) is MerkleTree
    _same_tree(v.tree, lines)


def test_lines_not_read_ahead_in_the_middle_of_a_run_keep_their_own_leaves(
    chip_log: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines replaced after the prescan read them (equal bytes, other objects) are hashed by the
    scan itself; the leaves before them in the same run come from the prescan (scan_entries then
    returns every leaf of the run as bytes), and the reports and tree stay the same."""
    real = chip_audit.prescan
    changed: list[int] = []

    def prescan_then_replace(lines: list[bytes], threads: int | None = None) -> Any:
        pre = real(lines, threads)
        if not isinstance(lines, list):  # audit_log's own in-place lines (LogLines): left as they are
            return pre
        for j in range(5, len(lines), 7):
            lines[j] = bytes(bytearray(lines[j]))  # the same bytes, not the object the prescan read
            changed.append(j)
        return pre

    monkeypatch.setattr(chip_audit, "prescan", prescan_then_replace)
    lines = split_log(chip_log["data"])[0]
    v = _verify(chip_log, lines)
    leaves = v.tree._leaves
    assert isinstance(leaves, _audit_prescan._PrescannedLeaves)
    assert changed and len(leaves._own) > len(changed)
    _same_tree(v.tree, lines)
    report = audit_log(chip_log["data"], chip_log["cert"], chip_log["root"], workers=0).to_json()
    monkeypatch.setenv("COMPUTEWATCH_NATIVE", "0")
    assert audit_log(chip_log["data"], chip_log["cert"], chip_log["root"], workers=0).to_json() == report


def test_prescanned_leaves_are_appended_only_at_the_tree_s_end(chip_log: dict[str, Any]) -> None:
    lines = split_log(chip_log["data"])[0]
    pre = _audit_prescan.prescan(lines, 0)
    assert pre is not None
    tree = _audit_prescan.PrescannedTree(pre)
    tree.extend_prescanned(0, 3)
    with pytest.raises(ValueError):
        tree.extend_prescanned(2, 4)  # not the next line
    with pytest.raises(ValueError):
        tree.extend_prescanned(3, len(lines) + 1)  # beyond the prescan
    tree.append(lines[3])
    tree.extend_prescanned(4, len(lines))
    _same_tree(tree, lines)


def test_reports_are_the_same_with_the_native_path_on_and_off_in_small_chunks(
    chip_log: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = chip_log["data"]
    monkeypatch.setenv("COMPUTEWATCH_NATIVE", "0")
    reference = audit_log(data, chip_log["cert"], chip_log["root"], workers=0).to_json()
    monkeypatch.delenv("COMPUTEWATCH_NATIVE")
    for chunk_log, threads in ((0, 0), (1, 3), (9, 1)):
        monkeypatch.setattr(_audit_prescan, "CHUNK_LOG", chunk_log)
        assert audit_log(data, chip_log["cert"], chip_log["root"], workers=0, threads=threads).to_json() == reference
    monkeypatch.setattr(chip_audit, "prescan", lambda lines, threads=None: None)
    assert audit_log(data, chip_log["cert"], chip_log["root"], workers=0).to_json() == reference


def test_a_bad_log_s_report_is_the_same_with_the_native_path_on_and_off(
    chip_log: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot's line changed in place (its leaf differs from the one the checkpoint after it
    covers): the tree of the prescanned lines must hold the changed line's leaf."""
    lines = split_log(chip_log["data"])[0]
    k = next(i for i, line in enumerate(lines) if b'"kind":"snapshot"' in line and i > 6)
    lines[k] = lines[k].replace(b'"copy_out":"', b'"copy_out":"x', 1)
    data = b"".join(line + b"\n" for line in lines)
    report = audit_log(data, chip_log["cert"], chip_log["root"], workers=0).to_json()
    assert not report["ok"]
    monkeypatch.setenv("COMPUTEWATCH_NATIVE", "0")
    assert audit_log(data, chip_log["cert"], chip_log["root"], workers=0).to_json() == report


# ------------------------------------------------------------------ a snapshot's three hashes together
def test_snapshot_lines_of_every_length_get_hashlib_s_hashes(chip_log: dict[str, Any]) -> None:
    """The prescan hashes a snapshot line (leaf and chain SHA-256, shard document BLAKE3) in one
    interleaved pass: lines of every length modulo 64 (the copy-out name padded), including those
    whose leaf message (0x00 || line) needs one more block than the line, hash as hashlib does."""
    lines = split_log(chip_log["data"])[0]
    snap = next(line for line in lines if line.startswith(b'{"body":{"copy_out":"'))
    head = len(b'{"body":{"copy_out":"')
    padded = [snap[:head] + b"x" * k + snap[head:] for k in range(130)]
    assert {len(line) % 64 for line in padded} == set(range(64))
    module = _native.chiplog()
    assert module is not None
    for threads, chunk_log in ((0, 9), (2, 1)):
        pre = module.prescan(padded, threads, chunk_log)
        for i, line in enumerate(padded):
            assert pre.leaf(i) == leaf_hash(line) and pre.chain(i) == hashlib.sha256(line).digest(), i


@pytest.mark.parametrize("tensors", [7, 8])
def test_the_native_scan_takes_every_snapshot_whatever_its_shard_document_s_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tensors: int
) -> None:
    """Shards of 7 and 8 tensors: shard documents just below and above one BLAKE3 chunk (1024
    bytes; the prescan hashes those of one chunk beside the line's SHA-256). The native path must
    take every snapshot (none is fed to the Python verifier) and the report must be the Python one."""
    import torch

    g = torch.Generator().manual_seed(tensors)
    chip = booted_chip(tmp_path, rate=200.0, checkpoint_every=8)
    chip.attach([torch.randn(4, 2, generator=g) for _ in range(tensors)], tmp_path / "storage")
    run_steps(chip, 8, 1200.0)  # (a few triggers a snapshot: the native reader takes up to 16)
    chip.close()
    data = chip.log_path.read_bytes()
    cert = verify_chip_certificate(chip.certificate, chip.chipmaker_root)
    docs = [
        len(line[line.index(b',"regions":[') + 11 : line.index(b'],"shard_digest":"') + 1]) + 39
        for line in split_log(data)[0]
        if line.startswith(b'{"body":{"copy_out":"')
    ]
    assert docs
    fed: list[bytes] = []
    real_feed = chip_audit.LogVerifier._feed  # (audit_log feeds through it; feed() is the receiver's)

    def feed(self: chip_audit.LogVerifier, line: bytes, ahead: bool) -> Any:
        fed.append(line)
        return real_feed(self, line, ahead)

    monkeypatch.setattr(chip_audit.LogVerifier, "_feed", feed)
    report = audit_log(data, cert, chip.chipmaker_root, workers=0).to_json()
    assert report["ok"] and report["snapshots"] == len(docs)
    # Only the first snapshot (its layout new: the Python verifier checks a layout once) is fed.
    first = next(line for line in split_log(data)[0] if line.startswith(b'{"body":{"copy_out":"'))
    assert [line for line in fed if line.startswith(b'{"body":{"copy_out":"')] == [first]
    monkeypatch.setenv("COMPUTEWATCH_NATIVE", "0")
    assert audit_log(data, cert, chip.chipmaker_root, workers=0).to_json() == report
    assert (min(docs) > 1024) == (tensors == 8) and (max(docs) > 1024) == (tensors == 8)


@pytest.mark.parametrize(("region", "dtype"), [(0, "F16"), (1, "I32"), (-1, "I32"), (-1, "U64")])
def test_a_snapshot_of_another_layout_with_its_shard_digest_repaired_gives_the_same_report(
    chip_log: dict[str, Any], monkeypatch: pytest.MonkeyPatch, region: int, dtype: str
) -> None:
    """A later snapshot's region changed to another dtype of the same length (its layout differs
    from the last one accepted in a piece before or after the last digest, at the same length),
    its shard digest recomputed and the log rechained: the native scan must not take it as the
    layout it knows; the Python verifier names the problem."""
    import json

    from computewatch.adversary import chiplog as attacks
    from computewatch.crypto.canonical import canonical_json_v2
    from computewatch.crypto.digest import blake3_bytes

    lines = split_log(chip_log["data"])[0]
    snaps = [i for i, line in enumerate(lines) if line.startswith(b'{"body":{"copy_out":"')]
    k = snaps[len(snaps) // 2]
    e = json.loads(lines[k])
    e["body"]["regions"][region]["dtype"] = dtype
    doc = chip_audit._SHARD_DOC_HEAD + canonical_json_v2(e["body"]["regions"]) + chip_audit._SHARD_DOC_TAIL
    e["body"]["shard_digest"] = blake3_bytes(doc).hex()
    forged = attacks.rechain([*lines[:k], canonical_json_v2(e), *lines[k + 1 :]], k)
    data = b"".join(line + b"\n" for line in forged)
    report = audit_log(data, chip_log["cert"], chip_log["root"], workers=0).to_json()
    assert not report["ok"]
    monkeypatch.setenv("COMPUTEWATCH_NATIVE", "0")
    assert audit_log(data, chip_log["cert"], chip_log["root"], workers=0).to_json() == report
