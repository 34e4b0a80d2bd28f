"""docs/formats.md states every rule a foreign Verifier needs; these tests recompute, from the
page's own words and vectors (hashlib, blake3, openssl, node), what the code produces.

Each test names the rule it holds the page to: if code or page drifts, one of them fails.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import math
import random
import re
import shutil
import struct
import subprocess
from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import blake3
import pytest
import safetensors.torch
import torch
from typer.testing import CliRunner

from computewatch.chip import Chip, provision_chips
from _chips import TEST_SECRET_SEED
from computewatch.chip.trigger import EpochSchedule
from computewatch.cli import app
from computewatch.crypto import merkle
from computewatch.crypto.canonical import canonical_json, parse_canonical_json
from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    Envelope,
    pae,
    predicate_type,
    sign_envelope,
    statement,
)
from computewatch.crypto.errors import FormatError, SignatureError
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.formats.dataset import DatasetCommitment
from computewatch.formats.manifest import (
    MANIFEST_FILE,
    Manifest,
    prover_key,
    read_manifest,
    write_manifest,
)
from computewatch.formats.precommitment import Precommitment
from computewatch.formats.program import (
    ProgramError,
    ProgramSource,
    code_digest_of,
    read_program_files,
)
from computewatch.formats.schedule import iter_arrivals
from computewatch.formats.storage import RunStorage, StoreError
from computewatch.prover.export import export_hashes, read_signed_export, sign_export
from computewatch.prover.config import CheckpointConfig, ChipConfig, DistributedConfig, RunConfig
from computewatch.prover.recorder import Recorder
from computewatch.prover.transcript import Transcript

_ROOT = Path(__file__).resolve().parent.parent
PAGE = (_ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
VECTORS = _ROOT / "tests" / "vectors" / "computewatch"
CHIP = VECTORS / "chip"
INPUTS = json.loads((CHIP / "inputs.json").read_bytes())
LINES = (CHIP / "chip.log").read_bytes().split(b"\n")[:-1]


# --- the page's building blocks, written from its words (not from computewatch.crypto) ---------

def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 tree hash as the page says: 0x00 leaves, 0x01 nodes, split at the largest 2^k < n."""
    if not leaves:
        return _sha256(b"")
    if len(leaves) == 1:
        return _sha256(b"\x00" + leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:]))


def _payload(env: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(env["payload"]))


def _quoted(label: str) -> str:
    """The 64+-hex value the page quotes right after `label`."""
    m = re.search(re.escape(label) + r"[^`\n]*`([0-9a-f]{64,})`", PAGE)
    assert m, f"the page no longer quotes {label!r}"
    return m.group(1)


# --- chip log: prev, tree heads, boot key ------------------------------------------------------

def test_prev_is_sha256_of_the_previous_line_without_its_newline() -> None:
    entries = [json.loads(line) for line in LINES]
    assert entries[0]["prev"] == "00" * 32
    for before, line, entry in zip(LINES, LINES[1:], entries[1:], strict=False):
        assert line.startswith(b"{") and not line.endswith(b"\n")
        assert entry["prev"] == _sha256(before).hex() != _sha256(before + b"\n").hex()
    assert "SHA-256 of the bytes of line i \u2212 1 without its `\\n`" in PAGE  # the page writes a minus sign


def test_tree_heads_cover_exactly_the_first_size_lines() -> None:
    evidence = _payload(json.loads((CHIP / "evidence.json").read_bytes())["evidence"])
    size, root = evidence["predicate"]["log"]["size"], evidence["predicate"]["log"]["root"]
    assert 0 < size < len(LINES)  # taken mid-log, so "the first size lines" is a real claim
    assert root == _mth(LINES[:size]).hex()
    assert root not in (_mth(LINES[: size + 1]).hex(), _mth(LINES[: size - 1]).hex(), _mth(LINES).hex())
    assert evidence["subject"][0]["digest"] == {"sha256": root}
    checkpoints = [json.loads(line) for line in LINES if json.loads(line)["kind"] == "checkpoint"]
    assert len(checkpoints) >= 2
    for e in checkpoints:  # a checkpoint covers the entries before it, not itself
        assert e["body"]["tree_size"] == e["counter"]
        assert e["body"]["root"] == _mth(LINES[: e["counter"]]).hex()
    assert "exactly the first n lines of the file" in PAGE


