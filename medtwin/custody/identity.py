"""The acting identity: a user's name, role and Ed25519 signing key.

Audit entries, checkpoints and signed exports are signed with :class:`Identity.signing_key`.
Verifiers take *trusted keys*: a mapping from user name to that user's Ed25519 public key or a
list of them (current and retired keys), e.g. :meth:`medtwin.custody.users.UserStore.public_keys`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from medtwin.errors import ValidationError

ROLES = ("clinician", "researcher", "auditor", "admin")

TrustedKeys = Mapping[str, Union[Ed25519PublicKey, Sequence[Ed25519PublicKey]]]


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex."""
    return hashlib.sha256(public_bytes(key)).hexdigest()


def keys_for(trusted: TrustedKeys, name: str) -> list[Ed25519PublicKey]:
    """The trusted public keys of user ``name`` (empty list when unknown)."""
    k = trusted.get(name)
    if k is None:
        return []
    if isinstance(k, Ed25519PublicKey):
        return [k]
    return list(k)


def key_by_fingerprint(trusted: TrustedKeys, name: str, fp: str) -> Ed25519PublicKey | None:
    for k in keys_for(trusted, name):
        if fingerprint(k) == fp:
            return k
    return None


@dataclass(frozen=True, repr=False)
class Identity:
    """Who acts: name, role, signing key; ``breakglass`` marks an emergency-override session."""

    name: str
    role: str
    signing_key: Ed25519PrivateKey
    breakglass: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or len(self.name) > 64:
            raise ValidationError("identity name must be a non-empty string of at most 64 characters")
        if self.role not in ROLES:
            raise ValidationError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(self.signing_key, Ed25519PrivateKey):
            raise ValidationError("identity signing_key must be an Ed25519 private key")

    @classmethod
    def generate(cls, name: str, role: str) -> Identity:
        """A fresh identity with a new key (tests, service accounts)."""
        return cls(name, role, Ed25519PrivateKey.generate())

    @property
    def identity(self) -> Identity:  # lets an Identity stand wherever a Session is accepted
        return self

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self.signing_key.sign(data)

    def __repr__(self) -> str:  # never print key material
        flag = ", breakglass" if self.breakglass else ""
        return f"Identity({self.name!r}, {self.role!r}, key {self.fingerprint[:16]}{flag})"
