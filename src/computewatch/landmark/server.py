"""`computewatch landmark serve`: a landmark that measures signed round trips to chips.

Per connection: the chip names its serial and device key; the landmark sends `rounds` fresh
32-byte nonces one at a time, timing each from the moment the nonce is handed to the socket to
the moment the chip's answer arrives (monotonic clock, Nagle off), and signs a record of every
nonce, answer and round trip with the time (formats.location). It checks nothing about the chip:
it vouches only for what it measured; the register decides whose answers they are.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from computewatch.crypto.signing import SigningKey
from computewatch.formats.chip_entry import envelope_to_obj, from_b64, from_hex
from computewatch.formats.location import Round, sign_record
from computewatch.landmark.wire import read_line, send_line

__all__ = ["DEFAULT_ROUNDS", "LandmarkServer"]

DEFAULT_ROUNDS = 5
_TIMEOUT_S = 10.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock = self.connection
        sock.settimeout(_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lm = self.server.landmark
        try:
            hello = read_line(self.rfile)
            serial, device_key = hello["serial"], from_hex(hello["device_key"], "device_key", 32)
            if hello.get("v") != 1 or not isinstance(serial, str) or not serial:
                raise ValueError("hello: {\"v\": 1, \"serial\", \"device_key\"} expected")
            rounds = []
            for i in range(lm.rounds):
                nonce = os.urandom(32)
                send_line(sock, {"nonce": nonce.hex(), "landmark": lm.keyid, "round": i})
                t0 = time.perf_counter_ns()
                answer = read_line(self.rfile)
                rtt = time.perf_counter_ns() - t0
                rounds.append(Round(nonce, from_b64(answer.get("signature"), "signature"), rtt))
            record = sign_record(lm.key, serial, device_key, lm.clock(), rounds)
            send_line(sock, {"record": envelope_to_obj(record)})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            with contextlib.suppress(OSError):
                send_line(sock, {"error": str(exc)[:200]})


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    landmark: LandmarkServer


class LandmarkServer:
    """A landmark on (host, port); port 0 picks a free one (see `url`). Use as a context manager
    or call `serve_forever` (the CLI) / `start` (a background thread, for tests)."""

    def __init__(self, key: SigningKey, host: str = "127.0.0.1", port: int = 0, *, rounds: int = DEFAULT_ROUNDS,
                 clock: Callable[[], str] = _now) -> None:
        if not 1 <= rounds <= 100:
            raise ValueError(f"rounds must be from 1 to 100, got {rounds}")
        self.key, self.keyid, self.rounds, self.clock = key, key.public_key.keyid, rounds, clock
        self._server = _Server((host, port), _Handler)
        self._server.landmark = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"tcp://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start(self) -> LandmarkServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LandmarkServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
