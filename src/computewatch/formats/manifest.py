"""The signed run manifest: the fixed facts of one run, signed by the Prover.

``manifest.dsse.json`` is a DSSE envelope (Ed25519) around an in-toto Statement v1 whose subject
is the precommitment digest (digest set ``{"blake3-256": hex}``) and whose predicate (type
``urn:computewatch:transcript-manifest:v2``) is::

    {"v": 1, "run_id": ..., "precommitment": {the precommitment object},
     "precommitment_digest": hex, "chips": [{"rank": r, "chip_id": str | null}],
     "sample_hashes": hex digest of the object holding the per-sample hashes}

The precommitment carries the hyperparameters, code digest, dataset commitment, seed derivation,
checkpoint interval k and shard layout, so the manifest repeats none of them. Predicate type v1
named BLAKE3 ``"blake3"`` in the subject's digest set; v2 uses ``"blake3-256"``, the one name every
computewatch digest set uses, and a v1 manifest is refused with a message saying so. Predicate
type v3 (same predicate plus ``"steps": {"count": n, "records_root": hex}``) also signs the step
records, step commitments included: a Recorder re-signs it each time it writes step records, so
the Prover's signature covers every committed state digest; v2 stays readable. The Prover's key
lives in ``keys/prover.key`` (mode 0600; never part of an export) unless the caller brings its
own; its public half is ``keys/prover.pub``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from computewatch.crypto.canonical import canonical_json, parse_canonical_json
from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    Envelope,
    predicate_type,
    sign_envelope,
    statement,
    verify_envelope,
)
from computewatch.crypto.errors import FormatError, SignatureError
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.formats.precommitment import Precommitment
from computewatch.formats.storage import RunStorage, StoreError

__all__ = [
    "DIGEST_BLAKE3",
    "MANIFEST_FILE",
    "MANIFEST_PREDICATE",
    "MANIFEST_PREDICATE_V3",
    "PROVER_KEY",
    "PROVER_PUB",
    "Manifest",
    "prover_key",
    "read_manifest",
    "write_manifest",
    "write_public_key",
]

MANIFEST_FILE = "manifest.dsse.json"
# The name of BLAKE3-256 in every in-toto digest set computewatch writes (docs/formats.md).
DIGEST_BLAKE3 = "blake3-256"
MANIFEST_PREDICATE = predicate_type("transcript-manifest", 2)
MANIFEST_PREDICATE_V3 = predicate_type("transcript-manifest", 3)
_MANIFEST_PREDICATE_V1 = predicate_type("transcript-manifest", 1)
PROVER_KEY = "keys/prover.key"
PROVER_PUB = "keys/prover.pub"


@dataclass(frozen=True)
class Manifest:
    precommitment: Precommitment
    chips: tuple[str | None, ...]  # chip id per rank
    sample_hashes: str
    steps: dict[str, Any] | None = None  # v3: {"count", "records_root"} of the signed step records

    @property
    def run_id(self) -> str:
        return self.precommitment.run_id

    def predicate(self) -> dict[str, Any]:
        return {
            "v": 1,
            "run_id": self.run_id,
            "precommitment": self.precommitment.to_json(),
            "precommitment_digest": self.precommitment.digest().hex(),
            "chips": [{"rank": r, "chip_id": c} for r, c in enumerate(self.chips)],
            "sample_hashes": self.sample_hashes,
        } | ({"steps": dict(self.steps)} if self.steps is not None else {})

    @property
    def predicate_type(self) -> str:
        return MANIFEST_PREDICATE if self.steps is None else MANIFEST_PREDICATE_V3

    @classmethod
    def from_predicate(cls, obj: Any, *, with_steps: bool = False) -> Manifest:
        expected = {"v", "run_id", "precommitment", "precommitment_digest", "chips", "sample_hashes"} | ({"steps"} if with_steps else set())
        if not isinstance(obj, dict) or set(obj) != expected or obj["v"] != 1:
            raise FormatError(f"manifest predicate must be v1 with exactly the fields {sorted(expected)}")
        steps = obj.get("steps")
        if with_steps:
            root = steps.get("records_root") if isinstance(steps, dict) else None
            count = steps.get("count") if isinstance(steps, dict) else None
            if (
                not isinstance(steps, dict)
                or set(steps) != {"count", "records_root"}
                or not isinstance(count, int)
                or isinstance(count, bool)
                or count < 0
                or not (root is None if count == 0 else isinstance(root, str) and len(root) == 64 and set(root) <= set("0123456789abcdef"))
            ):
                raise FormatError("manifest: steps must be {count, records_root} (64 lowercase hex, null for no steps)")
        pre = Precommitment.from_json(obj["precommitment"])
        if pre.digest().hex() != obj["precommitment_digest"]:
            raise FormatError("manifest: precommitment_digest does not match the precommitment it carries")
        if pre.run_id != obj["run_id"]:
            raise FormatError("manifest: run_id differs from the precommitment's")
        chips = obj["chips"]
        if (
            not isinstance(chips, list)
            or not all(isinstance(c, dict) and set(c) == {"rank", "chip_id"} for c in chips)
            or [c["rank"] for c in chips] != list(range(len(chips)))
            or not all(c["chip_id"] is None or isinstance(c["chip_id"], str) for c in chips)
        ):
            raise FormatError("manifest: chips must be {rank, chip_id} entries listed by rank 0..W-1")
        if len(chips) != pre.layout.world_size:
            raise FormatError(f"manifest: {len(chips)} chips for a world size of {pre.layout.world_size}")
        digest = obj["sample_hashes"]
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= set("0123456789abcdef"):
            raise FormatError("manifest: sample_hashes must be an object digest (64 lowercase hex characters)")
        return cls(pre, tuple(c["chip_id"] for c in chips), digest, dict(steps) if with_steps and isinstance(steps, dict) else None)


def prover_key(storage: RunStorage) -> SigningKey:
    """The run directory's Prover key, created on first use (only before a manifest exists).

    Once a manifest is signed, ``keys/prover.pub`` is what verifies it: a missing private key is
    an error rather than a reason to make a new one (which would replace that public key), and a
    private key whose public half differs from ``keys/prover.pub`` is refused.
    """
    if storage.exists(PROVER_KEY):
        key = SigningKey.from_pem(storage.read(PROVER_KEY))
        if storage.exists(PROVER_PUB) and VerifyKey.from_pem(storage.read(PROVER_PUB)) != key.public_key:
            raise StoreError(f"Prover key {storage.path(PROVER_KEY)} does not match {storage.path(PROVER_PUB)}")
        return key
    if storage.exists(MANIFEST_FILE):
        raise StoreError(
            f"no Prover private key at {storage.path(PROVER_KEY)}: this run's manifest was signed with a key "
            "kept elsewhere; sign with that key"
        )
    key = SigningKey.generate()
    if storage.local_path is not None:
        (storage.local_path / "keys").mkdir(exist_ok=True)
        key.save(storage.path(PROVER_KEY))
    else:
        storage.write_atomic(PROVER_KEY, key.to_pem())
    write_public_key(storage, key)
    return key


def write_public_key(storage: RunStorage, key: SigningKey) -> None:
    """Publish the key's public half as ``keys/prover.pub`` (before the manifest it verifies)."""
    storage.write_atomic(PROVER_PUB, key.public_key.to_pem())


