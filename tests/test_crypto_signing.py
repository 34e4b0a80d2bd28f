"""Ed25519 keys: RFC 8032 vector, sign/verify, PEM and key files (0600, atomic, clear errors)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from computewatch.crypto import KeyFileError, SignatureError, SigningKey, VerifyKey

# RFC 8032 section 7.1, TEST 1 (empty message).
_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
_PUB = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_rfc8032_vector_and_keyid() -> None:
    key = SigningKey.from_seed(_SEED)
    assert key.public_key.raw == _PUB
    assert key.sign(b"") == _SIG
    key.public_key.verify(_SIG, b"")
    assert key.public_key.keyid == hashlib.sha256(_PUB).hexdigest()


def test_verify_rejects_tampering() -> None:
    key = SigningKey.generate()
    sig = key.sign(b"message")
    key.public_key.verify(sig, b"message")
    with pytest.raises(SignatureError, match="does not verify"):
        key.public_key.verify(sig, b"messagE")
    with pytest.raises(SignatureError, match="does not verify"):
        key.public_key.verify(bytes([sig[0] ^ 1]) + sig[1:], b"message")
    with pytest.raises(SignatureError, match="does not verify"):
        SigningKey.generate().public_key.verify(sig, b"message")
    with pytest.raises(SignatureError, match="64 bytes"):
        key.public_key.verify(sig[:-1], b"message")


def test_pem_round_trip() -> None:
    key = SigningKey.generate()
    again = SigningKey.from_pem(key.to_pem())
    assert again.public_key == key.public_key
    assert VerifyKey.from_pem(key.public_key.to_pem()) == key.public_key
    assert VerifyKey.from_raw(key.public_key.raw) == key.public_key


def test_save_is_0600_and_loads(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "chip.key"
    key.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert SigningKey.load(path).public_key == key.public_key
    key.public_key.save(tmp_path / "chip.pub")
    assert VerifyKey.load(tmp_path / "chip.pub") == key.public_key
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_wrong_and_malformed_key_files(tmp_path: Path) -> None:
    key = SigningKey.generate()
    pub = tmp_path / "k.pub"
    key.public_key.save(pub)
    with pytest.raises(KeyFileError, match="does not exist"):
        SigningKey.load(tmp_path / "missing.key")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        SigningKey.load(pub)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="garbage"):
        SigningKey.load(garbage)
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        VerifyKey.load(garbage)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_path = tmp_path / "ec.key"
    ec_path.write_bytes(
        ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(KeyFileError, match="expected Ed25519"):
        SigningKey.load(ec_path)
    enc = tmp_path / "enc.key"
    enc.write_bytes(
        key._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
        )
    )
    with pytest.raises(KeyFileError, match="password-protected"):
        SigningKey.load(enc)
    with pytest.raises(KeyFileError, match="32 raw bytes"):
        VerifyKey.from_raw(b"\x00" * 31)
