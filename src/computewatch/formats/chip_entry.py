"""Names, versions and encodings of everything the chip emits (documented in docs/formats.md).

This module is the published format, not chip behaviour: the offline auditor and any other
implementation need only what is here (plus computewatch.crypto) to read and check chip output.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from computewatch.crypto.canonical import canonical_json, parse_canonical_json
from computewatch.crypto.dsse import Envelope, pae, predicate_type
from computewatch.crypto.errors import FormatError

__all__ = [
    "ENTRY_KINDS",
    "ENTRY_PAYLOAD_TYPE",
    "ENTRY_VERSION",
    "GENESIS_PREV",
    "PRED_ATTESTATION",
    "PRED_BOOT_CERT",
    "PRED_CHIP_CERT",
    "PRED_FIRMWARE",
    "LogEntry",
    "b64",
    "decimal",
    "entry_signing_input",
    "entry_signing_input_from_line",
    "envelope_from_obj",
    "envelope_to_obj",
    "expected_ack",
    "from_b64",
    "from_hex",
    "int_field",
    "parse_entry_line",
    "split_log",
    "uint",
]

ENTRY_VERSION = 1
# Per-entry signatures use DSSE's pre-authentication encoding with this type, so a log-entry
# signature can never be replayed as a signature over any other kind of statement.
ENTRY_PAYLOAD_TYPE = "application/vnd.computewatch.chip-log-entry+json"
GENESIS_PREV = "00" * 32
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX = re.compile(r"(?:[0-9a-f]{2})*")

PRED_CHIP_CERT = predicate_type("chip-certificate")
PRED_FIRMWARE = predicate_type("firmware")
PRED_BOOT_CERT = predicate_type("boot-certificate")
PRED_ATTESTATION = predicate_type("attestation")

ENTRY_KINDS = (
    "boot",
    "schedule-commit",
    "schedule-reveal",
    "snapshot",
    "precommitment",
    "memory-map",
    "firmware-staged",
    "checkpoint",
    "tamper",
    "shutdown",
    "location",  # a landmark's signed round-trip record (formats.location), by its digest
)
_ENTRY_FIELDS = {"v", "serial", "counter", "boot", "clock_ns", "busy_ns", "prev", "kind", "body", "sig"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def from_b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise FormatError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise FormatError(f"{what} is not valid base64") from None


def from_hex(text: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(text, str) or not _HEX.fullmatch(text):
        # bytes.fromhex alone would also take spaces and uppercase.
        raise FormatError(f"{what} must be a lowercase hex string")
    raw = bytes.fromhex(text)
    if size is not None and len(raw) != size:
        raise FormatError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def uint(value: Any, what: str) -> int:
    """A non-negative JSON integer (not a bool, not a float, not a string)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def decimal(value: Any, what: str) -> int:
    """A non-negative integer that travels as a decimal string (it may exceed 2**53)."""
    # ASCII digits only: str.isdigit() also accepts other scripts' digits and superscripts,
    # and int() also takes spaces, underscores and signs.
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise FormatError(f"{what} must be a decimal string, got {value!r:.40}")
    try:
        return int(value)
    except ValueError:  # longer than Python converts (4300 digits)
        raise FormatError(f"{what} is too long a decimal string") from None


def int_field(obj: dict[str, Any], name: str, what: str) -> int:
    """The decimal-string field `name` of `obj`."""
    return decimal(obj.get(name), f"{what}: field {name!r}")


def envelope_to_obj(env: Envelope) -> dict[str, Any]:
    """A DSSE envelope as a JSON object, for embedding inside another document."""
    return json.loads(env.to_json())


def envelope_from_obj(obj: Any, what: str) -> Envelope:
    if not isinstance(obj, dict):
        raise FormatError(f"{what} must be a DSSE envelope object")
    return Envelope.from_json(canonical_json(obj))


def entry_signing_input(entry: dict[str, Any]) -> bytes:
    """What the boot key signs for an entry: PAE over the canonical entry without its `sig`."""
    unsigned = {k: v for k, v in entry.items() if k != "sig"}
    return pae(ENTRY_PAYLOAD_TYPE, canonical_json(unsigned))


def entry_signing_input_from_line(line: bytes, entry: dict[str, Any]) -> bytes:
    """`entry_signing_input` of a line `parse_entry_line` accepted, cut from the line's own bytes.

    Canonical JSON sorts keys, so the line ends `,"sig":"<sig>","v":1}` and the entry without
    `sig` is the line without `,"sig":"<sig>"`: no second encoding. Any other ending (it cannot
    occur for an accepted line of version 1) takes the general path."""
    sig = entry["sig"]
    tail = b',"sig":"' + sig.encode("ascii") + b'","v":1}' if isinstance(sig, str) and sig.isascii() else b""
    if not tail or not line.endswith(tail):
        return entry_signing_input(entry)
    return pae(ENTRY_PAYLOAD_TYPE, line[: len(line) - len(tail)] + b',"v":1}')


def parse_entry_line(line: bytes) -> dict[str, Any]:
    """Decode one log line (canonical JSON, no newline) and check its shape; raises FormatError."""
    obj = parse_canonical_json(line)
    if not isinstance(obj, dict):
        raise FormatError("entry is not a JSON object")
    if set(obj) != _ENTRY_FIELDS:
        missing, extra = sorted(_ENTRY_FIELDS - set(obj)), sorted(set(obj) - _ENTRY_FIELDS)
        raise FormatError(f"entry fields wrong (missing {missing}, unexpected {extra})")
    if obj["v"] != ENTRY_VERSION:
        raise FormatError(f"entry version {obj['v']!r} is not {ENTRY_VERSION}")
    if obj["kind"] not in ENTRY_KINDS:
        raise FormatError(f"unknown entry kind {obj['kind']!r}")
    for name in ("counter", "boot"):
        uint(obj[name], f"entry field {name!r}")
    int_field(obj, "clock_ns", "entry")
    int_field(obj, "busy_ns", "entry")
    from_hex(obj["prev"], "entry prev", 32)
    if not isinstance(obj["body"], dict):
        raise FormatError("entry body must be a JSON object")
    if not isinstance(obj["serial"], str):
        raise FormatError("entry serial must be a string")
    from_b64(obj["sig"], "entry sig")
    return obj


@dataclass(frozen=True)
class LogEntry:
    """One log entry as stored: decoded fields plus the exact line bytes (a Merkle leaf)."""

    counter: int
    kind: str
    boot: int
    clock_ns: int
    busy_ns: int
    body: dict[str, Any]
    line: bytes

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.line).digest()

    @classmethod
    def from_line(cls, line: bytes) -> LogEntry:
        obj = parse_entry_line(line)
        return cls(obj["counter"], obj["kind"], obj["boot"], int(obj["clock_ns"]), int(obj["busy_ns"]), obj["body"], line)


def split_log(data: bytes) -> tuple[list[bytes], int]:
    """Complete lines (without their newline) and the length of a torn tail (0 if none)."""
    cut = data.rfind(b"\n") + 1
    lines = data[:cut].split(b"\n")[:-1] if cut else []
    return lines, len(data) - cut


def expected_ack(serial: str, counter: int, line: bytes) -> bytes:
    """The receiver's acknowledgement of the chip's reported entry number `counter` (docs/formats.md,
    reporting): the chip stays frozen until it gets back exactly these bytes."""
    return canonical_json(
        {"v": 1, "serial": serial, "counter": counter, "entry_sha256": hashlib.sha256(line).hexdigest()}
    )
