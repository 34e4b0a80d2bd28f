"""The service's parts, built once per app: register, authenticator, log copies, jobs, signer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from computewatch.registry import Registry
from computewatch.service.auth import MAX_SIGNATURES, Authenticator, Principal
from computewatch.service.checkpoint import NoteSigner
from computewatch.service.config import ServiceConfig
from computewatch.service.errors import ServiceError
from computewatch.service.jobs import JobStore, Worker
from computewatch.service.logs import ChipLogs

__all__ = ["Service"]


@dataclass
class Service:
    config: ServiceConfig
    reg: Registry
    auth: Authenticator
    logs: ChipLogs
    jobs: JobStore
    signer: NoteSigner
    worker: Worker | None = None

    @property
    def engine(self) -> Engine:
        return self.reg.engine

    def held(self, who: Principal) -> set[str] | None:
        """The serials `who` may read: None for the Verifier (every chip), else the chips it holds."""
        if who.is_verifier:
            return None
        if who.role == "inspector":
            return None  # inspectors inspect any chip: they read every chip and its custody trail
        return set(self.reg.chips_of(who.name, statuses=("active", "damaged", "lost", "destroyed")))

    def may_read_chip(self, who: Principal, serial: str) -> None:
        held = self.held(who)
        if held is not None and serial not in held:
            raise ServiceError(403, f"chip {serial!r} is not held by {who.name!r}")

    def info(self) -> dict[str, Any]:
        c = self.config
        return {
            "register": self.reg.register_id,
            "checkpoint_key": {"name": self.signer.name, "vkey": self.signer.vkey, "pem": self.signer.key.public_key.to_pem().decode()},
            "limits": {"max_body": c.max_body, "max_entry": c.max_entry, "max_batch": c.max_batch, "max_batch_entries": c.max_batch_entries,
                       "max_upload": c.max_upload, "max_unpacked": c.max_unpacked,
                       "max_members": c.max_members, "max_signatures": MAX_SIGNATURES, "max_skew_s": c.max_skew_s,
                       "session_ttl_s": c.session_ttl_s},
            "verifiers": sorted(c.verifiers),
        }
