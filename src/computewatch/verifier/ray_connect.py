"""Connecting to a Ray cluster with a deadline: `ray.init` on an address that accepts and never
answers would otherwise wait forever (the trusted cluster's `ray_address`, docs/verifier.md)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from computewatch.crypto.errors import ComputewatchError

__all__ = ["RAY_CONNECT_TIMEOUT_S", "RAY_LOCAL_START_TIMEOUT_S", "RayConnectError", "connect_ray"]

RAY_CONNECT_TIMEOUT_S = 30.0
RAY_LOCAL_START_TIMEOUT_S = 180.0  # "local" starts a cluster here (GCS, raylet, workers): slow on loaded cores
log = logging.getLogger("computewatch.verifier.cluster")


class RayConnectError(ComputewatchError):
    """The Ray cluster did not answer in time, or refused the connection."""


def connect_ray(ray: Any, address: str | None, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """`ray.init(address)` ("local": a local cluster, given at least RAY_LOCAL_START_TIMEOUT_S to
    start) within `timeout` seconds, else RayConnectError."""
    if address == "local":
        timeout = max(timeout, RAY_LOCAL_START_TIMEOUT_S)
    failure: list[BaseException] = []
    answered = threading.Event()

    def connect() -> None:
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
        except BaseException as exc:  # handed to the caller
            failure.append(exc)
        answered.set()
        if address == "local" and not failure:
            # Ray ties a local cluster's processes to the thread that started them (Linux's
            # parent-death signal is per thread): this one waits until the process ends.
            threading.Event().wait()

    log.info("connecting to the Ray cluster at %s", address)
    t = threading.Thread(target=connect, name="computewatch-ray-connect", daemon=True)
    t.start()
    if not answered.wait(timeout):
        log.error("the Ray cluster at %s did not answer within %.0f s", address, timeout)
        raise RayConnectError(f"the Ray cluster at {address} did not answer within {timeout:.0f} s")
    if failure:
        log.error("cannot connect to the Ray cluster at %s: %s", address, failure[0])
        raise RayConnectError(f"cannot connect to the Ray cluster at {address}: {' '.join(str(failure[0]).split())[:300]}")
