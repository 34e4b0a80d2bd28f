"""The landmark's wire protocol: one canonical JSON object per line over TCP (`tcp://HOST:PORT`).

chip -> landmark  {"v": 1, "serial": S, "device_key": hex}
landmark -> chip  {"nonce": hex, "landmark": keyid, "round": i}     (the clock starts when sent)
chip -> landmark  {"signature": base64}                              (the clock stops on receipt)
... once per round, then
landmark -> chip  {"record": envelope}  or  {"error": text}
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

from computewatch.crypto.canonical import canonical_json

__all__ = ["MAX_LINE", "parse_url", "read_line", "send_line"]

MAX_LINE = 1 << 16


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of a `tcp://HOST:PORT` landmark URL; ValueError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None or parts.path not in ("", "/"):
        raise ValueError(f"a landmark URL is tcp://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port


def send_line(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(canonical_json(obj) + b"\n")


def read_line(reader: Any) -> dict[str, Any]:
    """One JSON object from a buffered reader (`sock.makefile("rb")`); ValueError if none."""
    line = reader.readline(MAX_LINE + 1)
    if not line.endswith(b"\n"):
        raise ValueError("the peer closed the connection or sent an over-long line")
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    return obj
