"""Structured Field Values (RFC 8941), the subset HTTP Message Signatures (RFC 9421) and
Content-Digest (RFC 9530) use: Dictionaries whose members are Items or Inner Lists, with
Parameters; bare Items that are Integers, Strings, Tokens, Byte Sequences or Booleans.

Parsing is strict (RFC 8941 section 4.2: any deviation fails the whole field); serialization
is RFC 8941 section 4.1's, so a parsed Inner List serializes to the one canonical text that
RFC 9421 signs as "@signature-params". Decimals are refused: nothing here carries one.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
from dataclasses import dataclass

__all__ = ["Bare", "InnerList", "Item", "SfvError", "Token", "parse_dictionary", "serialize_inner_list", "serialize_item"]


class SfvError(ValueError):
    """A field value that is not a valid Structured Field (of the supported subset)."""


class Token(str):
    """An RFC 8941 Token (serialized without quotes), as opposed to a String."""

    __slots__ = ()


Bare = int | str | bytes | bool
Params = dict[str, Bare]


@dataclass(frozen=True)
class Item:
    value: Bare
    params: Params


@dataclass(frozen=True)
class InnerList:
    items: tuple[Item, ...]
    params: Params


_KEY_START = set(string.ascii_lowercase + "*")
_KEY_CHARS = set(string.ascii_lowercase + string.digits + "_-.*")
_TOKEN_START = set(string.ascii_letters + "*")
_TOKEN_CHARS = set(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~:/")
_B64 = re.compile(r"[A-Za-z0-9+/=]*")
_MAX_INT = 999_999_999_999_999


class _Parser:
    def __init__(self, text: str) -> None:
        if not text.isascii():
            raise SfvError("a structured field is ASCII")
        self.s = text
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.i += 1

    def key(self) -> str:
        if self.peek() not in _KEY_START or not self.peek():
            raise SfvError(f"a key starts with a lowercase letter or '*' (at {self.i})")
        start = self.i
        while self.peek() and self.peek() in _KEY_CHARS:
            self.i += 1
        return self.s[start:self.i]

    def bare(self) -> Bare:
        c = self.peek()
        if c == "-" or c.isdigit():
            return self.integer()
        if c == '"':
            return self.string()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            return self.boolean()
        if c and c in _TOKEN_START:
            return self.token()
        raise SfvError(f"no item at position {self.i}")

    def integer(self) -> int:
        m = re.compile(r"-?[0-9]{1,15}").match(self.s, self.i)
        if m is None:
            raise SfvError(f"bad integer at {self.i}")
        self.i = m.end()
        if self.peek() == ".":
            raise SfvError("decimals are not supported here")
        if self.peek().isdigit():
            raise SfvError("integer longer than 15 digits")
        return int(m.group())

    def string(self) -> str:
        self.i += 1
        out = []
        while True:
            c = self.peek()
            if not c:
                raise SfvError("unterminated string")
            self.i += 1
            if c == "\\":
                n = self.peek()
                if n not in ('"', "\\") or not n:
                    raise SfvError("bad escape in string")
                out.append(n)
                self.i += 1
            elif c == '"':
                return "".join(out)
            elif not (" " <= c <= "~"):
                raise SfvError("control character in string")
            else:
                out.append(c)

    def token(self) -> Token:
        start = self.i
        while self.peek() and self.peek() in _TOKEN_CHARS:
            self.i += 1
        return Token(self.s[start:self.i])

    def byte_sequence(self) -> bytes:
        end = self.s.find(":", self.i + 1)
        if end < 0:
            raise SfvError("unterminated byte sequence")
        text = self.s[self.i + 1:end]
        if not _B64.fullmatch(text):
            raise SfvError("byte sequence is not base64")
        self.i = end + 1
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            raise SfvError("byte sequence is not valid base64") from None

    def boolean(self) -> bool:
        v = self.s[self.i + 1:self.i + 2]
        if v not in ("0", "1"):
            raise SfvError("bad boolean")
        self.i += 2
        return v == "1"

    def params(self) -> Params:
        out: Params = {}
        while self.peek() == ";":
            self.i += 1
            self.skip(" ")
            k = self.key()
            v: Bare = True
            if self.peek() == "=":
                self.i += 1
                v = self.bare()
            out[k] = v  # RFC 8941: a repeated parameter's last value wins, its first position stays
        return out

    def item_or_inner_list(self) -> Item | InnerList:
        if self.peek() != "(":
            v = self.bare()
            return Item(v, self.params())
        self.i += 1
        items: list[Item] = []
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.i += 1
                return InnerList(tuple(items), self.params())
            v = self.bare()
            items.append(Item(v, self.params()))
            if self.peek() not in (" ", ")"):
                raise SfvError(f"inner list items are separated by spaces (at {self.i})")


def parse_dictionary(text: str) -> dict[str, Item | InnerList]:
    """Parse an RFC 8941 Dictionary (field lines already joined with ", "). A repeated key is
    refused (RFC 8941 lets the last win; for signatures that would hide one, so it is an error)."""
    p = _Parser(text)
    p.skip(" ")
    out: dict[str, Item | InnerList] = {}
    if not p.peek():
        return out
    while True:
        k = p.key()
        if p.peek() == "=":
            p.i += 1
            member = p.item_or_inner_list()
        else:
            member = Item(True, p.params())
        if k in out:
            raise SfvError(f"dictionary key {k!r} appears twice")
        out[k] = member
        p.skip(" \t")
        if not p.peek():
            return out
        if p.peek() != ",":
            raise SfvError(f"dictionary members are separated by ',' (at {p.i})")
        p.i += 1
        p.skip(" \t")
        if not p.peek():
            raise SfvError("trailing ',' in dictionary")


def _bare(v: Bare) -> str:
    if isinstance(v, bool):
        return "?1" if v else "?0"
    if isinstance(v, int):
        if abs(v) > _MAX_INT:
            raise SfvError("integer out of range")
        return str(v)
    if isinstance(v, bytes):
        return ":" + base64.b64encode(v).decode("ascii") + ":"
    if isinstance(v, Token):
        return str(v)
    if not all(" " <= c <= "~" for c in v):
        raise SfvError("a string is printable ASCII")
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _params(params: Params) -> str:
    return "".join(f";{k}" if v is True else f";{k}={_bare(v)}" for k, v in params.items())


def serialize_item(item: Item) -> str:
    return _bare(item.value) + _params(item.params)


def serialize_inner_list(inner: InnerList) -> str:
    return "(" + " ".join(serialize_item(i) for i in inner.items) + ")" + _params(inner.params)
