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
from computewatch.registry.unit import Service
from computewatch.registry._parties import as_verify_key, check_name
from computewatch.registry.errors import NotFoundError, RegistryError
from computewatch.registry.rows import LocationCheck, RegisteredLandmark
from computewatch.registry.locating import DEFAULT_MAX_AGE, DEFAULT_RADIUS_KM, Landmark, LocatedChip, check

__all__ = ["LocationService", "location_problems"]


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


class LocationService(Service):
    def add_landmark(self, name: str, pub: Any, latitude: float, longitude: float) -> RegisteredLandmark:
        """Register a landmark: its Ed25519 key (signs round-trip records) and declared coordinates."""
        check_name(name, "landmark")
        key = as_verify_key(pub)
        lat, lon = _coords(latitude, longitude)
        t = s.landmarks
        with self._uow.write() as conn:
            if conn.execute(select(t.c.id).where((t.c.name == name) | (t.c.public_key == key.raw))).first() is not None:
                raise RegistryError(f"a landmark named {name!r} or with this key is already registered")
            conn.execute(insert(t).values(name=name, public_key=key.raw, keyid=key.keyid, latitude=repr(lat),
                                          longitude=repr(lon), created_at=self._uow.now()))
        return RegisteredLandmark(name, key.keyid, lat, lon)

    def landmarks(self) -> list[RegisteredLandmark]:
        with self._uow.read() as conn:
            return [RegisteredLandmark(r.name, r.keyid, float(r.latitude), float(r.longitude))
                    for r in conn.execute(select(s.landmarks).order_by(s.landmarks.c.name))]

    def set_facility_site(self, owner: str, facility: str, latitude: float, longitude: float) -> dict[str, Any]:
        """Declare where an owner's facility is (created if new): location evidence is checked against it."""
        check_name(facility, "facility")
        lat, lon = _coords(latitude, longitude)
        with self._uow.write() as conn:
            row = self._uow.facility_row(conn, self._uow.party_row(conn, owner, ("owner",)).id, facility)
            assert row is not None
            conn.execute(update(s.facilities).where(s.facilities.c.id == row.id).values(latitude=repr(lat), longitude=repr(lon)))
        return {"owner": owner, "facility": facility, "latitude": lat, "longitude": lon}

    def _located_chip(self, conn: Connection, item: Any) -> LocatedChip:
        maker = self._uow.party_at(conn, item.chipmaker_id)
        site = None
        if item.facility_id is not None:
            f = conn.execute(select(s.facilities).where(s.facilities.c.id == item.facility_id)).one()
            if f.latitude is not None:
                site = (float(f.latitude), float(f.longitude))
        return LocatedChip(item.label, bytes(item.device_key), bytes(item.certificate), self._uow.key_of(maker),
                           self._uow.facility_name(conn, item.facility_id), site)

    def locate(self, serial: str, evidence: bytes, *, radius_km: float | None = None,
               max_age: timedelta = DEFAULT_MAX_AGE) -> LocationCheck:
        """Check location evidence for `serial` against its declared facility and store the result
        (every signature, the registered landmarks, fresh nonces; `registry.locating`). Returns
        {"id", "serial", "facility", "inside", "bounds_km", "proven_within_km", "radius_km",
        "speed_km_per_ms", "finding", "problems"}; a finding flags the holder."""
        radius = DEFAULT_RADIUS_KM if radius_km is None else float(radius_km)
        if not radius > 0 or radius != radius or radius == float("inf"):
            raise RegistryError(f"the radius must be a positive number of km, got {radius_km!r}")
        with self._uow.write() as conn:
            item = self._uow.item_row(conn, serial, lock=True, kind="chip")
            chip = self._located_chip(conn, item)
            marks = {r.keyid: Landmark(r.name, self._uow.key_of(r), (float(r.latitude), float(r.longitude)))
                     for r in conn.execute(select(s.landmarks))}
            n = s.location_nonces
            seen = {(r.landmark_keyid, r.nonce) for r in conn.execute(select(n.c.landmark_keyid, n.c.nonce))}
            try:
                result = check(evidence, chip, marks, seen, radius_km=radius, now=self._uow.clock(), max_age=max_age)
            except ComputewatchError as exc:
                raise RegistryError(f"location evidence for {serial} is unusable: {exc}") from None
            nonces = result.pop("nonces")
            now = self._uow.now()
            location_id = int(self._uow.insert_id(conn, insert(s.locations).values(
                item_id=item.id, facility_id=item.facility_id, holder_id=item.holder_id,
                outcome="inside" if result["inside"] else "finding", finding=result["finding"],
                result=canonical_json(result).decode(), evidence=evidence, recorded_at=now,
            )))
            if nonces:
                conn.execute(insert(n), [{"landmark_keyid": k, "nonce": v, "location_id": location_id} for k, v in nonces])
            if not result["inside"]:
                self._svc.custody.flag(conn, serial, item.id, item.holder_id, "location", result["finding"])
        return LocationCheck.from_result(location_id, now, result)

    def locations(self, serial: str) -> list[LocationCheck]:
        """Every location check of the chip, oldest first."""
        with self._uow.read() as conn:
            return self.location_rows(conn, self._uow.item_row(conn, serial, kind="chip").id)

    def location_rows(self, conn: Connection, item_id: int) -> list[LocationCheck]:
        t = s.locations
        rows = conn.execute(select(t).where(t.c.item_id == item_id).order_by(t.c.id)).all()
        return [LocationCheck.from_result(r.id, r.recorded_at, json.loads(r.result)) for r in rows]

    def latest_location(self, conn: Connection, item_id: int) -> LocationCheck | None:
        checks = self.location_rows(conn, item_id)
        return checks[-1] if checks else None

    def landmark(self, name: str) -> RegisteredLandmark:
        for mark in self.landmarks():
            if mark.name == name:
                return mark
        raise NotFoundError(f"no landmark named {name!r} in the register")