def test_boot_key_derivation_uses_the_raw_32_byte_measurement() -> None:
    context = re.search(r'BLAKE3 derive_key\("([^"]+)", device_secret ‖ firmware_measurement\)', PAGE).group(1)  # type: ignore[union-attr]
    firmware = json.loads((CHIP / "firmware.json").read_bytes())
    measurement = _sha256(base64.b64decode(firmware["manifest"]["payload"]))
    secret = bytes.fromhex(INPUTS["device_secret"])
    boot = json.loads(LINES[0])
    certified = _payload(boot["body"]["boot_certificate"])["predicate"]["boot_public_key"]

    def public(material: bytes) -> str:
        seed = blake3.blake3(material, derive_key_context=context).digest()
        return SigningKey.from_seed(seed).public_key.raw.hex()

    assert public(secret + measurement) == certified
    assert public(secret + measurement.hex().encode()) != certified
    assert "not its hex text" in PAGE


# --- snapshot schedule: the page's arithmetic, with a correctly rounded ln ----------------------

_LN = Context(prec=50, rounding=ROUND_HALF_EVEN)


def _ln(u: float) -> float:
    return float(_LN.ln(Decimal(u)))  # exact decimal of u, ln to 50 digits, one rounding to double


def _page_arrivals(seed: bytes, f: float, start: int, count: int) -> list[int]:
    mean = 86_400_000_000_000 / f  # one double division: the integer is exact as a double
    xof = blake3.blake3(b"arrivals", key=seed).digest(length=8 * count)
    t, out = start, []
    for i in range(count):
        draw = int.from_bytes(xof[8 * i : 8 * i + 8], "little")
        u = float(Fraction(draw + 1)) * 2.0**-64  # nearest double to draw + 1 (ties to even), exact scaling
        x = -_ln(u) * mean
        t += math.floor(x) + 1
        out.append(t)
    return out


def _schedule_key_and_seed(epoch: int) -> bytes:
    context = re.search(r'schedule_key = BLAKE3 derive_key\("([^"]+)", device_secret\)', PAGE).group(1)  # type: ignore[union-attr]
    key = blake3.blake3(bytes.fromhex(INPUTS["device_secret"]), derive_key_context=context).digest()
    return blake3.blake3(b"epoch" + epoch.to_bytes(8, "big"), key=key).digest()


def test_u_is_the_nearest_double_to_draw_plus_one_scaled() -> None:
    assert float(Fraction(2**53 + 1)) == 2.0**53  # the tie goes to even
    assert float(Fraction(2**64 - 1 + 1)) * 2.0**-64 == 1.0 and _ln(1.0) == 0.0
    assert float(Fraction(1)) * 2.0**-64 == 2.0**-64  # draw 0: u > 0
    assert _ln(0.5) == math.log(0.5) == -0.6931471805599453


def test_schedule_vectors_follow_the_page_arithmetic() -> None:
    schedule = json.loads((CHIP / "schedule.json").read_bytes())
    f = float(INPUTS["snapshots_per_day"])
    day = 86_400 * 10**9
    for epoch in schedule:
        seed = _schedule_key_and_seed(epoch["epoch"])
        assert seed.hex() == epoch["seed"]
        assert _sha256(b"computewatch chip schedule commitment v1\x00" + seed).hex() == epoch["commitment"]
        mine = _page_arrivals(seed, f, 0, 3 * epoch["arrivals_in_first_day"] + 8)
        assert [str(t) for t in mine[:8]] == epoch["first_arrivals_ns_from_0"]
        assert sum(1 for t in mine if t <= day) == epoch["arrivals_in_first_day"]


