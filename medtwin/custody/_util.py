"""Small helpers shared by the custody modules: atomic writes, canonical JSON, UTC time, base64."""
from __future__ import annotations

import base64
import binascii
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

import rfc8785

from medtwin.errors import ValidationError


def canonical(obj) -> bytes:
    """RFC 8785 (JCS) canonical JSON of ``obj``.

    Raises:
        ValidationError: ``obj`` holds something JCS cannot encode (an int beyond 2**53, NaN, a
            non-string key, an unsupported type).
    """
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ValidationError(f"value cannot be written as canonical JSON: {type(exc).__name__}") from None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    """UTC ISO 8601 with microseconds and a ``Z`` suffix."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(s: str) -> datetime:
    """Inverse of :func:`iso`. Raises ValueError on anything else."""
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def b64e(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def b64d(s: str) -> bytes:
    """Strict base64 decode. Raises ValueError on malformed input."""
    if not isinstance(s, str):
        raise ValueError("base64 field is not a string")
    try:
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"malformed base64: {exc}") from None


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` (must not exist) with ``data``, flushed to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` by ``data`` atomically: temp file in the same folder, fsync, os.replace.

    A failure at any point leaves the old file (if any) untouched and removes the temp file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        write_new_file(tmp, data, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
