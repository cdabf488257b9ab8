"""Key material exchanged between the OpenFHE backend, the keystore and compute nodes.

Everything here is OpenFHE's own BINARY serialisation, kept as bytes so that it can be
stored, hashed, shipped to a compute node or handed to the native engine's bridge
without this module knowing the byte layout.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PublicMaterial:
    """What a compute node needs: never the secret key.

    Attributes:
        preset: name of the CKKS preset the context was made from (``"test-insecure"`` for the
            small, not-secure test ring).
        context: ``openfhe.Serialize(cc, BINARY)``.
        public_key: ``openfhe.Serialize(kp.publicKey, BINARY)``.
        eval_mult_key: ``openfhe.Serialize(cc.GetEvalMultKeyVector(tag)[0], BINARY)``
            (relinearisation key).
        rotation_keys: ``openfhe.Serialize(cc.GetEvalAutomorphismKeyMap(tag), BINARY)``; empty
            bytes when no rotation keys were generated.
        rotation_indices: the slot rotations the rotation keys cover.
        key_tag: OpenFHE's key tag (32 hex characters) shared by every key of this key pair;
            it identifies the key pair ("keys from another context" are detected with it).
        params: the preset's resolved parameters (ring dimension, depth, scaling bits, ...),
            JSON-serialisable, for display and for checks before OpenFHE is touched.
    """

    preset: str
    context: bytes
    public_key: bytes
    eval_mult_key: bytes
    rotation_keys: bytes
    rotation_indices: tuple[int, ...]
    key_tag: str
    params: dict = field(default_factory=dict)

    def digest(self) -> str:
        """SHA-256 over every public component, in a fixed order."""
        h = hashlib.sha256()
        for part in (self.preset.encode(), self.context, self.public_key, self.eval_mult_key,
                     self.rotation_keys, ",".join(map(str, self.rotation_indices)).encode(),
                     self.key_tag.encode()):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        return h.hexdigest()

    @property
    def insecure(self) -> bool:
        return bool(self.params.get("insecure", False))


@dataclass(frozen=True)
class KeyMaterial:
    """The clinician's full key set: public material plus the secret key (client only)."""

    public: PublicMaterial
    secret_key: bytes  # openfhe.Serialize(kp.secretKey, BINARY); never leaves the workstation

    def __repr__(self) -> str:  # never print key bytes
        return f"KeyMaterial(preset={self.public.preset!r}, key_tag={self.public.key_tag!r}, secret_key=<{len(self.secret_key)} bytes>)"
