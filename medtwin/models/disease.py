"""Disease-progression and biomarker models: CKD-EPI 2021 eGFR, linear progression with drug effects
(eGFR decline), tumour growth inhibition (Claret; Stein bi-exponential) and ADAG HbA1c to glucose.

CKD-EPI 2021 creatinine equation
--------------------------------
Inker LA, Eneanya ND, Coresh J, et al. New creatinine- and cystatin C-based equations to estimate
GFR without race. N Engl J Med 2021;385:1737-1749 (as published by the National Kidney Foundation)::

    eGFR = 142 * min(Scr/k, 1)^a * max(Scr/k, 1)^-1.200 * 0.9938^age * 1.012 [if female]
    k = 0.7 (female) / 0.9 (male),  a = -0.241 (female) / -0.302 (male)     [mL/min/1.73 m^2]

Under encryption (Scr and age encrypted, sex a plaintext per slot -- the key holder lays patients
out, and the sex-specific constants are per-slot plaintexts) the equation is evaluated in the log
domain: with L = ln(Scr) - ln(k),

    ln eGFR = ln 142 + a L + (-1.200 - a) relu(L) + age ln 0.9938 + female ln 1.012

ln(Scr) is a Chebyshev approximation on the declared Scr range and exp one on the range of
ln eGFR. The min/max kink at Scr = k is a branch: the key holder, who has the plaintext
creatinine before encryption, also encrypts the branch indicator [Scr > k] (a derived covariate,
like IWPC's age in decades; :meth:`CKDEPI2021.branch_indicator`), and relu(L) = indicator * L
exactly. The stated bound therefore holds only the ln/exp approximations and CKKS noise.

A smooth alternative for creatinine that is itself an encrypted result was tried and rejected: a
Chebyshev interpolant of max(L, 0) measures 0.0073 (degree 63) to 0.0035 (degree 255) in L
against the kinked function in plaintext, but evaluated on the noisy output of the ln(Scr) piece
it failed to decrypt at N = 2^12 with 2^36 scaling (T_k has slope k^2 and amplifies the input
noise); the same interpolant on a fresh ciphertext decrypts within its bound. A sign
approximation by composite polynomials would be the next thing to try.

Declared ranges: Scr 0.3-15 mg/dL, age 18-100 years.

Linear disease progression (Chan PLS, Holford NHG. Drug treatment effects on disease progression.
Annu Rev Pharmacol Toxicol 2001;41:625-659)
--------------------------------------------------------------------------------------------
S(t) = S0 + alpha t without treatment; a symptomatic (offset) effect E_off and a disease-modifying
(slope) effect E_slope act as S(t) = S0 + (alpha + E_slope) t + E_off once treatment starts at
t = 0. For eGFR decline S0 is the baseline eGFR (e.g. from CKD-EPI), alpha the annual change
(negative) and a renoprotective drug has E_slope > 0. All terms are linear: exact under
encryption, with S0 and alpha encrypted and the drug effects per-scenario plaintexts.

Tumour growth inhibition (Claret L, Girard P, Hoff PM, et al. Model-based prediction of phase III
overall survival in colorectal cancer on the basis of phase II tumor dynamics. J Clin Oncol
2009;27:4103-4108)
--------------------------------------------------------------------------------------------
dy/dt = KL y - KD exp(-lambda t) E y, y(0) = y0 (tumour size, e.g. sum of longest diameters), with
exposure E (e.g. dose or AUC) constant over the horizon, integrates to::

    y(t) = y0 exp(KL t - KD E (1 - exp(-lambda t)) / lambda)

Nadir at t* = ln(KD E / KL) / lambda when KD E > KL. Under encryption y0 and E are encrypted (E may
come from an encrypted PK model), KL, KD, lambda plaintext; the exponent is linear in E with
plaintext per-slot coefficients, and exp is one Chebyshev approximation over its range.

Stein bi-exponential (Stein WD, Figg WD, Dahut W, et al. Tumor growth rates derived from data for
patients in a clinical trial correlate strongly with patient survival. Oncologist
2008;13:1046-1054): f(t) = exp(-d t) + exp(g t) - 1 (tumour size relative to baseline), regression
rate d and growth rate g [1/day] per patient; nadir at t* = ln(d/g)/(d + g).

ADAG (Nathan DM, Kuenen J, Borg R, et al. Translating the A1C assay into estimated average
glucose values. Diabetes Care 2008;31:1473-1478)
--------------------------------------------------------------------------------------------
eAG [mg/dL] = 28.7 * HbA1c [%] - 46.7 (linear: exact under encryption); mmol/L = mg/dL / 18.016
(the paper's eAG mmol/L = 1.59 A1C - 2.59).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from medtwin.errors import ValidationError
from medtwin.models.two_compartment import check_ranges

# ------------------------------------------------------------------------------------------------
# CKD-EPI 2021
# ------------------------------------------------------------------------------------------------


def ckd_epi_2021(scr_mg_dl, age_years, female) -> np.ndarray:
    """eGFR [mL/min/1.73 m^2] by the CKD-EPI 2021 creatinine equation (Inker et al. 2021), vectorised."""
    scr = np.asarray(scr_mg_dl, dtype=np.float64)
    age = np.asarray(age_years, dtype=np.float64)
    f = np.asarray(female, dtype=np.float64)
    k = np.where(f > 0.5, 0.7, 0.9)
    a = np.where(f > 0.5, -0.241, -0.302)
    x = scr / k
    return 142.0 * np.minimum(x, 1.0) ** a * np.maximum(x, 1.0) ** -1.200 * 0.9938 ** age * np.where(f > 0.5, 1.012, 1.0)


@dataclass(frozen=True)
class CKDEPI2021:
    """CKD-EPI 2021 creatinine equation with declared ranges and its FHE program."""

    name: str = "egfr-ckd-epi-2021"
    ranges: dict = field(default_factory=lambda: {"serum_creatinine_mg_dl": (0.3, 15.0), "age_years": (18.0, 100.0),
                                                  "female": (0.0, 1.0)})
    citation: str = ("Inker LA, Eneanya ND, Coresh J, et al. New creatinine- and cystatin C-based equations to "
                     "estimate GFR without race. N Engl J Med 2021;385:1737-1749")
    version: str = "1"

    def validate_covariates(self, cov: dict) -> dict[str, np.ndarray]:
        """Raises RangeError (names the field) or ValidationError (missing field, sex not 0/1)."""
        c = check_ranges(self.name, self.ranges, cov, ("serum_creatinine_mg_dl", "age_years", "female"))
        if not np.all((c["female"] == 0.0) | (c["female"] == 1.0)):
            raise ValidationError(f"model {self.name}: female must be 0 or 1")
        return c

    def validate_branch(self, cov: dict) -> None:
        """Check the client-side ``scr_above_k`` indicator against Scr and sex before encryption.

        Raises:
            ValidationError: the indicator is missing or disagrees with [Scr > k] for some patient.
        """
        c = self.validate_covariates(cov)
        if "scr_above_k" not in cov or not np.array_equal(
                np.asarray(cov["scr_above_k"], dtype=np.float64).ravel(),
                self.branch_indicator(c["serum_creatinine_mg_dl"], c["female"])):
            raise ValidationError(f"model {self.name}: scr_above_k must equal [Scr > k] for every patient")

    def reference(self, cov: dict) -> np.ndarray:
        """eGFR per patient. Raises RangeError / ValidationError for bad covariates."""
        c = self.validate_covariates(cov)
        return ckd_epi_2021(c["serum_creatinine_mg_dl"], c["age_years"], c["female"])

    @staticmethod
    def branch_indicator(scr_mg_dl, female) -> np.ndarray:
        """[Scr > k] per patient (k = 0.7 female, 0.9 male): the client-side branch covariate."""
        k = np.where(np.asarray(female, dtype=np.float64) > 0.5, 0.7, 0.9)
        return (np.asarray(scr_mg_dl, dtype=np.float64) > k).astype(np.float64)

    def build_program(self, slots: int, female: np.ndarray, *, params=None, tol: float = 1e-7,
                      name: str | None = None):
        """FHE program: encrypted ``serum_creatinine_mg_dl``, ``age_years`` and ``scr_above_k``
        (:meth:`branch_indicator`) per slot; ``female`` (0/1 per slot) is a plaintext the key holder
        supplies with the layout. Output ``egfr``.

        Raises:
            ValidationError: ``female`` is not 0/1 per slot.
            ProgramError: the plan does not fit ``params``.
        """
        from medtwin.program.builder import ProgramBuilder

        fem = np.resize(np.asarray(female, dtype=np.float64), slots)
        if not np.all((fem == 0.0) | (fem == 1.0)):
            raise ValidationError(f"model {self.name}: female must be 0 or 1 in every slot")
        R = self.ranges
        b = ProgramBuilder(name=name or self.name, slots=slots)
        scr = b.input("serum_creatinine_mg_dl", range=R["serum_creatinine_mg_dl"])
        age = b.input("age_years", range=R["age_years"])
        ln_scr = b.apply(np.log, scr, domain=R["serum_creatinine_mg_dl"], tol=tol, label="ln(Scr)")
        L = ln_scr - b.plain(np.log(np.where(fem > 0, 0.7, 0.9)))
        above = b.input("scr_above_k", range=(0.0, 1.0))
        lo, hi = L.range
        relu = b.assume_range(L * above, (0.0, max(0.0, hi)))  # = max(L, 0) for a consistent indicator
        alpha = np.where(fem > 0, -0.241, -0.302)
        log_e = (L * b.plain(alpha) + relu * b.plain(-1.2 - alpha) + age * math.log(0.9938)
                 + b.plain(math.log(142.0) + fem * math.log(1.012)))
        elo, ehi = log_e.range
        egfr = b.apply(np.exp, log_e, domain=(elo, ehi), tol=tol * 100, label="exp")
        b.output("egfr", egfr, scale_hint=80.0)
        return b.build(params)


CKD_EPI_2021 = CKDEPI2021()

# ------------------------------------------------------------------------------------------------
# Linear progression (eGFR decline)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearProgression:
    """S(t) = S0 + (alpha + E_slope) t + E_off (Chan and Holford 2001); for eGFR: mL/min/1.73 m^2, years."""

    name: str = "egfr-linear-progression"
    ranges: dict = field(default_factory=lambda: {"baseline": (5.0, 150.0), "slope_per_year": (-15.0, 2.0)})
    citation: str = ("Chan PLS, Holford NHG. Drug treatment effects on disease progression. Annu Rev Pharmacol "
                     "Toxicol 2001;41:625-659")
    version: str = "1"

    def validate_covariates(self, cov: dict) -> dict[str, np.ndarray]:
        """Raises RangeError / ValidationError (covariates ``baseline``, ``slope_per_year``)."""
        return check_ranges(self.name, self.ranges, cov, ("baseline", "slope_per_year"))

    def reference(self, cov: dict, times_years, *, offset: float = 0.0, slope_effect: float = 0.0) -> np.ndarray:
        """S at ``times_years`` per patient: array (patients, len(times))."""
        c = self.validate_covariates(cov)
        t = np.asarray(times_years, dtype=np.float64)[None, :]
        on = t > 0
        return c["baseline"][:, None] + (c["slope_per_year"][:, None] + slope_effect * on) * t + offset * on

    def build_program(self, slots: int, times_years: np.ndarray, *, offset=0.0, slope_effect=0.0, params=None,
                      name: str | None = None):
        """Encrypted ``baseline`` and ``slope_per_year`` per slot; plaintext time, offset and slope
        effect per slot (scenarios). Output ``value``; exact up to CKKS noise."""
        from medtwin.program.builder import ProgramBuilder

        t = np.resize(np.asarray(times_years, dtype=np.float64), slots)
        on = (t > 0).astype(np.float64)
        off = np.resize(np.asarray(offset, dtype=np.float64), slots) * on
        se = np.resize(np.asarray(slope_effect, dtype=np.float64), slots) * on
        b = ProgramBuilder(name=name or self.name, slots=slots)
        s0 = b.input("baseline", range=self.ranges["baseline"])
        a = b.input("slope_per_year", range=self.ranges["slope_per_year"])
        b.output("value", s0 + a * b.plain(t) + b.plain(se * t + off), scale_hint=60.0)
        return b.build(params)


EGFR_DECLINE = LinearProgression()

# ------------------------------------------------------------------------------------------------
# Tumour growth inhibition
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaretTGI:
    """Claret et al. (2009) tumour growth inhibition with resistance; rates per week.

    No default parameter values: supply estimates for the drug and tumour type (the published
    model's are drug-specific).
    """

    kl: float       # tumour growth rate [1/week]
    kd: float       # drug kill rate per unit exposure [1/(week * exposure unit)]
    lam: float      # resistance (decay of the drug effect) [1/week]
    name: str = "tgi-claret"
    ranges: dict = field(default_factory=lambda: {"baseline_size": (5.0, 300.0), "exposure": (0.0, 10.0)})
    citation: str = ("Claret L, Girard P, Hoff PM, et al. J Clin Oncol 2009;27:4103-4108")
    version: str = "1"

    def __post_init__(self) -> None:
        if not (self.kl >= 0 and self.kd >= 0 and self.lam > 0):
            raise ValidationError(f"model {self.name}: needs kl >= 0, kd >= 0, lambda > 0")

    def validate_covariates(self, cov: dict) -> dict[str, np.ndarray]:
        """Raises RangeError / ValidationError (covariates ``baseline_size`` [mm], ``exposure``)."""
        return check_ranges(self.name, self.ranges, cov, ("baseline_size", "exposure"))

    def reference(self, cov: dict, times_weeks) -> np.ndarray:
        c = self.validate_covariates(cov)
        t = np.asarray(times_weeks, dtype=np.float64)[None, :]
        e = c["exposure"][:, None]
        return c["baseline_size"][:, None] * np.exp(self.kl * t - self.kd * e * (1.0 - np.exp(-self.lam * t)) / self.lam)

    def rhs(self, exposure: float):
        """dy/dt for solve_ivp checks."""
        return lambda t, y: [self.kl * y[0] - self.kd * math.exp(-self.lam * t) * exposure * y[0]]

    def nadir_week(self, exposure) -> np.ndarray:
        """Time of the tumour-size minimum, ln(KD E / KL)/lambda (0 when KD E <= KL)."""
        e = np.asarray(exposure, dtype=np.float64)
        with np.errstate(divide="ignore"):
            t = np.log(self.kd * e / self.kl) / self.lam
        return np.where(self.kd * e > self.kl, t, 0.0)

    def build_program(self, slots: int, times_weeks: np.ndarray, *, params=None, tol: float = 1e-7,
                      name: str | None = None):
        """Encrypted ``baseline_size`` [mm] and ``exposure`` per slot, plaintext times per slot.

        Outputs ``ratio`` = y(t)/y0 and ``size_cm`` = y(t) in cm (centimetres keep an untreated
        300 mm tumour after a year inside the CKKS headroom of 2^40-scaled presets).

        Raises:
            ProgramError: the plan does not fit ``params``.
        """
        from medtwin.program.builder import ProgramBuilder

        t = np.resize(np.asarray(times_weeks, dtype=np.float64), slots)
        b = ProgramBuilder(name=name or self.name, slots=slots)
        y0 = b.input("baseline_size", range=self.ranges["baseline_size"])
        e = b.input("exposure", range=self.ranges["exposure"])
        x = e * b.plain(-self.kd * (1.0 - np.exp(-self.lam * t)) / self.lam) + b.plain(self.kl * t)
        lo, hi = x.range
        g = b.apply(np.exp, x, domain=(lo, hi), tol=tol, label="exp")
        b.output("ratio", g, scale_hint=1.0)
        b.output("size_cm", (y0 * 0.1) * g, scale_hint=5.0)
        return b.build(params)


def stein_biexponential(t, d, g) -> np.ndarray:
    """Stein et al. (2008) tumour size relative to baseline: exp(-d t) + exp(g t) - 1."""
    t, d, g = (np.asarray(v, dtype=np.float64) for v in (t, d, g))
    return np.exp(-d * t) + np.exp(g * t) - 1.0


def stein_nadir(d, g) -> np.ndarray:
    """Time of the minimum of the Stein model, ln(d/g)/(d + g)."""
    d, g = np.asarray(d, dtype=np.float64), np.asarray(g, dtype=np.float64)
    return np.log(d / g) / (d + g)

# ------------------------------------------------------------------------------------------------
# ADAG
# ------------------------------------------------------------------------------------------------


def adag_eag_mg_dl(hba1c_percent) -> np.ndarray:
    """Estimated average glucose [mg/dL] = 28.7 A1C - 46.7 (Nathan et al. 2008)."""
    return 28.7 * np.asarray(hba1c_percent, dtype=np.float64) - 46.7


@dataclass(frozen=True)
class ADAG:
    """HbA1c [%] to estimated average glucose (Nathan et al. 2008) with its declared range."""

    name: str = "adag-eag"
    ranges: dict = field(default_factory=lambda: {"hba1c_percent": (4.0, 15.0)})
    citation: str = ("Nathan DM, Kuenen J, Borg R, Zheng H, Schoenfeld D, Heine RJ. Translating the A1C assay "
                     "into estimated average glucose values. Diabetes Care 2008;31:1473-1478")
    version: str = "1"

    def reference(self, cov: dict) -> dict[str, np.ndarray]:
        """``eag_mg_dl`` and ``eag_mmol_l``. Raises RangeError / ValidationError for bad input."""
        c = check_ranges(self.name, self.ranges, cov, ("hba1c_percent",))
        mg = adag_eag_mg_dl(c["hba1c_percent"])
        return {"eag_mg_dl": mg, "eag_mmol_l": mg / 18.016}

    def build_program(self, slots: int, *, params=None, name: str | None = None):
        """Encrypted ``hba1c_percent``; outputs ``eag_mg_dl`` and ``eag_mmol_l`` (exact up to noise)."""
        from medtwin.program.builder import ProgramBuilder

        b = ProgramBuilder(name=name or self.name, slots=slots)
        a1c = b.input("hba1c_percent", range=self.ranges["hba1c_percent"])
        mg = a1c * 28.7 - 46.7
        b.output("eag_mg_dl", mg, scale_hint=150.0)
        b.output("eag_mmol_l", mg * (1.0 / 18.016), scale_hint=8.0)
        return b.build(params)


ADAG_EAG = ADAG()
