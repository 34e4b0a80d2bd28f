"""computewatch.landmark: location by signed round trips (docs/registry.md "Location").

A landmark is a registered party with a key and declared coordinates; it runs `serve` and
measures round trips to chips that sign its nonces with their device keys (`measure`). The
register turns each round trip into an upper bound on distance (`geo`): delay can be added, never
removed.
"""

from __future__ import annotations

from computewatch.landmark.client import LandmarkError, measure
from computewatch.landmark.geo import FIBRE_KM_PER_MS, VACUUM_KM_PER_MS, Bound, bound_km, distance_km
from computewatch.landmark.server import LandmarkServer

__all__ = [
    "FIBRE_KM_PER_MS",
    "VACUUM_KM_PER_MS",
    "Bound",
    "LandmarkError",
    "LandmarkServer",
    "bound_km",
    "distance_km",
    "measure",
]
