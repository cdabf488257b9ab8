"""Two-compartment IV pharmacokinetics (bolus and zero-order infusion), multiple doses by superposition.

Equations (Gibaldi M, Perrier D. *Pharmacokinetics*, 2nd ed., Marcel Dekker 1982, ch. 2)
---------------------------------------------------------------------------------------------
Micro-constants k10 (elimination from the central compartment), k12, k21 (distribution) and the
central volume V1. The hybrid (macro) rate constants alpha > beta are the roots of
``s^2 - (k10 + k12 + k21) s + k10 k21 = 0``::

    alpha, beta = ((k10 + k12 + k21) +- sqrt((k10 + k12 + k21)^2 - 4 k10 k21)) / 2

IV bolus D at time 0::

    C(t) = A exp(-alpha t) + B exp(-beta t),   A = D/V1 (alpha - k21)/(alpha - beta),
                                               B = D/V1 (k21 - beta)/(alpha - beta)

so A + B = D/V1, and AUC(0..inf) = A/alpha + B/beta = D/(k10 V1) = D/CL.

Zero-order infusion of D over T (rate R = D/T), with a = (alpha - k21)/(alpha - beta) and
b = (k21 - beta)/(alpha - beta), for elapsed time e since the start of the infusion::

    e <= T:  C = R/V1 * [a/alpha (1 - exp(-alpha e)) + b/beta (1 - exp(-beta e))]
    e >  T:  C = R/V1 * [a/alpha (1 - exp(-alpha T)) exp(-alpha (e - T))
                         + b/beta (1 - exp(-beta T)) exp(-beta (e - T))]

Multiple doses add by superposition (linear kinetics); the cumulative AUC is the closed-form
integral of each term (:func:`concentration`, :func:`cumulative_auc`).

Under encryption
----------------
When k12 and k21 are shared by all patients (e.g. volumes and the inter-compartmental clearance
scale with body weight, as in :mod:`medtwin.models.vancomycin`), alpha, beta, a, b are smooth
functions of the encrypted k10 alone; each is one Chebyshev approximation over the declared k10
range. For a regular regimen (interval tau, infusion time T, start t0; T = 0 is a bolus), a slot
at time t has m = floor((t - t0)/tau) completed intervals and r = t - t0 - m tau, and, per
exponent lambda in {alpha, beta} with u = exp(-lambda tau)::

    sum over finished doses i of a_i exp(-lambda (t - t_i)) = exp(-lambda r) * sum_j c_j u^j,
                                                             c_j = a_(m-j) (plaintext per slot)

so the trajectory costs, per exponent, Chebyshev pieces for lambda(k10), u(k10), the dose
coefficients and exp(-lambda r), plus a power polynomial in u with plaintext coefficients
(:func:`emit_concentration`). The error bound of every piece is measured by the program builder
and propagated to the output (``program.error_bound("conc")``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from medtwin.errors import RangeError, ValidationError

GIBALDI_PERRIER = "Gibaldi M, Perrier D. Pharmacokinetics. 2nd ed. New York: Marcel Dekker; 1982, ch. 2"


def check_ranges(model: str, ranges: Mapping[str, tuple[float, float]], cov: Mapping[str, object],
                 names: Sequence[str]) -> dict[str, np.ndarray]:
    """Return the named covariates as float64 arrays after checking each against ``ranges``.

    Raises:
        ValidationError: a covariate is missing, or the arrays have different lengths.
        RangeError: a value is not finite or lies outside its declared range; the message names
            the model, the covariate, how many patients and the first index, never a value.
    """
    out: dict[str, np.ndarray] = {}
    n = None
    for k in names:
        if k not in cov:
            raise ValidationError(f"model {model} needs covariate {k!r}")
        v = np.atleast_1d(np.asarray(cov[k], dtype=np.float64))
        if n is None:
            n = v.shape
        elif v.shape != n:
            raise ValidationError(f"model {model}: covariate {k!r} has {v.size} values, expected {int(np.prod(n))}")
        lo, hi = ranges[k]
        bad = np.flatnonzero(~((v >= lo) & (v <= hi)))
        if bad.size:
            raise RangeError(f"model {model}: {k} of {bad.size} patient(s) (first at index {int(bad[0])}) "
                             f"outside the valid range [{lo:g}, {hi:g}]")
        out[k] = v
    return out


# -- algebra (vectorised; works on floats and numpy arrays) ----------------------------------------

def macro_constants(k10, k12, k21):
    """(alpha, beta): the hybrid rate constants [1/h], alpha > beta > 0 (Gibaldi and Perrier 1982)."""
    k10 = np.asarray(k10, dtype=np.float64)
    s = k10 + k12 + k21
    d = np.sqrt(s * s - 4.0 * k10 * k21)
    alpha = 0.5 * (s + d)
    beta = k10 * k21 / alpha  # = (s - d)/2 without cancellation
    return alpha, beta


def unit_coefficients(k10, k12, k21):
    """(a, b) with A = a D/V1 and B = b D/V1 for a bolus D; a + b = 1."""
    alpha, beta = macro_constants(k10, k12, k21)
    a = (alpha - k21) / (alpha - beta)
    return a, 1.0 - a


@dataclass(frozen=True)
class Dosing:
    """Doses at ``times`` [h] of ``amounts`` [mg], each infused over ``durations`` [h] (0 = bolus)."""

    times: np.ndarray
    amounts: np.ndarray
    durations: np.ndarray

    def __post_init__(self) -> None:
        t, a, d = (np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (self.times, self.amounts, self.durations))
        if not (t.shape == a.shape == d.shape) or t.ndim != 1 or t.size == 0:
            raise ValidationError("dosing needs equally long, non-empty times, amounts and durations")
        if not (np.all(np.isfinite(t)) and np.all(a >= 0) and np.all(d >= 0) and np.all(np.isfinite(a + d))):
            raise ValidationError("dosing amounts and durations must be finite and non-negative")
        object.__setattr__(self, "times", t)
        object.__setattr__(self, "amounts", a)
        object.__setattr__(self, "durations", d)

    @staticmethod
    def regular(dose_mg: float, interval_h: float, count: int, *, infusion_h: float = 0.0, start_h: float = 0.0,
                taken: Sequence[float] | None = None) -> Dosing:
        """``count`` doses every ``interval_h`` from ``start_h``; ``taken`` (0/1 per dose) for missed doses.

        Raises:
            ValidationError: a non-positive interval or count, or an infusion longer than the interval.
        """
        if not (interval_h > 0 and int(count) >= 1 and 0 <= infusion_h <= interval_h):
            raise ValidationError("a regular regimen needs interval > 0, count >= 1 and 0 <= infusion time <= interval")
        n = int(count)
        amt = np.full(n, float(dose_mg))
        if taken is not None:
            tk = np.asarray(taken, dtype=np.float64)
            if tk.shape != (n,):
                raise ValidationError("taken needs one 0/1 value per dose")
            amt = amt * tk
        return Dosing(start_h + interval_h * np.arange(n), amt, np.full(n, float(infusion_h)))


def _per_dose(t, dosing: Dosing):
    t = np.asarray(t, dtype=np.float64)
    e = t[..., None] - dosing.times  # elapsed since each dose start
    return e, dosing.amounts, dosing.durations


def _exponential_terms(t, dosing: "Dosing", k10, k12, k21):
    """Per exponential (alpha, beta): its rate and unit coefficient broadcast over doses, the time
    since each dose (raw and clipped at 0), the amounts, the bolus mask and the infusion time
    (1 where bolus, so that divisions stay finite)."""
    alpha, beta = macro_constants(k10, k12, k21)
    a, b = unit_coefficients(k10, k12, k21)
    e, amt, dur = _per_dose(t, dosing)
    ep = np.maximum(e, 0.0)
    bol = dur == 0
    T = np.where(bol, 1.0, dur)
    for lam, c in ((alpha, a), (beta, b)):
        lam = np.asarray(lam)[..., None] if np.ndim(lam) else lam
        c = np.asarray(c)[..., None] if np.ndim(c) else c
        yield lam, c, e, ep, amt, bol, T


def concentration(t, dosing: Dosing, k10, k12, k21, v1):
    """Plaintext reference C(t) [mg/L] by superposition of the closed-form single-dose terms.

    ``t`` may be any shape; k10 and v1 scalars (use numpy broadcasting with ``[:, None]`` for
    several patients).
    """
    out = 0.0
    for lam, c, e, ep, amt, bol, Tsafe in _exponential_terms(t, dosing, k10, k12, k21):
        during = c / lam * (1.0 - np.exp(-lam * ep)) / Tsafe
        after = c / lam * (1.0 - np.exp(-lam * Tsafe)) * np.exp(-lam * np.maximum(ep - Tsafe, 0.0)) / Tsafe
        inf = np.where(ep <= Tsafe, during, after)
        term = np.where(bol, c * np.exp(-lam * ep), inf)
        out = out + np.where(e >= 0, amt * term, 0.0).sum(-1)
    return out / v1


def cumulative_auc(t, dosing: Dosing, k10, k12, k21, v1):
    """Plaintext reference AUC(0..t) [mg*h/L], the closed-form integral of :func:`concentration`."""
    out = 0.0
    for lam, c, e, ep, amt, bol, T in _exponential_terms(t, dosing, k10, k12, k21):
        bolus = c / lam * (1.0 - np.exp(-lam * ep))
        during = c / lam * (ep - (1.0 - np.exp(-lam * ep)) / lam) / T
        f = 1.0 - np.exp(-lam * T)
        after = c / lam * (T - f / lam + f * (1.0 - np.exp(-lam * np.maximum(ep - T, 0.0))) / lam) / T
        term = np.where(bol, bolus, np.where(ep <= T, during, after))
        out = out + np.where(e >= 0, amt * term, 0.0).sum(-1)
    return out / v1


def ode_rhs(k10, k12, k21):
    """Right-hand side of the amounts (X1 central, X2 peripheral) for checking with solve_ivp."""
    def f(_t, x, rate=0.0):
        x1, x2 = x
        return [rate - (k10 + k12) * x1 + k21 * x2, k12 * x1 - k21 * x2]
    return f


# -- encrypted program pieces ----------------------------------------------------------------------

def _span(expr, pad: float = 0.02) -> tuple[float, float]:
    lo, hi = expr.range
    w = (hi - lo) * pad + 1e-9 * max(1.0, abs(lo), abs(hi))
    return float(lo - w), float(hi + w)


def _h(x):
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) < 1e-8
    xs = np.where(small, 1.0, x)
    return np.where(small, 1.0 - x / 2.0, -np.expm1(-xs) / xs)


def regimen_terms(times: np.ndarray, dosing_amounts: np.ndarray, interval_h, infusion_h, start_h=0.0):
    """Per slot (time): r, the finished-dose coefficients c (slots x J+1) and the amount being infused.

    ``dosing_amounts`` is one row of doses for every slot, or (slots, doses); ``interval_h``,
    ``infusion_h`` and ``start_h`` are scalars or one value per slot (a regimen per slot). A dose
    counts as finished once its infusion has ended (bolus: at once).
    """
    times = np.asarray(times, dtype=np.float64)
    ns = times.size
    amounts = np.asarray(dosing_amounts, dtype=np.float64)
    amounts = np.broadcast_to(amounts, (ns, amounts.shape[-1])) if amounts.ndim == 1 else amounts
    tau = np.broadcast_to(np.asarray(interval_h, dtype=np.float64), (ns,))
    T = np.broadcast_to(np.asarray(infusion_h, dtype=np.float64), (ns,))
    t0 = np.broadcast_to(np.asarray(start_h, dtype=np.float64), (ns,))
    if amounts.shape[0] != ns or np.any(tau <= 0) or np.any(T < 0) or np.any(T > tau):
        raise ValidationError("regimen per slot needs positive intervals and 0 <= infusion time <= interval")
    n = amounts.shape[1]
    rel = times - t0
    m = np.where(rel >= 0, np.floor(rel / tau + 1e-12), -1).astype(int)
    r = np.where(rel >= 0, rel - np.maximum(m, 0) * tau, 0.0)
    r = np.clip(r, 0.0, tau)
    jmax = max(int(np.minimum(m, n - 1).max()), 0) + 1
    c = np.zeros((ns, jmax + 1))
    cur = np.zeros(ns)
    for k, mk in enumerate(m):
        for i in range(0, min(mk, n - 1) + 1):
            if i < mk or T[k] == 0.0 or r[k] >= T[k]:
                c[k, mk - i] = amounts[k, i]
            else:
                cur[k] = amounts[k, i]
    while c.shape[1] > 1 and not np.any(c[:, -1]):
        c = c[:, :-1]
    return r, c, cur


def _q(y):
    """(exp(y) - 1)/y, 1 at 0."""
    y = np.asarray(y, dtype=np.float64)
    small = np.abs(y) < 1e-8
    ys = np.where(small, 1.0, y)
    return np.where(small, 1.0 + y / 2.0, np.expm1(ys) / ys)


def emit_concentration(b, k10, inv_v1, *, k12: float, k21: float, k10_domain: tuple[float, float],
                       times: np.ndarray, amounts: np.ndarray, interval_h, infusion_h=0.0,
                       start_h=0.0, tol: float = 1e-7):
    """Emit C(t) per slot into builder ``b`` for encrypted ``k10`` and ``inv_v1`` (= 1/V1 [1/L]).

    ``times`` (one per slot) and the regular regimen are plaintext: ``amounts`` per dose (one row,
    or one row per slot), ``interval_h``, ``infusion_h`` (0: bolus) and ``start_h`` as scalars or
    one value per slot, so one ciphertext can hold a grid of regimens. A regimen shared by all
    slots uses Chebyshev pieces in k10 for exp(-lambda tau) and the infusion factor (shallower);
    per-slot regimens use pieces in lambda * tau and lambda * T. Returns the concentration [mg/L].

    Raises:
        ValidationError: an inconsistent regimen.
        ProgramError: a value leaves an approximation domain (the k10 domain must contain k10's range).
    """
    ns = np.asarray(times).size
    tau = np.broadcast_to(np.asarray(interval_h, dtype=np.float64), (ns,))
    T = np.broadcast_to(np.asarray(infusion_h, dtype=np.float64), (ns,))
    shared = bool(np.all(tau == tau[0]) and np.all(T == T[0]))
    r, c, cur = regimen_terms(times, amounts, tau, T, start_h)
    total = None
    dom = (float(k10_domain[0]), float(k10_domain[1]))
    for which in ("alpha", "beta"):
        idx = 0 if which == "alpha" else 1

        def lam_f(k, idx=idx):
            return macro_constants(k, k12, k21)[idx]

        def coef_f(k, idx=idx):
            return unit_coefficients(k, k12, k21)[idx]

        lam = b.apply(lam_f, k10, domain=dom, tol=tol, label=f"{which}(k10)")
        c_l = None
        if shared:
            t1, T1 = float(tau[0]), float(T[0])
            u = b.apply(lambda k, f=lam_f, t1=t1: np.exp(-f(k) * t1), k10, domain=dom, tol=tol,
                        label=f"exp(-{which} tau)")
            g1 = b.apply(lambda k, f=lam_f, g=coef_f, T1=T1: g(k) * _q(f(k) * T1), k10, domain=dom, tol=tol,
                         label=f"{which} infusion coefficient" if T1 > 0 else f"{which} coefficient")
            if T1 == 0.0:
                c_l = g1
        else:
            x_tau = lam * b.plain(tau)
            u = b.apply(lambda x: np.exp(-x), x_tau, domain=_span(x_tau), tol=tol, label=f"exp(-{which} tau)")
            c_l = b.apply(coef_f, k10, domain=dom, tol=tol, label=f"{which} coefficient")
            if np.any(T > 0):
                x_T = lam * b.plain(T)
                g1 = c_l * b.apply(_q, x_T, domain=_span(x_T), tol=tol, label=f"(exp(x)-1)/x, {which}")
            else:
                g1 = c_l
        x_r = lam * b.plain(r)
        er = b.apply(lambda x: np.exp(-x), x_r, domain=_span(x_r), tol=tol, label=f"exp(-{which} r)")
        poly = b.poly_plain(u, [c[:, j] for j in range(c.shape[1])])
        term = g1 * (er * poly)
        if np.any(cur):
            # dose being infused: c/lambda (1 - exp(-lambda r)) / T = c * h(lambda r) * r / T,
            # h(x) = (1 - exp(-x))/x, smooth at 0 (avoids 1/lambda for small lambda)
            if c_l is None:
                c_l = b.apply(coef_f, k10, domain=dom, tol=tol, label=f"{which} coefficient")
            h = b.apply(_h, x_r, domain=_span(x_r), tol=tol, label=f"(1-exp(-x))/x, {which}")
            Tsafe = np.where(T > 0, T, 1.0)
            term = term + (c_l * h) * b.plain(np.where(T > 0, r * cur / Tsafe, 0.0))
        total = term if total is None else total + term
    return total * inv_v1


@dataclass(frozen=True)
class TwoCompartmentIV:
    """Two-compartment IV model with micro-constants k12, k21 shared by the patients and
    patient-specific k10 and V1 (encrypted), plus their declared ranges."""

    name: str
    k12: float
    k21: float
    ranges: dict = field(default_factory=lambda: {"k10": (0.01, 2.0), "v1_l": (2.0, 60.0)})
    citation: str = GIBALDI_PERRIER
    version: str = "1"

    def __post_init__(self) -> None:
        if not (self.k12 > 0 and self.k21 > 0 and math.isfinite(self.k12 + self.k21)):
            raise ValidationError(f"model {self.name}: k12 and k21 must be positive")

    def validate_covariates(self, cov: dict) -> dict[str, np.ndarray]:
        """Raises RangeError / ValidationError as :func:`check_ranges` (covariates k10, v1_l)."""
        return check_ranges(self.name, self.ranges, cov, ("k10", "v1_l"))

    def reference(self, cov: dict, dosing: Dosing, times) -> dict[str, np.ndarray]:
        """C and cumulative AUC at ``times`` for each patient: arrays (patients, len(times))."""
        c = self.validate_covariates(cov)
        k10 = c["k10"][:, None]
        v1 = c["v1_l"][:, None]
        t = np.asarray(times, dtype=np.float64)[None, :]
        return {"conc": concentration(t, dosing, k10, self.k12, self.k21, v1),
                "auc": cumulative_auc(t, dosing, k10, self.k12, self.k21, v1)}

    def build_program(self, slots: int, times: np.ndarray, *, dose_mg: float, interval_h: float, count: int,
                      infusion_h: float = 0.0, taken=None, params=None, tol: float = 1e-7):
        """FHE program: encrypted inputs ``k10`` [1/h] and ``inv_v1`` [1/L] per slot; output ``conc``.

        ``times`` gives each slot's time point (slots without a patient may hold any time).

        Raises:
            ProgramError: as :func:`emit_concentration`, or the plan does not fit ``params``.
        """
        from medtwin.program.builder import ProgramBuilder

        reg = Dosing.regular(dose_mg, interval_h, count, infusion_h=infusion_h, taken=taken)
        b = ProgramBuilder(name=self.name, slots=slots)
        k10 = b.input("k10", range=self.ranges["k10"])
        lo, hi = self.ranges["v1_l"]
        inv_v1 = b.input("inv_v1", range=(1.0 / hi, 1.0 / lo))
        conc = emit_concentration(b, k10, inv_v1, k12=self.k12, k21=self.k21, k10_domain=self.ranges["k10"],
                                  times=np.resize(np.asarray(times, dtype=np.float64), slots),
                                  amounts=reg.amounts, interval_h=interval_h, infusion_h=infusion_h, tol=tol)
        b.output("conc", conc)
        return b.build(params)
