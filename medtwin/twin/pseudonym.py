"""Keyed pseudonyms for twins: what leaves the client instead of the source identifier.

``pseudonym(source_id, key)`` = ``"tw-"`` + the first 16 hex digits (64 bits) of
HMAC-SHA256(key, ``b"medtwin/pseudonym/v1\\x00"`` + UTF-8 source_id) (HMAC: RFC 2104; SHA-256:
FIPS 180-4). The key is a per-keystore secret kept by the client, so the compute node and the
audit log can link a twin across runs of the same keystore but cannot recompute or invert the
mapping from a list of hospital identifiers. 64 bits make an accidental collision within a
cohort of n twins about n^2 / 2^65 likely (about 4e-14 for n = 1,200).
"""
from __future__ import annotations

import hashlib
import hmac
import os

from medtwin.errors import ValidationError

__all__ = ["pseudonym", "new_pseudonym_key", "PREFIX", "MIN_KEY_BYTES"]

PREFIX = "tw-"
MIN_KEY_BYTES = 16
_DOMAIN = b"medtwin/pseudonym/v1\x00"


def new_pseudonym_key() -> bytes:
    """A fresh 32-byte random key from the operating system's CSPRNG."""
    return os.urandom(32)


def pseudonym(source_id: str, key: bytes) -> str:
    """The twin id of ``source_id`` under ``key``: ``"tw-"`` + 16 lowercase hex digits.

    Stable: the same (source_id, key) always gives the same pseudonym; a different key gives an
    unrelated one. Leading/trailing whitespace of ``source_id`` is significant (no normalisation
    beyond UTF-8 encoding), so importers must pass identifiers exactly as stored.

    Raises:
        ValidationError: ``source_id`` is not a non-empty string, or ``key`` is not bytes of at
            least 16 bytes.
    """
    if not isinstance(source_id, str) or not source_id:
        raise ValidationError("pseudonym: source_id must be a non-empty string")
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_BYTES:
        raise ValidationError(f"pseudonym: key must be at least {MIN_KEY_BYTES} bytes")
    mac = hmac.new(bytes(key), _DOMAIN + source_id.encode("utf-8"), hashlib.sha256)
    return PREFIX + mac.hexdigest()[:16]
