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

from computewatch import _native
from computewatch.crypto.canonical import canonical_json, canonical_json_v2, parse_canonical_json_v2
from computewatch.crypto.dsse import Envelope, pae, predicate_type
from computewatch.crypto.errors import FormatError

__all__ = [
    "CHECKPOINT_PAYLOAD_TYPE",
    "ENTRY_KINDS",
    "ENTRY_PAYLOAD_TYPE",
    "ENTRY_VERSION",
    "ENTRY_VERSIONS",
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
    "entry_version",
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

# Version 2 (the chip writes it): the chip signs checkpoints, not every entry; an entry is
# attributed to the chip through the signed checkpoint of its own boot that covers it (see
# docs/formats.md, "Log v2"). Version 1 (every entry signed) stays readable and auditable.
ENTRY_VERSION = 2
ENTRY_VERSIONS = (1, 2)
# Signatures use DSSE's pre-authentication encoding with these types, so a log signature can
# never be replayed as a signature over any other kind of statement (nor a v1 entry signature
# as a v2 checkpoint signature, or the reverse).
ENTRY_PAYLOAD_TYPE = "application/vnd.computewatch.chip-log-entry+json"
CHECKPOINT_PAYLOAD_TYPE = "application/vnd.computewatch.chip-log-checkpoint+json"
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
_UNSIGNED_FIELDS = _ENTRY_FIELDS - {"sig"}


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


def _payload_type(entry: dict[str, Any]) -> str:
    return CHECKPOINT_PAYLOAD_TYPE if entry.get("v") == 2 and entry.get("kind") == "checkpoint" else ENTRY_PAYLOAD_TYPE


def entry_signing_input(entry: dict[str, Any]) -> bytes:
    """What the boot key signs for an entry: PAE over the canonical entry without its `sig`
    (version 1: every entry, canonical JSON v1; version 2: checkpoints with the checkpoint
    payload type, other entries only under report-mode firmware, RFC 8785)."""
    unsigned = {k: v for k, v in entry.items() if k != "sig"}
    encode = canonical_json_v2 if entry.get("v") == 2 else canonical_json
    return pae(_payload_type(entry), encode(unsigned))


def entry_signing_input_from_line(line: bytes, entry: dict[str, Any]) -> bytes:
    """`entry_signing_input` of a line `parse_entry_line` accepted, cut from the line's own bytes.

    Canonical JSON sorts keys, so the line ends `,"sig":"<sig>","v":N}` and the entry without
    `sig` is the line without `,"sig":"<sig>"`: no second encoding. Any other ending (it cannot
    occur for an accepted line) takes the general path."""
    sig, v = entry.get("sig"), entry.get("v")
    end = b'","v":%d}' % v if v in ENTRY_VERSIONS else b""
    tail = b',"sig":"' + sig.encode("ascii") + end if end and isinstance(sig, str) and sig.isascii() else b""
    if not tail or not line.endswith(tail):
        return entry_signing_input(entry)
    return pae(_payload_type(entry), line[: len(line) - len(tail)] + end[1:])


class _NotFast(Exception):
    pass


def _no_float(text: str) -> Any:
    raise _NotFast


def _no_constant(name: str) -> Any:
    raise _NotFast


_loads = json.JSONDecoder(parse_float=_no_float, parse_constant=_no_constant).decode
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
# A JSON number token inside an object follows ":", "," or "["; one of 16 or more digits may
# exceed 2**53 - 1 (16 digits), and such a line takes the careful parse (strings never match
# falsely in a way that matters: a false match only costs the careful parse).
_LONG_NUMBER = re.compile(r"[:,\[]-?[0-9]{16}")


def _has_float(obj: Any) -> bool:
    if isinstance(obj, float):
        return True
    if isinstance(obj, dict):
        return any(_has_float(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_float(v) for v in obj)
    return False


def _parse_line(line: bytes) -> Any:
    """A log line's value, the line required to be its canonical encoding; no entry holds a
    float (every number is an integer below 2**53).

    Fast path (one C parse, one C encode; the auditor's hot loop): an ASCII line with no float,
    no NaN/Infinity and no integer beyond 2**53 whose re-encoding with sorted keys and no
    whitespace is the line itself (and that has no number of 16 or more digits). For such a value RFC 8785 (version 2) and canonical JSON v1
    give the same bytes (they differ only on floats and keys above U+FFFF, which ASCII cannot
    hold), and a duplicate key would make the re-encoding shorter, so the line is accepted here
    exactly when `parse_canonical_json_v2` accepts it with the same value
    (tests/test_chip_log_v2.py compares both over mutated lines). Anything else takes that
    careful parse, which names the problem.

    Faster still, where the native module is on: its strict reader (`_chiplog.parse_line`) takes
    a line in a narrower subset of the same (printable ASCII with nothing to escape, no negative
    number, integers of at most 15 digits), which this fast path would take with the same value
    (tests/test_chip_audit_parse.py compares them); anything else comes here as before."""
    native = _native.chiplog()
    if native is not None and type(line) is bytes:
        obj = native.parse_line(line)
        if obj is not None:
            return obj
    try:
        if line.isascii() and line[:1] == b"{":  # an entry is an object: no number opens it
            text = line.decode("ascii")
            obj = _loads(text)
            if _dumps(obj) == text and not _LONG_NUMBER.search(text):
                return obj
    except (_NotFast, ValueError, RecursionError):
        pass
    obj = parse_canonical_json_v2(line)
    if _has_float(obj):
        raise FormatError("entry holds a non-integer number (log entries carry integers and strings only)")
    if isinstance(obj, dict) and obj.get("v") == 1 and canonical_json(obj) != bytes(line):
        raise FormatError("version 1 entry is not in canonical JSON v1 form")
    return obj


_HEX32 = re.compile(r"[0-9a-f]{64}")


def _is_decimal(value: Any) -> bool:
    """What `decimal` accepts (ASCII digits, no leading zero, short enough for int())."""
    return (
        type(value) is str
        and 0 < len(value) < 4000
        and value.isascii()
        and value.isdigit()
        and (value[0] != "0" or len(value) == 1)
    )


def entry_version(obj: dict[str, Any]) -> int:
    """The `v` of a parsed entry, checked to be a version this module reads."""
    v = obj.get("v")
    if v not in ENTRY_VERSIONS or isinstance(v, bool):
        raise FormatError(f"entry version {v!r} is not one of {ENTRY_VERSIONS}")
    return int(v)


def parse_entry_line(line: bytes) -> dict[str, Any]:
    """Decode one log line (canonical JSON, no newline) and check its shape; raises FormatError.

    Version 1: every entry carries `sig`. Version 2: a `checkpoint` entry carries `sig`; any
    other entry carries it only when the firmware signs every entry (report mode): the audit
    decides which (formats.chip_audit)."""
    obj = _parse_line(line)
    if not isinstance(obj, dict):
        raise FormatError("entry is not a JSON object")
    version = entry_version(obj)
    keys = obj.keys()
    if keys != _ENTRY_FIELDS and not (version == 2 and keys == _UNSIGNED_FIELDS and obj.get("kind") != "checkpoint"):
        missing, extra = sorted(_ENTRY_FIELDS - keys), sorted(keys - _ENTRY_FIELDS)
        raise FormatError(f"entry fields wrong (missing {missing}, unexpected {extra})")
    if obj["kind"] not in ENTRY_KINDS:
        raise FormatError(f"unknown entry kind {obj['kind']!r}")
    counter, boot, prev = obj["counter"], obj["boot"], obj["prev"]
    if (
        type(counter) is int
        and counter >= 0
        and type(boot) is int
        and boot >= 0
        and _is_decimal(obj["clock_ns"])
        and _is_decimal(obj["busy_ns"])
        and type(prev) is str
        and _HEX32.fullmatch(prev)
        and type(obj["body"]) is dict
        and type(obj["serial"]) is str
    ):
        # The checks below, decided with str methods (the audit's hot loop); anything else goes
        # through them for the error that names it.
        if "sig" in obj:
            from_b64(obj["sig"], "entry sig")
        return obj
    for name in ("counter", "boot"):
        uint(obj[name], f"entry field {name!r}")
    int_field(obj, "clock_ns", "entry")
    int_field(obj, "busy_ns", "entry")
    from_hex(obj["prev"], "entry prev", 32)
    if not isinstance(obj["body"], dict):
        raise FormatError("entry body must be a JSON object")
    if not isinstance(obj["serial"], str):
        raise FormatError("entry serial must be a string")
    if "sig" in obj:
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
    if not cut:
        return [], len(data)
    lines = (data if cut == len(data) else data[:cut]).split(b"\n")  # no copy of a log that ends its last line
    lines.pop()
    return lines, len(data) - cut


def expected_ack(serial: str, counter: int, line: bytes) -> bytes:
    """The receiver's acknowledgement of the chip's reported entry number `counter` (docs/formats.md,
    reporting): the chip stays frozen until it gets back exactly these bytes."""
    return canonical_json(
        {"v": 1, "serial": serial, "counter": counter, "entry_sha256": hashlib.sha256(line).hexdigest()}
    )
