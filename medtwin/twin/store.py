"""Content-addressed storage of ciphertext bundles (encrypted twins, encrypted outcomes).

A bundle is a directory::

    <dir>/manifest.json       kind, format version, key tag, metadata, {name: [sha256, ...]}
    <dir>/blobs/<sha256>.ct   OpenFHE BINARY ciphertexts, named by their SHA-256

The manifest carries the SHA-256 of its own canonical body (``manifest_sha256``), and every blob is
checked against its name on load: a corrupted, truncated or swapped file is refused with
:class:`TamperedError` naming the file. Bundles are written to a temporary sibling directory and
renamed into place, so a failed write leaves nothing behind and an existing bundle is never
overwritten (:class:`StoreError`). Nothing here holds plaintext patient data: metadata carries
pseudonymous twin ids, model and scenario descriptions and digests only.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from medtwin.errors import KeyMismatchError, MedTwinError, TamperedError

FORMAT = "medtwin-ciphertext-bundle/1"


class StoreError(MedTwinError):
    """A bundle cannot be written (exists already, not writable) or read (missing, malformed)."""


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bundle:
    kind: str
    key_tag: str
    meta: dict
    blobs: dict[str, list[bytes]]  # name -> list of serialised ciphertexts

    def digests(self) -> dict[str, list[str]]:
        return {k: [sha256(b) for b in v] for k, v in self.blobs.items()}


def write_bundle(path: str | os.PathLike, bundle: Bundle) -> Path:
    """Write ``bundle`` to a new directory ``path``.

    Raises:
        StoreError: ``path`` exists already or cannot be written.
    """
    path = Path(path)
    if path.exists():
        raise StoreError(f"{path} exists already; refusing to overwrite a stored bundle")
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    try:
        (tmp / "blobs").mkdir()
        names: dict[str, list[str]] = {}
        for name, items in bundle.blobs.items():
            names[name] = []
            for data in items:
                h = sha256(data)
                f = tmp / "blobs" / f"{h}.ct"
                if not f.exists():
                    with open(f, "wb") as fh:
                        fh.write(data)
                        fh.flush()
                        os.fsync(fh.fileno())
                names[name].append(h)
        body = {"format": FORMAT, "kind": bundle.kind, "key_tag": bundle.key_tag, "meta": bundle.meta,
                "blobs": names}
        manifest = dict(body, manifest_sha256=sha256(_canonical(body)))
        with open(tmp / "manifest.json", "w") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)  # atomic on one file system; fails if path appeared meanwhile
    except FileExistsError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(f"{path} exists already; refusing to overwrite a stored bundle") from None
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if path.exists() and not (path / "manifest.json").exists():
            pass
        raise StoreError(f"cannot write bundle {path}: {exc.strerror or exc}") from None
    return path


def read_manifest(path: str | os.PathLike) -> dict:
    """Read and authenticate a bundle's manifest (its own digest must match)."""
    path = Path(path)
    mf = path / "manifest.json"
    if not mf.is_file():
        raise StoreError(f"{path} is not a ciphertext bundle (no manifest.json)")
    try:
        manifest = json.loads(mf.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TamperedError(f"{mf}: manifest is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TamperedError(f"{mf}: not a {FORMAT} manifest")
    claimed = manifest.pop("manifest_sha256", None)
    if claimed != sha256(_canonical(manifest)):
        raise TamperedError(f"{mf}: manifest digest does not match its content (edited?)")
    for key in ("kind", "key_tag", "meta", "blobs"):
        if key not in manifest:
            raise TamperedError(f"{mf}: manifest lacks {key!r}")
    ok = (isinstance(manifest["kind"], str) and isinstance(manifest["key_tag"], str)
          and isinstance(manifest["meta"], dict) and isinstance(manifest["blobs"], dict)
          and all(isinstance(k, str) and isinstance(v, list)
                  and all(isinstance(h, str) and len(h) == 64 and all(c in "0123456789abcdef" for c in h) for h in v)
                  for k, v in manifest["blobs"].items()))
    if not ok:
        raise TamperedError(f"{mf}: manifest fields have the wrong types")
    return manifest


def read_bundle(path: str | os.PathLike, *, kind: str | None = None, key_tag: str | None = None) -> Bundle:
    """Load and verify a bundle.

    Raises:
        StoreError: missing bundle or wrong kind.
        TamperedError: manifest or blob failed its digest (names the file).
        KeyMismatchError: the bundle was made under another key pair than ``key_tag``.
    """
    path = Path(path)
    m = read_manifest(path)
    if kind is not None and m["kind"] != kind:
        raise StoreError(f"{path} holds {m['kind']!r}, expected {kind!r}")
    if key_tag is not None and m["key_tag"] != key_tag:
        raise KeyMismatchError(f"{path} was encrypted under another key pair than the loaded keys")
    blobs: dict[str, list[bytes]] = {}
    for name, hashes in m["blobs"].items():
        blobs[name] = []
        for h in hashes:
            f = path / "blobs" / f"{h}.ct"
            if not f.is_file():
                raise TamperedError(f"{f}: ciphertext file missing")
            data = f.read_bytes()
            if sha256(data) != h:
                raise TamperedError(f"{f}: ciphertext file corrupted (digest mismatch)")
            blobs[name].append(data)
    return Bundle(kind=m["kind"], key_tag=m["key_tag"], meta=m["meta"], blobs=blobs)
