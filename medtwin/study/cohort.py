"""Vancomycin cohort study: patients x a regimen grid at steady state, with encrypted aggregates.

What it computes
----------------
For every (patient, regimen) pair, in **one CKKS slot per pair** (patient-major: slot
``p * block + r``, ``block`` = the regimen count rounded up to a power of two, whole patients per
ciphertext), from the encrypted covariates ``weight_kg`` and ``crcl_ml_min`` only (data
minimisation; CrCl by Cockcroft-Gault on the client from the record):

* ``auc24``: AUC24 at steady state = 24 D / (tau CL) [mg*h/L] (linear PK; Rybak 2020), CL from CrCl
  by Matzke et al. (1984); 1/CL by a Newton-refined Chebyshev seed.
* ``trough`` and ``peak``: steady-state concentrations just before a dose (r = tau) and at the end
  of the infusion (r = T) of the two-compartment infusion model of
  :mod:`medtwin.models.vancomycin` (Gibaldi and Perrier 1982, superposition summed to infinity)::

      C_ss(r) = (D / tau) / CL * sum_i w_i q(lambda_i T) S_i(r),   w_i = c_i k10 / lambda_i (sum 1)
      trough:  q(lambda T) * B(lambda tau)          B(x) = x / (e^x - 1)
      peak:    h(lambda T) * (B(lambda tau) + lambda tau),   q(y) = (e^y - 1)/y, h(y) = (1 - e^-y)/y

  With k12 and k21 shared by all patients (volumes and Q scale with weight), the regimen's factor
  is a smooth function of k10 = CL / V1 alone: one Chebyshev piece in k10 per regimen (degree
  10-15 at 1e-6), all sharing the same Chebyshev powers of k10, selected per slot by a 0/1
  plaintext mask.
* ``attain``: a smooth indicator of target attainment, AUC24/MIC in [400, 600] (Rybak 2020),
  ``sigma((v - ln 400)/s) * sigma((ln 600 - v)/s)`` with v = ln(AUC24/MIC), sigma the logistic
  function and edge width s = 0.05 (the indicator passes 0.12 -> 0.88 within +-2s, i.e. within
  about +-10% of each target edge). v = ln(24 D/(tau MIC)) - ln CL, ln CL a Chebyshev piece; the
  window is one Chebyshev piece over v's whole declared domain (degree ~180 at 1e-4).
* ``tox``: a smooth indicator that the steady-state trough exceeds 20 mg/L (the nephrotoxicity
  threshold of Rybak 2020, after Rybak 2009 and van Hal 2013: troughs above 15-20 mg/L carry a
  higher risk of acute kidney injury), ``sigma((ln trough - ln 20)/s)``, s = 0.05, with
  ln trough = ln(D/tau) - ln CL + ln(regimen factor), the last again one piece in k10 per regimen.
* ``score`` = attain - ``tox_penalty`` * tox (default penalty 1): attainment, penalised for a
  trough above 20 mg/L.
* ``dauc24``: AUC24 of the regimen minus AUC24 of the patient's current regimen (a study
  parameter): the same encrypted 1/CL times a different plaintext, 24 (D/tau - D_c/tau_c).

Cohort aggregates under encryption
----------------------------------
Per regimen, the compute node multiplies each per-pair value by a plaintext weight (1/P on real
slots, 0 on padding), sums inside each ciphertext by rotate-and-add with strides block, 2 block,
... (log2(slots/block) rotation keys, the only ones generated) and adds the chunks' sums: slot r
then holds the cohort mean for regimen r of ``attain`` (the probability of target attainment,
PTA), ``tox``, ``score``, AUC24/100 and (AUC24/1000)^2 (-> SD). The key holder decrypts only these
aggregate ciphertexts and releases them through :mod:`medtwin.custody.policy`
(:func:`medtwin.custody.policy.release`: noise flooding sized from the key-dependent part of each
aggregate's bound, rounding; ``CohortAggregates.sigma`` reports the flooding sigma per aggregate), and refuses cohorts below the policy's minimum size
(:data:`medtwin.custody.policy.MIN_COHORT`). Per-patient values are decrypted only when asked
(clinician mode), audited like every decryption.

Bounds
------
Every output carries the planner's bound on |decrypted - exact| (approximation error of every
Chebyshev piece propagated to the output plus the CKKS noise of the executor's noise model with
exact scale correction), computed for the live context's primes as :func:`medtwin.study.study.simulate`
does. The "exact" value is :func:`reference`, float64 of the same formulas (the same smooth
window); the steady-state formulas are checked in the tests against superposition of many doses
(:meth:`VancomycinModel.reference`). An aggregate's bound over several chunks adds the chunks'
worst-case parts and the 2-norm of their random CKKS noise (independent encryptions; see
:func:`_chunk_sum_bounds`); inside a chunk the noise analysis tracks rotations per slot shift
(:mod:`medtwin.program.bounds`), so the rotate-and-sum grows the random noise like sqrt(M).

Preset: ``cohort-128`` by default (:data:`DEFAULT_PRESET`; 49-bit scaling primes, 60-bit first
prime, N = 2^16), which makes the released aggregates' flooding about 500x smaller than
``standard-128``; it runs on the OpenFHE backend only (the native engine's key switching is
exact up to a 52-bit first prime; :func:`simulate` refuses ``backend="native"`` with a message).
The aggregates' scale factors follow the preset's headroom (:func:`agg_scale`).

Regimen grid (default)
----------------------
Doses 750, 1000, 1250, 1500 mg (250 mg steps, the usual vial sizes, around the 15-20 mg/kg
maintenance doses of Rybak 2020 for 50-100 kg adults) x intervals 8, 12, 24, 48 h (q8-12h with
normal renal function, q24-48h in renal impairment: the range of intervals the guideline's
dosing covers across CrCl 5-200 mL/min). Infusion time: 1 h per g, at least 1 h (Rybak 2020:
infusion over at least 1 h, about 1 g/h, to avoid infusion reactions). MIC 1 mg/L (broth
microdilution; Rybak 2020 assumes MIC 1 unless known otherwise), plaintext.

References: Matzke GR et al. Antimicrob Agents Chemother 1984;25:433-437. Rybak MJ et al. Am J
Health-Syst Pharm 2020;77:835-864. Gibaldi M, Perrier D. Pharmacokinetics, 2nd ed. 1982.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from medtwin.errors import KeyMismatchError, ProgramError, SecurityPolicyError, ValidationError
from medtwin.models.two_compartment import macro_constants, unit_coefficients
from medtwin.models.vancomycin import COVARIATES, VANCOMYCIN, VancomycinModel
from medtwin.study.study import WireInputs

__all__ = ["Regimen", "CohortSpec", "CohortLayout", "CohortPrograms", "EncryptedCohortStudy",
           "CohortOutcome", "CohortAggregates", "CohortResult", "reference", "steady_state_factors",
           "compile_cohort", "cohort_keys", "agg_scale", "DEFAULT_PRESET", "encrypt", "simulate",
           "release_aggregates", "decrypt_aggregates", "decrypt_pairs", "run", "infusion_hours",
           "DEFAULT_DOSES_MG", "DEFAULT_INTERVALS_H", "PAIR_OUTPUTS", "AGGREGATE_OUTPUTS", "covariates_of_records"]

DEFAULT_DOSES_MG = (750.0, 1000.0, 1250.0, 1500.0)
DEFAULT_INTERVALS_H = (8.0, 12.0, 24.0, 48.0)
#: per-pair outputs: name in the program -> (user-facing name, factor to user units)
PAIR_OUTPUTS = {"trough_h": ("trough", 100.0), "peak_h": ("peak", 100.0), "auc24_h": ("auc24", 100.0),
                "dauc24_h": ("dauc24", 100.0), "attain": ("attain", 1.0), "tox": ("tox", 1.0),
                "score": ("score", 1.0)}
#: aggregate outputs (cohort means per regimen, summed under encryption)
AGGREGATE_OUTPUTS = ("mean_attain", "mean_tox", "mean_score", "mean_auc_h", "mean_auc2_k")
#: factor each aggregate is computed with (divided out after decryption): the rotations' key-switch
#: noise is absolute, so a larger message makes it relatively smaller. Bounded by the headroom at
#: the value's level: ``tox`` and ``score`` end at the program's last level (|v| < 2^8 there), the
#: others several levels earlier (hundreds of bits to spare).
AGG_SCALE = {"mean_attain": 2.0 ** 20, "mean_tox": 32.0, "mean_score": 32.0, "mean_auc_h": 2.0 ** 16,
             "mean_auc2_k": 2.0 ** 16}
#: the default preset of cohort studies: 49-bit scaling primes (see :mod:`medtwin.he.params`)
DEFAULT_PRESET = "cohort-128"


def agg_scale(headroom_bits: int, tox_penalty: float = 1.0, scaling_mod_size: int = 40) -> dict[str, float]:
    """The aggregates' factors for a preset with ``headroom_bits`` (first prime bits minus scale
    bits) and scale 2^``scaling_mod_size``. ``tox`` and ``score`` end at the program's last level,
    where a value with its error bound must stay below 2^(headroom - 1) in magnitude (the planner
    refuses the program otherwise): ``tox`` (in [0, 1]) gets 2^(headroom - 2) with scales of 45
    bits or more (512 with ``cohort-128``), 2^(headroom - 4) below (32 with ``standard-128``: with
    40-bit primes the planner's estimated rescale drift, before the context's primes are known,
    charges about 3x the value there); ``score`` (in [-penalty, 1]) the same divided by the
    penalty's power of two. The others are computed levels earlier and keep :data:`AGG_SCALE`.
    A larger factor makes the rotations' absolute key-switch noise and bias relatively smaller."""
    h = int(headroom_bits)
    t = 2.0 ** max(0, h - (2 if int(scaling_mod_size) >= 45 else 4))
    pen = max(1.0, float(tox_penalty))
    return {**AGG_SCALE, "mean_tox": t, "mean_score": max(1.0, t / 2.0 ** math.ceil(math.log2(pen)))}


