"""Detached Ed25519 signatures for exported files (CSV, PDF, JSON summaries).

:func:`sign_file` writes ``<file>.sig.json`` (format ``medtwin-signature`` version 1)::

    {"format": "medtwin-signature", "version": 1, "file": <base name>, "size": <bytes>,
     "file_sha256": <hex>, "signer": <user>, "role": <role>, "breakglass": <bool>,
     "key_fp": <SHA-256 of the raw public key>, "public_key": <base64 raw key, informational>,
     "signed_at": <UTC ISO>, "signature": <base64>}

The signature is Ed25519 over ``b"medtwin-export-signature/1\\0"`` followed by the RFC 8785
canonical JSON of every field except ``signature``. :func:`verify_file` trusts only the keys it
is given (user name -> public key(s), e.g. ``UserStore.public_keys()``), never the key inside
the signature file, and raises :class:`TamperedError` on any mismatch: edited file, edited or
forged signature, unknown signer or key.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature

from medtwin.custody._util import atomic_write, b64d, b64e, canonical, iso, utc_now
from medtwin.custody.identity import Identity, TrustedKeys, key_by_fingerprint, public_bytes
from medtwin.errors import TamperedError, ValidationError

__all__ = ["SignerInfo", "sign_file", "verify_file", "SUFFIX"]

FORMAT = "medtwin-signature"
VERSION = 1
SUFFIX = ".sig.json"
_DOMAIN = b"medtwin-export-signature/1\0"
_MAX_SIG = 64 * 1024


@dataclass(frozen=True)
class SignerInfo:
    """Who signed a verified file, and what."""

    signer: str
    role: str
    key_fp: str
    signed_at: str
    file_sha256: str
    size: int
    breakglass: bool


def _sha256_file(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def sign_file(path: str | os.PathLike, identity, *, sig_path: str | os.PathLike | None = None,
              overwrite: bool = False, log=None) -> Path:
    """Sign ``path`` with the identity's Ed25519 key; returns the signature file's path.

    Args:
        identity: an :class:`Identity` or a Session (anything with ``.identity``).
        sig_path: where to write (default ``<path>.sig.json``).
        overwrite: replace an existing signature file (otherwise refused).
        log: optional :class:`~medtwin.custody.audit.AuditLog`: an ``export.write`` entry with the
            file's SHA-256 is appended.

    Raises:
        ValidationError: ``path`` is missing or not a file, ``identity`` is not one, or the
            signature file exists and ``overwrite`` is false.
    """
    path = Path(path)
    ident = getattr(identity, "identity", None)
    if not isinstance(ident, Identity):
        raise ValidationError("identity must be an Identity or a Session")
    if not path.is_file():
        raise ValidationError(f"{path} is not a file")
    sig = Path(sig_path) if sig_path is not None else path.with_name(path.name + SUFFIX)
    if sig.exists() and not overwrite:
        raise ValidationError(f"{sig} exists already; pass overwrite=True to replace it")
    digest, size = _sha256_file(path)
    body = {"format": FORMAT, "version": VERSION, "file": path.name, "size": size,
            "file_sha256": digest, "signer": ident.name, "role": ident.role,
            "breakglass": bool(ident.breakglass), "key_fp": ident.fingerprint,
            "public_key": b64e(public_bytes(ident.public_key)), "signed_at": iso(utc_now())}
    body["signature"] = b64e(ident.sign(_DOMAIN + canonical(body)))
    atomic_write(sig, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode(), 0o644)
    if log is not None:
        log.append(ident, "export.write", file_sha256=digest, format=path.suffix.lstrip(".") or "file")
    return sig


def verify_file(path: str | os.PathLike, sig_path: str | os.PathLike | None,
                trusted_keys: TrustedKeys) -> SignerInfo:
    """Check a detached signature against trusted keys; returns who signed.

    Args:
        sig_path: the signature file (``None``: ``<path>.sig.json``).
        trusted_keys: user name -> Ed25519 public key(s).

    Raises:
        TamperedError: the file or signature is missing, malformed or altered, the file does not
            match the signed digest, or the signer or key is not trusted (the message says which).
    """
    path = Path(path)
    sig = Path(sig_path) if sig_path is not None else path.with_name(path.name + SUFFIX)
    try:
        raw = sig.read_bytes()
    except OSError:
        raise TamperedError(f"signature file {sig} is missing or unreadable") from None
    if len(raw) > _MAX_SIG:
        raise TamperedError(f"{sig} is too large to be a signature file")
    try:
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        if d.get("format") != FORMAT or d.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} version {VERSION} file")
        signature = b64d(d.pop("signature"))
        signer, role, fp = d["signer"], d["role"], d["key_fp"]
        want_sha, want_size = d["file_sha256"], d["size"]
        if not all(isinstance(x, str) for x in (signer, role, fp, want_sha, d["signed_at"])):
            raise ValueError("field types are wrong")
        body = canonical(d)
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise TamperedError(f"{sig} is not a valid signature file: {exc}") from None
    key = key_by_fingerprint(trusted_keys, signer, fp)
    if key is None:
        raise TamperedError(f"{sig}: signer {signer!r} with key {fp[:16]} is not among the trusted keys")
    if d.get("public_key") is not None:
        try:
            embedded = b64d(d["public_key"])
        except ValueError:
            embedded = b""
        if embedded != public_bytes(key):
            raise TamperedError(f"{sig}: the embedded public key differs from the trusted one")
    try:
        key.verify(signature, _DOMAIN + body)
    except InvalidSignature:
        raise TamperedError(f"{sig}: the signature is invalid (the signature file was altered or forged)") from None
    try:
        digest, size = _sha256_file(path)
    except OSError:
        raise TamperedError(f"signed file {path} is missing or unreadable") from None
    if size != want_size or not hmac.compare_digest(digest, want_sha):
        raise TamperedError(f"{path} was altered after signing (its SHA-256 differs from the signed one)")
    if d.get("file") != path.name:
        # renaming is harmless to integrity but worth refusing: the signature names the file
        raise TamperedError(f"{sig} was made for {d.get('file')!r}, not {path.name!r}")
    return SignerInfo(signer=signer, role=role, key_fp=fp, signed_at=d["signed_at"],
                      file_sha256=digest, size=size, breakglass=bool(d.get("breakglass", False)))
