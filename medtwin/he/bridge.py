"""Bridge between OpenFHE's serialised objects and the native engine (:mod:`medtwin._core`).

OpenFHE (the ``openfhe`` wheel, pinned below) stays the trust anchor: it chooses parameters,
generates keys, encrypts and decrypts. The native engine evaluates on OpenFHE's own ciphertexts
with OpenFHE's own relinearisation and rotation keys and hands back bytes that
``openfhe.DeserializeCiphertextString(b, openfhe.BINARY)`` accepts (in the manner of FIDESlib,
Agulló-Domingo et al. 2025, an OpenFHE-interoperable GPU CKKS library).

The byte layout (cereal portable binary of openfhe 1.6.1) is parsed in C++ only
(``cpp/src/cpu/bridge.cpp``); this module checks the pinned version, converts between OpenFHE
objects and bytes, and maps failures to :mod:`medtwin.errors`.
"""
from __future__ import annotations

import importlib.metadata
import threading
from typing import Iterable, Sequence

from medtwin import _core
from medtwin.errors import CiphertextFormatError, KeyMismatchError

__all__ = [
    "PINNED_OPENFHE_VERSION",
    "OpenFHEVersionError",
    "openfhe_version",
    "check_openfhe_version",
    "load_engine",
    "engine_from_public",
    "clear_engine_cache",
    "import_ciphertext",
    "import_ciphertexts",
    "export_ciphertext",
    "export_ciphertexts",
    "to_openfhe",
]

#: The openfhe wheel whose byte layout the C++ bridge reads (pyproject.toml pins the same).
PINNED_OPENFHE_VERSION = "1.6.1.0.22.4"


class OpenFHEVersionError(CiphertextFormatError):
    """The installed openfhe wheel is not the version the bridge's byte layout was proven on."""


def openfhe_version() -> str:
    """The installed openfhe wheel's package version (e.g. ``"1.6.1.0.22.4"``)."""
    try:
        return importlib.metadata.version("openfhe")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - depends on the env
        import openfhe

        return str(getattr(openfhe, "__version__", "unknown"))


def check_openfhe_version() -> None:
    """Refuse to bridge bytes of an openfhe wheel other than the pinned one.

    Raises:
        OpenFHEVersionError: the installed wheel differs from :data:`PINNED_OPENFHE_VERSION`;
            the serialisation layout may have drifted, so re-run ``tests/native`` (the drift
            self-check) against the new wheel and update the pin only when it passes.
    """
    v = openfhe_version()
    if v != PINNED_OPENFHE_VERSION:
        raise OpenFHEVersionError(
            f"openfhe {v} is installed but the native bridge was proven on openfhe "
            f"{PINNED_OPENFHE_VERSION}: OpenFHE's serialisation layout may have changed. "
            "Run tests/native/test_drift.py against the new wheel before changing the pin.")


def _as_bytes(obj, what: str) -> bytes:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    try:
        import openfhe
    except ImportError as exc:  # pragma: no cover
        raise CiphertextFormatError(f"{what} must be bytes") from exc
    try:
        return openfhe.Serialize(obj, openfhe.BINARY)
    except Exception as exc:  # OpenFHE raises TypeError/RuntimeError on foreign objects
        raise CiphertextFormatError(f"{what} is neither bytes nor an OpenFHE object: {type(obj).__name__}") from exc


def load_engine(eval_mult_key, rotation_keys=b"") -> _core.Engine:
    """Build a native engine from OpenFHE's evaluation keys.

    Args:
        eval_mult_key: ``openfhe.Serialize(cc.GetEvalMultKeyVector(tag)[0], BINARY)`` (or the
            EvalKey object itself): the relinearisation key; it carries the crypto context
            (N, Q moduli and roots, dnum, techniques) and the P moduli.
        rotation_keys: ``openfhe.Serialize(cc.GetEvalAutomorphismKeyMap(tag), BINARY)`` (or the
            map object), or empty bytes for no rotations.

    Raises:
        OpenFHEVersionError: the openfhe wheel is not the pinned version.
        CiphertextFormatError: the bytes are not keys of the expected layout (truncated, wrong
            object type, not CKKS/HYBRID, unsupported state).
        KeyMismatchError: the rotation keys belong to another key pair or context.
    """
    check_openfhe_version()
    mk = _as_bytes(eval_mult_key, "relinearisation key")
    rk = _as_bytes(rotation_keys, "rotation keys") if rotation_keys else b""
    return _core.Engine(mk, rk)