def write_manifest(storage: RunStorage, manifest: Manifest, key: SigningKey) -> Envelope:
    subject = ("precommitment", {DIGEST_BLAKE3: manifest.precommitment.digest().hex()})
    stmt = statement([subject], manifest.predicate_type, manifest.predicate())
    env = sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(stmt), key)
    storage.write_atomic(MANIFEST_FILE, env.to_json())
    return env


def read_manifest(storage: RunStorage, keys: list[VerifyKey] | None = None) -> Manifest:
    """Verify and parse the manifest; `keys` default to the run directory's ``keys/prover.pub``."""
    if not storage.exists(MANIFEST_FILE):
        raise StoreError(f"no run manifest at {storage.path(MANIFEST_FILE)}; is this a transcript directory?")
    if keys is None:
        if not storage.exists(PROVER_PUB):
            raise StoreError(f"no Prover public key at {storage.path(PROVER_PUB)} to verify the manifest with")
        keys = [VerifyKey.from_pem(storage.read(PROVER_PUB))]
    try:
        env = Envelope.from_json(storage.read(MANIFEST_FILE))
        payload = verify_envelope(env, keys)
    except (FormatError, SignatureError) as exc:
        raise StoreError(f"run manifest {storage.path(MANIFEST_FILE)} does not verify: {exc}") from None
    where = f"run manifest {storage.path(MANIFEST_FILE)}"
    try:
        stmt = parse_canonical_json(payload)
        if isinstance(stmt, dict) and stmt.get("predicateType") == _MANIFEST_PREDICATE_V1:
            raise StoreError(
                f"{where} is a v1 manifest ({_MANIFEST_PREDICATE_V1}), whose subject names BLAKE3 'blake3'; this "
                f"version reads only {MANIFEST_PREDICATE} (digest sets name it {DIGEST_BLAKE3!r}): re-sign the same predicate as v2 with the Prover key"
            )
        if not isinstance(stmt, dict) or stmt.get("predicateType") not in (MANIFEST_PREDICATE, MANIFEST_PREDICATE_V3):
            got = stmt.get("predicateType") if isinstance(stmt, dict) else type(stmt).__name__
            raise StoreError(f"{where} has predicate type {got!r}")
        manifest = Manifest.from_predicate(stmt.get("predicate"), with_steps=stmt["predicateType"] == MANIFEST_PREDICATE_V3)
        subjects = stmt.get("subject")
        first = subjects[0] if isinstance(subjects, list) and subjects else None
        digest = first.get("digest") if isinstance(first, dict) else None
        subject = digest.get(DIGEST_BLAKE3) if isinstance(digest, dict) else None
    except FormatError as exc:
        raise StoreError(f"{where} is malformed: {exc}") from None
    if subject != manifest.precommitment.digest().hex():
        raise StoreError(f"{where}: statement subject does not match the precommitment digest")
    return manifest
