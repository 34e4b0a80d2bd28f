"""HTTP Message Signatures (RFC 9421) for the service's signed reads and uploads, with
Content-Digest (RFC 9530) for a body.

One signature, label `cw`, algorithm `ed25519`, over the components

    "@method"         the request method
    "@path"           the request path exactly as sent (raw, not percent-decoded)
    "@query"          "?" and the query string exactly as sent ("?" alone when there is none)
    "content-digest"  (uploads) the Content-Digest field, `sha-256=:<base64 SHA-256 of the body>:`

and the signature parameters `created` (Unix seconds), `keyid` (the party's name), `alg`
("ed25519"), `nonce` (16..64 random bytes, lowercase hex; single use) and `tag`
(`computewatch:<register id>`: a signature for one register is not one for another); `expires`
is optional. The server checks `created` against its clock (± max_skew_s) and claims the nonce,
as it did for the scheme this replaces (signed-read version 1, X-CW-* headers, whose path was
taken from the percent-decoded URL). See docs/service.md for a worked vector.
"""

from __future__ import annotations

import base64
import hashlib
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass

from computewatch.crypto.errors import SignatureError
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.service.sfv import InnerList, Item, SfvError, Token, parse_dictionary, serialize_inner_list

__all__ = [
    "ALG",
    "LABEL",
    "READ_COMPONENTS",
    "UPLOAD_COMPONENTS",
    "HttpSigError",
    "SignedInput",
    "content_digest",
    "parse_signature",
    "register_tag",
    "sign_request",
    "signature_base",
    "split_target",
]

LABEL = "cw"
ALG = "ed25519"
READ_COMPONENTS = ("@method", "@path", "@query")
UPLOAD_COMPONENTS = (*READ_COMPONENTS, "content-digest")
_PARAMS_REQUIRED = frozenset({"created", "keyid", "alg", "nonce", "tag"})
_PARAMS_ALLOWED = _PARAMS_REQUIRED | {"expires"}


class HttpSigError(ValueError):
    """A request signature that is malformed or does not verify (the service answers 401)."""


def register_tag(register: str) -> str:
    return f"computewatch:{register}"


