"""Signed tree heads of the service's log copies, as C2SP checkpoints (signed notes).

    <origin>\n<tree size>\n<base64 RFC 9162 root>\n\n— <key name> <base64(key hash ‖ Ed25519 signature)>\n

The signature covers the note body (the three lines and their newlines). Key name: the origin
prefix `computewatch.service/<register id>`; key hash: the first 4 bytes of
SHA-256(key name ‖ "\\n" ‖ 0x01 ‖ raw public key) (C2SP signed-note, Ed25519 = algorithm 1).
The verifier key is published as `<name>+<hex key hash>+<base64(0x01 ‖ public key)>`.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from computewatch.crypto.errors import SignatureError
from computewatch.crypto.signing import SigningKey, VerifyKey

__all__ = ["NoteSigner", "load_service_key", "open_note", "origin"]


def origin(register_id: str, serial: str) -> str:
    return f"computewatch.service/{register_id}/chip/{serial}"


def _key_hash(name: str, key: VerifyKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + key.raw).digest()[:4]


class NoteSigner:
    def __init__(self, key: SigningKey, register_id: str) -> None:
        self.key = key
        self.name = f"computewatch.service/{register_id}"
        self.key_hash = _key_hash(self.name, key.public_key)

    @property
    def vkey(self) -> str:
        encoded = base64.b64encode(b"\x01" + self.key.public_key.raw).decode()
        return f"{self.name}+{self.key_hash.hex()}+{encoded}"

    def checkpoint(self, origin_line: str, size: int, root: bytes) -> str:
        body = f"{origin_line}\n{size}\n{base64.b64encode(root).decode()}\n"
        sig = self.key.sign(body.encode())
        return body + "\n" + f"\u2014 {self.name} {base64.b64encode(self.key_hash + sig).decode()}\n"


def open_note(note: str, name: str, key: VerifyKey) -> tuple[str, int, bytes]:
    """Verify a checkpoint signed by (`name`, `key`); returns (origin, size, root)."""
    body, sep, sigs = note.partition("\n\n")
    if not sep:
        raise SignatureError("checkpoint: no signature block")
    body += "\n"
    want = _key_hash(name, key)
    for line in sigs.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014" or parts[1] != name:
            continue
        raw = base64.b64decode(parts[2])
        if raw[:4] == want:
            key.verify(raw[4:], body.encode())
            lines = body.splitlines()
            return lines[0], int(lines[1]), base64.b64decode(lines[2])
    raise SignatureError(f"checkpoint: no signature by {name}")


def load_service_key(data_dir: Path) -> SigningKey:
    """The service's signing key (`<data>/service.key`, made on first start, mode 0600)."""
    path = data_dir / "service.key"
    if path.exists():
        return SigningKey.load(path)
    key = SigningKey.generate()
    key.save(path)
    return key
