"""Argon2id key derivation parameters shared by the keystore and the user store.

Argon2id (RFC 9106) through ``cryptography``. The defaults (64 MiB, 3 passes, 1 lane) follow
RFC 9106 section 4's second recommended option scaled to a workstation; the floor (19 MiB,
2 passes) is OWASP's minimum Argon2id configuration. Parameters read back from a stored header
are also bounded above, so that an altered header cannot make a reader allocate gigabytes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from medtwin.errors import ValidationError

#: Below these (memory KiB, iterations) a caller must pass ``allow_weak=True``.
FLOOR_MEMORY_KIB = 19 * 1024
FLOOR_ITERATIONS = 2
#: Above these a stored header is refused (denial-of-service guard).
CEIL_MEMORY_KIB = 4 * 1024 * 1024
CEIL_ITERATIONS = 64
CEIL_LANES = 64


class WeakParametersError(ValidationError):
    """KDF parameters below the floor without ``allow_weak=True``."""


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost parameters.

    Attributes:
        memory_cost: memory in KiB (default 65536 = 64 MiB).
        iterations: number of passes (default 3).
        lanes: degree of parallelism (default 1).
    """

    memory_cost: int = 64 * 1024
    iterations: int = 3
    lanes: int = 1

    def validate(self, *, allow_weak: bool = False) -> KdfParams:
        """Check the parameters; returns ``self``.

        Raises:
            ValidationError: not integers, impossible for Argon2 (memory below 8 KiB per lane), or
                above the ceilings.
            WeakParametersError: below the floor (memory 19 MiB, 2 passes) and ``allow_weak`` is
                false.
        """
        for name in ("memory_cost", "iterations", "lanes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValidationError(f"KDF parameter {name} must be a positive integer")
        if self.memory_cost < 8 * self.lanes:
            raise ValidationError("KDF parameter memory_cost must be at least 8 KiB per lane")
        if (self.memory_cost > CEIL_MEMORY_KIB or self.iterations > CEIL_ITERATIONS
                or self.lanes > CEIL_LANES):
            raise ValidationError("KDF parameters exceed the allowed maximum (4 GiB, 64 passes, 64 lanes)")
        if not allow_weak and (self.memory_cost < FLOOR_MEMORY_KIB or self.iterations < FLOOR_ITERATIONS):
            raise WeakParametersError(
                f"KDF parameters below the floor (memory {FLOOR_MEMORY_KIB} KiB, {FLOOR_ITERATIONS} "
                "passes); pass allow_weak=True only in tests")
        return self

    @property
    def weak(self) -> bool:
        return self.memory_cost < FLOOR_MEMORY_KIB or self.iterations < FLOOR_ITERATIONS

    def to_dict(self) -> dict:
        return {"alg": "argon2id"} | asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> KdfParams:
        """Parameters from a stored header (weak ones allowed: they were accepted at creation).

        Raises:
            ValidationError: wrong algorithm, missing or out-of-range fields.
        """
        if not isinstance(d, dict) or d.get("alg") != "argon2id":
            raise ValidationError("KDF is not argon2id")
        try:
            p = cls(memory_cost=d["memory_cost"], iterations=d["iterations"], lanes=d["lanes"])
        except KeyError as exc:
            raise ValidationError(f"KDF parameter {exc.args[0]} missing") from None
        return p.validate(allow_weak=True)

    def derive(self, secret: bytes, salt: bytes, length: int = 32) -> bytes:
        """Argon2id(secret, salt) -> ``length`` bytes."""
        return Argon2id(salt=salt, length=length, iterations=self.iterations, lanes=self.lanes,
                        memory_cost=self.memory_cost).derive(secret)


#: Cheap parameters for tests only (need ``allow_weak=True``).
TEST_KDF = KdfParams(memory_cost=64, iterations=1, lanes=1)
