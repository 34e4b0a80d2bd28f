"""Declared models of the request bodies the service accepts (pydantic, strict): every field's
type, bounds and pattern, checked before anything is stored. A string where a number belongs,
"no" where a boolean belongs, a list where a digest belongs, an integer past 64 bits, a date
past the register's range, duplicate serials: all 422 with the field named.

Their JSON Schemas are published in docs/schemas/ (one file per action) and in the OpenAPI
document (`components.schemas`): `python -m computewatch.service.models docs/schemas`.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from computewatch.service.errors import ServiceError

__all__ = [
    "ACTION_MODELS",
    "PARTY_NAME",
    "CommitPlan",
    "DeclareRun",
    "Explain",
    "HashedTranscriptHead",
    "MarkExplained",
    "PlanSeed",
    "RecordInspection",
    "Refuse",
    "Session",
    "SubmitTranscript",
    "VerifyJob",
    "json_schemas",
    "parse_body",
]

MAX_INT = 2**63 - 1  # what both databases store in a BIGINT
# A party's name names its folder (inputs/<party>/): it starts with a letter or digit, so it is
# never '.', '..' or hidden, and holds no separator.
PARTY_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,199}$"
Serial = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Text200 = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
PlanId = Annotated[int, Field(ge=1, le=MAX_INT)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
RelPath = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Session(_Body):
    """`session`: trade a signed request for a dashboard token."""


class DeclareRun(_Body):
    """`declare-run`: an owner declares a run and the chips it ran on."""

    run_id: Text200
    serials: Annotated[list[Serial], Field(min_length=1, max_length=4096)]
    precommitment: Hex32 | None = None

    @field_validator("serials")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("serials must be distinct")
        return v


class HashedTranscriptHead(BaseModel):
    """The fields of a signed hashed transcript's predicate the service reads and stores (the
    rest is the Verifier's to check when it replays)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    v: Literal[1]
    kind: Literal["computewatch/hashed-transcript"]
    run_id: Text200
    precommitment_digest: Hex32


class SubmitTranscript(_Body):
    """`submit-transcript`: `{"export": the signed hashed transcript (a DSSE envelope object)}`."""

    export: dict[str, Any]


class Explain(_Body):
    """`explain`: an owner answers a queued snapshot with the run that explains it."""

    serial: Serial
    counter: Count
    run_id: Text200
    note: Annotated[str, StringConstraints(max_length=4000)] = ""


class MarkExplained(_Body):
    """`mark-explained`: the Verifier closes a queued snapshot."""

    serial: Serial
    counter: Count
    status: Literal["explained", "unexplained"]
    verdict_ref: Text200
    shard_digest: Hex32 | None = None


class ChipCopy(_Body):
    """A chip named by the service's own log copy of it (report mode)."""

    serial: Serial


class VerifyJob(_Body):
    """`verify`: run directories and chip state folders (paths under the data folder; an owner's
    under `inputs/<owner>/`), or a report-mode chip by serial."""

    runs: Annotated[list[RelPath], Field(min_length=1, max_length=64)]
    chips: Annotated[list[RelPath | ChipCopy], Field(min_length=1, max_length=4096)]
    mode: Literal["exact", "tolerance"] = "exact"
    segments: Annotated[int, Field(ge=0, le=10000)] | Literal["all", "auto"] = "auto"  # auto: the detection target decides


def _utc(text: str) -> datetime:
    t = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if not 2000 <= t.year <= 2999:  # a period must end (start + days) inside datetime's range
        raise ValueError("start must lie in the years 2000 to 2999")
    return t


class CommitPlan(_Body):
    """`commit-plan`: an inspector commits a monitoring period's plan."""

    period: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    flops: Positive
    owners: Annotated[list[Annotated[str, StringConstraints(pattern=PARTY_NAME)]], Field(max_length=10_000)] | None = None
    T: Annotated[float, Field(gt=0, le=36500, allow_inf_nan=False)] = 30.0
    T_m: Annotated[float, Field(gt=0, le=3650, allow_inf_nan=False)] = 30.0
    p: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.9
    f: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] = 0.1
    a: Positive | None = None
    formula: Literal["exact", "linear"] = "exact"
    group_by_facility: bool = False
    start: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")] | None = None

    @field_validator("start")
    @classmethod
    def _start(cls, v: str | None) -> str | None:
        if v is not None:
            _utc(v)
        return v

    @field_validator("owners")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("owners must be distinct")
        return v

    def args(self) -> dict[str, Any]:
        """Keyword arguments of `Registry.commit_plan` (besides period and owners)."""
        return {"flops": self.flops, "start": None if self.start is None else _utc(self.start), "T": self.T, "T_m": self.T_m,
                "p": self.p, "f": self.f, "a": self.a, "formula": self.formula, "group_by_facility": self.group_by_facility}


class PlanSeed(_Body):
    """`draw-plan`, `reveal-plan`: the plan and its seed."""

    plan: PlanId
    seed: Annotated[str, StringConstraints(pattern=r"^(?:[0-9a-f]{2}){1,64}$")]


class RecordInspection(_Body):
    """`record-inspection`: the presented chip's state folder under the data folder."""

    serial: Serial
    chip_dir: RelPath
    plan: PlanId | None = None


class Refuse(_Body):
    """`refuse`: the chip's holder refused an inspection."""

    serial: Serial
    reason: Annotated[str, StringConstraints(min_length=1, max_length=4000)]
    plan: PlanId | None = None


ACTION_MODELS: dict[str, type[BaseModel]] = {
    "session": Session,
    "declare-run": DeclareRun,
    "submit-transcript": SubmitTranscript,
    "explain": Explain,
    "mark-explained": MarkExplained,
    "verify": VerifyJob,
    "commit-plan": CommitPlan,
    "draw-plan": PlanSeed,
    "reveal-plan": PlanSeed,
    "record-inspection": RecordInspection,
    "refuse": Refuse,
}


def parse_body(model: type[Any], body: Any, what: str = "body") -> Any:
    """`body` as `model`, or 422 naming the first bad field (never the value itself at length)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in (what, *first.get("loc", ())))
        msg = {"missing": "missing (required field)", "extra_forbidden": "unexpected field"}.get(first.get("type", ""), first.get("msg", "invalid"))
        raise ServiceError(422, f"{where}: {msg}"[:300]) from None


def json_schemas() -> dict[str, dict[str, Any]]:
    """Action (or document) name -> JSON Schema (draft 2020-12) of its body."""
    out = {action: model.model_json_schema() for action, model in ACTION_MODELS.items()}
    out["hashed-transcript-head"] = HashedTranscriptHead.model_json_schema()
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "docs/schemas")
    folder.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"urn:computewatch:service-body:{name}", **schema}
        (folder / f"service-{name}.schema.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
