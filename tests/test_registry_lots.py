"""Registration by signed lot (docs/formats.md "Lot certificate", docs/registry.md "Lots"): the
format's vectors, the chipmaker's side, the register's two paths (a whole lot; one chip with its
inclusion proof) on SQLite and PostgreSQL, the attacks it stops and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rfc8785
from sqlalchemy import select
from typer.testing import CliRunner

from computewatch.chip.chipmaker import Chipmaker
from computewatch.cli import app
from computewatch.crypto.dsse import Envelope, pae
from computewatch.crypto.errors import FormatError
from computewatch.crypto.merkle import leaf_hash
from computewatch.crypto.signing import SigningKey
from computewatch.formats.identity import issue_chip_certificate, verify_chip_certificate
from computewatch.formats.lot import LotProof, certificate_claims, issue_lot, lot_root, verify_lot_manifest
from computewatch.registry import Registry
from computewatch.registry import schema as s
from computewatch.registry.errors import RegistryError

_ROOT = Path(__file__).resolve().parent.parent
_VEC = json.loads((_ROOT / "tests" / "vectors" / "computewatch" / "lot-v2.json").read_text(encoding="utf-8"))
# The legacy vector (chip certificates and lot manifest at predicate type v1, canonical JSON v1):
# written before format version 2, it must still verify.
_VEC_V1 = json.loads((_ROOT / "tests" / "vectors" / "computewatch" / "lot.json").read_text(encoding="utf-8"))
_DOC = (_ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
MAKER = SigningKey.from_seed(b"\x51" * 32)
OTHER = SigningKey.from_seed(b"\x52" * 32)


def _certs(n: int, tag: str = "A", maker: SigningKey = MAKER, start: int = 0) -> list[bytes]:
    return [
        issue_chip_certificate(maker, f"CW-{tag}-{i:04d}", SigningKey.from_seed(f"{tag}{i}".encode().ljust(32, b"\0")).public_key,
                               "computewatch-sim-h100", 989 * 10**12).to_json()
        for i in range(start, start + n)
    ]


@pytest.fixture()
def reg(db_url):
    r = Registry.open(db_url)
    r.add_chipmaker("maker", MAKER.public_key)
    r.add_chipmaker("other", OTHER.public_key)
    yield r
    r.close()


def test_lot_vector_recomputes_and_is_quoted() -> None:
    v = _VEC["inputs"]
    maker = SigningKey.from_seed(bytes.fromhex(v["chipmaker_seed"]))
    certs = [
        issue_chip_certificate(maker, serial, SigningKey.from_seed(bytes.fromhex(seed)).public_key, v["model"],
                               int(v["peak_flops"])).to_json()
        for serial, seed in zip(v["serials"], v["device_seeds"], strict=True)
    ]
    assert [c.decode() for c in certs] == _VEC["certificates"]
    env, proofs = issue_lot(maker, v["lot"], v["chipmaker_name"], certs)
    assert [leaf_hash(c).hex() for c in certs] == _VEC["leaf_hashes"]
    assert lot_root(certs) == (bytes.fromhex(_VEC["root"]), 2)
    assert env.payload.decode() == _VEC["payload"] and env.to_json().decode() == _VEC["manifest"]
    assert env.signatures[0][1].hex() == _VEC["signature"]
    maker.public_key.verify(bytes.fromhex(_VEC["signature"]), pae(env.payload_type, env.payload))
    assert proofs[1].to_json().decode() == _VEC["proof_1"]
    for value in (*_VEC["leaf_hashes"], _VEC["root"], _VEC["payload"], _VEC["signature"], _VEC["proof_1"]):
        assert value in _DOC
    manifest = verify_lot_manifest(env.to_json(), {maker.public_key.keyid: maker.public_key})
    LotProof.from_json(_VEC["proof_1"].encode()).verify(manifest, certs[1])
    # RFC 8785 per the `rfc8785` package (not ours), certificates and manifest alike.
    for payload in (env.payload, *(Envelope.from_json(c).payload for c in certs)):
        assert rfc8785.dumps(json.loads(payload)) == payload and b":v2" in payload


def test_legacy_v1_lot_vector_still_verifies() -> None:
    v = _VEC_V1["inputs"]
    maker = SigningKey.from_seed(bytes.fromhex(v["chipmaker_seed"]))
    certs = [c.encode() for c in _VEC_V1["certificates"]]
    assert [leaf_hash(c).hex() for c in certs] == _VEC_V1["leaf_hashes"]
    assert lot_root(certs) == (bytes.fromhex(_VEC_V1["root"]), 2)
    manifest = verify_lot_manifest(_VEC_V1["manifest"].encode(), {maker.public_key.keyid: maker.public_key})
    assert manifest.lot == v["lot"] and b"chip-lot:v1" in manifest.envelope.payload
    LotProof.from_json(_VEC_V1["proof_1"].encode()).verify(manifest, certs[1])
    for cert, serial in zip(certs, v["serials"], strict=True):
        assert verify_chip_certificate(Envelope.from_json(cert), maker.public_key).serial == serial
        claims = certificate_claims(cert)
        assert (claims.serial, claims.peak_flops) == (serial, int(v["peak_flops"]))
    for value in (_VEC_V1["root"], _VEC_V1["payload"], _VEC_V1["signature"]):
        assert value in _DOC


def test_manifest_checks_refuse_each_departure() -> None:
    certs = _certs(3)
    env, proofs = issue_lot(MAKER, "L1", "maker", certs)
    roots = {MAKER.public_key.keyid: MAKER.public_key}
    lot = verify_lot_manifest(env.to_json(), roots)
    assert (lot.count, lot.root, lot.chipmaker_keyid) == (3, lot_root(certs)[0], MAKER.public_key.keyid)
    with pytest.raises(Exception, match="does not verify under any pinned chipmaker root"):
        verify_lot_manifest(env.to_json(), {OTHER.public_key.keyid: OTHER.public_key})
    for i, proof in enumerate(proofs):
        proof.verify(lot, certs[i])
        with pytest.raises(Exception, match="not leaf"):
            proof.verify(lot, certs[(i + 1) % 3])


def test_whole_lot_registers_in_one_transaction(reg) -> None:
    certs = _certs(7)
    env, _ = issue_lot(MAKER, "LOT-1", "maker", certs)
    doc = reg.register_lot(env.to_json(), certs, workers=0, batch=3)
    assert doc == {"lot": "LOT-1", "chipmaker": "maker", "chips": 7, "root": lot_root(certs)[0].hex()}
    chip = reg.chip("CW-A-0005")
    assert chip["holder"] == "maker" and chip["chipmaker"] == "maker"
    assert chip["custody"][0]["note"] == "certified by maker in lot LOT-1"
    assert reg.verify_custody("CW-A-0005")["ok"]  # the bulk path's record digest is the live code's
    with reg.engine.connect() as conn:
        stored = conn.execute(select(s.items.c.certificate).where(s.items.c.label == "CW-A-0003")).scalar_one()
        lots = conn.execute(select(s.chip_lots.c.label, s.chip_lots.c.count)).all()
    # Inspections check the chip's own certificate: it is stored byte for byte and still verifies.
    assert bytes(stored) == certs[3]
    assert verify_chip_certificate(Envelope.from_json(bytes(stored)), MAKER.public_key).serial == "CW-A-0003"
    assert [tuple(r) for r in lots] == [("LOT-1", 7)]
    with pytest.raises(RegistryError, match="already registered"):
        reg.register_lot(env.to_json(), certs, workers=0)
    # A chip registered by lot then takes part in custody as any other chip.
    acme = SigningKey.from_seed(b"\x53" * 32)
    reg.add_owner("acme", acme.public_key)
    reg.ship("CW-A-0001", "acme", MAKER, acme)
    assert reg.holder("CW-A-0001") == "acme"


def test_the_bulk_insert_skips_checks_only_for_its_own_statement(tmp_path) -> None:
    """SQLite's lot insert turns CHECK evaluation off for its statement of literal kind and status
    (an `IN` check costs a temporary table per row): every connection goes back to the pool
    checking again, after a lot that registers and after one that is refused."""
    from sqlalchemy import event

    reg = Registry.open(f"sqlite:///{tmp_path / 'register.db'}")  # SQLite's own cost (PostgreSQL checks every row)
    reg.add_chipmaker("maker", MAKER.public_key)
    flags: list[int] = []

    def checked_in(dbapi_conn, _record) -> None:
        flags.append(dbapi_conn.execute("PRAGMA ignore_check_constraints").fetchone()[0])

    event.listen(reg.engine, "checkin", checked_in)
    try:
        certs = _certs(6, "K")
        env, _ = issue_lot(MAKER, "LOT-K", "maker", certs)
        reg.register_lot(env.to_json(), certs, workers=0, batch=2)
        with pytest.raises(RegistryError, match="already registered"):
            reg.register_lot(env.to_json(), certs, workers=0, batch=2)
    finally:
        event.remove(reg.engine, "checkin", checked_in)
    assert flags and not any(flags), flags
    # The bulk rows satisfy the checks they skipped, and the register still enforces them.
    with reg.engine.connect() as conn:
        kinds = conn.execute(select(s.items.c.kind, s.items.c.status).distinct()).all()
        assert [tuple(r) for r in kinds] == [("chip", "active")]
    with pytest.raises(Exception, match="CHECK constraint failed"), reg.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE items SET status = 'stolen' WHERE label = 'CW-K-0001'")
    reg.close()


@pytest.mark.parametrize(
    "mutate, why",
    [
        (lambda c: c[:-1], "are not the 5"),  # one dropped
        (lambda c: [c[1], c[0], *c[2:]], "are not the 5"),  # reordered
        (lambda c: [*c, _certs(1, "Z")[0]], "more than the 5"),  # one added
        (lambda c: [c[0], _certs(1, "Y")[0], *c[2:]], "are not the 5"),  # one swapped
        (lambda c: [c[0], b"{}", *c[2:]], "certificate 1"),  # not a certificate
    ],
)
def test_a_lot_that_is_not_the_signed_tree_registers_nothing(reg, mutate, why) -> None:
    certs = _certs(5)
    env, _ = issue_lot(MAKER, "LOT-2", "maker", certs)
    with pytest.raises(RegistryError, match=why):
        reg.register_lot(env.to_json(), mutate(certs), workers=0, batch=2)
    assert reg.items() == []
    reg.register_lot(env.to_json(), certs, workers=0)  # the genuine lot still goes in afterwards
    assert len(reg.items()) == 5


def test_duplicates_across_and_within_lots_are_named(reg) -> None:
    certs = _certs(4)
    first, _ = issue_lot(MAKER, "LOT-A", "maker", certs[:2])
    reg.register_lot(first.to_json(), certs[:2], workers=0)
    second, _ = issue_lot(MAKER, "LOT-B", "maker", certs[1:])
    with pytest.raises(RegistryError, match="chip CW-A-0001 is already registered"):
        reg.register_lot(second.to_json(), certs[1:], workers=0)
    clone = [issue_chip_certificate(MAKER, "CW-CLONE", verify_chip_certificate(Envelope.from_json(certs[0]),
                                    MAKER.public_key).device_key, "m", 1).to_json()]
    third, _ = issue_lot(MAKER, "LOT-C", "maker", clone)
    with pytest.raises(RegistryError, match="cloned identity"):
        reg.register_lot(third.to_json(), clone, workers=0)
    twice = [certs[2], certs[3], certs[2]]
    fourth, _ = issue_lot(MAKER, "LOT-D", "maker", twice)
    with pytest.raises(RegistryError, match="appears twice"):
        reg.register_lot(fourth.to_json(), twice, workers=0)
    assert len(reg.items()) == 2


def test_a_duplicate_in_an_early_piece_stops_the_pieces_behind_it(reg) -> None:
    """Pieces are written while later ones are read (on PostgreSQL by a writer thread): a chip
    already registered in the first piece of many fails the whole lot, names the chip, stores
    nothing, and leaves the register usable."""
    certs = _certs(12, "E")
    first, _ = issue_lot(MAKER, "LOT-E1", "maker", certs[1:2])
    reg.register_lot(first.to_json(), certs[1:2], workers=0)
    whole, _ = issue_lot(MAKER, "LOT-E2", "maker", certs)
    with pytest.raises(RegistryError, match="chip CW-E-0001 is already registered"):
        reg.register_lot(whole.to_json(), certs, workers=0, batch=2)
    assert [i["serial"] for i in reg.items()] == ["CW-E-0001"]
    rest, _ = issue_lot(MAKER, "LOT-E3", "maker", certs[2:])
    assert reg.register_lot(rest.to_json(), certs[2:], workers=0, batch=4)["chips"] == 10


def test_one_chip_by_inclusion_proof_and_equivocation(reg) -> None:
    certs = _certs(3)
    env, proofs = issue_lot(MAKER, "LOT-P", "maker", certs)
    assert reg.register_lot_chip(env.to_json(), certs[2], proofs[2].to_json())["serial"] == "CW-A-0002"
    with pytest.raises(RegistryError, match="not leaf 1"):
        reg.register_lot_chip(env.to_json(), certs[0], proofs[1])
    assert reg.register_lot_chip(env.to_json(), certs[0], proofs[0])["serial"] == "CW-A-0000"
    with pytest.raises(RegistryError, match="already registered"):
        reg.register_lot_chip(env.to_json(), certs[0], proofs[0])
    # The chipmaker signs another tree under the same lot id: refused, the first one stands.
    again, other_proofs = issue_lot(MAKER, "LOT-P", "maker", [certs[1]])
    with pytest.raises(RegistryError, match="another root"):
        reg.register_lot_chip(again.to_json(), certs[1], other_proofs[0])
    assert sorted(c["serial"] for c in reg.items()) == ["CW-A-0000", "CW-A-0002"]


def test_worker_processes_give_the_same_register(tmp_path) -> None:
    certs = _certs(9)
    env, _ = issue_lot(MAKER, "LOT-W", "maker", certs)
    seen = []
    for workers in (0, 1):
        r = Registry.open(f"sqlite:///{tmp_path / f'w{workers}.db'}")
        r.add_chipmaker("maker", MAKER.public_key)
        r.register_lot(env.to_json(), certs, workers=workers, batch=4)
        # Every record digest the workers computed is the one the live code recomputes.
        assert all(r.verify_custody(f"CW-A-{i:04d}")["ok"] for i in range(9))
        with r.engine.connect() as conn:
            seen.append(conn.execute(select(s.items.c.id, s.items.c.label, s.items.c.certificate)
                                     .order_by(s.items.c.id)).all())
        r.close()
    assert seen[0] == seen[1] and [bytes(row.certificate) for row in seen[0]] == certs


@pytest.mark.parametrize("name", ["lot-chip-not-in-lot", "lot-manifest-forged", "lot-foreign-chipmaker",
                                  "lot-certificate-altered", "lot-duplicate-serial"])
def test_lot_attacks_are_caught(name) -> None:
    from computewatch.adversary.suite import run_attack

    result = run_attack(name)
    assert result.ok and result.detected_by == "registry.lot-refused", result.to_json()


def test_chipmaker_lot_and_command_line(tmp_path) -> None:
    maker = Chipmaker.create(tmp_path / "maker")
    manifest = maker.manufacture_lot(tmp_path / "lot", 3, "LOT-CLI")
    chips = sorted(p for p in (tmp_path / "lot").iterdir() if p.is_dir())
    assert len(chips) == 3 and all((c / "lot-proof.json").exists() for c in chips)
    runner = CliRunner()
    db = ("--db", str(tmp_path / "r.db"))
    assert runner.invoke(app, ["registry", "init", *db]).exit_code == 0
    assert runner.invoke(app, ["registry", "add-chipmaker", "maker", "--pub", str(tmp_path / "maker" / "chipmaker.pub"), *db]).exit_code == 0
    r = runner.invoke(app, ["registry", "register-lot", str(manifest), *db, "--json"])
    assert r.exit_code == 2 and "--certificates" in r.output
    r = runner.invoke(app, ["registry", "register-lot", str(manifest), str(chips[0]), *db, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["chips"] == 1
    certs = tmp_path / "lot" / "lot-LOT-CLI-certificates.jsonl"
    r = runner.invoke(app, ["registry", "register-lot", str(manifest), "--certificates", str(certs), "--workers", "0", *db])
    assert r.exit_code != 0 and "already registered" in r.output  # chip 0 is in already: nothing more goes in
    fresh = ("--db", str(tmp_path / "fresh.db"))
    assert runner.invoke(app, ["registry", "init", *fresh]).exit_code == 0
    runner.invoke(app, ["registry", "add-chipmaker", "maker", "--pub", str(tmp_path / "maker" / "chipmaker.pub"), *fresh])
    r = runner.invoke(app, ["registry", "register-lot", str(manifest), "--certificates", str(certs), "--workers", "0",
                            *fresh, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["chips"] == 3


def test_certificate_claims_fast_path_reads_what_the_general_reader_reads() -> None:
    import base64

    from computewatch.crypto.canonical import canonical_json
    from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, sign_envelope
    from computewatch.formats import lot as L

    def envelope(payload: dict, keys=(MAKER,)) -> bytes:
        return sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(payload), list(keys)).to_json()

    good = _certs(1)[0]
    stmt = json.loads(base64.b64decode(json.loads(good)["payload"]))
    variants = [good, envelope(stmt, (MAKER, OTHER)), good.replace(b'","payloadType"', b'", "payloadType"')]
    for model in ("é-gpu", 'quote"d', "tab\there", "x" * 300, ""):
        variants.append(envelope(dict(stmt, predicate=dict(stmt["predicate"], model=model))))
    bad = [
        envelope(dict(stmt, subject=[{"digest": {"sha256": "00" * 32}, "name": stmt["subject"][0]["name"]}])),
        envelope(dict(stmt, subject=[{"digest": stmt["subject"][0]["digest"], "name": "chip/OTHER"}])),
        envelope(dict(stmt, predicate=dict(stmt["predicate"], peak_flops="01"))),
        envelope(dict(stmt, predicateType="urn:computewatch:firmware:v1")),
        good[:-2], b"[]", b"\xff",
    ]
    fast_hits = 0
    for data in variants:
        fast_hits += L._claims_fast(data) is not None
        assert L.certificate_claims(data) == L._claims_general(data)
    assert fast_hits >= 3  # the plain shapes take the fast path; the rest fall back and agree
    for data in bad:
        assert L._claims_fast(data) is None
        with pytest.raises(FormatError):
            L.certificate_claims(data)


def test_piece_subtrees_give_the_lot_root_for_every_count_and_piece_size() -> None:
    # Pieces of 2^k leaves hand their perfect subtrees to the frontier; the root must be the
    # RFC 9162 root for counts that are not multiples of the piece size.
    from computewatch.crypto.merkle import root_from_leaf_hashes
    from computewatch.registry._lots import _Frontier, _subtrees

    leaves = [leaf_hash(b"chip %d" % i) for i in range(37)]
    for n in (1, 2, 3, 5, 8, 13, 37):
        for piece in (1, 2, 4, 8, 64):
            tree = _Frontier()
            for k in range(0, n, piece):
                for node, size in _subtrees(leaves[k : min(n, k + piece)]):
                    tree.push(node, size)
            assert (tree.size, tree.root()) == (n, root_from_leaf_hashes(leaves[:n])), (n, piece)


def test_lot_serials_that_need_escaping_keep_their_custody_digest(reg) -> None:
    # The record digest of a plain serial is built without the JSON encoder; one with a quote or
    # backslash takes the encoder, and both must match what verify_custody recomputes.
    certs = _certs(3, tag='Q"\\')
    env, _ = issue_lot(MAKER, "LOT-Q", "maker", certs)
    reg.register_lot(env.to_json(), certs, workers=0, batch=2)
    assert all(reg.verify_custody(f'CW-Q"\\-{i:04d}')["ok"] for i in range(3))