ProgressFn = Callable[[str, float], None]


def infusion_hours(dose_mg: float) -> float:
    """Infusion time [h]: 1 h per g, at least 1 h (Rybak 2020)."""
    return max(1.0, float(dose_mg) / 1000.0)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


@dataclass(frozen=True)
class Regimen:
    """One candidate regimen of the grid: dose [mg] every ``interval_h`` [h], infused over ``infusion_h``."""

    dose_mg: float
    interval_h: float
    infusion_h: float

    def describe(self) -> str:
        return f"{self.dose_mg:g} mg q{self.interval_h:g}h"

    @property
    def daily_mg(self) -> float:
        return 24.0 * self.dose_mg / self.interval_h


@dataclass(frozen=True)
class CohortSpec:
    """The study: regimen grid (doses x intervals, dose-major), current regimen, MIC and metrics.

    Raises:
        ValidationError: a non-positive dose, interval or MIC, an infusion longer than its
            interval, more than 64 regimens, or bad metric parameters.
    """

    doses_mg: tuple[float, ...] = DEFAULT_DOSES_MG
    intervals_h: tuple[float, ...] = DEFAULT_INTERVALS_H
    current: tuple[float, float] = (1000.0, 12.0)  # (dose mg, interval h) of the current regimen
    mic: float = 1.0
    target: tuple[float, float] = (400.0, 600.0)   # AUC24/MIC (Rybak 2020)
    window_edge: float = 0.05                     # logistic scale in ln(AUC24/MIC)
    trough_limit: float = 20.0                    # mg/L (Rybak 2020 nephrotoxicity)
    trough_edge: float = 0.05                     # logistic scale in ln(trough)
    tox_penalty: float = 1.0
    preset: str = DEFAULT_PRESET
    model: str = "vancomycin"

    def __post_init__(self) -> None:
        d = tuple(float(x) for x in self.doses_mg)
        t = tuple(float(x) for x in self.intervals_h)
        object.__setattr__(self, "doses_mg", d)
        object.__setattr__(self, "intervals_h", t)
        object.__setattr__(self, "current", (float(self.current[0]), float(self.current[1])))
        object.__setattr__(self, "target", (float(self.target[0]), float(self.target[1])))
        if not d or not t:
            raise ValidationError("the regimen grid needs at least one dose and one interval")
        if len(set(d)) != len(d) or len(set(t)) != len(t):
            raise ValidationError("doses and intervals must not repeat")
        if len(d) * len(t) > 64:
            raise ValidationError("at most 64 regimens (doses x intervals) per study")
        if any(not (0 < x <= 6000 and math.isfinite(x)) for x in d + (self.current[0],)):
            raise ValidationError("doses must be in (0, 6000] mg")
        if any(not (1.0 <= x <= 96.0) for x in t + (self.current[1],)):
            raise ValidationError("intervals must be in [1, 96] h")
        for r in self.regimens:
            if r.infusion_h > r.interval_h:
                raise ValidationError(f"regimen {r.describe()}: the infusion is longer than the interval")
        if not (0.0 < float(self.mic) <= 64.0):
            raise ValidationError("MIC must be in (0, 64] mg/L")
        lo, hi = self.target
        if not (0 < lo < hi):
            raise ValidationError("the target AUC24/MIC window needs 0 < low < high")
        if not (0.005 <= self.window_edge <= 1.0 and 0.005 <= self.trough_edge <= 1.0):
            raise ValidationError("edge widths must be in [0.005, 1]")
        if not (0 < self.trough_limit <= 200 and 0 <= self.tox_penalty <= 10):
            raise ValidationError("trough limit must be in (0, 200] mg/L and the penalty in [0, 10]")
        if self.model != "vancomycin":
            raise ValidationError(f"cohort studies run the vancomycin model, not {self.model!r}")

    @property
    def pk(self) -> VancomycinModel:
        return VANCOMYCIN

    @property
    def regimens(self) -> list[Regimen]:
        return [Regimen(d, t, infusion_hours(d)) for d in self.doses_mg for t in self.intervals_h]

    @property
    def n_regimens(self) -> int:
        return len(self.doses_mg) * len(self.intervals_h)

    def to_dict(self) -> dict:
        return {"model": self.model, "doses_mg": list(self.doses_mg), "intervals_h": list(self.intervals_h),
                "current": list(self.current), "mic": float(self.mic), "target": list(self.target),
                "window_edge": self.window_edge, "trough_limit": self.trough_limit,
                "trough_edge": self.trough_edge, "tox_penalty": self.tox_penalty, "preset": self.preset}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------ layout
