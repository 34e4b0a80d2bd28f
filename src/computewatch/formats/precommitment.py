
"""The precommitment (§5.1): what every chip logs before the run's first optimizer step.

It binds the run's metadata 𝕄 (hyperparameters, the training program's entry point and the
digest of its files, the replay environment), the dataset
commitment (Merkle root over per-sample hashes), the PoTD seed derivation (nonce and the seed
it yields) and the memory map of every chip (the shard layout). Its digest is BLAKE3-256 over
the canonical JSON below; because the chip logs that digest before any snapshot, the Prover
cannot later pick a different transcript that happens to end at a logged shard.

    {"v": 2, "kind": "computewatch/precommitment", "run_id": ..., "hyperparameters": {...},
     "program": {"entry": "module:attribute"}, "code_digest": hex,
     "environment": {"torch", "python", "machine", "cpu_capability", "threads", "deterministic"},
     "dataset": {summary of the DatasetCommitment},
     "seed_derivation": {"scheme": ..., "nonce": hex, "seed": hex},
     "checkpoint_every": k, "layout": {ShardLayout JSON}}

Version 3 differs only in ``program``: ``{"entry": ..., "template": name}`` names the trusted
template (formats/templates.py) the run declares, whose code the Verifier executes from its own
pinned copy. Versions 4 (custom program) and 5 (template) are versions 2 and 3 encoded in
canonical JSON version 2 (RFC 8785) before hashing: what the Recorder writes now. All four are
read; each version's digest is over its own encoding, so an existing digest never changes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from computewatch.crypto.canonical import canonical_json_at
from computewatch.crypto.errors import FormatError
from computewatch.crypto.digest import blake3_bytes
from computewatch.formats.layout import ShardLayout
from computewatch.formats.program import ENVIRONMENT_FIELDS, code_digest_of, parse_entry

__all__ = ["PRECOMMIT_KIND", "PRECOMMIT_VERSION", "SEED_SCHEME", "Precommitment", "code_digest"]

PRECOMMIT_KIND = "computewatch/precommitment"
PRECOMMIT_VERSION = 5  # with a template; a custom program's precommitment is written as v4
# version -> (canonical JSON version, names a template); 2 and 3 are the legacy encoding.
_VERSIONS = {2: (1, False), 3: (1, True), 4: (2, False), 5: (2, True)}
# Names the derivation in computewatch.formats.seed: BLAKE3 derive_key over dataset_root || nonce.
SEED_SCHEME = "computewatch-potd-v1"


def code_digest(paths: Sequence[str | os.PathLike[str]], root: str | os.PathLike[str] | None = None) -> str:
    """BLAKE3-256 over canonical JSON {"v": 1, "files": {relative path: BLAKE3 hex of the file}}.

    Paths are named relative to `root` (default: their common folder) so the digest does not
    depend on where the code is checked out.
    """
    files = [Path(p).resolve() for p in paths]
    if not files:
        raise FormatError("code digest needs at least one file")
    base = Path(root).resolve() if root is not None else Path(os.path.commonpath([f.parent for f in files]))
    table = {}
    for f in files:
        if not f.is_relative_to(base):
            raise FormatError(f"code digest: {f} is not inside {base}")
        try:
            table[f.relative_to(base).as_posix()] = f.read_bytes()
        except OSError as exc:
            raise FormatError(f"code digest: cannot read {f}: {exc}") from None
    return code_digest_of(table)


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= set("0123456789abcdef")


@dataclass(frozen=True)
class Precommitment:
    run_id: str
    hyperparameters: dict[str, Any]
    code_digest: str
    dataset: dict[str, Any]
    nonce: bytes
    seed: bytes
    checkpoint_every: int
    layout: ShardLayout
    program_entry: str  # "module:attribute" inside the files code_digest binds
    environment: dict[str, Any]  # formats.program.current_environment() of the recording run
    program_template: str | None = None  # a trusted template's name (v3, v5); None: a custom program (v2, v4)
    canonical: int = 2  # canonical JSON version of the encoding (1: legacy v2/v3; 2: RFC 8785, v4/v5)

    @property
    def program_kind(self) -> str:
        return "template" if self.program_template is not None else "custom"

    def to_json(self) -> dict[str, Any]:
        program: dict[str, Any] = {"entry": self.program_entry}
        if self.program_template is not None:
            program["template"] = self.program_template
        return {
            "v": self.version,
            "kind": PRECOMMIT_KIND,
            "run_id": self.run_id,
            "hyperparameters": self.hyperparameters,
            "program": program,
            "code_digest": self.code_digest,
            "environment": self.environment,
            "dataset": self.dataset,
            "seed_derivation": {"scheme": SEED_SCHEME, "nonce": self.nonce.hex(), "seed": self.seed.hex()},
            "checkpoint_every": self.checkpoint_every,
            "layout": self.layout.to_json(),
        }

    @property
    def version(self) -> int:
        """The format version: 2/3 (canonical JSON v1) or 4/5 (RFC 8785), 3 and 5 naming a template."""
        for version, (canonical, template) in _VERSIONS.items():
            if canonical == self.canonical and template == (self.program_template is not None):
                return version
        raise FormatError(f"precommitment: no canonical JSON version {self.canonical!r} (known: 1, 2)")

    def encode(self) -> bytes:
        """Canonical JSON bytes (of the precommitment's version); raises FormatError if a
        hyperparameter is not JSON-safe."""
        return canonical_json_at(self.canonical, self.to_json())

    def digest(self) -> bytes:
        return blake3_bytes(self.encode())

    @classmethod
    def from_json(cls, obj: Any) -> Precommitment:
        if isinstance(obj, dict) and obj.get("v") == 1 and obj.get("kind") == PRECOMMIT_KIND:
            raise FormatError("precommitment v1 names no training program and cannot be replayed; record the run again (v2)")
        expected = {"v", "kind", "run_id", "hyperparameters", "program", "code_digest", "environment", "dataset", "seed_derivation", "checkpoint_every", "layout"}
        if not isinstance(obj, dict) or set(obj) != expected:
            raise FormatError(f"precommitment must have exactly the fields {sorted(expected)}")
        if not isinstance(obj["v"], int) or isinstance(obj["v"], bool) or obj["v"] not in _VERSIONS or obj["kind"] != PRECOMMIT_KIND:
            raise FormatError(f"not a v2, v3, v4 or v5 precommitment (v={obj['v']!r}, kind={obj['kind']!r})")
        canonical, with_template = _VERSIONS[obj["v"]]
        program, env = obj["program"], obj["environment"]
        fields = {"entry", "template"} if with_template else {"entry"}
        if not isinstance(program, dict) or set(program) != fields:
            want = '{"entry": "module:attribute", "template": name}' if with_template else '{"entry": "module:attribute"}'
            raise FormatError(f"precommitment v{obj['v']}: program must be {want}")
        template = program.get("template")
        if template is not None and (not isinstance(template, str) or not template):
            raise FormatError("precommitment: program.template must be a non-empty string")
        parse_entry(program["entry"])
        if not isinstance(env, dict) or set(env) != set(ENVIRONMENT_FIELDS):
            raise FormatError(f"precommitment: environment must have exactly the fields {sorted(ENVIRONMENT_FIELDS)}")
        threads = env["threads"]
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1 or not isinstance(env["deterministic"], bool):
            raise FormatError("precommitment: environment threads must be a positive integer and deterministic a boolean")
        if not all(isinstance(env[k], str) for k in ("torch", "python", "machine", "cpu_capability")):
            raise FormatError("precommitment: environment torch, python, machine and cpu_capability must be strings")
        seed = obj["seed_derivation"]
        if not isinstance(seed, dict) or seed.get("scheme") != SEED_SCHEME or set(seed) != {"scheme", "nonce", "seed"}:
            raise FormatError(f"precommitment seed derivation must use scheme {SEED_SCHEME!r}")
        try:
            nonce, seed_bytes = bytes.fromhex(seed["nonce"]), bytes.fromhex(seed["seed"])
        except (TypeError, ValueError):
            raise FormatError("precommitment nonce and seed must be hex") from None
        dataset, k = obj["dataset"], obj["checkpoint_every"]
        if not isinstance(obj["run_id"], str) or not isinstance(obj["hyperparameters"], dict) or not _is_hex64(obj["code_digest"]):
            raise FormatError("precommitment: run_id must be a string, hyperparameters an object, code_digest 64 lowercase hex")
        if not isinstance(dataset, dict) or not _is_hex64(dataset.get("root")) or not isinstance(dataset.get("size"), int):
            raise FormatError("precommitment: dataset must be a dataset commitment summary with a hex root and a size")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise FormatError(f"precommitment: checkpoint_every must be a positive integer, got {k!r}")
        return cls(
            run_id=obj["run_id"],
            hyperparameters=obj["hyperparameters"],
            code_digest=obj["code_digest"],
            dataset=obj["dataset"],
            nonce=nonce,
            seed=seed_bytes,
            checkpoint_every=obj["checkpoint_every"],
            layout=ShardLayout.from_json(obj["layout"]),
            program_entry=program["entry"],
            environment=dict(env),
            program_template=template,
            canonical=canonical,
        )