def test_triggers_are_the_arrivals_inside_their_step() -> None:
    entries = [json.loads(line) for line in LINES]
    epochs: dict[int, dict[str, Any]] = {}
    rate = None
    for e in entries:
        body = e["body"]
        if e["kind"] == "schedule-commit":
            rate = float(body["snapshots_per_day"])
            seed = _schedule_key_and_seed(body["epoch"])
            epochs[body["epoch"]] = {"arrivals": _page_arrivals(seed, rate, int(body["start_busy_ns"]), 200), "seen": []}
        elif e["kind"] == "snapshot":
            lo, hi = int(body["step_start_busy_ns"]), int(e["busy_ns"])
            inside = [t for t in epochs[body["epoch"]]["arrivals"] if lo < t <= hi]  # (B_start, B_end]
            assert body["triggers"] == [str(t) for t in inside]  # increasing, decimal strings
            epochs[body["epoch"]]["seen"] += inside
        elif e["kind"] == "schedule-reveal":
            start_end = [t for t in epochs[body["epoch"]]["arrivals"] if t <= int(body["end_busy_ns"])]
            assert epochs[body["epoch"]]["seen"] == start_end
    assert rate == 48.0 and sum(len(v["seen"]) for v in epochs.values()) > 10


def test_an_arrival_on_a_step_boundary_belongs_to_the_step_that_ends_there() -> None:
    schedule = EpochSchedule(b"\x07" * 32, 0, 1_000, 48.0)
    first = next(iter_arrivals(schedule.reveal(), 48.0, 1_000))
    assert schedule.fire_until(first - 1) == []  # B_end = t - 1: not yet
    assert schedule.fire_until(first) == [first]  # B_end = t: this step
    assert first not in schedule.fire_until(first + 10**15)  # never again for the next step


def test_reference_schedule_matches_the_page_at_small_rates() -> None:
    # At f = 0.001/day one ulp of x exceeds 1 ns, so any ln that is not correctly rounded shows.
    for s in range(4):
        seed = hashlib.sha256(b"rate %d" % s).digest()
        it = iter_arrivals(seed, 0.001, 0)
        assert [next(it) for _ in range(1000)] == _page_arrivals(seed, 0.001, 0, 1000)


# --- canonical JSON: float text -----------------------------------------------------------------

_FLOATS = json.loads((VECTORS / "canonical_floats.json").read_bytes())["floats"]


def _shortest(x: float) -> tuple[str, int]:
    """Digits d1..dn and p with |x| = 0.d1..dn x 10^p: shortest that reads back, then nearest."""
    x = abs(x)
    for k in range(1, 18):
        base = Decimal(f"{x:.{k - 1}e}")
        step = Decimal(1).scaleb(base.adjusted() - (k - 1))
        found = [c for c in (base - step, base, base + step) if c > 0 and float(c) == x]
        if found:
            best = min(found, key=lambda c: abs(c - Decimal(x)))
            _sign, digits, exp = best.normalize().as_tuple()
            text = "".join(map(str, digits))
            return text, exp + len(text)
    raise AssertionError(x)


def _page_float(x: float) -> str:
    """The page's layout rule for a finite double."""
    if x == 0:
        return "-0.0" if math.copysign(1, x) < 0 else "0.0"
    d, p = _shortest(x)
    n, sign = len(d), "-" if x < 0 else ""
    if -4 < p <= 0:
        return sign + "0." + "0" * -p + d
    if 0 < p < n:
        return sign + d[:p] + "." + d[p:]
    if n <= p <= 16:
        return sign + d + "0" * (p - n) + ".0"
    mantissa = d[0] + ("." + d[1:] if n > 1 else "")
    return f"{sign}{mantissa}e{'+' if p - 1 >= 0 else '-'}{abs(p - 1):02d}"


