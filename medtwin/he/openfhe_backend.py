"""OpenFHE: key generation, packing, encryption, decryption and (de)serialisation.

OpenFHE is the trust anchor. A :class:`HEContext` is either

* a *client* context (made by :func:`generate_keys` or :meth:`HEContext.from_keys`), which holds
  the secret key and can decrypt, or
* a *compute* context (:meth:`HEContext.from_public`), built from :class:`PublicMaterial` only,
  which can encrypt and evaluate but has no secret key at all.

Program evaluation lives in :mod:`medtwin.program` executors; this module gives them the crypto
context (``ctx.cc``).
"""
from __future__ import annotations

import struct
import threading
from typing import Iterable, Sequence

import numpy as np
import openfhe

from medtwin.errors import CiphertextFormatError, KeyMismatchError, MedTwinError, TamperedError, ValidationError
from medtwin.he.keys import KeyMaterial, PublicMaterial
from medtwin.he.params import CKKSParams

_B = openfhe.BINARY
# OpenFHE keeps process-wide registries of contexts and keys; serialise access to them.
_LOCK = threading.RLock()

_SECURITY = {
    "HEStd_128_classic": openfhe.SecurityLevel.HEStd_128_classic,
    "HEStd_192_classic": openfhe.SecurityLevel.HEStd_192_classic,
    "HEStd_NotSet": openfhe.SecurityLevel.HEStd_NotSet,
}


def _make_cc(params: CKKSParams):
    p = openfhe.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(params.depth)
    p.SetScalingModSize(params.scaling_mod_size)
    p.SetFirstModSize(params.first_mod_size)
    p.SetSecurityLevel(_SECURITY[params.security])
    if params.ring_dim is not None:
        p.SetRingDim(params.ring_dim)
    if params.dnum:
        p.SetNumLargeDigits(params.dnum)
    p.SetScalingTechnique(openfhe.ScalingTechnique.FIXEDMANUAL)
    p.SetKeySwitchTechnique(openfhe.KeySwitchTechnique.HYBRID)
    cc = openfhe.GenCryptoContext(p)
    for feat in (openfhe.PKESchemeFeature.PKE, openfhe.PKESchemeFeature.KEYSWITCH,
                 openfhe.PKESchemeFeature.LEVELEDSHE):
        cc.Enable(feat)
    return cc


def _enable(cc) -> None:
    for feat in (openfhe.PKESchemeFeature.PKE, openfhe.PKESchemeFeature.KEYSWITCH,
                 openfhe.PKESchemeFeature.LEVELEDSHE):
        cc.Enable(feat)


def generate_keys(params: CKKSParams, rotations: Iterable[int] = ()) -> tuple[HEContext, KeyMaterial]:
    """Make a crypto context and a fresh key pair with relinearisation and rotation keys.

    Returns the client context and the key material to store in a keystore.
    """
    rot = tuple(sorted(set(int(r) for r in rotations if int(r) != 0)))
    with _LOCK:
        cc = _make_cc(params)
        kp = cc.KeyGen()
        cc.EvalMultKeyGen(kp.secretKey)
        if rot:
            cc.EvalRotateKeyGen(kp.secretKey, list(rot))
        tag = kp.publicKey.GetKeyTag()
        resolved = params.to_dict() | {
            "ring_dim": int(cc.GetRingDimension()),
            "slots": int(cc.GetRingDimension()) // 2,
        }
        public = PublicMaterial(
            preset=params.name,
            context=openfhe.Serialize(cc, _B),
            public_key=openfhe.Serialize(kp.publicKey, _B),
            eval_mult_key=openfhe.Serialize(cc.GetEvalMultKeyVector(tag)[0], _B),
            rotation_keys=openfhe.Serialize(cc.GetEvalAutomorphismKeyMap(tag), _B) if rot else b"",
            rotation_indices=rot,
            key_tag=tag,
            params=resolved,
        )
        km = KeyMaterial(public=public, secret_key=openfhe.Serialize(kp.secretKey, _B))
    ctx = HEContext(cc, public, kp.publicKey, kp.secretKey)
    return ctx, km


