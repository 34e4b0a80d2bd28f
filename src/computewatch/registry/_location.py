"""Landmarks, declared facility sites and location checks (docs/registry.md, "Location")."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.errors import ComputewatchError
from computewatch.landmark.geo import check_coordinates
from computewatch.registry import schema as s
from computewatch.registry._base import RegistryBase, inserted_id
from computewatch.registry._supply import _check_name, as_verify_key
from computewatch.registry.errors import NotFoundError, RegistryError
from computewatch.registry.locating import DEFAULT_MAX_AGE, DEFAULT_RADIUS_KM, Landmark, LocatedChip, check

__all__ = ["LocationMixin", "location_problems"]


def _coords(latitude: float, longitude: float) -> tuple[float, float]:
    try:
        return check_coordinates(latitude, longitude)
    except (TypeError, ValueError) as exc:
        raise RegistryError(str(exc)) from None


def location_problems(latest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The inspection problem a chip's latest location check adds (none when inside or never located)."""
    if latest is None or latest["inside"]:
        return []
    return [{"check": "location", "entry": None,
             "problem": f"location check {latest['id']} ({latest['recorded_at']}): {latest['finding']}"}]


class LocationMixin(RegistryBase):
    def add_landmark(self, name: str, pub: Any, latitude: float, longitude: float) -> dict[str, Any]:
        """Register a landmark: its Ed25519 key (signs round-trip records) and declared coordinates."""
        _check_name(name, "landmark")
        key = as_verify_key(pub)
        lat, lon = _coords(latitude, longitude)
        t = s.landmarks
        with self._write() as conn:
            if conn.execute(select(t.c.id).where((t.c.name == name) | (t.c.public_key == key.raw))).first() is not None:
                raise RegistryError(f"a landmark named {name!r} or with this key is already registered")
            conn.execute(insert(t).values(name=name, public_key=key.raw, keyid=key.keyid, latitude=repr(lat),
                                          longitude=repr(lon), created_at=self.now()))
        return {"name": name, "role": "landmark", "keyid": key.keyid, "latitude": lat, "longitude": lon}

    def landmarks(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [{"name": r.name, "keyid": r.keyid, "latitude": float(r.latitude), "longitude": float(r.longitude)}
                    for r in conn.execute(select(s.landmarks).order_by(s.landmarks.c.name))]

    def set_facility_site(self, owner: str, facility: str, latitude: float, longitude: float) -> dict[str, Any]:
        """Declare where an owner's facility is (created if new): location evidence is checked against it."""
        _check_name(facility, "facility")
        lat, lon = _coords(latitude, longitude)
        with self._write() as conn:
            row = self._facility(conn, self._party(conn, owner, ("owner",)).id, facility)
            assert row is not None
            conn.execute(update(s.facilities).where(s.facilities.c.id == row.id).values(latitude=repr(lat), longitude=repr(lon)))
        return {"owner": owner, "facility": facility, "latitude": lat, "longitude": lon}

    def _located_chip(self, conn: Connection, item: Any) -> LocatedChip:
        maker = self._party_of(conn, item.chipmaker_id)
        site = None
        if item.facility_id is not None:
            f = conn.execute(select(s.facilities).where(s.facilities.c.id == item.facility_id)).one()
            if f.latitude is not None:
                site = (float(f.latitude), float(f.longitude))
        return LocatedChip(item.label, bytes(item.device_key), bytes(item.certificate), self._key_of(maker),
                           self._facility_name(conn, item.facility_id), site)

    def locate(self, serial: str, evidence: bytes, *, radius_km: float | None = None,
               max_age: timedelta = DEFAULT_MAX_AGE) -> dict[str, Any]:
        """Check location evidence for `serial` against its declared facility and store the result
        (every signature, the registered landmarks, fresh nonces; `registry.locating`). Returns
        {"id", "serial", "facility", "inside", "bounds_km", "proven_within_km", "radius_km",
        "speed_km_per_ms", "finding", "problems"}; a finding flags the holder."""
        radius = DEFAULT_RADIUS_KM if radius_km is None else float(radius_km)
        if not radius > 0 or radius != radius or radius == float("inf"):
            raise RegistryError(f"the radius must be a positive number of km, got {radius_km!r}")
        with self._write() as conn:
            item = self._item(conn, serial, lock=True, kind="chip")
            chip = self._located_chip(conn, item)
            marks = {r.keyid: Landmark(r.name, self._key_of(r), (float(r.latitude), float(r.longitude)))
                     for r in conn.execute(select(s.landmarks))}
            n = s.location_nonces
            seen = {(r.landmark_keyid, r.nonce) for r in conn.execute(select(n.c.landmark_keyid, n.c.nonce))}
            try:
                result = check(evidence, chip, marks, seen, radius_km=radius, now=self._clock(), max_age=max_age)
            except ComputewatchError as exc:
                raise RegistryError(f"location evidence for {serial} is unusable: {exc}") from None
            nonces = result.pop("nonces")
            now = self.now()
            location_id = int(inserted_id(conn.execute(insert(s.locations).values(
                item_id=item.id, facility_id=item.facility_id, holder_id=item.holder_id,
                outcome="inside" if result["inside"] else "finding", finding=result["finding"],
                result=canonical_json(result).decode(), evidence=evidence, recorded_at=now,
            ))))
            if nonces:
                conn.execute(insert(n), [{"landmark_keyid": k, "nonce": v, "location_id": location_id} for k, v in nonces])
            if not result["inside"]:
                self._flag(conn, serial, item.id, item.holder_id, "location", result["finding"])  # type: ignore[attr-defined]
        return {"id": location_id, "recorded_at": now, **result}

    def locations(self, serial: str) -> list[dict[str, Any]]:
        """Every location check of the chip, oldest first."""
        with self._read() as conn:
            return self._location_docs(conn, self._item(conn, serial, kind="chip").id)

    def _location_docs(self, conn: Connection, item_id: int) -> list[dict[str, Any]]:
        t = s.locations
        rows = conn.execute(select(t).where(t.c.item_id == item_id).order_by(t.c.id)).all()
        return [{"id": r.id, "recorded_at": r.recorded_at, **json.loads(r.result)} for r in rows]

    def _latest_location(self, conn: Connection, item_id: int) -> dict[str, Any] | None:
        docs = self._location_docs(conn, item_id)
        return docs[-1] if docs else None

    def landmark(self, name: str) -> dict[str, Any]:
        for doc in self.landmarks():
            if doc["name"] == name:
                return doc
        raise NotFoundError(f"no landmark named {name!r} in the register")