def _ecmascript(x: float) -> str:
    """ECMA-262 Number::toString(x) (radix 10), for the page's contrast column."""
    if x == 0:
        return "0"
    d, n = _shortest(x)
    k, sign = len(d), "-" if x < 0 else ""
    if k <= n <= 21:
        return sign + d + "0" * (n - k)
    if 0 < n <= 21:
        return sign + d[:n] + "." + d[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + d
    e = n - 1
    return f"{sign}{d[0]}{'.' + d[1:] if k > 1 else ''}e{'+' if e >= 0 else '-'}{abs(e)}"


def _double(hex_bits: str) -> float:
    return struct.unpack(">d", bytes.fromhex(hex_bits))[0]


def test_float_vectors_match_code_page_rule_and_table() -> None:
    rows = re.findall(r"^\| `([0-9a-f]{16})` \| `([^`]+)` \| `([^`]+)` \|$", PAGE, re.M)
    assert [list(r) for r in rows] == [[c["binary64"], c["canonical"], c["ecmascript"]] for c in _FLOATS]
    for case in _FLOATS:
        x = _double(case["binary64"])
        assert canonical_json(x).decode() == case["canonical"] == _page_float(x), case
        assert _ecmascript(x) == case["ecmascript"], case
        back = parse_canonical_json(case["canonical"].encode())
        assert struct.pack(">d", back) == bytes.fromhex(case["binary64"])
        if case["ecmascript"] != case["canonical"]:  # refused, or another value: the integer 1 is not 1.0
            try:
                other = parse_canonical_json(case["ecmascript"].encode())
            except FormatError:
                continue
            assert type(other) is int, case


def test_float_layout_rule_on_random_doubles() -> None:
    rng = random.Random(20261128)
    values = [_double(f"{rng.getrandbits(64):016x}") for _ in range(3000)]
    values += [rng.uniform(-1e6, 1e6) for _ in range(500)] + [10.0**e for e in range(-30, 31)]
    values = [v for v in values if math.isfinite(v)]
    for v in values:
        assert canonical_json(v).decode() == _page_float(v), repr(v)
    node = shutil.which("node")
    if node is not None:  # the page's claim that ECMAScript yields the same digits
        script = "const xs=JSON.parse(require('fs').readFileSync(0,'utf8'));console.log(JSON.stringify(xs.map(String)))"
        sample = values[:400] + [_double(c["binary64"]) for c in _FLOATS]
        out = subprocess.run([node, "-e", script], input=json.dumps(sample), capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == [_ecmascript(v) for v in sample]


def test_integers_and_floats_are_told_apart_by_their_text() -> None:
    assert canonical_json([1, 1.0, -3, 2**53 - 1]) == b"[1,1.0,-3,9007199254740991]"
    for text in (b"1e5", b"1E+16", b"0.10", b"-0", b"1.0e+16", b"01"):
        with pytest.raises(FormatError):
            parse_canonical_json(text)
    with pytest.raises(FormatError, match="2\\*\\*53"):
        canonical_json(2**53)
    assert canonical_json('"\\\b\f\n\r\t\x01\x7f/\u2028é') == '"\\"\\\\\\b\\f\\n\\r\\t\\u0001\x7f/\u2028é"'.encode()


# --- keys and digest sets -----------------------------------------------------------------------

def test_keyid_with_standard_tools(tmp_path: Path) -> None:
    # The page promises these commands work: missing tools fail the test, they never skip it.
    assert shutil.which("openssl") and shutil.which("sha256sum"), "install openssl and coreutils (apt-get install -y openssl coreutils)"
    commands = re.findall(r"^    (openssl pkey .*?\| sha256sum)", PAGE, re.M)
    assert len(commands) == 2
    key = SigningKey.from_seed(bytes(range(32)))
    (tmp_path / "key.pub").write_bytes(key.public_key.to_pem())
    key.save(tmp_path / "key.key")
    for command in commands:
        out = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
        assert out.split()[0] == key.public_key.keyid == _quoted("keyid")
    der_prefix = re.search(r"fixed 12-byte prefix `([0-9a-f]{24})`", PAGE).group(1)  # type: ignore[union-attr]
    spki = base64.b64decode(b"".join(key.public_key.to_pem().splitlines()[1:-1]))
    assert spki == bytes.fromhex(der_prefix) + key.public_key.raw


def test_manifest_vector_names_blake3_blake3_256(tmp_path: Path) -> None:
    pre_text = re.search(r"```json precommitment\n(.*?)\n```", PAGE, re.S).group(1)  # type: ignore[union-attr]
    pre = Precommitment.from_json(json.loads(pre_text))
    hashes = b"".join(blake3.blake3(s).digest() for s in (b"hello", b"world", b"chinchilla"))
    sample_hashes = blake3.blake3(hashes).hexdigest()
    assert sample_hashes == re.search(r"three samples \(BLAKE3\s+`([0-9a-f]{64})`", PAGE).group(1)  # type: ignore[union-attr]
    # The statement spelled out from the page, byte for byte.
    predicate = ('{"chips":[{"chip_id":null,"rank":0},{"chip_id":null,"rank":1}],"precommitment":' + pre_text
                 + f',"precommitment_digest":"{pre.digest().hex()}","run_id":"test-vector-run",'
                 + f'"sample_hashes":"{sample_hashes}","v":1}}')
    tail = re.search(r"it ends in\n`([^`]+)`", PAGE).group(1)  # type: ignore[union-attr]
    payload = ('{"_type":"https://in-toto.io/Statement/v1","predicate":' + predicate + "," + tail).encode()
    assert len(payload) == int(re.search(r"and is (\d+) bytes long", PAGE).group(1))  # type: ignore[union-attr]
    assert blake3.blake3(payload).hexdigest() == _quoted("Manifest payload BLAKE3:")
    key = SigningKey.from_seed(bytes(range(32)))
    assert key.sign(pae(PAYLOAD_TYPE_INTOTO, payload)).hex() == _quoted("manifest signature")
    # The code writes exactly that payload, and reads it back.
    storage = RunStorage(tmp_path / "run")
    env = write_manifest(storage, Manifest(pre, (None, None), sample_hashes), key)
    assert env.payload == payload
    assert read_manifest(storage, [key.public_key]).precommitment == pre
    assert (tmp_path / "run" / MANIFEST_FILE).read_bytes() == env.to_json()


def test_a_v1_manifest_is_refused_with_the_reason(tmp_path: Path) -> None:
    pre = Precommitment.from_json(json.loads(re.search(r"```json precommitment\n(.*?)\n```", PAGE, re.S).group(1)))  # type: ignore[union-attr]
    manifest = Manifest(pre, (None, None), "ab" * 32)
    key = SigningKey.from_seed(bytes(range(32)))
    old = statement([("precommitment", {"blake3": pre.digest().hex()})], predicate_type("transcript-manifest", 1), manifest.predicate())
    storage = RunStorage(tmp_path)
    storage.write_atomic(MANIFEST_FILE, sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(old), key).to_json())
    with pytest.raises(StoreError, match=r"v1 manifest .*'blake3'.*'blake3-256'"):
        read_manifest(storage, [key.public_key])
    assert "`transcript-manifest:v2`" in PAGE and "`hashed-transcript:v2`" in PAGE


def test_every_in_toto_digest_set_uses_the_two_documented_names(run: Path, tmp_path: Path) -> None:
    names = set(re.findall(r"use exactly two algorithm names, each with lowercase hex:\n`(\w+)` \(SHA-256\) and `([\w-]+)`", PAGE)[0])
    assert names == {"sha256", "blake3-256"}
    envelopes = [json.loads((run / MANIFEST_FILE).read_bytes())]
    bundle = json.loads((CHIP / "evidence.json").read_bytes())
    envelopes += [bundle[k] for k in ("certificate", "boot_certificate", "firmware", "evidence")]
    envelopes.append(json.loads(sign_export(export_hashes(run), prover_key(RunStorage(run))).to_json()))
    for env in envelopes:
        for subject in _payload(env)["subject"]:
            assert set(subject["digest"]) <= names, subject


def test_signed_export_is_v3_v2_stays_readable_and_v1_is_refused(run: Path) -> None:
    doc = export_hashes(run)
    key = prover_key(RunStorage(run))
    env = sign_export(doc, key)
    stmt = json.loads(env.payload)
    assert stmt["predicateType"] == "urn:computewatch:hashed-transcript:v3"  # RFC 8785 (format version 2)
    assert stmt["subject"] == [{"name": "precommitment", "digest": {"blake3-256": doc["precommitment_digest"]}}]
    assert read_signed_export(env.to_json(), [key.public_key]) == doc
    legacy = dict(stmt, predicateType="urn:computewatch:hashed-transcript:v2")
    assert read_signed_export(sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(legacy), key).to_json(), [key.public_key]) == doc
    with pytest.raises(SignatureError):
        read_signed_export(env.to_json(), [SigningKey.from_seed(b"\x09" * 32).public_key])
    old = statement([("precommitment", {"blake3": doc["precommitment_digest"]})], predicate_type("hashed-transcript", 1), doc)
    with pytest.raises(FormatError, match=r"is v1 .*'blake3-256'"):
        read_signed_export(sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(old), key).to_json(), [key.public_key])
    other = statement([("precommitment", {"blake3-256": "00" * 32})], stmt["predicateType"], doc)
    with pytest.raises(FormatError, match="subject"):
        read_signed_export(sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(other), key).to_json(), [key.public_key])


