"""Clients of the service: the chip's HTTP transport and a party's signing client.

`HttpTransport` implements the chip's `Transport` protocol (computewatch.chip.transport) over
HTTP: it POSTs each entry line and returns the service's ack, which the service sends only after
a durable write. While the service is unreachable (connection refused, reset, 5xx) it retries
with backoff for `retry_s` seconds, then raises ConnectionError: the chip stays frozen, and its
owner calls `chip.flush_reports()` later, which resends the unacknowledged entries in order.
A refusal (4xx) returns None (no ack): the chip stays frozen and `last_error` says why.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx

from computewatch.crypto.signing import SigningKey
from computewatch.service.bodies import ENTRY_TYPE
from computewatch.service.statements import read_headers, signed_request

__all__ = ["HttpTransport", "ServiceClient"]

log = logging.getLogger("computewatch.chip.transport")


class HttpTransport:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retry_s: float = 30.0,
        client: httpx.Client | None = None,
    ) -> None:
        self._client = client or httpx.Client(base_url=base_url, timeout=timeout)
        self.retry_s = retry_s
        self.last_error: str | None = None
        self.retries = 0

    def close(self) -> None:
        self._client.close()

    def send(self, line: bytes) -> bytes | None:
        try:
            serial = json.loads(line)["serial"]
        except (ValueError, KeyError, TypeError):
            self.last_error = "not an entry line"
            return None
        deadline = time.monotonic() + self.retry_s
        backoff = 0.05
        while True:
            try:
                r = self._client.post(f"/v1/chips/{serial}/entries", content=line, headers={"content-type": ENTRY_TYPE})
            except httpx.TransportError as exc:
                problem = f"link to the service failed: {exc!r}"
            else:
                if r.status_code == 200:
                    self.last_error = None
                    return r.content
                if r.status_code < 500:
                    try:
                        self.last_error = str(r.json().get("error"))
                    except (ValueError, AttributeError):
                        self.last_error = f"HTTP {r.status_code}"
                    log.warning("chip %s: the service refused an entry (HTTP %d): %s", serial, r.status_code, self.last_error)
                    return None
                problem = f"service answered HTTP {r.status_code}"
            self.last_error = problem
            if time.monotonic() + backoff > deadline:
                log.error("chip %s: giving up after %.0f s: %s", serial, self.retry_s, problem)
                raise ConnectionError(problem)
            log.info("chip %s: %s; retrying in %.2f s", serial, problem, backoff)
            self.retries += 1
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)


class ServiceClient:
    """A party talking to the service: signed writes, signed reads, sessions."""

    def __init__(self, client: httpx.Client, *, party: str, key: SigningKey, register: str) -> None:
        self.http = client
        self.party = party
        self.key = key
        self.register = register

    def write(self, path: str, action: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
        env = signed_request(action, body, party=self.party, key=self.key, register=self.register, **kw)
        return self.http.post(path, content=env.to_json(), headers={"content-type": "application/json"})

    def _signed(self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None,
                **kw: Any) -> httpx.Response:
        # Sign the target exactly as httpx puts it on the wire (after its own percent-encoding).
        request = self.http.build_request(method, path, content=body)
        target = request.url.raw_path.decode("ascii")
        request.headers.update(read_headers(method, target, party=self.party, key=self.key, register=self.register, body=body, **kw))
        if content_type is not None:
            request.headers["content-type"] = content_type
        return self.http.send(request)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        """A signed read (RFC 9421) of `path` (with its query string)."""
        return self._signed("GET", path, **kw)

    def upload(self, name: str, archive: bytes, **kw: Any) -> httpx.Response:
        """Upload raw inputs (a tar archive) as `inputs/<party>/<name>` under the service's data folder."""
        return self._signed("POST", f"/v1/inputs/{name}", body=archive, content_type="application/x-tar", **kw)

    def session(self) -> str:
        r = self.write("/v1/sessions", "session", {})
        r.raise_for_status()
        return str(r.json()["token"])
