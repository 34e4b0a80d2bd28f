"""RFC 9421 request signatures (service/httpsig.py): the worked vector of docs/service.md, the
strict Structured Field parser, and a cross-check with an implementation that is not ours
(`pip install http-message-signatures`): it verifies what our client signs, and our server
verifies what it signs."""

from __future__ import annotations

import base64
import datetime
import hashlib
from pathlib import Path
from typing import Any

import pytest
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)

from computewatch.crypto.signing import SigningKey
from computewatch.service.httpsig import (
    HttpSigError,
    content_digest,
    parse_signature,
    register_tag,
    sign_request,
)
from computewatch.service.sfv import SfvError, parse_dictionary
from computewatch.service.statements import read_headers

DOCS = Path(__file__).resolve().parents[1] / "docs" / "service.md"
# The worked vector of docs/service.md.
VECTOR_KEY = SigningKey.from_seed(bytes(range(32)))
VECTOR_REGISTER = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
VECTOR_NONCE = "00112233445566778899aabbccddeeff"
VECTOR_CREATED = 1780000000
VECTOR_BODY = b"example upload"


class _Keys(HTTPSignatureKeyResolver):
    def __init__(self, keys: dict[str, SigningKey]) -> None:
        self.keys = keys

    def resolve_public_key(self, key_id: str) -> Any:
        return self.keys[key_id]._key.public_key()

    def resolve_private_key(self, key_id: str) -> Any:
        return self.keys[key_id]._key


class _Message:
    """The message interface http-message-signatures reads: method, absolute url, headers."""

    def __init__(self, method: str, target: str, headers: dict[str, str]) -> None:
        self.method, self.url, self.headers = method, "http://testserver" + target, headers


def _vector_headers() -> dict[str, str]:
    return sign_request("POST", "/v1/inputs/run%201?note=a%2Fb", party="acme", key=VECTOR_KEY, register=VECTOR_REGISTER,
                        nonce=VECTOR_NONCE, created=VECTOR_CREATED, body=VECTOR_BODY)


def test_the_worked_vector_is_the_one_documented() -> None:
    headers = _vector_headers()
    parsed = parse_signature("POST", "/v1/inputs/run%201?note=a%2Fb", headers, upload=True)
    parsed.verify(VECTOR_KEY.public_key)
    docs = DOCS.read_text()
    # Every line of the signature base and every header is in the docs, verbatim.
    for line in parsed.base.decode().split("\n"):
        assert line in docs, line
    for name, value in headers.items():
        assert f"{name}: {value}" in docs, name
    assert parsed.body_sha256 == hashlib.sha256(VECTOR_BODY).hexdigest()
    # The raw (percent-encoded) path and query are what is signed, not their decoded spelling.
    assert '"@path": /v1/inputs/run%201' in parsed.base.decode() and '"@query": ?note=a%2Fb' in parsed.base.decode()


def test_the_other_implementation_verifies_the_vector_and_our_client_signatures() -> None:
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=_Keys({"acme": VECTOR_KEY}))
    msg = _Message("POST", "/v1/inputs/run%201?note=a%2Fb", _vector_headers())
    results = verifier.verify(msg, max_age=None, expect_tag=register_tag(VECTOR_REGISTER), body=VECTOR_BODY,
                              require_components=("@method", "@path", "@query", "content-digest"))
    assert len(results) == 1 and results[0].nonce == VECTOR_NONCE and results[0].body == VECTOR_BODY
    # A fresh read signature (created now) and one with a tampered query.
    fresh = read_headers("GET", "/v1/chips?limit=10", party="acme", key=VECTOR_KEY, register=VECTOR_REGISTER)
    verifier.verify(_Message("GET", "/v1/chips?limit=10", fresh), expect_tag=register_tag(VECTOR_REGISTER))
    with pytest.raises(InvalidSignature):
        verifier.verify(_Message("GET", "/v1/chips?limit=11", fresh), expect_tag=register_tag(VECTOR_REGISTER))
    # And it refuses our upload's signature over another body.
    with pytest.raises(InvalidSignature, match=r"(?i)digest"):
        verifier.verify(msg, max_age=None, expect_tag=register_tag(VECTOR_REGISTER), body=b"another body")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from fastapi.testclient import TestClient

    from computewatch.service import create_app

    root = tmp_path_factory.mktemp("httpsig")
    app = create_app(f"sqlite:///{root / 'register.db'}", root / "data", worker=False)
    key = SigningKey.from_seed(b"acme".ljust(32, b"\0"))
    app.state.service.reg.add_owner("acme", key.public_key)
    with TestClient(app) as client:
        yield client, app.state.service.reg.register_id, key


def _foreign_signed(client: Any, register: str, key: SigningKey, method: str, target: str, body: bytes | None = None,
                    nonce: str | None = None, tag: str | None = None) -> Any:
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Keys({"acme": key}))
    request = client.build_request(method, target, content=body)
    signer.sign(request, key_id="acme", nonce=nonce or base64.b16encode(__import__("os").urandom(16)).decode().lower(),
                tag=tag or register_tag(register), label="sig1", body=body,
                covered_component_ids=("@query", "@method", "@path"))
    return request


