"""The project's error hierarchy: every error raised on bad input derives from ComputewatchError."""

from __future__ import annotations

__all__ = ["ComputewatchError", "FormatError", "KeyFileError", "ProofError", "SignatureError"]


class ComputewatchError(Exception):
    """Base of every error computewatch raises on bad input (files, keys, proofs, formats)."""


class FormatError(ComputewatchError, ValueError):
    """Input does not follow a documented format (non-canonical JSON, bad base64, wrong fields)."""


class SignatureError(ComputewatchError):
    """A signature is missing, malformed, or does not verify under a trusted key."""


class ProofError(ComputewatchError):
    """A Merkle inclusion or consistency proof does not verify; the message says why."""


class KeyFileError(FormatError):
    """A key file is missing, unreadable, of the wrong kind, or malformed."""
