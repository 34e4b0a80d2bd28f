"""Native (C) fast paths, built by `pip install -e .` (setup.py).

`chiplog()` is the chip-log audit's fast path (`_chiplog`, used by formats.chip_audit), or None
where the extension is not built or `COMPUTEWATCH_NATIVE=0` turns it off. Without it the audit
gives the same reports, slower (the Python verifier is the reference and checks every entry the
fast path does not accept); tests/test_chip_audit_native.py fails when it is missing, so CI
cannot lose the build unnoticed.
"""

from __future__ import annotations

import hashlib  # noqa: F401  (loads hashlib's libcrypto first: the extension's SHA-256 where the CPU has no SHA-NI)
import os
from types import ModuleType

__all__ = ["chiplog", "loaded"]

try:
    from computewatch._native import _chiplog as _module
except ImportError:  # not built (a source tree used without `pip install -e .`)
    _loaded: ModuleType | None = None
else:
    _loaded = _module


def chiplog() -> ModuleType | None:
    """The `_chiplog` extension, or None (not built, or turned off by COMPUTEWATCH_NATIVE=0)."""
    return None if os.environ.get("COMPUTEWATCH_NATIVE") == "0" else _loaded


def loaded() -> ModuleType | None:
    """The `_chiplog` extension when built, whatever COMPUTEWATCH_NATIVE says (for a caller that
    already asked `chiplog()` once for the same piece of work)."""
    return _loaded
