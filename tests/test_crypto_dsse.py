"""DSSE v1 envelopes over in-toto Statement v1 payloads."""

from __future__ import annotations

import base64
import json

import pytest

from computewatch.crypto import (
    PAYLOAD_TYPE_INTOTO,
    Envelope,
    FormatError,
    SignatureError,
    SigningKey,
    canonical_json,
    pae,
    parse_canonical_json,
    predicate_type,
    sign_envelope,
    statement,
    verify_envelope,
)


def test_pae_matches_dsse_spec_example() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert pae("", b"") == b"DSSEv1 0  0 "
    # Lengths count bytes, not characters.
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def _payload() -> bytes:
    st = statement([("shard-0", {"blake3-256": "ab" * 32})], predicate_type("snapshot"), {"step": 3, "run_id": "r"})
    return canonical_json(st)


def test_statement_shape() -> None:
    st = parse_canonical_json(_payload())
    assert st == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "shard-0", "digest": {"blake3-256": "ab" * 32}}],
        "predicateType": "urn:computewatch:snapshot:v1",
        "predicate": {"step": 3, "run_id": "r"},
    }
    with pytest.raises(FormatError, match="subject"):
        statement([], "urn:computewatch:x:v1", {})
    with pytest.raises(FormatError, match="lowercase hex"):
        statement([("a", {"sha256": "XYZ"})], "urn:computewatch:x:v1", {})
    with pytest.raises(FormatError, match="predicate kind"):
        predicate_type("Bad Kind")


def test_round_trip_and_verify() -> None:
    key = SigningKey.generate()
    env = sign_envelope(PAYLOAD_TYPE_INTOTO, _payload(), key)
    doc = json.loads(env.to_json())
    assert set(doc) == {"payloadType", "payload", "signatures"}
    assert doc["signatures"][0]["keyid"] == key.public_key.keyid
    assert base64.b64decode(doc["payload"]) == _payload()
    again = Envelope.from_json(env.to_json())
    assert again == env
    assert verify_envelope(again, [key.public_key]) == _payload()


def test_one_trusted_signature_suffices() -> None:
    trusted, other = SigningKey.generate(), SigningKey.generate()
    env = sign_envelope(PAYLOAD_TYPE_INTOTO, _payload(), [other, trusted])
    assert verify_envelope(env, [trusted.public_key]) == _payload()
    # An empty keyid is only a hint: the signature is still tried against every trusted key.
    anon = Envelope(env.payload_type, env.payload, [("", env.signatures[1][1])])
    assert verify_envelope(anon, [other.public_key, trusted.public_key]) == _payload()


def test_rejections_name_the_problem() -> None:
    key, stranger = SigningKey.generate(), SigningKey.generate()
    env = sign_envelope(PAYLOAD_TYPE_INTOTO, _payload(), key)
    with pytest.raises(SignatureError, match="no valid signature from a trusted key"):
        verify_envelope(env, [stranger.public_key])
    tampered = Envelope(env.payload_type, env.payload + b" ", env.signatures)
    with pytest.raises(SignatureError, match="no valid signature"):
        verify_envelope(tampered, [key.public_key])
    retyped = Envelope("application/json", env.payload, env.signatures)
    with pytest.raises(SignatureError, match="payload type"):
        verify_envelope(retyped, [key.public_key])
    # Even when the caller accepts any type, the type is signed, so changing it breaks the signature.
    with pytest.raises(SignatureError, match="no valid signature"):
        verify_envelope(retyped, [key.public_key], payload_type=None)
    with pytest.raises(SignatureError, match="no signatures"):
        verify_envelope(Envelope(env.payload_type, env.payload, []), [key.public_key])
    with pytest.raises(SignatureError, match="no trusted keys"):
        verify_envelope(env, [])


@pytest.mark.parametrize(
    "doc, why",
    [
        ('{"payloadType":"t","payload":"@@@","signatures":[]}', "payload is not valid base64"),
        ('{"payloadType":"t","payload":"","signatures":[{"keyid":"k","sig":"a"}]}', "signature 0 sig is not valid base64"),
        ('{"payload":"","signatures":[]}', "missing field 'payloadType'"),
        ('{"payloadType":"t","payload":"","signatures":{}}', "signatures must be a list"),
        ('{"payloadType":"t","payload":"","signatures":[{"keyid":"k"}]}', "'sig' field"),
        ("[1]", "JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_malformed_envelopes(doc: str, why: str) -> None:
    with pytest.raises(FormatError, match=why):
        Envelope.from_json(doc)


def test_hostile_envelope_json_is_a_format_error() -> None:
    for data in (b'{"payload": ' + b"9" * 5000 + b"}", b"[" * 100_000):
        with pytest.raises(FormatError, match="not valid JSON"):
            Envelope.from_json(data)
