"""Identity binding: a run is (Prover key, run id, precommitment digest), never a run id alone.

A run id is a name the Prover chooses, so an approval, a register record or a verdict that
names only the run id can be inherited by anyone who names a run the same (Prover B calls its
run after Prover A's approved run id). Everything that speaks of a run therefore binds the three
together: the key id (hex SHA-256 of the raw Ed25519 key, `VerifyKey.keyid`) of the pinned
Prover key under which the run's manifest verifies, the run id, and the digest of the
precommitment every chip logged.

`manifest_signers` finds which pinned keys signed a manifest; `held_conflicts` compares the
submitted runs with the bindings the Verifier holds (bound policy approvals, register records)
and names every run whose id another Prover holds, or that reuses an id held for another
precommitment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from computewatch.crypto.dsse import Envelope, pae
from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.crypto.signing import VerifyKey

__all__ = ["RunBinding", "binding_findings", "held_conflicts", "manifest_signers", "register_bindings", "sole_prover"]


def _hex64(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= set("0123456789abcdef")


@dataclass(frozen=True)
class RunBinding:
    """(Prover key id, run id, precommitment digest); `prover` / `precommitment` None: unbound
    (a policy v1 approval by run id alone, which approves nothing any more)."""

    run_id: str
    prover: str | None = None
    precommitment: str | None = None
    source: str = ""  # where the Verifier holds it from ("policy approval", "register", ...)

    @property
    def bound(self) -> bool:
        return self.prover is not None and self.precommitment is not None

    def grants(self, run_id: str, prover: str | None, precommitment: str | None) -> bool:
        """True when this binding names exactly that run of that Prover."""
        return self.bound and (self.run_id, self.prover, self.precommitment) == (run_id, prover, precommitment)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "prover": self.prover, "precommitment": self.precommitment}

    @classmethod
    def from_json(cls, obj: Any, where: str = "binding", source: str = "") -> RunBinding:
        """A string (run id only, unbound) or a table {run_id, prover, precommitment}."""
        if isinstance(obj, str) and obj:
            return cls(obj, source=source)
        if not isinstance(obj, dict) or set(obj) != {"run_id", "prover", "precommitment"}:
            raise FormatError(f"{where}: must be a run id or a table with exactly run_id, prover and precommitment")
        if not isinstance(obj["run_id"], str) or not obj["run_id"]:
            raise FormatError(f"{where}: run_id must be a non-empty string")
        for key in ("prover", "precommitment"):
            if not _hex64(obj[key]):
                raise FormatError(f"{where}: {key} must be 64 lowercase hex digits (a key id / a BLAKE3-256 digest)")
        return cls(obj["run_id"], obj["prover"], obj["precommitment"], source=source)


def manifest_signers(envelope_bytes: bytes, keys: Sequence[VerifyKey]) -> list[str]:
    """Key ids of the pinned `keys` with a valid signature on the envelope (sorted; empty if none)."""
    try:
        env = Envelope.from_json(envelope_bytes)
    except (ComputewatchError, ValueError):
        return []
    message = pae(env.payload_type, env.payload)
    out = set()
    for key in keys:
        for _keyid, sig in env.signatures:
            try:
                key.verify(sig, message)
            except ComputewatchError:
                continue
            out.add(key.keyid)
            break
    return sorted(out)


def held_conflicts(runs: Mapping[str, Mapping[str, Any]], held: Iterable[RunBinding]) -> list[str]:
    """Findings for submitted runs ({run id: {"provers": [key ids], "precommitment_digest": hex}})
    against the bindings held: an id held by another Prover, or held by the same Prover for
    another precommitment. Unbound holdings (a run id alone) cannot decide either and are skipped."""
    out = []
    for binding in held:
        if not binding.bound or binding.run_id not in runs:
            continue
        run = runs[binding.run_id]
        provers = list(run.get("provers") or [])
        where = f" ({binding.source})" if binding.source else ""
        if binding.prover not in provers:
            signed = ", ".join(p[:16] for p in provers) or "no pinned key"
            out.append(f"run {binding.run_id}: the id is held by Prover {binding.prover[:16]}...{where}, but this transcript is signed by {signed}: another Prover's run id")  # type: ignore[index]
        elif binding.precommitment != run.get("precommitment_digest"):
            out.append(f"run {binding.run_id}: the id is held{where} for precommitment {binding.precommitment[:16]}..., this run's precommitment differs: one id names one run")  # type: ignore[index]
    return out


def sole_prover(run: Mapping[str, Any]) -> str | None:
    """The one Prover key id a run's manifest verifies under (None: none, or several)."""
    provers = list(run.get("provers") or [])
    return provers[0] if len(provers) == 1 else None


def binding_findings(runs: Mapping[str, Mapping[str, Any]], policy_text: str | None, held: Iterable[RunBinding] = ()) -> list[str]:
    """The Verifier's identity check over the submitted runs: every bound approval of the policy
    and every binding the caller holds (register records) against the runs' signers and
    precommitments."""
    bindings = list(held)
    if policy_text:
        from computewatch.verifier.rules import Policy

        policy = Policy.from_bytes(policy_text.encode("utf-8"), source="policy")
        bindings += list(policy.approvals) + [b for rule in policy.rules for b in rule.approvals]
    return held_conflicts(runs, bindings)


def register_bindings(registry: Any) -> list[RunBinding]:
    """The register's declared runs as bindings (`VerifyRequest.held_runs`): the owner's
    registered key, the run id and the declared precommitment (unbound if none was declared)."""
    out = []
    for row in registry.runs():
        key = registry.owner_key(row["owner"])
        out.append(RunBinding(row["run_id"], key.keyid if row.get("precommitment") else None, row.get("precommitment"), source=f"register: declared by {row['owner']}"))
    return out