def test_only_inclusion_and_consistency_proofs_exist() -> None:
    proofs = {n for n in dir(merkle.MerkleTree) if "proof" in n} | {n for n in merkle.__all__ if n.startswith("verify")}
    assert proofs == {"inclusion_proof", "consistency_proof", "verify_inclusion", "verify_consistency"}
    assert "Subtree proofs" in PAGE and "are not covered" in PAGE


# --- a two-rank run, recorded rank by rank in this process --------------------------------------

_SAMPLES = [bytes([i]) * 3 for i in range(8)]
_STEPS = 4


def _record(out: Path, rank: int, chip: Chip, program: ProgramSource, serials: list[str]) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)  # the same W0 on both ranks
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    torch.manual_seed(1000 + rank)  # one global RNG stream per rank, as the runner seeds them
    with Recorder(out, model=model, optimizer=optimizer, scheduler=None, hyperparameters={"lr": 0.01},
                  dataset=DatasetCommitment.from_samples(_SAMPLES), nonce=b"formats-doc-nonce", program=program,
                  chip=chip, config=RunConfig(run_id="formats-doc", checkpoint=CheckpointConfig(every=2),
                                              chip=ChipConfig(ids=tuple(serials), seconds_per_step=6 * 3600.0),
                                              distributed=DistributedConfig(rank=rank, world_size=2))) as rec:
        for step in range(_STEPS):
            ids = [(2 * step) % 8, (2 * step + 1) % 8]
            mine = ids[rank : rank + 1]
            x = torch.tensor([list(_SAMPLES[i]) for i in mine], dtype=torch.float32) / 8
            x = x + 0.01 * torch.randn(x.shape)  # draws from the global RNG, like dropout
            optimizer.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            optimizer.step()
            rec.step(step, ids, loss.detach())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("formats-doc")
    src = base / "program-src"
    (src / "sub").mkdir(parents=True)
    (src / "train.py").write_text("from .sub import util\n")
    (src / "sub" / "util.py").write_text("VALUE = 1\n")
    (src / "notes.txt").write_text("not a .py file: not part of the program\n")
    program = ProgramSource.from_folder(src, "train:make_program")
    dirs = provision_chips(base / "chips", 2, snapshots_per_day=24.0, secret_seed=TEST_SECRET_SEED)
    chips = [Chip.open(d) for d in dirs]
    serials = [c.serial for c in chips]
    out = base / "run"
    state = torch.get_rng_state()
    try:
        for rank in (1, 0):  # rank 0 last: it writes the manifest, and found no run there
            chips[rank].boot()
            _record(out, rank, chips[rank], program, serials)
            chips[rank].close()
    finally:
        torch.set_rng_state(state)
    return out


