"""The clinician's keystore: OpenFHE key material with the secret key encrypted at rest.

Format ``medtwin-keystore`` version 1 is a directory::

    <keystore>/keystore.mtks          header + encrypted secret key (below)
    <keystore>/public/context.bin     openfhe.Serialize(cc, BINARY)
    <keystore>/public/public_key.bin  openfhe.Serialize(publicKey, BINARY)
    <keystore>/public/eval_mult_key.bin
    <keystore>/public/rotation_keys.bin   (empty when no rotation keys)

``keystore.mtks`` (integers big-endian)::

    16 bytes   b"MEDTWIN-KEYSTORE"
    u32        H, header length
    H bytes    header: RFC 8785 canonical JSON (format, version, created, kdf {alg argon2id,
               memory_cost KiB, iterations, lanes, salt}, cipher {alg aes-256-gcm, nonce},
               check, key_tag, preset, params, rotation_indices, public_digest,
               public {part: {file, sha256, size}})
    u64        C, ciphertext length
    C bytes    AES-256-GCM(secret key), associated data = b"medtwin-keystore/1\\0" + header
    32 bytes   SHA-256 of every byte before it

Keys: Argon2id(passphrase, salt, params from the header) gives 64 bytes; the first 32 are the
AES-256-GCM key, the last 32 key an HMAC-SHA256 ``check`` value that tells a wrong passphrase
(:class:`WrongPassphraseError`) apart from an altered header or ciphertext
(:class:`TamperedError`). Because the whole header is the GCM associated data, changing the KDF
parameters, the key tag or the manifest of public-file digests fails authentication on unlock.
Without the passphrase (:func:`read_public`, :func:`export_public`) the trailing SHA-256 and the
per-file digests catch truncation and corruption, but not a deliberate rewrite of the header:
pass the passphrase to :func:`export_public` to authenticate first, or pin
:meth:`PublicMaterial.digest` out of band and give it to :func:`load_public_bundle`.

Every write is atomic (temp file, fsync, ``os.replace``; a new keystore is built in a temp
directory and renamed into place). No function overwrites an existing keystore or bundle, and in
every error case nothing stored is changed. The decrypted secret key lives in Python ``bytes``,
which cannot be wiped; keep unlocked material only as long as needed.

The public bundle written by :func:`export_public` (format ``medtwin-public-bundle`` version 1)
is one file: ``b"MEDTWIN-PUBLIC\\0\\0"``, u32 header length, canonical-JSON header (key tag,
preset, params, rotation indices, public digest, parts {name: {offset, size, sha256}}), the parts
back to back, and a SHA-256 of everything before it. It never contains the secret key.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import struct
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medtwin.custody._util import b64d, b64e, canonical, fsync_dir, iso, utc_now, write_new_file
from medtwin.custody._util import atomic_write
from medtwin.custody.kdf import KdfParams, WeakParametersError
from medtwin.custody.strength import passphrase_strength
from medtwin.errors import (KeyMismatchError, KeystoreError, TamperedError, ValidationError,
                            WrongPassphraseError)
from medtwin.he.keys import KeyMaterial, PublicMaterial

__all__ = ["FORMAT", "VERSION", "KdfParams", "WeakPassphraseError", "create_keystore",
           "unlock_keystore", "read_public", "change_passphrase", "export_public",
           "load_public_bundle", "passphrase_strength", "key_tag_of", "WeakParametersError",
           "MIN_STRENGTH"]

FORMAT = "medtwin-keystore"
VERSION = 1
BUNDLE_FORMAT = "medtwin-public-bundle"
BUNDLE_VERSION = 1
MAGIC = b"MEDTWIN-KEYSTORE"
BUNDLE_MAGIC = b"MEDTWIN-PUBLIC\0\0"
SECRET_FILE = "keystore.mtks"
PUBLIC_DIR = "public"
PARTS = ("context", "public_key", "eval_mult_key", "rotation_keys")
_AAD_PREFIX = b"medtwin-keystore/1\0"
_CHECK_LABEL = b"medtwin-keystore passphrase check/1"
_MAX_HEADER = 1 << 20
#: Default minimum passphrase score (0-4) for create and change.
MIN_STRENGTH = 3
# OpenFHE BINARY writes the key tag as a u64 length (32) followed by 32 lowercase hex characters.
_TAG_RE = re.compile(rb"\x20\x00\x00\x00\x00\x00\x00\x00([0-9a-f]{32})")
_TAG_SCAN = 1 << 16


class WeakPassphraseError(ValidationError):
    """The passphrase scores below the required minimum."""


# -- helpers ------------------------------------------------------------------------------------

def key_tag_of(data: bytes) -> str | None:
    """The OpenFHE key tag carried by serialised key bytes (secret, public or evaluation key).

    Looks for the tag's BINARY encoding (u64 32, then 32 hex characters) near the start, where
    OpenFHE writes it after the embedded crypto context. Returns ``None`` when there is none (a
    crypto context carries no tag).
    """
    m = _TAG_RE.search(bytes(data[:_TAG_SCAN]))
    return m.group(1).decode("ascii") if m else None


def _check_passphrase(p, min_strength: int, what: str = "passphrase") -> bytes:
    if not isinstance(p, str) or not p:
        raise ValidationError(f"{what} must be a non-empty string")
    if min_strength > 0:
        score, msg = passphrase_strength(p)
        if score < min_strength:
            raise WeakPassphraseError(f"{what} too weak (score {score} of 4, need {min_strength}): {msg}")
    return p.encode("utf-8")


def _derive(passphrase: bytes, kdf: KdfParams, salt: bytes) -> tuple[bytes, bytes]:
    k = kdf.derive(passphrase, salt, length=64)
    return k[:32], k[32:]


def _check_value(check_key: bytes) -> bytes:
    return hmac.new(check_key, _CHECK_LABEL, hashlib.sha256).digest()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _material_parts(public: PublicMaterial) -> dict[str, bytes]:
    return {name: bytes(getattr(public, name)) for name in PARTS}


def _check_material(material: KeyMaterial) -> None:
    if not isinstance(material, KeyMaterial):
        raise ValidationError("material must be a medtwin.he.keys.KeyMaterial")
    pub = material.public
    if not isinstance(pub.key_tag, str) or not re.fullmatch(r"[0-9a-f]{32}", pub.key_tag):
        raise ValidationError("key material has no valid OpenFHE key tag (32 hex characters)")
    if not material.secret_key:
        raise ValidationError("key material has an empty secret key")
    tag = key_tag_of(material.secret_key)
    if tag is None:
        raise ValidationError("secret key bytes carry no OpenFHE key tag: not a serialised private key")
    if tag != pub.key_tag:
        raise KeyMismatchError("the secret key belongs to another key pair than the public material")
    for name in ("public_key", "eval_mult_key", "rotation_keys"):
        t = key_tag_of(getattr(pub, name))
        if t is not None and t != pub.key_tag:
            raise KeyMismatchError(f"{name} belongs to another key pair than the public material")


def _pack(magic: bytes, header: bytes, body_parts: list[bytes], with_len: bool) -> bytes:
    out = bytearray(magic)
    out += struct.pack(">I", len(header)) + header
    for p in body_parts:
        if with_len:
            out += struct.pack(">Q", len(p))
        out += p
    out += hashlib.sha256(out).digest()
    return bytes(out)


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeystoreError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise KeystoreError(f"cannot read {what} {path}: {exc.strerror}") from None


def _parse_container(data: bytes, magic: bytes, where: Path) -> tuple[bytes, dict, bytes]:
    """Check magic and trailer digest; return (header bytes, header dict, rest of the body)."""
    if len(data) < len(magic) + 4 + 32 or not data.startswith(magic):
        raise TamperedError(f"{where} is not a {magic.rstrip(bytes(1)).decode()} file or is truncated")
    if not hmac.compare_digest(hashlib.sha256(data[:-32]).digest(), data[-32:]):
        raise TamperedError(f"{where} is truncated or altered (its SHA-256 trailer does not match)")
    (hlen,) = struct.unpack_from(">I", data, len(magic))
    start = len(magic) + 4
    if hlen > _MAX_HEADER or start + hlen > len(data) - 32:
        raise TamperedError(f"{where} has an impossible header length")
    hbytes = data[start:start + hlen]
    try:
        header = json.loads(hbytes.decode("utf-8"))
        if not isinstance(header, dict) or canonical(header) != hbytes:
            raise ValueError("header is not canonical JSON")
    except (ValueError, ValidationError) as exc:
        raise TamperedError(f"{where} has a malformed header: {exc}") from None
    return hbytes, header, data[start + hlen:-32]


def _keystore_file(path: Path) -> Path:
    path = Path(path)
    f = path / SECRET_FILE
    if not path.is_dir() or not f.exists():
        raise KeystoreError(f"no keystore at {path} (expected a directory holding {SECRET_FILE})")
    return f


class _Parsed:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = _keystore_file(self.path)
        data = _read_bytes(self.file, "keystore file")
        self.hbytes, h, rest = _parse_container(data, MAGIC, self.file)
        if len(rest) < 8:
            raise TamperedError(f"{self.file} is truncated (no ciphertext)")
        (clen,) = struct.unpack_from(">Q", rest, 0)
        if clen != len(rest) - 8 or clen < 16:
            raise TamperedError(f"{self.file} has an inconsistent ciphertext length")
        self.ciphertext = rest[8:]
        if h.get("format") != FORMAT:
            raise TamperedError(f"{self.file} is not a {FORMAT} file")
        if h.get("version") != VERSION:
            raise KeystoreError(f"{self.file} has format version {h.get('version')!r}; this medtwin "
                                f"reads version {VERSION}")
        try:
            self.kdf = KdfParams.from_dict(h["kdf"])
            self.salt = b64d(h["kdf"]["salt"])
            if h["cipher"].get("alg") != "aes-256-gcm":
                raise ValueError("cipher is not aes-256-gcm")
            self.nonce = b64d(h["cipher"]["nonce"])
            self.check = b64d(h["check"])
            self.key_tag = h["key_tag"]
            self.manifest = h["public"]
            if len(self.nonce) != 12 or len(self.salt) < 16 or len(self.check) != 32:
                raise ValueError("salt, nonce or check value has the wrong length")
            if set(self.manifest) != set(PARTS) or not isinstance(self.key_tag, str):
                raise ValueError("public manifest does not list exactly the expected parts")
            for part, m in self.manifest.items():
                if m.get("file") != f"{PUBLIC_DIR}/{part}.bin" or not isinstance(m.get("sha256"), str) \
                        or not isinstance(m.get("size"), int):
                    raise ValueError(f"public manifest entry {part} is malformed")
            self.rotation_indices = tuple(int(i) for i in h["rotation_indices"])
            self.preset = str(h["preset"])
            self.params = dict(h["params"])
            self.public_digest = h["public_digest"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TamperedError(f"{self.file} has a malformed header field: {exc}") from None
        self.header = h

    def public(self) -> PublicMaterial:
        """Read and check the public files against the manifest."""
        parts: dict[str, bytes] = {}
        for part in PARTS:
            f = self.path / self.manifest[part]["file"]
            try:
                parts[part] = f.read_bytes()
            except FileNotFoundError:
                raise TamperedError(f"{f} is missing from the keystore") from None
            except OSError as exc:
                raise KeystoreError(f"cannot read {f}: {exc.strerror}") from None
        # Key tags first: a file from another key pair is a mismatch, not just corruption.
        for part in ("public_key", "eval_mult_key", "rotation_keys"):
            other = key_tag_of(parts[part])
            if other is not None and other != self.key_tag:
                raise KeyMismatchError(f"{self.path / self.manifest[part]['file']} belongs to another "
                                       f"key pair than {self.file}")
        for part, data in parts.items():
            m = self.manifest[part]
            if len(data) != m["size"] or _sha(data) != m["sha256"]:
                raise TamperedError(f"{self.path / m['file']} does not match its SHA-256 in the "
                                    "keystore manifest")
        pub = PublicMaterial(preset=self.preset, rotation_indices=self.rotation_indices,
                             key_tag=self.key_tag, params=self.params, **parts)
        if pub.digest() != self.public_digest:
            raise TamperedError(f"{self.file}: public material digest does not match the header")
        return pub


def _header(kdf: KdfParams, salt: bytes, nonce: bytes, check: bytes, pub: PublicMaterial,
            created: str) -> bytes:
    parts = _material_parts(pub)
    return canonical({
        "format": FORMAT, "version": VERSION, "created": created,
        "kdf": kdf.to_dict() | {"salt": b64e(salt)},
        "cipher": {"alg": "aes-256-gcm", "nonce": b64e(nonce)},
        "check": b64e(check),
        "key_tag": pub.key_tag, "preset": pub.preset, "params": pub.params,
        "rotation_indices": list(pub.rotation_indices),
        "public_digest": pub.digest(),
        "public": {p: {"file": f"{PUBLIC_DIR}/{p}.bin", "sha256": _sha(b), "size": len(b)}
                   for p, b in parts.items()},
    })


def _seal(passphrase: bytes, kdf: KdfParams, pub: PublicMaterial, secret_key: bytes,
          created: str) -> bytes:
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    enc_key, check_key = _derive(passphrase, kdf, salt)
    header = _header(kdf, salt, nonce, _check_value(check_key), pub, created)
    ct = AESGCM(enc_key).encrypt(nonce, secret_key, _AAD_PREFIX + header)
    return _pack(MAGIC, header, [ct], with_len=True)


def _log(log, actor, action: str, **fields) -> None:
    if log is None:
        return
    if actor is None:
        raise ValidationError("an audit log was given without the acting identity")
    log.append(actor, action, **fields)


# -- public API ---------------------------------------------------------------------------------

def create_keystore(path: str | os.PathLike, passphrase: str, material: KeyMaterial, *,
                    kdf: KdfParams = KdfParams(), allow_weak: bool = False,
                    min_strength: int = MIN_STRENGTH, log=None, actor=None) -> None:
    """Write a new keystore directory at ``path`` holding ``material``.

    Args:
        kdf: Argon2id cost; below the floor only with ``allow_weak=True``.
        min_strength: minimum :func:`passphrase_strength` score (0 disables the check).
        log, actor: optional :class:`~medtwin.custody.audit.AuditLog` and acting identity; a
            ``key.create`` entry is appended on success.

    Raises:
        KeystoreError: ``path`` exists already (nothing is overwritten) or cannot be written.
        WeakPassphraseError: the passphrase scores below ``min_strength``.
        WeakParametersError: ``kdf`` below the floor without ``allow_weak``.
        KeyMismatchError: the secret key (or a public key) belongs to another key pair.
        ValidationError: the material is malformed.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise KeystoreError(f"{path} exists already; refusing to overwrite it with a new keystore")
    pw = _check_passphrase(passphrase, min_strength)
    kdf.validate(allow_weak=allow_weak)
    _check_material(material)
    pub = material.public
    blob = _seal(pw, kdf, pub, bytes(material.secret_key), iso(utc_now()))
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise KeystoreError(f"cannot create a keystore in {parent}: {exc.strerror}") from None
    try:
        os.chmod(tmp, 0o700)
        (tmp / PUBLIC_DIR).mkdir()
        for part, data in _material_parts(pub).items():
            write_new_file(tmp / PUBLIC_DIR / f"{part}.bin", data, 0o644)
        write_new_file(tmp / SECRET_FILE, blob)
        fsync_dir(tmp / PUBLIC_DIR)
        fsync_dir(tmp)
        if path.exists() or path.is_symlink():
            raise KeystoreError(f"{path} appeared while the keystore was written; not overwriting it")
        os.rename(tmp, path)
        fsync_dir(parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise KeystoreError(f"cannot write keystore {path}: {exc.strerror}") from None
        raise
    _log(log, actor, "key.create", key_tag=pub.key_tag, preset=pub.preset,
         public_digest=pub.digest())


def unlock_keystore(path: str | os.PathLike, passphrase: str, *, log=None, actor=None) -> KeyMaterial:
    """Decrypt the secret key and return the full key material.

    Raises:
        KeystoreError: no keystore at ``path``, or an unsupported format version.
        WrongPassphraseError: the passphrase does not open it.
        TamperedError: a file is truncated or altered (the message names it).
        KeyMismatchError: a stored key belongs to another key pair.
    """
    try:
        material = _unlock(Path(path), passphrase)
    except (WrongPassphraseError, TamperedError, KeyMismatchError) as exc:
        _log(log, actor, "key.unlock", outcome=type(exc).__name__)
        raise
    _log(log, actor, "key.unlock", key_tag=material.public.key_tag, outcome="ok")
    return material


def _unlock(path: Path, passphrase: str) -> KeyMaterial:
    ks = _Parsed(path)
    if not isinstance(passphrase, str):
        raise ValidationError("passphrase must be a string")
    enc_key, check_key = _derive(passphrase.encode("utf-8"), ks.kdf, ks.salt)
    if not hmac.compare_digest(_check_value(check_key), ks.check):
        raise WrongPassphraseError(f"wrong passphrase for keystore {path}")
    try:
        secret = AESGCM(enc_key).decrypt(ks.nonce, ks.ciphertext, _AAD_PREFIX + ks.hbytes)
    except InvalidTag:
        raise TamperedError(f"{ks.file} failed authentication: its header or encrypted secret key "
                            "was altered") from None
    pub = ks.public()
    if key_tag_of(secret) != ks.key_tag:
        raise KeyMismatchError(f"the secret key in {ks.file} belongs to another key pair than its "
                               "public keys")
    return KeyMaterial(public=pub, secret_key=secret)


def read_public(path: str | os.PathLike) -> PublicMaterial:
    """The public material (no passphrase needed), checked against the stored digests.

    Raises:
        KeystoreError: no keystore at ``path``.
        TamperedError: the keystore file or a public file is truncated or altered (named).
        KeyMismatchError: a public file belongs to another key pair.
    """
    return _Parsed(Path(path)).public()


def change_passphrase(path: str | os.PathLike, old: str, new: str, *, kdf: KdfParams | None = None,
                      allow_weak: bool = False, min_strength: int = MIN_STRENGTH,
                      log=None, actor=None) -> None:
    """Re-encrypt the secret key under a new passphrase (fresh salt and nonce); keys unchanged.

    ``kdf`` defaults to the stored parameters. The keystore file is replaced atomically: on any
    error the old keystore stays as it was.

    Raises:
        the errors of :func:`unlock_keystore` for ``old``; WeakPassphraseError for ``new``;
        WeakParametersError for weak ``kdf``; KeystoreError when the file cannot be written.
    """
    path = Path(path)
    pw = _check_passphrase(new, min_strength, "new passphrase")
    material = _unlock(path, old)
    ks = _Parsed(path)
    params = (kdf or ks.kdf).validate(allow_weak=allow_weak)
    blob = _seal(pw, params, material.public, material.secret_key, ks.header["created"])
    try:
        atomic_write(ks.file, blob)
    except OSError as exc:
        raise KeystoreError(f"cannot rewrite {ks.file}: {exc.strerror}; the old keystore is intact") from None
    _log(log, actor, "key.rekey", key_tag=material.public.key_tag)


def export_public(path: str | os.PathLike, dest: str | os.PathLike, *, passphrase: str | None = None,
                  log=None, actor=None) -> Path:
    """Write the public bundle a compute node loads with :func:`load_public_bundle`.

    ``dest`` is a new file, or an existing directory to write ``public-<tag>.mtpub`` into. With
    ``passphrase`` the keystore header is authenticated first. The bundle never holds the secret
    key.

    Raises:
        KeystoreError: the destination exists (never overwritten) or cannot be written.
        and the errors of :func:`read_public` (or :func:`unlock_keystore` with a passphrase).
    """
    pub = _unlock(Path(path), passphrase).public if passphrase is not None else read_public(path)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / f"public-{pub.key_tag[:12]}.mtpub"
    if dest.exists() or dest.is_symlink():
        raise KeystoreError(f"{dest} exists already; refusing to overwrite it")
    parts = _material_parts(pub)
    table, off = {}, 0
    for name, b in parts.items():
        table[name] = {"offset": off, "size": len(b), "sha256": _sha(b)}
        off += len(b)
    header = canonical({"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "created": iso(utc_now()),
                        "key_tag": pub.key_tag, "preset": pub.preset, "params": pub.params,
                        "rotation_indices": list(pub.rotation_indices),
                        "public_digest": pub.digest(), "parts": table})
    blob = _pack(BUNDLE_MAGIC, header, list(parts.values()), with_len=False)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    try:
        write_new_file(tmp, blob, 0o644)
        try:
            os.link(tmp, dest)  # fails if dest appeared meanwhile: never overwrites
        except FileExistsError:
            raise
        except OSError:         # file system without hard links: a (racy) exists check instead
            if dest.exists():
                raise FileExistsError from None
            os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except FileExistsError:
        raise KeystoreError(f"{dest} exists already; refusing to overwrite it") from None
    except OSError as exc:
        raise KeystoreError(f"cannot write {dest}: {exc.strerror}") from None
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    _log(log, actor, "key.export_public", key_tag=pub.key_tag, public_digest=pub.digest(),
         file_sha256=_sha(blob))
    return dest


def load_public_bundle(dest: str | os.PathLike, *, expected_digest: str | None = None,
                       expected_key_tag: str | None = None) -> PublicMaterial:
    """Load a public bundle written by :func:`export_public` (on a compute node).

    Args:
        expected_digest: a :meth:`PublicMaterial.digest` pinned out of band; checked if given.
        expected_key_tag: the key tag the node expects; checked if given.

    Raises:
        KeystoreError: the file does not exist or has an unsupported version.
        TamperedError: truncated, altered, or not a public bundle (names the file).
        KeyMismatchError: the bundle belongs to another key pair than expected.
    """
    dest = Path(dest)
    data = _read_bytes(dest, "public bundle")
    _, h, body = _parse_container(data, BUNDLE_MAGIC, dest)
    if h.get("format") != BUNDLE_FORMAT:
        raise TamperedError(f"{dest} is not a {BUNDLE_FORMAT} file")
    if h.get("version") != BUNDLE_VERSION:
        raise KeystoreError(f"{dest} has bundle version {h.get('version')!r}; expected {BUNDLE_VERSION}")
    try:
        table = h["parts"]
        if set(table) != set(PARTS):
            raise ValueError("parts do not match")
        parts, off = {}, 0
        for name in PARTS:
            e = table[name]
            if e["offset"] != off or not isinstance(e["size"], int) or e["size"] < 0:
                raise ValueError(f"part {name} has a bad offset or size")
            chunk = body[off:off + e["size"]]
            if len(chunk) != e["size"] or _sha(chunk) != e["sha256"]:
                raise TamperedError(f"{dest}: part {name} does not match its SHA-256")
            parts[name] = chunk
            off += e["size"]
        if off != len(body):
            raise ValueError("trailing bytes after the parts")
        pub = PublicMaterial(preset=str(h["preset"]), key_tag=str(h["key_tag"]),
                             rotation_indices=tuple(int(i) for i in h["rotation_indices"]),
                             params=dict(h["params"]), **parts)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TamperedError(f"{dest} has a malformed header: {exc}") from None
    if pub.digest() != h.get("public_digest"):
        raise TamperedError(f"{dest}: public digest does not match its header")
    for name in ("public_key", "eval_mult_key", "rotation_keys"):
        t = key_tag_of(parts[name])
        if t is not None and t != pub.key_tag:
            raise KeyMismatchError(f"{dest}: {name} belongs to another key pair")
    if expected_key_tag is not None and pub.key_tag != expected_key_tag:
        raise KeyMismatchError(f"{dest} holds keys of another key pair than expected")
    if expected_digest is not None and not hmac.compare_digest(pub.digest(), expected_digest):
        raise TamperedError(f"{dest}: public material digest differs from the pinned one")
    return pub