def test_our_server_verifies_what_the_other_implementation_signs(service: Any) -> None:
    client, register, key = service
    r = client.send(_foreign_signed(client, register, key, "GET", "/v1/me?x=%2F"))
    assert r.status_code == 200 and r.json() == {"party": "acme", "role": "owner"}, r.text
    # An upload: it adds and covers Content-Digest itself.
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("manifest.dsse.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    archive = buf.getvalue()
    r = client.send(_foreign_signed(client, register, key, "POST", "/v1/inputs/foreign", body=archive))
    assert r.status_code == 200 and r.json()["sha256"] == hashlib.sha256(archive).hexdigest(), r.text
    # Signed for another register: refused.
    r = client.send(_foreign_signed(client, register, key, "GET", "/v1/me", tag=register_tag("0" * 32)))
    assert r.status_code == 401 and "not this register" in r.json()["error"]


def test_old_x_cw_read_headers_are_refused_with_a_pointer(service: Any) -> None:
    client, _, _ = service
    r = client.get("/v1/me", headers={"X-CW-Party": "acme", "X-CW-Time": "2026-01-01T00:00:00Z", "X-CW-Nonce": "ab" * 16,
                                      "X-CW-Signature": "AAAA"})
    assert r.status_code == 401 and "RFC 9421" in r.json()["error"]


def test_signature_input_must_cover_what_the_service_requires(service: Any) -> None:
    client, register, key = service
    h = read_headers("GET", "/v1/me", party="acme", key=key, register=register)
    # Dropping "@query" from the covered list (and re-signing is impossible without the key).
    h2 = {**h, "Signature-Input": h["Signature-Input"].replace(' "@query"', "")}
    r = client.get("/v1/me", headers=h2)
    assert r.status_code == 401 and "must cover exactly" in r.json()["error"]
    # Two signatures in one request, or a label mismatch: refused.
    h3 = {**h, "Signature-Input": h["Signature-Input"] + ", " + h["Signature-Input"].replace("cw=", "cx=", 1)}
    assert client.get("/v1/me", headers=h3).status_code == 401
    h4 = {**h, "Signature": h["Signature"].replace("cw=", "cx=", 1)}
    assert "labels" in client.get("/v1/me", headers=h4).json()["error"]
    # An expired signature, and one created outside the clock window.
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    h5 = read_headers("GET", "/v1/me", party="acme", key=key, register=register, created=now - 10, expires=now - 5)
    assert "expired" in client.get("/v1/me", headers=h5).json()["error"]
    h6 = read_headers("GET", "/v1/me", party="acme", key=key, register=register, created=now + 3600)
    assert "clock" in client.get("/v1/me", headers=h6).json()["error"]


@pytest.mark.parametrize("text", [
    'cw=("@method");created=1;created=2, cw=("x")',  # a repeated key
    'cw=("@method" "@path"',  # unterminated inner list
    'cw=("@method""@path")',  # items not separated
    "cw=:not base64!:",
    'cw="\x01"',
    'cw=("a");n=1.5',  # decimals are not part of the subset
    "cw=1,",  # trailing comma
    "Cw=1",  # keys are lowercase
])
def test_malformed_structured_fields_are_refused(text: str) -> None:
    with pytest.raises(SfvError):
        parse_dictionary(text)


def test_content_digest_is_rfc_9530_sha_256() -> None:
    # RFC 9530 appendix B: {"hello": "world"} -> sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:
    assert content_digest(b'{"hello": "world"}') == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    with pytest.raises(HttpSigError, match="Content-Digest"):
        h = _vector_headers()
        parse_signature("POST", "/v1/inputs/run%201?note=a%2Fb", {**h, "Content-Digest": "sha-512=:AAAA:"}, upload=True)


def test_signed_writes_are_v2_rfc_8785_and_v1_stays_accepted(service: Any) -> None:
    import pytest as _pytest

    from computewatch.crypto.canonical import canonical_json
    from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, sign_envelope, statement
    from computewatch.service.errors import ServiceError
    from computewatch.service.statements import PRED_REQUEST, PRED_REQUEST_V1, body_digest, format_time, signed_request

    client, register, key = service
    auth = client.app.state.service.auth
    body = {"rate": 1e-05, "weight": 2.0}  # floats whose two encodings differ

    def legacy(pred: str, canonical: int) -> bytes:
        predicate = {"register": register, "action": "session", "party": "acme", "nonce": base64.b16encode(__import__("os").urandom(16)).decode().lower(),
                     "time": format_time(), "body": body}
        stmt = statement([("service-request/session", {"sha256": body_digest(body, canonical)})], pred, predicate)
        return sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(stmt), key).to_json()

    env = signed_request("session", body, party="acme", key=key, register=register)
    assert PRED_REQUEST.encode() in env.payload and b'"rate":0.00001' in env.payload
    assert auth.verify_write(env.to_json(), "session", ("owner",)).body == {"rate": 1e-05, "weight": 2}
    # Version 1, legacy encoding throughout: still accepted (stored envelopes stay verifiable).
    assert auth.verify_write(legacy(PRED_REQUEST_V1, 1), "session", ("owner",)).body == body
    # A v2 statement in the legacy encoding: one value, two encodings under one version: refused.
    with _pytest.raises(ServiceError, match="RFC 8785"):
        auth.verify_write(legacy(PRED_REQUEST, 2), "session", ("owner",))