def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


@dataclass(frozen=True)
class CohortLayout:
    """One slot per (patient, regimen) pair, patient-major, ``block`` slots per patient, whole
    patients per ciphertext. Padding slots repeat the chunk's first patient (inside the ranges)
    and regimen 0; they carry weight 0 in the aggregates and are never read back."""

    n_patients: int
    n_regimens: int
    slots: int

    def __post_init__(self) -> None:
        if self.n_patients < 1 or self.n_regimens < 1:
            raise ValidationError("a cohort study needs at least one patient and one regimen")
        if self.block > self.slots:
            raise ValidationError(f"{self.n_regimens} regimens do not fit {self.slots} slots")

    @property
    def block(self) -> int:
        return _next_pow2(self.n_regimens)

    @property
    def patients_per_ct(self) -> int:
        return self.slots // self.block

    @property
    def n_ciphertexts(self) -> int:
        return -(-self.n_patients // self.patients_per_ct)

    @property
    def n_pairs(self) -> int:
        return self.n_patients * self.n_regimens

    def regimen_of_slot(self) -> np.ndarray:
        r = np.arange(self.slots) % self.block
        return np.where(r < self.n_regimens, r, 0)

    def _patient(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.arange(self.n_ciphertexts)[:, None]
        j = np.arange(self.slots)[None, :]
        p = c * self.patients_per_ct + j // self.block
        ok = (p < self.n_patients) & ((j % self.block) < self.n_regimens)
        first = c * self.patients_per_ct
        return np.where(p < self.n_patients, p, first), ok

    def valid(self) -> np.ndarray:
        """(n_ciphertexts, slots): 1.0 on real (patient, regimen) slots."""
        return self._patient()[1].astype(np.float64)

    def spread(self, per_patient: np.ndarray) -> np.ndarray:
        v = np.asarray(per_patient, dtype=np.float64)
        if v.shape != (self.n_patients,):
            raise ValidationError(f"expected {self.n_patients} patient values, got shape {v.shape}")
        return v[self._patient()[0]]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """(n_ciphertexts, slots) -> (patients, regimens)."""
        a = np.asarray(rows, dtype=np.float64).reshape(self.n_ciphertexts, self.patients_per_ct, self.block)
        return a[:, :, : self.n_regimens].reshape(-1, self.n_regimens)[: self.n_patients]


# ------------------------------------------------------------------------------------ reference
def _q(y):
    y = np.asarray(y, dtype=np.float64)
    s = np.abs(y) < 1e-8
    return np.where(s, 1.0 + y / 2.0, np.expm1(np.where(s, 1.0, y)) / np.where(s, 1.0, y))


def _h(y):
    y = np.asarray(y, dtype=np.float64)
    s = np.abs(y) < 1e-8
    return np.where(s, 1.0 - y / 2.0, -np.expm1(-np.where(s, 1.0, y)) / np.where(s, 1.0, y))


def _bern(x):
    """B(x) = x / (e^x - 1), 1 at 0."""
    x = np.asarray(x, dtype=np.float64)
    s = np.abs(x) < 1e-8
    return np.where(s, 1.0 - x / 2.0, np.where(s, 1.0, x) / np.expm1(np.where(s, 1.0, x)))


def steady_state_factors(k10, reg: Regimen, model: VancomycinModel = VANCOMYCIN) -> tuple[np.ndarray, np.ndarray]:
    """(trough factor, peak factor): C_ss = factor * (D/tau) / CL at r = tau and r = T (see the
    module docstring); functions of k10 [1/h] alone for a given regimen."""
    k10 = np.asarray(k10, dtype=np.float64)
    a, b = macro_constants(k10, model.k12, model.k21)
    ca, cb = unit_coefficients(k10, model.k12, model.k21)
    tau, T = reg.interval_h, reg.infusion_h
    tr = pk = 0.0
    for lam, c in ((a, ca), (b, cb)):
        w = c * k10 / lam
        x = lam * tau
        tr = tr + w * _q(lam * T) * _bern(x)
        pk = pk + w * _h(lam * T) * (_bern(x) + x)
    return tr, pk


def _window(spec: CohortSpec):
    lo, hi = math.log(spec.target[0]), math.log(spec.target[1])
    s = spec.window_edge
    return lambda v: _sigmoid((np.asarray(v) - lo) / s) * _sigmoid((hi - np.asarray(v)) / s)


def _tox(spec: CohortSpec):
    c, s = math.log(spec.trough_limit), spec.trough_edge
    return lambda u: _sigmoid((np.asarray(u) - c) / s)


def reference(spec: CohortSpec, covariates: dict) -> dict[str, np.ndarray]:
    """Float64 reference of every per-pair output, arrays (patients, regimens) in user units.

    Raises:
        RangeError: a covariate outside the model's declared range.
    """
    model = spec.pk
    p = model.individual_parameters(covariates)
    cl, k10 = p["cl"][:, None], p["k10"][:, None]
    regs = spec.regimens
    D = np.array([r.dose_mg for r in regs])[None, :]
    tau = np.array([r.interval_h for r in regs])[None, :]
    ftr = np.empty((cl.shape[0], len(regs)))
    fpk = np.empty_like(ftr)
    for j, r in enumerate(regs):
        a, b = steady_state_factors(k10[:, 0], r, model)
        ftr[:, j], fpk[:, j] = a, b
    avg = D / tau / cl
    trough, peak = avg * ftr, avg * fpk
    auc = 24.0 * avg
    dc, tc = spec.current
    attain = _window(spec)(np.log(auc / spec.mic))
    tox = _tox(spec)(np.log(trough))
    return {"trough": trough, "peak": peak, "auc24": auc, "dauc24": auc - 24.0 * dc / tc / cl,
            "attain": attain, "tox": tox, "score": attain - spec.tox_penalty * tox}


def reference_aggregates(ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per regimen: PTA, P(trough above the limit), mean score, mean and SD (population) of AUC24."""
    auc = ref["auc24"]
    return {"pta": ref["attain"].mean(0), "p_tox": ref["tox"].mean(0), "mean_score": ref["score"].mean(0),
            "mean_auc24": auc.mean(0), "sd_auc24": auc.std(0)}


# ------------------------------------------------------------------------------------ program
def _span(r: tuple[float, float], pad: float = 0.02) -> tuple[float, float]:
    lo, hi = r
    w = (hi - lo) * pad + 1e-9 * max(1.0, abs(lo), abs(hi))
    return float(lo - w), float(hi + w)


def build_program(spec: CohortSpec, layout: CohortLayout, weights: np.ndarray | None, *, params=None,
                  noise=None, tol: float = 1e-6, window_tol: float = 1e-4, name: str = "vancomycin-cohort",
                  scales: dict[str, float] | None = None):
    """The FHE program of one ciphertext chunk (inputs ``weight_kg``, ``crcl_ml_min``).

    ``weights`` (one per slot: 1/P on real pairs, 0 on padding) adds the aggregate outputs
    (rotate-and-sum over the chunk's patients); None builds the per-pair outputs only.
    ``scales``: the aggregates' factors (default :func:`agg_scale` for ``params``' headroom).

    Raises:
        ProgramError: the plan does not fit ``params`` (depth or headroom).
    """
    from medtwin.program.builder import ProgramBuilder

    model = spec.pk
    slots = layout.slots
    regs = spec.regimens
    ridx = layout.regimen_of_slot()
    D = np.array([r.dose_mg for r in regs])[ridx]
    tau = np.array([r.interval_h for r in regs])[ridx]
    R = model.ranges
    b = ProgramBuilder(name=name, slots=slots)
    wt = b.input("weight_kg", range=R["weight_kg"])
    crcl = b.input("crcl_ml_min", range=R["crcl_ml_min"])
    cl = crcl * (0.06 * model.cl_slope) + 0.06 * model.cl_intercept
    inv_wt = b.inverse(wt, domain=R["weight_kg"], tol=tol / 50.0, method="newton", label="1/weight")
    dom = model.k10_range()
    k10 = b.assume_range(cl * (inv_wt * (1.0 / model.v1_per_kg)), dom)
    kdom = (dom[0] * 0.999, dom[1] * 1.001)
    inv_cl = b.inverse(cl, domain=cl.range, tol=tol / 10.0, method="newton", label="1/CL")
    ln_cl = b.apply(np.log, cl, domain=cl.range, tol=tol, label="ln CL")

    auc_h = inv_cl * b.plain(24.0 * D / tau / 100.0)
    b.output("auc24_h", auc_h, scale_hint=5.0)
    dc, tc = spec.current
    b.output("dauc24_h", inv_cl * b.plain(24.0 * (D / tau - dc / tc) / 100.0), scale_hint=5.0)

    # Per-regimen pieces in k10 (shared Chebyshev powers), selected per slot by masks.
    def select(fns, coef, label):
        # exactly one mask is 1 in every slot, so the sum lies in the union of the pieces' ranges
        acc, lo, hi = None, math.inf, -math.inf
        for j, (fn, c) in enumerate(zip(fns, coef)):
            mask = (ridx == j).astype(np.float64) * c
            if not np.any(mask):
                continue
            piece = b.apply(fn, k10, domain=kdom, tol=tol, label=f"{label} {regs[j].describe()}")
            term = piece * mask if not np.all(mask == mask[0]) else piece * float(mask[0])
            acc = term if acc is None else acc + term
            plo, phi = piece.range
            lo, hi = min(lo, c * plo), max(hi, c * phi)
        return b.assume_range(acc, (lo, hi))

    tr_f = [lambda k, r=r: steady_state_factors(k, r, model)[0] for r in regs]
    pk_f = [lambda k, r=r: steady_state_factors(k, r, model)[1] for r in regs]
    ln_f = [lambda k, r=r: np.log(steady_state_factors(k, r, model)[0]) for r in regs]
    davg = [r.dose_mg / r.interval_h / 100.0 for r in regs]
    trough_h = select(tr_f, davg, "trough factor") * inv_cl
    peak_h = select(pk_f, davg, "peak factor") * inv_cl
    b.output("trough_h", trough_h, scale_hint=0.2)
    b.output("peak_h", peak_h, scale_hint=0.4)

    # ln(trough) = ln(trough factor) + ln(D/tau) - ln CL; smooth trough-above-limit indicator
    lnf = select(ln_f, [1.0] * len(regs), "ln trough factor")
    u = lnf + b.plain(np.log(D / tau)) - ln_cl
    tox = b.apply(_tox(spec), u, domain=_span(u.range), tol=window_tol, label="trough above limit")
    v = b.plain(np.log(24.0 * D / tau / spec.mic)) - ln_cl
    attain = b.apply(_window(spec), v, domain=_span(v.range), tol=window_tol, label="AUC/MIC window")
    score = attain - tox * spec.tox_penalty if spec.tox_penalty != 0 else attain
    b.output("attain", attain, scale_hint=1.0)
    b.output("tox", tox, scale_hint=1.0)
    b.output("score", score, scale_hint=1.0)

    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (slots,) or np.any(w < 0):
            raise ValidationError("aggregate weights: one non-negative value per slot")
        # Rotations by multiples of ``block`` keep each slot's residue class (its regimen), so
        # every partial sum is a sum of weighted values of one class: within the class's total
        # weight times the value's range (tighter than interval arithmetic's doubling per step).
        sw = float(w.reshape(-1, layout.block).sum(axis=0).max())

        def total(x, wv):
            lo, hi = x.range
            s, step = x * wv, layout.block
            while step < slots:
                s = b.assume_range(s + b.rotate(s, step), (min(0.0, lo) * sw, max(0.0, hi) * sw))
                step *= 2
            return s

        from medtwin.program.ir import PlanParams

        sc = scales or agg_scale(PlanParams.of(params).headroom_bits, spec.tox_penalty,
                                  PlanParams.of(params).scaling_mod_size)
        a_k = inv_cl * b.plain(24.0 * D / tau / 1000.0)
        for name, x in (("mean_attain", attain), ("mean_tox", tox), ("mean_score", score),
                        ("mean_auc_h", auc_h), ("mean_auc2_k", a_k * a_k)):
            f = sc[name]
            b.output(name, total(x * f if f != 1.0 else x, w), scale_hint=f)
    return b.build(params, noise=noise)


# ------------------------------------------------------------------------------------ compile
@dataclass
class CohortPrograms:
    spec: CohortSpec
    layout: CohortLayout
    programs: list  # one per chunk (shared objects where the weights agree)
    aggregates: bool
    scales: dict[str, float] = field(default_factory=lambda: dict(AGG_SCALE))

    @property
    def depth(self) -> int:
        return max(p.depth for p in self.programs)

    def rotation_indices(self) -> list[int]:
        return sorted({i for p in self.programs for i in p.rotation_indices()})


def _weights(layout: CohortLayout) -> np.ndarray:
    return layout.valid() / float(layout.n_patients)


def compile_cohort(spec: CohortSpec, n_patients: int, slots: int, *, aggregates: bool = True, params=None,
                   noise=None) -> CohortPrograms:
    """Plan the layout and compile the chunk programs (at most two distinct: full and last chunk)."""
    from medtwin.program.ir import PlanParams

    layout = CohortLayout(n_patients, spec.n_regimens, slots)
    scales = agg_scale(PlanParams.of(params).headroom_bits, spec.tox_penalty,
                                  PlanParams.of(params).scaling_mod_size)
    cache: dict[bytes, object] = {}
    progs = []
    W = _weights(layout) if aggregates else None
    for c in range(layout.n_ciphertexts):
        key = hashlib.sha256(W[c].tobytes()).digest() if W is not None else b""
        if key not in cache:
            cache[key] = build_program(spec, layout, None if W is None else W[c], params=params, noise=noise,
                                       scales=scales)
        progs.append(cache[key])
    return CohortPrograms(spec, layout, progs, aggregates, scales)


def cohort_keys(spec: CohortSpec, *, allow_insecure: bool = False, slots_hint: int | None = None):
    """OpenFHE keys with the depth and the (only) rotations the study's aggregates need.

    The rotation strides depend on the slot count, which OpenFHE picks from the depth for the
    standard presets: keys are made for the expected ring and remade once if it differs.

    Returns ``(HEContext, KeyMaterial)``.
    """
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import preset

    p0 = preset(spec.preset, allow_insecure=allow_insecure)
    slots = slots_hint or ((p0.ring_dim or (1 << 16)) // 2)
    for _ in range(3):
        # a full chunk (weights 1/patients per ciphertext): depth and rotations do not depend on
        # the cohort size
        cp = compile_cohort(spec, max(1, slots // _next_pow2(spec.n_regimens)), slots, params=p0)
        ctx, km = generate_keys(preset(spec.preset, depth=cp.depth, allow_insecure=allow_insecure),
                                cp.rotation_indices())
        if ctx.slots == slots:
            return ctx, km
        slots = ctx.slots
    raise ProgramError("could not settle the ring dimension for the cohort keys")


# ------------------------------------------------------------------------------------ roles
@dataclass
class EncryptedCohortStudy(WireInputs):
    """A cohort's encrypted covariates, one ciphertext per chunk: OpenFHE objects, or their
    BINARY bytes (:meth:`to_wire`) as a compute node on another machine receives them."""

    spec: CohortSpec
    twin_ids: list[str]
    layout: CohortLayout
    key_tag: str
    inputs: dict[str, list]


def covariates_of_records(records) -> dict[str, np.ndarray]:
    """Data minimisation: only weight_kg and crcl_ml_min (Cockcroft-Gault on the record)."""
    rows = [r.minimise(list(COVARIATES)) for r in records]
    return {k: np.array([row[k] for row in rows], dtype=np.float64) for k in COVARIATES}


def encrypt(spec: CohortSpec, covariates: dict, twin_ids: Sequence[str], ctx,
            progress: ProgressFn | None = None) -> EncryptedCohortStudy:
    """Client: validate (before anything is encrypted), pack one slot per pair, encrypt.

    Raises:
        RangeError: a covariate outside the model's declared range (names the field).
        ValidationError: a missing covariate or one twin id too few or many.
    """
    c = spec.pk.validate_covariates(covariates)
    n = len(c[COVARIATES[0]])
    if len(twin_ids) != n:
        raise ValidationError("one twin id per patient is needed")
    lay = CohortLayout(n, spec.n_regimens, ctx.slots)
    from medtwin.study.study import encrypt_rows

    inputs = encrypt_rows(ctx, {k: lay.spread(c[k]) for k in COVARIATES}, progress)
    return EncryptedCohortStudy(spec, list(twin_ids), lay, ctx.key_tag, inputs)


@dataclass
class CohortOutcome:
    """Compute-node result: per-pair output ciphertexts per chunk, aggregate ciphertexts (chunk
    sums added), bounds per output and the key-dependent part of each bound."""

    spec: CohortSpec
    twin_ids: list[str]
    layout: CohortLayout
    key_tag: str
    pairs: dict[str, list]
    aggregates: dict[str, object]
    bounds: dict[str, float]
    noise_bounds: dict[str, float]
    program_digest: str
    depth: int
    seconds: float
    backend: str
    scales: dict[str, float] = field(default_factory=lambda: dict(AGG_SCALE))


def _chunk_sum_bounds(programs, noise, names) -> tuple[dict[str, float], dict[str, float]]:
    """Bounds of the chunks' aggregates added together, and their key-dependent parts.

    Each chunk's error is split into a worst-case part and its random CKKS noise
    (:func:`medtwin.program.bounds.error_parts`). The chunks are different ciphertexts (distinct
    fresh encryptions, with their own rescale roundings and key-switch noise): under the noise
    model's independence assumption their random parts are independent, so the sum's random
    standard deviation is at most the 2-norm of the chunks' (the decryption's added noise is
    charged once, on the sum), while the worst-case parts (approximation errors, drift, the
    rotations' systematic term, which is the same for every chunk) add linearly. The key-dependent
    part is the random term plus the increase of the worst-case part caused by the noise
    (products of errors, the rotation bias), as in :func:`_key_dependent`.
    """
    from dataclasses import replace

    from medtwin.program.bounds import error_parts

    quiet = replace(noise, fresh=0.0, rescale_round=0.0, keyswitch=0.0, encode=0.0, decrypt=0.0, rotate_bias=0.0)
    ks = noise.k_sigma * math.sqrt(1.0 + noise.decrypt ** 2)
    cache: dict[int, tuple] = {}
    for p in programs:
        if id(p) not in cache:
            cache[id(p)] = (p, error_parts(p, noise), error_parts(p, quiet))
    bounds, keydep = {}, {}
    for n in names:
        fixed = fixed_kd = var = 0.0
        for p in programs:
            prog, full, q = cache[id(p)]
            v = prog.output(n).value
            fixed += full[v][0]
            fixed_kd += max(full[v][0] - q[v][0], 0.0)
            var += full[v][1] ** 2
        bounds[n] = fixed + ks * math.sqrt(var)
        keydep[n] = fixed_kd + ks * math.sqrt(var)
    return bounds, keydep


def _key_dependent(programs, noise, names, combine) -> dict[str, float]:
    """The part of each bound that depends on the secret key (random CKKS noise terms): what
    noise flooding must hide (as :func:`medtwin.study.study.simulate` computes it)."""
    from dataclasses import replace

    quiet = replace(noise, fresh=0.0, rescale_round=0.0, keyswitch=0.0, encode=0.0, decrypt=0.0, rotate_bias=0.0)
    return {n: combine([max(float(p.error_bound(n, noise=noise)) - float(p.error_bound(n, noise=quiet)), 0.0)
                        for p in programs]) for n in names}


def simulate(enc: EncryptedCohortStudy, ctx, *, backend: str = "openfhe", threads: int | None = None,
             progress: ProgressFn | None = None, aggregates: bool = True) -> CohortOutcome:
    """Compute node: run the chunk programs (public keys only), add the chunks' aggregate sums.

    A cohort whose inputs are bytes (:meth:`EncryptedCohortStudy.to_wire`) is simulated bytes
    in, bytes out, like :func:`medtwin.study.study.simulate`: the OpenFHE backend deserialises
    (validated) and serialises, the native engine checks the bytes' header and metadata
    (:meth:`HEContext.check_wire`), imports them, adds the chunks' aggregates and exports the
    results itself. The conversions count in ``seconds``; the outcome's ciphertexts are bytes,
    which the client's decryption accepts.

    Raises:
        KeyMismatchError: the cohort was encrypted under other keys.
        CiphertextFormatError: input bytes that are not ciphertexts of this context.
        ProgramError: the keys lack depth or rotations.
    """
    from medtwin.program import get_executor
    from medtwin.program.bounds import NoiseModel
    from medtwin.program.executors import run_chunked

    if enc.key_tag != ctx.key_tag:
        raise KeyMismatchError("the cohort was encrypted under another key pair than the evaluation keys")
    pp = _plan_params(ctx)
    cp = compile_cohort(enc.spec, enc.layout.n_patients, ctx.slots, aggregates=aggregates, params=pp,
                        noise=NoiseModel.from_context(ctx.cc, corrected=True))
    if cp.depth > ctx.depth:
        raise ProgramError(f"the cohort study needs multiplicative depth {cp.depth} but the keys were made for {ctx.depth}")
    missing = set(cp.rotation_indices()) - set(ctx.public.rotation_indices)
    if missing:
        raise ProgramError(f"the evaluation keys lack rotations {sorted(missing)} this regimen grid needs; make "
                           "keys for the study with medtwin.study.cohort.cohort_keys(spec)")
    ex = get_executor(backend, ctx=ctx, threads=threads, correct_scale=True)
    noise = ex.noise_model()
    n = cp.layout.n_ciphertexts
    pairs: dict[str, list] = {}
    agg: dict[str, object] = {}
    t0 = time.perf_counter()
    wire = enc.is_wire()
    inputs = enc.inputs
    # OpenFHE on bytes: objects inside, bytes out (serialised as they are final). The native
    # engine takes and returns bytes itself, and adds the aggregates on bytes.
    reserialise = wire and backend != "native"
    if wire:
        convert = ctx.check_wire if backend == "native" else ctx.deserialize
        inputs = {k: [convert(x) for x in enc.inputs[k]] for k in COVARIATES}

    def done(c: int, res: dict) -> None:
        for name, ct in res.items():
            if name in AGGREGATE_OUTPUTS:
                agg[name] = ct if name not in agg else ex.add_outputs(agg[name], ct)
            else:
                pairs.setdefault(name, [None] * n)[c] = ctx.serialize(ct) if reserialise else ct
        if progress:
            progress("simulate", (c + 1) / n)

    run_chunked(ex, [(prog, {k: inputs[k][c] for k in COVARIATES}) for c, prog in enumerate(cp.programs)], done)
    if reserialise:
        agg = {k: ctx.serialize(v) for k, v in agg.items()}
    seconds = time.perf_counter() - t0
    pair_names = [k for k in PAIR_OUTPUTS]
    bounds = {k: max(float(p.error_bound(k, noise=noise)) for p in cp.programs) for k in pair_names}
    nb = _key_dependent(cp.programs, noise, pair_names, max)
    if aggregates:
        ab, akd = _chunk_sum_bounds(cp.programs, noise, AGGREGATE_OUTPUTS)
        bounds.update(ab)
        nb.update(akd)
    return CohortOutcome(enc.spec, enc.twin_ids, cp.layout, enc.key_tag, pairs, agg, bounds, nb,
                         cp.programs[0].digest(), cp.depth, seconds, backend, dict(cp.scales))


def _plan_params(ctx):
    """The moduli of the keys' crypto context as PlanParams: the scale (CKKS keeps it as the
    plaintext modulus) and the width of the first prime."""
    from medtwin.program.ir import PlanParams

    cc = ctx.cc
    return PlanParams(int(cc.GetEncodingParams().GetPlaintextModulus()), int(cc.GetModulusCKKS()).bit_length(),
                      int(cc.GetRingDimension()))


# ------------------------------------------------------------------------------------ release
@dataclass
class CohortAggregates:
    """Released per-regimen aggregates (flooded and rounded), their bounds and flooding sigmas.

    ``values[name]`` arrays (regimens,), names ``pta``, ``p_tox``, ``mean_score``, ``mean_auc24``,
    ``sd_auc24``. ``bounds[name]``: bound on |decrypted - exact| before flooding;
    ``sigma[name]``: standard deviation of the flooding noise added; the released value is within
    ``bounds + precision/2`` plus the flooding noise of the exact aggregate.
    """

    n_patients: int
    regimens: list[str]
    values: dict[str, np.ndarray]
    bounds: dict[str, float]
    sigma: dict[str, float]
    precision: dict[str, float]

    def table(self) -> str:
        lines = ["| regimen | PTA (AUC24/MIC 400-600) | P(trough > limit) | mean score | mean AUC24 | SD AUC24 |",
                 "|---|---:|---:|---:|---:|---:|"]
        v = self.values
        for j, r in enumerate(self.regimens):
            lines.append(f"| {r} | {v['pta'][j]:.3f} | {v['p_tox'][j]:.3f} | {v['mean_score'][j]:+.3f} | "
                         f"{v['mean_auc24'][j]:.1f} | {v['sd_auc24'][j]:.1f} |")
        b = self.bounds
        lines.append(f"\n{self.n_patients} patients; bounds before flooding: PTA {b['pta']:.1e}, "
                     f"mean AUC24 {b['mean_auc24']:.1e} mg*h/L, SD {b['sd_auc24']:.1e}; flooding sigma: PTA "
                     f"{self.sigma['pta']:.1e}, mean AUC24 {self.sigma['mean_auc24']:.1e}")
        return "\n".join(lines)


PRECISION = {"pta": 1e-3, "p_tox": 1e-3, "mean_score": 1e-3, "mean_auc24": 0.1, "sd_auc24": 0.1}


def decrypt_aggregates(out: CohortOutcome, ctx, *, min_cohort: int | None = None, log=None, actor=None,
                       purpose: str = "cohort aggregate") -> tuple[dict, dict, dict]:
    """Key holder: decrypt the aggregate ciphertexts only (never the per-pair ones).

    Returns ``(values, bounds, key_dependent_bounds)``, each keyed by ``pta``, ``p_tox``,
    ``mean_score``, ``mean_auc24``, ``sd_auc24``; ``values`` arrays (regimens,). These values
    are for the key holder's own checks: anything that leaves her goes through
    :func:`release_aggregates`.

    Raises:
        SecurityPolicyError: fewer patients than ``min_cohort`` (default the policy's MIN_COHORT).
        ValidationError: the outcome has no aggregates.
    """
    from medtwin.custody import policy as pol

    m = pol.MIN_COHORT if min_cohort is None else int(min_cohort)
    n = out.layout.n_patients
    _check_cohort(n, m, log, actor, purpose)
    if not out.aggregates:
        raise ValidationError("this outcome was computed without aggregates")
    R = out.layout.n_regimens
    sc = out.scales
    dec = {k: ctx.decrypt(out.aggregates[k], out.layout.slots)[:R] / sc[k] for k in AGGREGATE_OUTPUTS}
    raw = {"pta": dec["mean_attain"], "p_tox": dec["mean_tox"], "mean_score": dec["mean_score"],
           "mean_auc24": dec["mean_auc_h"] * 100.0}
    var = np.maximum(dec["mean_auc2_k"] * 1e6 - raw["mean_auc24"] ** 2, 0.0)
    raw["sd_auc24"] = np.sqrt(var)
    src = {"pta": ("mean_attain", 1.0), "p_tox": ("mean_tox", 1.0), "mean_score": ("mean_score", 1.0),
           "mean_auc24": ("mean_auc_h", 100.0)}
    bounds = {k: out.bounds[o] * f / sc[o] for k, (o, f) in src.items()}
    noise = {k: out.noise_bounds[o] * f / sc[o] for k, (o, f) in src.items()}
    # SD = sqrt(E[A^2] - E[A]^2): the variance's error is at most e2 + 2|m| em + em^2 and
    # |sqrt(a) - sqrt(b)| <= min(sqrt|a - b|, |a - b| / sqrt(b)).
    sdmin = float(np.min(raw["sd_auc24"]))
    mmax = float(np.max(np.abs(raw["mean_auc24"])))
    a2 = sc["mean_auc2_k"]
    for tgt, b2, em in ((bounds, out.bounds["mean_auc2_k"] / a2, bounds["mean_auc24"]),
                        (noise, out.noise_bounds["mean_auc2_k"] / a2, noise["mean_auc24"])):
        verr = 1e6 * b2 + 2.0 * (mmax + em) * em + em * em
        tgt["sd_auc24"] = min(math.sqrt(verr), verr / sdmin) if sdmin > 0 else math.sqrt(verr)
    if log is not None:
        log.append(actor, "result.decrypt", mode="aggregate", outcome="decrypted", n_patients=n,
                   n_values=int(R * len(raw)), model=out.spec.model, key_tag=out.key_tag,
                   program_digest=out.program_digest,
                   details={"purpose": purpose, "min_cohort": m,
                            "max_error_bound": float(max(bounds.values()))})
    return raw, bounds, noise


def release_aggregates(out: CohortOutcome, ctx, *, min_cohort: int | None = None, policy=None,
                       log=None, actor=None, purpose: str = "cohort aggregate") -> CohortAggregates:
    """Key holder: decrypt only the aggregate ciphertexts and release them through the policy.

    Each value is flooded (:func:`medtwin.custody.policy.release`) with sigma sized from the
    key-dependent part of its bound (``policy``: a :class:`~medtwin.custody.policy.FloodingPolicy`,
    default 30-bit statistical security) and rounded to :data:`PRECISION`. Audited as a
    ``result.decrypt`` entry (mode ``aggregate``, outcome ``released``); never a value.

    Raises:
        SecurityPolicyError: fewer patients than ``min_cohort`` (default the policy's
            MIN_COHORT); the refusal is logged when ``log`` is given.
        ValidationError: the outcome has no aggregates.
    """
    raw, bounds, noise = decrypt_aggregates(out, ctx, min_cohort=min_cohort, log=log, actor=actor, purpose=purpose)
    return _release(out, raw, bounds, noise, min_cohort=min_cohort, policy=policy, log=log, actor=actor,
                    purpose=purpose)


def _release(out: CohortOutcome, raw, bounds, noise, *, min_cohort, policy, log, actor, purpose) -> CohortAggregates:
    from medtwin.custody import policy as pol

    fp = policy or pol.DEFAULT_POLICY
    vals, sig = {}, {}
    for k, v in raw.items():
        t = max(noise[k], 1e-300)
        sig[k] = fp.sigma(t)
        vals[k] = pol.release(v, precision=PRECISION[k], error_bound=t, purpose=purpose, policy=fp)
    n, R = out.layout.n_patients, out.layout.n_regimens
    if log is not None:
        log.append(actor, "result.decrypt", mode="aggregate", outcome="released", n_patients=n,
                   n_values=int(R * len(vals)), model=out.spec.model, key_tag=out.key_tag,
                   program_digest=out.program_digest,
                   details={"purpose": purpose, "min_cohort": pol.MIN_COHORT if min_cohort is None else int(min_cohort),
                            "security_bits": fp.stat_bits, "n_queries": fp.queries,
                            "max_error_bound": float(max(bounds.values()))})
    return CohortAggregates(n, [r.describe() for r in out.spec.regimens], vals, bounds, sig, dict(PRECISION))


def _check_cohort(n: int, m: int, log, actor, purpose: str) -> None:
    if m < 2:
        raise ValidationError("min_cohort must be at least 2")
    if n < m:
        if log is not None:
            log.append(actor, "result.decrypt", mode="aggregate", outcome="refused", n_patients=n,
                       details={"purpose": purpose, "min_cohort": m})
        raise SecurityPolicyError(f"cohort of {n} patients is below the minimum cohort size of {m} for "
                                  "released aggregates; refused")


def decrypt_pairs(out: CohortOutcome, ctx, *, log=None, actor=None) -> dict[str, np.ndarray]:
    """Clinician mode: decrypt the per-pair outputs for the key holder's own screen (no flooding:
    the values do not leave her hands). Arrays (patients, regimens) in user units. Audited.

    Raises:
        ValidationError: the outcome has no per-pair outputs.
    """
    if not out.pairs:
        raise ValidationError("this outcome has no per-pair outputs")
    res = {}
    for name, (user, f) in PAIR_OUTPUTS.items():
        rows = np.stack([ctx.decrypt(ct, out.layout.slots) for ct in out.pairs[name]])
        res[user] = out.layout.gather(rows) * f
    if log is not None:
        log.append(actor, "result.decrypt", mode="per_patient", model=out.spec.model, key_tag=out.key_tag,
                   n_twins=len(out.twin_ids), n_scenarios=out.layout.n_regimens, program_digest=out.program_digest,
                   n_ciphertexts=sum(len(v) for v in out.pairs.values()))
    return res


def pair_bounds(out: CohortOutcome) -> dict[str, float]:
    """Per-pair bounds in user units (``trough``, ``peak``, ``auc24``, ``dauc24``, ``attain``, ...)."""
    return {user: out.bounds[name] * f for name, (user, f) in PAIR_OUTPUTS.items()}


# ------------------------------------------------------------------------------------ one process
@dataclass
class CohortResult:
    spec: CohortSpec
    twin_ids: list[str]
    aggregates: CohortAggregates | None
    per_patient: dict[str, np.ndarray] | None
    bounds: dict[str, float]          # per-pair bounds in user units
    noise_bounds: dict[str, float]
    program_digest: str
    depth: int
    backend: str
    seconds_simulate: float
    ring_dim: int
    n_ciphertexts: int
    seconds_total: float = 0.0
    reference: dict[str, np.ndarray] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_results(self) -> int:
        """(patient, regimen, time point) results: trough and peak per pair."""
        return 2 * len(self.twin_ids) * self.spec.n_regimens


def run(spec: CohortSpec, covariates: dict, twin_ids: Sequence[str], client_ctx, compute_ctx=None, *,
        backend: str = "openfhe", per_patient: bool = False, aggregates: bool = True,
        min_cohort: int | None = None, policy=None, reference_check: bool = False,
        log=None, actor=None, progress: ProgressFn | None = None, wire: bool = False) -> CohortResult:
    """Encrypt, simulate and release in one process (client and compute roles kept apart).

    ``wire=True``: the client serialises the encrypted cohort and the compute node works bytes
    in, bytes out (see :func:`simulate`), as when the two are different machines.

    Raises:
        SecurityPolicyError: ``aggregates`` with fewer patients than ``min_cohort`` (refused
            before anything is encrypted).
        RangeError: a covariate outside the model's ranges (before encryption).
        ValidationError: neither aggregates nor per-patient output asked for.

    ``reference_check`` also computes the float64 reference (it sees the plaintext) and keeps the
    unflooded aggregates in ``extra["aggregates_raw"]``: validation on the key holder's machine.
    """
    from medtwin.custody import policy as pol

    if not (aggregates or per_patient):
        raise ValidationError("ask for aggregates, per-patient values or both")
    t0 = time.perf_counter()
    n = len(twin_ids)
    if aggregates:
        _check_cohort(n, pol.MIN_COHORT if min_cohort is None else int(min_cohort), log, actor, "cohort aggregate")
    enc = encrypt(spec, covariates, twin_ids, client_ctx, progress)
    if log is not None:
        log.append(actor, "twin.encrypt", model=spec.model, key_tag=enc.key_tag, n_twins=n,
                   n_ciphertexts=enc.layout.n_ciphertexts * len(COVARIATES),
                   details={"duration_s": time.perf_counter() - t0})
    node = compute_ctx if compute_ctx is not None else client_ctx
    if wire:
        enc = enc.to_wire(client_ctx)
    out = simulate(enc, node, backend=backend, progress=progress, aggregates=aggregates)
    if log is not None:
        log.append(actor, "simulation.run", model=spec.model, key_tag=enc.key_tag, backend=backend, n_twins=n,
                   n_scenarios=spec.n_regimens, n_time_points=2, n_results=2 * n * spec.n_regimens,
                   program_digest=out.program_digest,
                   details={"duration_s": out.seconds, "depth": out.depth,
                            "max_error_bound": float(max(out.bounds.values()))})
    agg = raw = None
    if aggregates:
        raw, abounds, anoise = decrypt_aggregates(out, client_ctx, min_cohort=min_cohort)
        agg = _release(out, raw, abounds, anoise, min_cohort=min_cohort, policy=policy, log=log, actor=actor,
                       purpose="cohort aggregate")
    pp = decrypt_pairs(out, client_ctx, log=log, actor=actor) if per_patient else None
    res = CohortResult(spec, list(twin_ids), agg, pp, pair_bounds(out),
                       {PAIR_OUTPUTS.get(k, (k, 1.0))[0]: v * PAIR_OUTPUTS.get(k, (k, 1.0))[1]
                        for k, v in out.noise_bounds.items()},
                       out.program_digest, out.depth, backend, out.seconds, 2 * client_ctx.slots,
                       out.layout.n_ciphertexts)
    if aggregates:
        res.extra["aggregate_noise_bounds"] = anoise
    res.seconds_total = time.perf_counter() - t0
    if reference_check:
        res.reference = reference(spec, covariates)
        if raw is not None:
            res.extra["aggregates_raw"] = raw  # unflooded: for validation on the key holder's machine only
    return res