def test_step_rng_is_rank_0s(run: Path) -> None:
    t = Transcript(run)
    records = t.steps()
    assert [r.step for r in records] == list(range(_STEPS))
    for step in (0, 2):
        ranks = [blake3.blake3(t.checkpoint(step, r).rng["torch"].numpy().tobytes()).hexdigest() for r in (0, 1)]
        assert ranks[0] != ranks[1]
        assert records[step].rng == ranks[0]
    assert len({r.rng for r in records}) == _STEPS  # the RNG advanced every step
    assert "Only rank 0 writes step records" in PAGE


def test_code_digest_covers_exactly_the_program_folder(run: Path, tmp_path: Path) -> None:
    folder = run / "program"
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert sorted(files) == ["sub/util.py", "train.py"]  # from_folder: *.py only; nested paths with '/'
    table = {rel: blake3.blake3(data).hexdigest() for rel, data in files.items()}
    digest = blake3.blake3(canonical_json({"v": 1, "files": table})).hexdigest()
    assert digest == Transcript(run).manifest.precommitment.code_digest == code_digest_of(files)
    # A replayer takes every regular file below program/: hidden ones too, empty folders not at all.
    copy = tmp_path / "program"
    shutil.copytree(folder, copy)
    (copy / ".hidden").write_bytes(b"")
    (copy / "empty").mkdir()
    assert sorted(read_program_files(copy)) == [".hidden", "sub/util.py", "train.py"]
    assert code_digest_of(read_program_files(copy)) != digest
    (copy / "link.py").symlink_to(copy / "train.py")
    with pytest.raises(ProgramError, match="symbolic link"):
        read_program_files(copy)