_ENGINE_LOCK = threading.Lock()
_ENGINE_CACHE: list = []  # [(eval_mult_key bytes, rotation_keys bytes, engine)]: the last key set only


def engine_from_public(public) -> _core.Engine:
    """Engine for a :class:`medtwin.he.keys.PublicMaterial` (compute-node key material).

    The engine of the most recent key material is kept and returned again for the same key
    objects (the same ``bytes`` objects, compared by identity, so nothing is hashed): a compute
    node runs study after study on one key set, and loading cohort-size keys (2.4 GB at
    N = 2^16 with 11 rotations) costs about a second. Only public evaluation keys are held;
    :func:`clear_engine_cache` drops them.

    Raises:
        the errors of :func:`load_engine`; KeyMismatchError when the keys' tag is not
        ``public.key_tag``.
    """
    mk, rk = public.eval_mult_key, public.rotation_keys
    with _ENGINE_LOCK:
        for cmk, crk, eng in _ENGINE_CACHE:
            if cmk is mk and crk is rk and eng.key_tag == public.key_tag:
                return eng
    eng = load_engine(mk, rk)
    if eng.key_tag != public.key_tag:
        raise KeyMismatchError("the relinearisation key belongs to another key pair than the key material says")
    with _ENGINE_LOCK:
        _ENGINE_CACHE[:] = [(mk, rk, eng)]
    return eng


def clear_engine_cache() -> None:
    """Drop the engine :func:`engine_from_public` keeps (and its copy of the evaluation keys)."""
    with _ENGINE_LOCK:
        _ENGINE_CACHE.clear()


def import_ciphertext(engine: _core.Engine, ct) -> _core.Ciphertext:
    """OpenFHE ciphertext (bytes from ``openfhe.Serialize(ct, BINARY)`` or the object) -> engine ciphertext.

    Raises:
        CiphertextFormatError: not a CKKS ciphertext of the pinned layout, truncated, trailing
            bytes, coefficient form, or metadata the engine does not carry.
        KeyMismatchError: encrypted under another key pair or context than ``engine``'s keys.
    """
    return engine.import_ciphertext(_as_bytes(ct, "ciphertext"))


def import_ciphertexts(engine: _core.Engine, cts: Iterable) -> list[_core.Ciphertext]:
    """:func:`import_ciphertext` for each item (same errors)."""
    return engine.import_many([_as_bytes(c, "ciphertext") for c in cts])


def export_ciphertext(engine: _core.Engine, ct: _core.Ciphertext) -> bytes:
    """Engine ciphertext -> bytes that ``openfhe.DeserializeCiphertextString(b, BINARY)`` accepts.

    Raises:
        KeyMismatchError: ``ct`` belongs to another key pair than ``engine``.
        CiphertextFormatError: ``ct`` carries no OpenFHE header.
    """
    if not isinstance(ct, _core.Ciphertext):
        raise CiphertextFormatError(f"expected a medtwin._core.Ciphertext, got {type(ct).__name__}")
    return engine.export_ciphertext(ct)


def export_ciphertexts(engine: _core.Engine, cts: Sequence[_core.Ciphertext]) -> list[bytes]:
    """:func:`export_ciphertext` for each item (same errors)."""
    return [export_ciphertext(engine, c) for c in cts]


def to_openfhe(engine: _core.Engine, ct: _core.Ciphertext):
    """Engine ciphertext -> live ``openfhe.Ciphertext`` (through its BINARY deserialiser).

    Raises:
        CiphertextFormatError: OpenFHE refused the bytes (should not happen; a layout drift).
    """
    import openfhe

    data = export_ciphertext(engine, ct)
    try:
        return openfhe.DeserializeCiphertextString(data, openfhe.BINARY)
    except Exception as exc:
        raise CiphertextFormatError(f"OpenFHE refused the engine's ciphertext bytes: {exc}") from exc
