"""CKKS parameter presets.

Two kinds of preset:

* ``standard-128`` (and ``standard-128-deep``): HomomorphicEncryption.org 128-bit classical
  security (``HEStd_128_classic``). OpenFHE chooses the ring dimension from the security table
  for the modulus the program's depth needs, so the depth is derived from the compiled program,
  not fixed by the preset.
* ``test-insecure``: a small ring (N = 2^12) with no security level. It exists so that the test
  suite runs in seconds. It is refused unless the caller passes ``allow_insecure=True`` or the
  environment sets ``MEDTWIN_ALLOW_INSECURE=1`` (the test suite does), and everything derived from
  it is labelled ``INSECURE`` (key material, reports, CLI output).

* ``cohort-128``: 128-bit classical security with 49-bit scaling primes and a 60-bit first
  prime, for cohort aggregates (:mod:`medtwin.study.cohort`). CKKS noise in value units scales
  like N / 2^p, so 9 more bits of scale make the key-dependent error of a released aggregate,
  and the noise flooding sized from it, about 2^9 = 512 times smaller; the 60-bit first prime
  keeps 11 bits of headroom at the last level (9 with ``standard-128``). The vancomycin cohort
  program has depth 28: Q = 60 + 28 x 49 = 1432 bits; with 6 key-switching digits (29 towers,
  5 per digit, at most 60 + 4 x 49 = 256 bits each) P is 5 x 60 = 300 bits, log QP = 1732 <= 1772,
  the HomomorphicEncryption.org bound for N = 2^16 at 128 bits, and OpenFHE 1.6.1 picks
  N = 2^16 (checked; with its default 3 digits it moves to N = 2^17). ``cohort-test-insecure`` is
  the same moduli on the N = 2^12 test ring.

Moduli: the scaling primes are ``scaling_mod_size`` bits and the first prime ``first_mod_size``
bits; below 2^50 the native engine's IFMA path applies to the Q towers, and its 64-bit kernels
take the wider ones: every operation and whole planned programs are bit-exact with OpenFHE for
towers up to :data:`NATIVE_MAX_MOD_BITS` bits (``tests/native/test_wide_q0.py``), so both
backends run every preset (:func:`native_supported`). The
theophylline study needs depth 32; with 40-bit primes OpenFHE's default of 3 key-switching
digits needs a special modulus P so large that Q*P exceeds the 128-bit bound for N = 2^16 and it
moves to N = 2^17 (twice the work, four times the key size). Six digits (``dnum=6``) shrink P and
keep N = 2^16. 36-bit primes would also fit, but measured at N = 2^16 they lose a factor of about
20 in accuracy: CKKS noise grows as N / 2^p and OpenFHE's FIXEDMANUAL rescaling divides by primes
that differ from 2^p by up to about N p ln2 / 2^p relative (5e-5 at p = 36, 2e-6 at p = 40), an
error that accumulates over the rescales.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

from medtwin.errors import SecurityPolicyError, ValidationError

INSECURE_ENV = "MEDTWIN_ALLOW_INSECURE"
#: the widest tower (first or scaling prime, bits) the native engine is checked bit-exact at;
#: OpenFHE's own limit for 64-bit towers is 60 bits
NATIVE_MAX_MOD_BITS = 60


@dataclass(frozen=True)
class CKKSParams:
    """Resolved CKKS parameters (immutable; build with :func:`preset` or :meth:`with_depth`)."""

    name: str
    security: str  # "HEStd_128_classic" | "HEStd_192_classic" | "HEStd_NotSet"
    depth: int
    scaling_mod_size: int = 40
    first_mod_size: int = 49
    ring_dim: int | None = None  # None: OpenFHE picks the smallest ring meeting `security`
    dnum: int = 0  # number of large digits for hybrid key switching; 0 = OpenFHE's default
    insecure: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.depth <= 60:
            raise ValidationError(f"CKKS depth must be in [1, 60], got {self.depth}")
        if not 20 <= self.scaling_mod_size <= 59:
            raise ValidationError(f"scaling_mod_size must be in [20, 59], got {self.scaling_mod_size}")
        if not self.scaling_mod_size < self.first_mod_size <= 60:
            raise ValidationError("first_mod_size must exceed scaling_mod_size and be at most 60")
        if self.ring_dim is not None and (self.ring_dim < 16 or self.ring_dim & (self.ring_dim - 1)):
            raise ValidationError(f"ring_dim must be a power of two >= 16, got {self.ring_dim}")
        if self.security == "HEStd_NotSet" and not self.insecure:
            raise ValidationError("a parameter set without a security level must be marked insecure")

    @property
    def headroom_bits(self) -> int:
        """log2 of the largest magnitude a decrypted value may have (first prime over scale)."""
        return self.first_mod_size - self.scaling_mod_size

    @property
    def label(self) -> str:
        return f"{self.name} [INSECURE: test ring, no security level]" if self.insecure else self.name

    def with_depth(self, depth: int) -> CKKSParams:
        return replace(self, depth=depth)

    def to_dict(self) -> dict:
        return asdict(self)


_PRESETS: dict[str, CKKSParams] = {
    "standard-128": CKKSParams("standard-128", "HEStd_128_classic", depth=20,
                               scaling_mod_size=40, first_mod_size=49, dnum=6),
    "standard-192": CKKSParams("standard-192", "HEStd_192_classic", depth=20,
                               scaling_mod_size=40, first_mod_size=49, dnum=6),
    "cohort-128": CKKSParams("cohort-128", "HEStd_128_classic", depth=28,
                             scaling_mod_size=49, first_mod_size=60, dnum=6),
    "cohort-test-insecure": CKKSParams("cohort-test-insecure", "HEStd_NotSet", depth=28, scaling_mod_size=49,
                                       first_mod_size=60, ring_dim=1 << 12, insecure=True),
    "test-insecure": CKKSParams("test-insecure", "HEStd_NotSet", depth=20, scaling_mod_size=40,
                                first_mod_size=49, ring_dim=1 << 12, insecure=True),
}


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def native_supported(params) -> bool:
    """Whether the native engine runs ``params`` (anything with ``first_mod_size`` and
    ``scaling_mod_size``, or a dict with those keys) bit-exactly with OpenFHE: every prime at most
    :data:`NATIVE_MAX_MOD_BITS` bits. Primes below 2^50 take the IFMA kernels, wider ones the
    64-bit kernels.

    Raises:
        ValidationError: ``params`` lacks the two sizes.
    """
    try:
        first = int(params["first_mod_size"] if isinstance(params, dict) else params.first_mod_size)
        scale = int(params["scaling_mod_size"] if isinstance(params, dict) else params.scaling_mod_size)
    except (KeyError, AttributeError, TypeError, ValueError):
        raise ValidationError("parameters need first_mod_size and scaling_mod_size") from None
    return first <= NATIVE_MAX_MOD_BITS and scale <= NATIVE_MAX_MOD_BITS


def insecure_allowed() -> bool:
    return os.environ.get(INSECURE_ENV, "") == "1"


def preset(name: str, *, depth: int | None = None, allow_insecure: bool = False) -> CKKSParams:
    """Return the named preset, optionally with the depth a compiled program needs.

    Raises:
        ValidationError: unknown preset name or invalid depth.
        SecurityPolicyError: an insecure preset without ``allow_insecure=True`` or
            ``MEDTWIN_ALLOW_INSECURE=1``.
    """
    try:
        p = _PRESETS[name]
    except KeyError:
        raise ValidationError(f"unknown CKKS preset {name!r}; choose one of {preset_names()}") from None
    if p.insecure and not (allow_insecure or insecure_allowed()):
        raise SecurityPolicyError(
            f"preset {name!r} is a small test ring without a security level; it is allowed only in "
            f"tests (pass allow_insecure=True or set {INSECURE_ENV}=1)")
    return p.with_depth(depth) if depth is not None else p