def test_copy_outs_live_in_chip_copyout_and_objects(run: Path) -> None:
    t = Transcript(run)
    snaps = t.snapshots()
    assert {s["rank"] for s in snaps} == {0, 1}
    for rank in (0, 1):
        counters = [s["counter"] for s in snaps if s["rank"] == rank]
        assert counters == sorted(counters)
    for s in snaps:
        name = f"{s['chip_id']}-snap-{s['counter']:08d}.safetensors"
        copy_out = run / "chip-copyout" / f"rank-{s['rank']:05d}" / name
        data = copy_out.read_bytes()
        assert blake3.blake3(data).hexdigest() == s["object"]
        assert (run / "objects" / s["object"][:2] / s["object"]).read_bytes() == data
        meta = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])["__metadata__"]
        assert meta["counter"] == str(s["counter"]) and meta["step"] == str(s["step"])
    entry = next(json.loads(line) for line in LINES if json.loads(line)["kind"] == "snapshot")
    assert entry["body"]["copy_out"] == f"{INPUTS['serial']}-snap-{entry['counter']:08d}.safetensors"


def test_hashed_export_lists_and_arithmetic(run: Path) -> None:
    doc = export_hashes(run)
    t = Transcript(run)
    pre = json.loads(t.manifest.precommitment.encode())
    digest = lambda obj: blake3.blake3(canonical_json(obj)).hexdigest()  # noqa: E731
    assert doc["manifest_digest"] == blake3.blake3((run / MANIFEST_FILE).read_bytes()).hexdigest()
    assert doc["hyperparameters_digest"] == digest(pre["hyperparameters"])
    assert doc["seed_derivation_digest"] == digest(pre["seed_derivation"])
    assert doc["layout_digest"] == digest(pre["layout"])
    lines = b"".join(p.read_bytes() for p in sorted((run / "steps").iterdir())).split(b"\n")[:-1]
    assert doc["steps"]["count"] == len(lines) == _STEPS
    assert doc["steps"]["records_root"] == _mth(lines).hex()
    assert doc["steps"]["batch_roots"] == [json.loads(line)["batch_root"] for line in lines]
    indexes = [json.loads((run / "checkpoints" / f"rank-{r:05d}.json").read_bytes())["checkpoints"] for r in (0, 1)]
    assert doc["checkpoints"] == [dict(e, rank=r) for r in (0, 1) for e in indexes[r]]
    records = [json.loads(line) for r in (0, 1) for line in (run / "snapshots" / f"rank-{r:05d}.jsonl").read_bytes().splitlines()]
    assert doc["snapshots"] == [{k: s[k] for k in ("rank", "chip_id", "counter", "step", "shard_digest", "object")} for s in records]
    expected = []
    for r in (0, 1):
        models = []
        for e in indexes[r]:
            tensors = safetensors.torch.load((run / "objects" / e["digest"][:2] / e["digest"]).read_bytes())
            models.append((e["step"], {k: v.double() for k, v in tensors.items() if k.startswith("model/")}))
        for (a_step, a), (b_step, b) in itertools.pairwise(models):
            l2 = math.sqrt(sum(float(((b[k] - a[k]) ** 2).sum()) for k in a))
            expected.append((r, a_step, b_step, l2))
    assert [(d["rank"], d["from"], d["to"]) for d in doc["distances"]] == [e[:3] for e in expected]
    for d, e in zip(doc["distances"], expected, strict=True):
        assert d["l2"] == float(f"{d['l2']:.9g}") and d["l2"] == pytest.approx(e[3], rel=1e-8)
        assert len(re.sub(r"e.*|[-.]", "", json.dumps(d["l2"])).strip("0")) <= 9