class HEContext:
    """A live OpenFHE crypto context with its keys. Use the constructors, not ``__init__``."""

    def __init__(self, cc, public: PublicMaterial, public_key, secret_key=None):
        self.cc = cc
        self.public = public
        self.public_key = public_key
        self._secret_key = secret_key
        self.slots = int(cc.GetRingDimension()) // 2
        self.ring_dim = int(cc.GetRingDimension())
        self.key_tag = public.key_tag
        self._ct_header: bytes | None = None
        self._zeros: dict[int, object] = {}
        self._engine = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_public(cls, public: PublicMaterial) -> HEContext:
        """A compute-node context: evaluation keys, no secret key.

        Raises:
            CiphertextFormatError: the bytes are not OpenFHE objects of the expected kind.
            KeyMismatchError: the keys belong to different key pairs.
        """
        with _LOCK:
            try:
                cc = openfhe.DeserializeCryptoContextString(public.context, _B)
                _enable(cc)
                pk = openfhe.DeserializePublicKeyString(public.public_key, _B)
                evk = openfhe.DeserializeEvalKeyString(public.eval_mult_key, _B)
            except Exception as exc:  # OpenFHE raises RuntimeError or worse on junk
                raise CiphertextFormatError(f"public key material is not valid OpenFHE data: {exc}") from None
            if pk.GetKeyTag() != public.key_tag or evk.GetKeyTag() != public.key_tag:
                raise KeyMismatchError("public key / relinearisation key belong to another key pair "
                                       "than the key material says")
            if not _has_mult_key(cc, public.key_tag):
                cc.InsertEvalMultKey([evk])
            if public.rotation_keys and not _has_rotation_keys(cc, public.key_tag):
                try:
                    m = openfhe.DeserializeEvalKeyMapString(public.rotation_keys, _B)
                except Exception as exc:
                    raise CiphertextFormatError(f"rotation keys are not valid OpenFHE data: {exc}") from None
                cc.InsertEvalAutomorphismKey(m, public.key_tag)
        return cls(cc, public, pk)

    @classmethod
    def from_keys(cls, material: KeyMaterial) -> HEContext:
        """A client context (can decrypt) from unlocked key material.

        Raises:
            KeyMismatchError: the secret key does not belong to the public material's key pair.
        """
        ctx = cls.from_public(material.public)
        with _LOCK:
            try:
                sk = openfhe.DeserializePrivateKeyString(material.secret_key, _B)
            except Exception as exc:
                raise CiphertextFormatError(f"secret key is not a valid OpenFHE private key: {exc}") from None
        if sk.GetKeyTag() != material.public.key_tag:
            raise KeyMismatchError("the secret key belongs to another key pair than the public keys")
        ctx._secret_key = sk
        return ctx

    # -- properties -------------------------------------------------------------------------
    @property
    def can_decrypt(self) -> bool:
        return self._secret_key is not None

    @property
    def insecure(self) -> bool:
        return self.public.insecure

    @property
    def depth(self) -> int:
        return int(self.public.params.get("depth", 0))

    # -- packing and encryption ---------------------------------------------------------------
    def encrypt(self, values: Sequence[float] | np.ndarray, *, level: int = 0):
        """Encrypt a real vector (at most ``slots`` long; zero padded) under the public key."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size > self.slots:
            raise ValidationError(f"vector of {v.size} values does not fit {self.slots} slots")
        if not np.all(np.isfinite(v)):
            raise ValidationError("cannot encrypt NaN or infinite values")
        with _LOCK:
            pt = self.cc.MakeCKKSPackedPlaintext(v.tolist(), 1, level)
            return self.cc.Encrypt(self.public_key, pt)

    def encrypt_columns(self, matrix: np.ndarray) -> list:
        """Encrypt a (n_ciphertexts, slots) array row by row."""
        return [self.encrypt(row) for row in np.atleast_2d(matrix)]

    def check_ciphertext(self, ct) -> None:
        """Raise KeyMismatchError when ``ct`` was made under another key pair."""
        if ct.GetKeyTag() != self.key_tag:
            raise KeyMismatchError("ciphertext was encrypted under another key pair than this context's")

    def decrypt(self, ct, length: int | None = None) -> np.ndarray:
        """Decrypt to a float64 vector (client contexts only).

        ``ct`` is an OpenFHE ciphertext or its BINARY bytes (as a compute node returns them);
        bytes are validated by :meth:`deserialize` first.

        Raises:
            MedTwinError: this context has no secret key (a compute node).
            KeyMismatchError: the ciphertext belongs to another key pair.
            CiphertextFormatError: bytes that are not a ciphertext of this context.
            TamperedError: OpenFHE cannot decode it (a corrupted ciphertext that passed the
                structural checks: "approximation error too high", allocation failure).
        """
        if self._secret_key is None:
            raise MedTwinError("this context has no secret key: decryption happens only on the client")
        if isinstance(ct, (bytes, bytearray, memoryview)):
            ct = self.deserialize(ct)
        self.check_ciphertext(ct)
        n = self.slots if length is None else int(length)
        with _LOCK:
            try:
                pt = self.cc.Decrypt(ct, self._secret_key)
                pt.SetLength(n)
                return np.asarray(pt.GetRealPackedValue(), dtype=np.float64)
            except (RuntimeError, MemoryError) as exc:
                raise TamperedError(f"decryption failed: the ciphertext is corrupted ({type(exc).__name__})") from None

    # -- bytes ------------------------------------------------------------------------------
    @staticmethod
    def serialize(ct) -> bytes:
        return openfhe.Serialize(ct, _B)

    def deserialize(self, data: bytes):
        """Bytes -> ciphertext of this context, validated before OpenFHE sees them.

        OpenFHE's own deserialiser trusts its input: fuzzing found altered bytes that crash the
        process (SIGSEGV, SIGFPE, abort) or make Decrypt hang. So the bytes are checked first:

        1. everything up to the key tag (the embedded crypto context) must equal a fresh ciphertext
           of this context (it is identical for every ciphertext of one key pair at every level);
        2. the element section must parse with the native bridge's structural parser (element and
           tower counts, N, the context's moduli, exact length), when ``medtwin._core`` is built;
        3. the 48-byte tail must be plausible: slots a power of two up to N/2, level within the
           depth, noise-scale degree 1 or 2, finite scale above 1, CKKS packed encoding, no metadata.

        Raises:
            CiphertextFormatError: not an OpenFHE ciphertext of this context's shape (truncated,
                corrupted, another object type).
            KeyMismatchError: a ciphertext of another key pair or context.
        """
        data = self.check_wire(data)
        self._check_elements(data)
        with _LOCK:
            try:
                ct = openfhe.DeserializeCiphertextString(data, _B)
            except Exception as exc:
                raise CiphertextFormatError(f"bytes are not an OpenFHE ciphertext: {exc}") from None
        if ct is None:
            raise CiphertextFormatError("bytes are not an OpenFHE ciphertext")
        self.check_ciphertext(ct)
        return self._rehome(ct)

    def _rehome(self, ct):
        """The same towers on this context's own element parameters.

        OpenFHE 1.6.1 evaluates a deserialised ciphertext 2-4x slower than one made in the
        process (N = 2^12: ``EvalMult`` by a constant 3.1 vs 0.7 ms, by a plaintext 3.0 vs 0.6 ms,
        ``Rescale`` 7.4 vs 2.7 ms), and so is everything computed from it. A sum keeps its first
        operand's parameters and modular addition is exact, so ``(z + ct) - z`` with ``z`` a fresh
        encryption of zero made here is ``ct`` tower for tower, at full speed. Fresh (level 0,
        degree 1) ciphertexts only: what a compute node receives.
        """
        if int(ct.GetLevel()) != 0 or int(ct.GetNoiseScaleDeg()) != 1:
            return ct
        slots = int(ct.GetSlots())
        z = self._zeros.get(slots)
        if z is None:
            with _LOCK:
                z = self.cc.Encrypt(self.public_key, self.cc.MakeCKKSPackedPlaintext([0.0] * slots, 1, 0, None, slots))
            self._zeros[slots] = z
        with _LOCK:
            r = self.cc.EvalSub(self.cc.EvalAdd(z, ct), z)
        same = (int(r.GetSlots()) == slots and int(r.GetLevel()) == 0 and int(r.GetNoiseScaleDeg()) == 1
                and r.GetScalingFactor() == ct.GetScalingFactor())
        return r if same else ct

    def check_wire(self, data) -> bytes:
        """Checks 1 and 3 of :meth:`deserialize` (the embedded context and the metadata tail), which
        read only the ends of the bytes; returns them as ``bytes``. A compute node on the native
        backend calls this and leaves the element section to the engine's own parser (check 2),
        so its ciphertexts never pass through OpenFHE's deserialiser.

        Raises:
            CiphertextFormatError, KeyMismatchError: as :meth:`deserialize`.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < 64:
            raise CiphertextFormatError("ciphertext bytes are empty or truncated")
        data = bytes(data)
        head = self._header()
        if len(data) < len(head) + 48:
            raise CiphertextFormatError(f"ciphertext bytes are truncated ({len(data)} bytes)")
        if data[: len(head)] != head:
            if self.key_tag.encode() not in data[: 4096 + 64 * 64]:
                raise KeyMismatchError("ciphertext was made under another crypto context or key pair")
            raise CiphertextFormatError("ciphertext header differs from this crypto context's (corrupted)")
        self._check_tail(data)
        return data

    def _header(self) -> bytes:
        if self._ct_header is None:
            fresh = self.serialize(self.encrypt([0.0]))
            end = fresh.find(self.key_tag.encode())
            if end < 0:
                raise CiphertextFormatError("cannot locate the key tag in this context's own ciphertexts")
            self._ct_header = fresh[: end + len(self.key_tag)]
        return self._ct_header

    def _check_elements(self, data: bytes) -> None:
        try:
            from medtwin.he import bridge
        except ImportError:  # the native module is optional; checks 1 and 3 still apply
            return
        if self._engine is None:
            # The parse needs the context's moduli, which the relinearisation key carries: an engine
            # without the rotation keys. Loading those (GBs at N = 2^16) only to check a ciphertext's
            # shape cost a client seconds per process and evicted a compute node's cached engine
            # (bridge.engine_from_public keeps one key set): the main job's decryption took 9.4 s.
            self._engine = bridge.load_engine(self.public.eval_mult_key, b"")
        bridge.import_ciphertext(self._engine, data)  # raises CiphertextFormatError on any mismatch

    def _check_tail(self, data: bytes) -> None:
        slots, level, _hops, degree, scale, scheme, encoding = struct.unpack("<IIIIdQi", data[-48:-12])
        if not (0 < slots <= self.ring_dim // 2 and slots & (slots - 1) == 0):
            raise CiphertextFormatError("ciphertext slot count is not a power of two up to N/2")
        depth = self.depth or 64
        if (level > depth or not 1 <= degree <= 2 or not (1.0 < scale < 2.0 ** 1000)
                or scheme != 1 or encoding != 4 or data[-8:] != bytes(8)):
            raise CiphertextFormatError("ciphertext metadata (level, noise degree, scale, scheme, encoding) "
                                        "is implausible for this context")


def _same_context_prefix(data: bytes, public: PublicMaterial) -> bool:
    """Cheap pre-check before handing bytes to OpenFHE: the key tag must appear in the header."""
    return public.key_tag.encode() in data[: 4096 + 64 * 64]


def _has_mult_key(cc, tag: str) -> bool:
    try:
        return len(cc.GetEvalMultKeyVector(tag)) > 0
    except Exception:
        return False


def _has_rotation_keys(cc, tag: str) -> bool:
    try:
        cc.GetEvalAutomorphismKeyMap(tag)
        return True
    except Exception:
        return False
