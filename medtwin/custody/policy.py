"""Decryption policy: noise flooding, rounding and a minimum cohort size for released values.

Why
---
CKKS decryption returns the message *plus the ciphertext's noise*, and that noise is a function
of the secret key. Li and Micciancio (EUROCRYPT 2021, "On the Security of Homomorphic Encryption
on Approximate Numbers") showed that an adversary who sees decrypted CKKS values together with
the ciphertexts (IND-CPA-D) can recover the secret key from a few such decryptions: plain
IND-CPA security does not cover values that leave the key holder's hands. Their countermeasure,
made quantitative by Li, Micciancio, Schorr and Walter (CRYPTO 2022, "Securing Approximate
Homomorphic Encryption Using Differential Privacy"), is *noise flooding*: add fresh noise much
larger than the decryption error before the value is released, so that the released value
depends on the key only negligibly.

Therefore every CKKS decryption that is released (an export, a report sent elsewhere, an
aggregate shared with a research partner) goes through :func:`release` or :func:`aggregate`:

1. flooding noise: a fresh Gaussian of standard deviation (LMSW 2022, Gaussian mechanism with
   Renyi-divergence analysis for search problems such as key recovery)::

       sigma_flood = sqrt(queries) * 2**(stat_bits / 2) * error_bound

   where ``error_bound`` bounds |decrypted - exact| of every released slot (the FHE program's
   stated bound, which includes the key-dependent CKKS noise), ``queries`` is how many
   decryptions of the same ciphertexts may be released, and ``stat_bits`` the statistical
   security parameter (default 30, the value OpenFHE uses for its own flooding mode; at most 64).
   ``rule="statistical"`` uses the stronger, indistinguishability-level rule from the statistical
   distance (Pinsker on the Gaussians' KL divergence, ``q t^2 / (2 sigma^2)``)::

       sigma_flood = sqrt(queries) * 2**(stat_bits - 1) * error_bound

2. rounding to the precision the model states (``precision``; e.g. 0.01 mg/L), which removes the
   low-order digits that carry what is left of the noise and the floating-point leftovers.

The noise is drawn from the operating system's CSPRNG (``os.urandom``, Box-Muller), not from
numpy's PCG64, whose state can be reconstructed from its outputs.

Cohort aggregates (:func:`aggregate`) are refused below a minimum cohort size (default 10): an
aggregate over very few patients is close to those patients' own values (small-cell disclosure;
the same reasoning as HIPAA's de-identification guidance and the usual suppression of cells
below 10 or 11 in health statistics).

OpenFHE's own mode
------------------
OpenFHE 1.6.1 (the wheel) offers ``DecryptionNoiseMode.NOISE_FLOODING_DECRYPT``; it works with
the wheel at a small ring (N = 2^10, ``HEStd_NotSet``) and with FIXEDMANUAL scaling (checked by
``tests/security/test_policy.py::test_openfhe_flooding_mode_needs_estimate_in_context``). It does
not fit our key lifecycle: the noise estimate is a parameter *of the crypto context*, fixed
before key generation, and it must come from a noise-estimation run (``EXEC_NOISE_ESTIMATION``)
of the very computation to be decrypted, in a separate context with its own keys. One keystore
here serves many studies (different programs, depths and noise) and the context is shared with
the compute node in the public bundle, so every new study would need new keys. This module is the
equivalent at the application layer, with the bound taken from the program that produced the
ciphertext. OpenFHE also refuses flooding once ``logstd + noiseEstimate > 56`` bits of the
scaling modulus; here the cost is explicit: ``sigma_flood`` is returned by :func:`flooding_sigma`
so that reports state it, and a ``precision`` below ``sigma_flood`` only rounds noise.

Everything here runs on the key holder's workstation, on decrypted values, after
:func:`medtwin.study.study.decrypt_outcome`; values decrypted only for the key holder's own
screen need no flooding (the decryptions never leave her hands).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from medtwin.errors import SecurityPolicyError, ValidationError

__all__ = ["FloodingPolicy", "DEFAULT_POLICY", "MIN_COHORT", "flooding_sigma", "gaussian_noise",
           "release", "aggregate", "AGGREGATES"]

#: Default minimum number of patients in a released cohort aggregate.
MIN_COHORT = 10
#: Aggregates :func:`aggregate` computes, with the factor by which each scales the per-value bound.
AGGREGATES = ("mean", "median", "sum")
_PURPOSE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:-]{0,63}")
_RULES = ("renyi", "statistical")


@dataclass(frozen=True)
class FloodingPolicy:
    """Parameters of the flooding rule.

    Args:
        stat_bits: statistical security parameter s (bits), 16..64; default 30.
        queries: how many decryptions of the same ciphertexts may be released (>= 1).
        rule: ``"renyi"`` (sigma = sqrt(q) 2^(s/2) t, LMSW 2022) or ``"statistical"``
            (sigma = sqrt(q) 2^(s-1) t, statistical distance <= 2^-s).

    Raises:
        ValidationError: a parameter outside its range.
    """

    stat_bits: int = 30
    queries: int = 1
    rule: str = "renyi"

    def __post_init__(self):
        if not isinstance(self.stat_bits, int) or isinstance(self.stat_bits, bool) or not 16 <= self.stat_bits <= 64:
            raise ValidationError("stat_bits must be an integer in 16..64")
        if not isinstance(self.queries, int) or isinstance(self.queries, bool) or not 1 <= self.queries <= 2 ** 40:
            raise ValidationError("queries must be an integer in 1..2^40")
        if self.rule not in _RULES:
            raise ValidationError(f"unknown flooding rule {self.rule!r}; expected one of {', '.join(_RULES)}")

    def sigma(self, error_bound: float) -> float:
        """The flooding standard deviation for a decryption error bounded by ``error_bound``."""
        t = _positive(error_bound, "error_bound")
        exp = self.stat_bits / 2 if self.rule == "renyi" else self.stat_bits - 1
        return math.sqrt(self.queries) * 2.0 ** exp * t


DEFAULT_POLICY = FloodingPolicy()


def _positive(x, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a number") from None
    if not math.isfinite(v) or v <= 0:
        raise ValidationError(f"{name} must be a positive finite number")
    return v


def _purpose(p) -> str:
    if not isinstance(p, str) or not _PURPOSE.fullmatch(p):
        raise ValidationError("purpose must be a short name (1-64 letters, digits, spaces, '._:-'), "
                              "e.g. 'export' or 'shared aggregate'")
    return p


def _values(values, what: str) -> np.ndarray:
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} must be numeric") from None
    if v.size == 0:
        raise ValidationError(f"{what} is empty")
    if not np.all(np.isfinite(v)):
        raise ValidationError(f"{what} holds NaN or infinite values")
    return v


def flooding_sigma(error_bound: float, policy: FloodingPolicy = DEFAULT_POLICY) -> float:
    """sigma_flood for ``error_bound`` under ``policy`` (see the module docstring).

    Raises:
        ValidationError: ``error_bound`` is not a positive finite number.
    """
    return policy.sigma(error_bound)


def gaussian_noise(shape, sigma: float) -> np.ndarray:
    """Gaussian noise N(0, sigma^2) of ``shape`` from the OS CSPRNG (Box-Muller on 53-bit uniforms).

    Raises:
        ValidationError: ``sigma`` is negative or not finite.
    """
    s = float(sigma)
    if not math.isfinite(s) or s < 0:
        raise ValidationError("sigma must be a non-negative finite number")
    n = int(np.prod(shape, dtype=np.int64))
    if n == 0 or s == 0:
        return np.zeros(shape)
    m = (n + 1) // 2
    raw = np.frombuffer(os.urandom(16 * m), dtype=np.uint64).reshape(2, m)
    u1 = ((raw[0] >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53   # in (0, 1)
    u2 = (raw[1] >> np.uint64(11)).astype(np.float64) * 2.0 ** -53           # in [0, 1)
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:n]
    return (s * z).reshape(shape)


def release(values, *, precision: float, error_bound: float, purpose: str,
            policy: FloodingPolicy = DEFAULT_POLICY, log=None, actor=None) -> np.ndarray:
    """Prepare decrypted CKKS values to leave the key holder's hands: flood, then round.

    Args:
        values: decrypted values (any shape), e.g. ``StudyResult.conc``.
        precision: the precision the model states for these values (grid step of the rounding,
            same unit as ``values``), e.g. 0.01 for mg/L to two decimals.
        error_bound: bound on |decrypted - exact| per value, e.g. ``StudyResult.bounds["conc"]``.
        purpose: a short name saying where the values go ("export", "shared aggregate").
        policy: the flooding rule (:class:`FloodingPolicy`).
        log, actor: optional :class:`~medtwin.custody.audit.AuditLog` and acting identity or
            session: a ``result.decrypt`` entry (mode ``flooded``, purpose, counts, the error
            bound; never a value) is appended.

    Returns a new float64 array: ``round((values + N(0, sigma_flood^2)) / precision) * precision``.

    Raises:
        ValidationError: non-finite or empty values, a non-positive precision or bound, a bad
            purpose, or ``log`` without ``actor``.
    """
    v = _values(values, "values")
    prec = _positive(precision, "precision")
    sigma = policy.sigma(error_bound)
    _purpose(purpose)
    if log is not None and actor is None:
        raise ValidationError("an audit log was given without the acting identity")
    noisy = v + gaussian_noise(v.shape, sigma)
    out = np.round(noisy / prec) * prec
    if log is not None:
        log.append(actor, "result.decrypt", mode="flooded", n_values=int(v.size),
                   details={"purpose": purpose, "error_bound": float(error_bound),
                            "security_bits": policy.stat_bits, "n_queries": policy.queries})
    return out


def aggregate(values_per_patient, *, precision: float, error_bound: float, stat: str = "mean",
              min_cohort: int = MIN_COHORT, purpose: str = "shared aggregate",
              policy: FloodingPolicy = DEFAULT_POLICY, log=None, actor=None) -> np.ndarray:
    """A cohort aggregate over patients (axis 0), flooded and rounded by :func:`release`.

    Args:
        values_per_patient: decrypted values, shape (patients, ...).
        precision, error_bound, purpose, policy, log, actor: as for :func:`release`;
            ``error_bound`` is per value and is scaled to the aggregate (x1 for mean and median,
            both 1-Lipschitz in the largest per-value error; x patients for the sum).
        stat: ``"mean"``, ``"median"`` or ``"sum"`` over patients.
        min_cohort: the least number of patients an aggregate may cover (default 10, at least 2).

    Raises:
        SecurityPolicyError: fewer than ``min_cohort`` patients (the message names both
            numbers); the refusal is logged when ``log`` is given.
        ValidationError: bad values, statistic, precision, bound, purpose or ``min_cohort``.
    """
    v = _values(values_per_patient, "values_per_patient")
    if v.ndim < 1:
        raise ValidationError("values_per_patient needs a patient axis")
    if stat not in AGGREGATES:
        raise ValidationError(f"unknown aggregate {stat!r}; expected one of {', '.join(AGGREGATES)}")
    if not isinstance(min_cohort, int) or isinstance(min_cohort, bool) or min_cohort < 2:
        raise ValidationError("min_cohort must be an integer of at least 2")
    _purpose(purpose)
    if log is not None and actor is None:
        raise ValidationError("an audit log was given without the acting identity")
    n = int(v.shape[0])
    if n < min_cohort:
        if log is not None:
            log.append(actor, "result.decrypt", mode="aggregate", outcome="refused", n_patients=n,
                       details={"purpose": purpose, "min_cohort": min_cohort})
        raise SecurityPolicyError(f"cohort of {n} patients is below the minimum cohort size of "
                                  f"{min_cohort} for a released aggregate; refused")
    t = _positive(error_bound, "error_bound")
    if stat == "mean":
        agg, bound = v.mean(axis=0), t
    elif stat == "median":
        agg, bound = np.median(v, axis=0), t
    else:
        agg, bound = v.sum(axis=0), t * n
    out = release(agg, precision=precision, error_bound=bound, purpose=purpose, policy=policy)
    if log is not None:
        log.append(actor, "result.decrypt", mode="aggregate", outcome="released", n_patients=n,
                   n_values=int(np.size(agg)),
                   details={"purpose": purpose, "statistic": stat, "min_cohort": min_cohort,
                            "error_bound": float(bound), "security_bits": policy.stat_bits,
                            "n_queries": policy.queries})
    return np.asarray(out)