# --- file endings -------------------------------------------------------------------------------

def _endings_table() -> list[tuple[list[str], str]]:
    section = PAGE.split("### File endings", 1)[1].split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("files", "---"):
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[2]))
    return rows


def test_file_endings_as_the_table_says(run: Path, tmp_path: Path) -> None:
    rows = _endings_table()
    assert len(rows) == 6
    chip_dir = run.parent / "chips" / "chip-0000"
    roots = [run, chip_dir]
    checked = 0
    for patterns, ending in rows:
        for pattern in patterns:
            if pattern.startswith("computewatch ") or pattern == "--signed":
                continue
            files = [p for root in roots for p in root.rglob("*") if p.is_file()
                     and fnmatch.fnmatch(p.relative_to(root).as_posix(), pattern) and not p.name.startswith(".")]
            assert files, f"no file matches {pattern!r}"
            for p in files:
                data = p.read_bytes()
                if ending.startswith("`\\n`"):
                    assert data.endswith(b"\n"), p
                elif ending == "no newline":
                    assert not data.endswith(b"\n") and parse_canonical_json(data) is not None, p
                else:
                    assert ending == "nothing added", ending
                checked += 1
    assert checked >= 15
    # The named outputs: evidence bundles and hashed transcripts (plain and signed).
    assert not (CHIP / "evidence.json").read_bytes().endswith(b"\n")
    cli = CliRunner()
    for extra, name in (([], "hashes.json"), (["--signed"], "hashes.dsse.json")):
        result = cli.invoke(app, ["transcript", "export-hashes", str(run), "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        data = (tmp_path / name).read_bytes()
        assert not data.endswith(b"\n") and parse_canonical_json(data)
    assert parse_canonical_json((tmp_path / "hashes.json").read_bytes()) == export_hashes(run)
    assert VerifyKey.from_pem((run / "keys" / "prover.pub").read_bytes())  # PEM with its final newline
    assert Envelope.from_json((tmp_path / "hashes.dsse.json").read_bytes()).payload_type == PAYLOAD_TYPE_INTOTO
    hashed = PAGE.split("### Hashed transcript", 1)[1].split("\n### ", 1)[0]
    assert "The file is the document's canonical JSON, no trailing newline." in hashed

