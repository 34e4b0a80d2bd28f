"""The chip's side of a location measurement: answer a landmark's nonces with the device key."""

from __future__ import annotations

import socket
from collections.abc import Callable

from computewatch.crypto.dsse import Envelope
from computewatch.crypto.errors import ComputewatchError
from computewatch.formats.chip_entry import b64, envelope_from_obj, from_hex
from computewatch.landmark.wire import parse_url, read_line, send_line

__all__ = ["Answer", "LandmarkError", "measure"]

# (landmark keyid, nonce) -> the chip's signature over formats.location.answer_input
Answer = Callable[[str, bytes], bytes]


class LandmarkError(ComputewatchError):
    """The landmark could not be reached or refused the measurement."""


def measure(url: str, serial: str, device_key: bytes, answer: Answer, *, timeout_s: float = 10.0) -> Envelope:
    """Run one measurement against the landmark at `url`; returns its signed record."""
    try:
        host, port = parse_url(url)
    except ValueError as exc:
        raise LandmarkError(str(exc)) from None
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = sock.makefile("rb")
            send_line(sock, {"v": 1, "serial": serial, "device_key": device_key.hex()})
            while True:
                msg = read_line(reader)
                if "nonce" in msg:
                    nonce = from_hex(msg["nonce"], "nonce", 32)
                    send_line(sock, {"signature": b64(answer(str(msg["landmark"]), nonce))})
                elif "record" in msg:
                    return envelope_from_obj(msg["record"], "landmark record")
                else:
                    raise LandmarkError(f"landmark {url} refused: {msg.get('error', 'no reason given')}")
    except OSError as exc:
        raise LandmarkError(f"landmark {url}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise LandmarkError(f"landmark {url}: {exc}") from None
