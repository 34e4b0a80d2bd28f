"""Distance on the Earth and the distance a round trip can span.

A signal covers at most c = 299,792 km/s in vacuum and about 2/3 of that in optical fibre, and it
must go there and back: a round trip of t ms bounds the one-way distance by t * 150 km (vacuum,
sound against any medium: microwave or laser relays included) or t * 100 km (fibre, the usual
rule of thumb; tighter, but a relay over a faster medium could beat it). Processing time only
lengthens the round trip, so both bounds stay upper bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["EARTH_RADIUS_KM", "FIBRE_KM_PER_MS", "VACUUM_KM_PER_MS", "Bound", "bound_km", "check_coordinates", "distance_km"]

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
VACUUM_KM_PER_MS = 299_792.458 / 1000 / 2  # km of one-way distance per ms of round trip, light in vacuum
FIBRE_KM_PER_MS = 100.0  # the same in fibre (refractive index ~1.5), rounded as the field does


@dataclass(frozen=True)
class Bound:
    """How far a chip can be from a landmark, given a round trip."""

    rtt_ms: float
    fibre_km: float
    vacuum_km: float


def bound_km(rtt_ns: int) -> Bound:
    ms = rtt_ns / 1e6
    return Bound(ms, ms * FIBRE_KM_PER_MS, ms * VACUUM_KM_PER_MS)


def check_coordinates(latitude: float, longitude: float) -> tuple[float, float]:
    """Validated (latitude, longitude) in degrees; ValueError names the bad one."""
    lat, lon = float(latitude), float(longitude)
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise ValueError(f"latitude must be a number of degrees from -90 to 90, got {latitude!r}")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise ValueError(f"longitude must be a number of degrees from -180 to 180, got {longitude!r}")
    return lat, lon


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine, spherical Earth: within 0.5% of the ellipsoid)."""
    (lat1, lon1), (lat2, lon2) = (tuple(math.radians(x) for x in p) for p in (a, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