def content_digest(body: bytes) -> str:
    """The Content-Digest field value (RFC 9530) for `body`: SHA-256 only."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def split_target(target: str) -> tuple[str, str]:
    """("@path", "@query") of a raw request target like `/v1/chips?limit=10`."""
    path, sep, query = target.partition("?")
    return path or "/", "?" + query if sep else "?"


def _component_values(method: str, target: str, digest_field: str | None) -> dict[str, str]:
    path, query = split_target(target)
    values = {"@method": method.upper(), "@path": path, "@query": query}
    if digest_field is not None:
        values["content-digest"] = digest_field.strip()
    return values


def signature_base(components: Mapping[str, str], params_text: str) -> bytes:
    """RFC 9421 section 2.5: one line per covered component, then "@signature-params"."""
    lines = [f'"{name}": {value}' for name, value in components.items()]
    lines.append(f'"@signature-params": {params_text}')
    text = "\n".join(lines)
    if not text.isascii() or any(c in v for v in components.values() for c in "\r\n"):
        raise HttpSigError("the signature base must be ASCII without line breaks: send the request target percent-encoded")
    return text.encode("ascii")


def sign_request(
    method: str,
    target: str,
    *,
    party: str,
    key: SigningKey,
    register: str,
    nonce: str,
    body: bytes | None = None,
    created: int | None = None,
    expires: int | None = None,
) -> dict[str, str]:
    """The headers (Signature-Input, Signature, and Content-Digest with `body`) that sign a
    request for `method` on the raw `target` (path and query exactly as they go on the wire)."""
    digest_field = None if body is None else content_digest(body)
    components = _component_values(method, target, digest_field)
    params: dict[str, int | str | bytes | bool] = {"created": int(_time.time()) if created is None else created}
    if expires is not None:
        params["expires"] = expires
    params.update({"keyid": party, "alg": ALG, "nonce": nonce, "tag": register_tag(register)})
    inner = InnerList(tuple(Item(name, {}) for name in components), params)
    params_text = serialize_inner_list(inner)
    sig = key.sign(signature_base(components, params_text))
    headers = {
        "Signature-Input": f"{LABEL}={params_text}",
        "Signature": f"{LABEL}=:{base64.b64encode(sig).decode('ascii')}:",
    }
    if digest_field is not None:
        headers["Content-Digest"] = digest_field
    return headers


@dataclass(frozen=True)
class SignedInput:
    """A parsed, not yet verified, request signature."""

    party: str
    nonce: str
    created: int
    expires: int | None
    tag: str
    signature: bytes
    base: bytes
    body_sha256: str | None  # hex SHA-256 the signed Content-Digest claims (uploads)

    def verify(self, key: VerifyKey) -> None:
        try:
            key.verify(self.signature, self.base)
        except SignatureError:
            raise HttpSigError(f"bad signature on the request of {self.party!r}") from None


def _field(headers: Mapping[str, str], name: str) -> str | None:
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:  # several field lines are one field, joined with ", " (RFC 9110 5.3)
        lines = [str(v) for v in getlist(name)]
        return ", ".join(v.strip() for v in lines) if lines else None
    values = [str(v).strip() for k, v in headers.items() if k.lower() == name]  # a plain mapping: any case
    return ", ".join(values) if values else None


def _one(field: str | None, what: str) -> tuple[str, Item | InnerList]:
    if field is None:
        raise HttpSigError(f"the request carries no {what} field")
    try:
        members = parse_dictionary(field)
    except SfvError as exc:
        raise HttpSigError(f"{what}: {exc}") from None
    if len(members) != 1:
        raise HttpSigError(f"{what} must hold exactly one signature, not {len(members)}")
    return next(iter(members.items()))


def _digest_sha256(field: str) -> str:
    try:
        members = parse_dictionary(field)
    except SfvError as exc:
        raise HttpSigError(f"Content-Digest: {exc}") from None
    d = members.get("sha-256")
    if not isinstance(d, Item) or not isinstance(d.value, bytes) or len(d.value) != 32 or d.params:
        raise HttpSigError("Content-Digest must carry sha-256=:<base64 of the 32-byte SHA-256>:")
    return d.value.hex()


def parse_signature(method: str, target: str, headers: Mapping[str, str], *, upload: bool) -> SignedInput:
    """Parse the signature of a request for `method` on the raw `target`, check that it covers
    exactly the components this service requires (with Content-Digest for an `upload`) and has
    the required parameters, and rebuild its signature base from the request as received."""
    label, inner = _one(_field(headers, "signature-input"), "Signature-Input")
    label2, sig_item = _one(_field(headers, "signature"), "Signature")
    if label2 != label:
        raise HttpSigError(f"Signature-Input labels {label!r}, Signature {label2!r}")
    if not isinstance(inner, InnerList):
        raise HttpSigError("Signature-Input: the member must be an inner list of components")
    if not isinstance(sig_item, Item) or not isinstance(sig_item.value, bytes) or sig_item.params:
        raise HttpSigError("Signature: the member must be a byte sequence")
    names = []
    for comp in inner.items:
        if not isinstance(comp.value, str) or isinstance(comp.value, Token) or comp.params:
            raise HttpSigError("Signature-Input: components are plain strings without parameters")
        names.append(comp.value)
    want = UPLOAD_COMPONENTS if upload else READ_COMPONENTS
    if len(set(names)) != len(names) or set(names) != set(want):
        raise HttpSigError(f"the signature must cover exactly {', '.join(want)}; it covers {', '.join(names) or 'nothing'}")
    p = inner.params
    if not set(p) >= _PARAMS_REQUIRED or not set(p) <= _PARAMS_ALLOWED:
        raise HttpSigError(f"signature parameters must be {', '.join(sorted(_PARAMS_REQUIRED))} (and optionally expires)")
    created, expires = p["created"], p.get("expires")
    party, alg, nonce, tag = p["keyid"], p["alg"], p["nonce"], p["tag"]
    if type(created) is not int or (expires is not None and type(expires) is not int):
        raise HttpSigError("created and expires are integers (Unix seconds)")
    for name, v in (("keyid", party), ("alg", alg), ("nonce", nonce), ("tag", tag)):
        if not isinstance(v, str) or isinstance(v, Token):
            raise HttpSigError(f"signature parameter {name} must be a string")
    if alg != ALG:
        raise HttpSigError(f"signature algorithm {alg!r} is not {ALG!r}")
    digest_field = _field(headers, "content-digest") if upload else None
    if upload and digest_field is None:
        raise HttpSigError("an upload carries a Content-Digest field (RFC 9530, sha-256) covered by its signature")
    body_sha256 = _digest_sha256(digest_field) if digest_field is not None else None
    values = _component_values(method, target, digest_field)
    base = signature_base({n: values[n] for n in names}, serialize_inner_list(inner))
    assert isinstance(created, int) and isinstance(party, str) and isinstance(nonce, str) and isinstance(tag, str)
    return SignedInput(party, nonce, created, expires if isinstance(expires, int) else None, tag, sig_item.value, base, body_sha256)
