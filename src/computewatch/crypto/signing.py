"""Ed25519 signing keys and verify keys (pyca/cryptography), with PEM files saved 0600."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from computewatch.crypto.atomic import atomic_write
from computewatch.crypto.errors import KeyFileError, SignatureError

__all__ = ["PUBLIC_KEY_SIZE", "SIGNATURE_SIZE", "SigningKey", "VerifyKey"]

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def _read_key_file(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} file {os.fspath(path)!r} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} file {os.fspath(path)!r}: {exc.strerror}") from None


class VerifyKey:
    """An Ed25519 public key; `keyid` is the hex SHA-256 of its raw 32 bytes."""

    __slots__ = ("_key", "raw")

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self.raw: bytes = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def from_raw(cls, raw: bytes) -> VerifyKey:
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != PUBLIC_KEY_SIZE:
            raise KeyFileError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} raw bytes")
        return cls(Ed25519PublicKey.from_public_bytes(bytes(raw)))

    @property
    def keyid(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def verify(self, sig: bytes, data: bytes) -> None:
        """Return None if `sig` is this key's signature over `data`; raise SignatureError otherwise."""
        if not isinstance(sig, (bytes, bytearray)) or len(sig) != SIGNATURE_SIZE:
            raise SignatureError(f"malformed Ed25519 signature: expected {SIGNATURE_SIZE} bytes")
        try:
            self._key.verify(bytes(sig), bytes(data))
        except InvalidSignature:
            raise SignatureError(f"signature does not verify under key {self.keyid[:16]}...") from None

    def to_pem(self) -> bytes:
        return self._key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @classmethod
    def from_pem(cls, pem: bytes) -> VerifyKey:
        try:
            key = serialization.load_pem_public_key(bytes(pem))
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"public key is {type(key).__name__}, expected Ed25519")
        return cls(key)

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write(path, self.to_pem(), mode=0o644)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VerifyKey:
        data = _read_key_file(path, "public key")
        try:
            return cls.from_pem(data)
        except KeyFileError as exc:
            raise KeyFileError(f"{os.fspath(path)!r}: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"VerifyKey(keyid={self.keyid[:16]}...)"


class SigningKey:
    """An Ed25519 private key. PEM is unencrypted PKCS#8; files are written atomically with mode 0600."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """Deterministic key from a 32-byte seed (test vectors, derived keys)."""
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != 32:
            raise KeyFileError("an Ed25519 seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @property
    def public_key(self) -> VerifyKey:
        return VerifyKey(self._key.public_key())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(bytes(data))

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(bytes(pem), password=None)
        except TypeError:
            raise KeyFileError("private key is password-protected; computewatch keys are unencrypted PEM") from None
        except ValueError as exc:
            raise KeyFileError(f"not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"private key is {type(key).__name__}, expected Ed25519")
        return cls(key)

    def save(self, path: str | os.PathLike[str]) -> None:
        # mode applied before the bytes are written, so the secret is never readable by others.
        atomic_write(path, self.to_pem(), mode=0o600)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        data = _read_key_file(path, "private key")
        try:
            return cls.from_pem(data)
        except KeyFileError as exc:
            raise KeyFileError(f"{os.fspath(path)!r}: {exc}") from None

    def __repr__(self) -> str:
        return f"SigningKey(keyid={self.public_key.keyid[:16]}...)"
