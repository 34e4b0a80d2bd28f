"""Parties: chipmakers (their pinned roots), owners, inspectors and fabs, and their keys."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, insert, select

from computewatch.crypto.canonical import canonical_json, parse_canonical_json
from computewatch.crypto.signing import VerifyKey
from computewatch.registry import schema as s
from computewatch.registry.errors import RegistryError
from computewatch.registry.unit import Service

__all__ = ["Party", "PartyService", "as_verify_key", "check_name", "party_of"]

_NAME_MAX = 200


def as_verify_key(pub: VerifyKey | bytes | str | os.PathLike[str]) -> VerifyKey:
    """A public key given as a VerifyKey, PEM bytes, or the path of a PEM file."""
    if isinstance(pub, VerifyKey):
        return pub
    if isinstance(pub, (bytes, bytearray)):
        return VerifyKey.from_pem(bytes(pub))
    return VerifyKey.load(pub)


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > _NAME_MAX or name != name.strip():
        raise RegistryError(f"{what} name {name!r}: 1 to {_NAME_MAX} characters, no leading or trailing spaces")
    if any(ch in name for ch in "\n\r\t/\\\x00") or name == "*" or "+" in name:
        raise RegistryError(f"{what} name {name!r} must not contain line breaks, tabs, '/', '\\', NUL, '+' or be '*'")
    if name.startswith("."):  # names become folder names (the service's inputs/<party>/): never '.', '..' or hidden
        raise RegistryError(f"{what} name {name!r} must not start with '.'")
    return name


@dataclass(frozen=True)
class Party:
    """A registered party: its name, role, Ed25519 key and what it declared at registration."""

    name: str
    role: str
    keyid: str
    public_key: bytes  # raw 32 bytes
    info: dict[str, Any]
    created_at: str

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey.from_raw(self.public_key)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "keyid": self.keyid, "public_key": self.public_key.hex(),
                "info": self.info, "created_at": self.created_at}


class PartyService(Service):
    """Who takes part: each party once, each key to one party."""

    def add_party(self, name: str, pub: Any, role: str, info: dict[str, Any] | None = None) -> Party:
        """Register a party and its Ed25519 public key (PEM bytes, a PEM file path or a VerifyKey)."""
        check_name(name, role)
        if role not in s.ROLES:
            raise RegistryError(f"role must be one of {', '.join(s.ROLES)}, got {role!r}")
        key = as_verify_key(pub)
        with self._uow.write() as conn:
            t = s.parties
            if conn.execute(select(t.c.id).where(t.c.name == name)).first() is not None:
                raise RegistryError(f"a party named {name!r} is already registered")
            other = conn.execute(select(t.c.name).where(t.c.public_key == key.raw)).first()
            if other is not None:
                raise RegistryError(f"this public key is already registered to {other.name!r}: one key, one party")
            conn.execute(
                insert(t).values(
                    name=name,
                    role=role,
                    public_key=key.raw,
                    keyid=key.keyid,
                    info=canonical_json(info or {}).decode(),
                    created_at=self._uow.now(),
                )
            )
        return self.party(name)

    def add_chipmaker(self, name: str, pub: Any) -> Party:
        """Pin a chipmaker's root key: chips it certifies can then be registered."""
        return self.add_party(name, pub, "chipmaker")

    def add_owner(self, name: str, pub: Any, role: str = "owner") -> Party:
        """Register a chip owner (a Prover) or, with role="inspector", an inspector."""
        if role not in ("owner", "inspector"):
            raise RegistryError(f"add_owner registers owners and inspectors, not {role!r}")
        return self.add_party(name, pub, role)

    def add_fab(self, name: str, pub: Any, *, node_nm: int | None = None, site: str | None = None) -> Party:
        """Register a fab (it signs the custody transfers of the wafers it ships)."""
        info: dict[str, Any] = {}
        if node_nm is not None:
            if not isinstance(node_nm, int) or node_nm < 1:
                raise RegistryError(f"node size must be a positive number of nanometres, got {node_nm!r}")
            info["node_nm"] = node_nm
        if site is not None:
            info["site"] = site
        return self.add_party(name, pub, "fab", info)

    def party(self, name: str) -> Party:
        with self._uow.read() as conn:
            return party_of(self._uow.party_row(conn, name))

    def parties(self, role: str | None = None) -> list[Party]:
        with self._uow.read() as conn:
            q = select(s.parties).order_by(s.parties.c.name)
            if role is not None:
                q = q.where(s.parties.c.role == role)
            return [party_of(r) for r in conn.execute(q)]

    def owner_key(self, name: str) -> VerifyKey:
        """The registered public key of party `name` (the Verifier pins a Prover's key here)."""
        with self._uow.read() as conn:
            return self._uow.key_of(self._uow.party_row(conn, name))


def party_of(row: Row) -> Party:
    """The typed party of a `parties` row."""
    return Party(row.name, row.role, row.keyid, bytes(row.public_key), parse_canonical_json(row.info.encode()),
                 row.created_at)
