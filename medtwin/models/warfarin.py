"""Warfarin maintenance dose by the IWPC pharmacogenetic algorithm, computed on encrypted covariates.

Equation
--------
International Warfarin Pharmacogenetics Consortium. Estimation of the warfarin dose with clinical
and pharmacogenetic data. N Engl J Med 2009;360:753-764 (pharmacogenetic dosing algorithm of the
Supplementary Appendix, derived for a target INR of 2-3)::

    sqrt(weekly dose [mg]) = 5.6044
        - 0.2614 * age in decades          (1 for 10-19 years, 2 for 20-29, ..., 9 for 90+)
        + 0.0087 * height [cm]
        + 0.0128 * weight [kg]
        - 0.8677 * VKORC1 A/G  - 1.6974 * VKORC1 A/A  - 0.4854 * VKORC1 genotype unknown
        - 0.5211 * CYP2C9 *1/*2 - 0.9357 * CYP2C9 *1/*3 - 1.0616 * CYP2C9 *2/*2
        - 1.9206 * CYP2C9 *2/*3 - 2.3312 * CYP2C9 *3/*3 - 0.2188 * CYP2C9 genotype unknown
        - 0.1092 * Asian race   - 0.2760 * Black or African American   - 0.1032 * missing or mixed race
        + 1.1816 * enzyme inducer (carbamazepine, phenytoin, rifampin or rifampicin)
        - 0.5503 * amiodarone

    weekly dose = (sqrt dose)^2

VKORC1 is the -1639G>A genotype (rs9923231); the reference categories are VKORC1 G/G, CYP2C9
*1/*1 and white race. Every coefficient above was checked against the coefficient lists of the
IWPC appendix as reproduced in two independent public implementations of the algorithm (the
primary appendix was not retrievable from this workstation); all agree to four decimals.

Under encryption
----------------
The algorithm is linear in its covariates followed by one square, so the encrypted program is
exact up to CKKS noise: 17 constant products and additions (depth 1), one ciphertext square
(depth 2). Age in decades is ``floor(age / 10)``, a non-polynomial step that the client computes
before encryption (it is also less identifying than the age itself). The genotype, race and drug
indicators are the record's IWPC encodings (:data:`medtwin.twin.record.COVARIATES`), plus
``vkorc1_unknown`` / ``cyp2c9_unknown`` for a missing genotype (:func:`covariates_from_record`).

Valid ranges (refused before encryption otherwise): age 18-109 years (decades 1-10), height
120-220 cm, weight 30-250 kg, indicators 0 or 1 with at most one set per group. In extreme
combinations (every dose-lowering factor at once) the regression's square-root dose can fall below
zero, where the squared dose is meaningless; the program also outputs ``sqrt_dose`` so the client
can see this after decryption, and :meth:`IWPCWarfarin.reference` flags it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medtwin.errors import ValidationError
from medtwin.models.two_compartment import check_ranges

#: IWPC pharmacogenetic algorithm: intercept and coefficients of sqrt(weekly dose in mg).
IWPC_INTERCEPT = 5.6044
IWPC_COEFFICIENTS: dict[str, float] = {
    "age_decades": -0.2614,
    "height_cm": 0.0087,
    "weight_kg": 0.0128,
    "vkorc1_ga": -0.8677,
    "vkorc1_aa": -1.6974,
    "vkorc1_unknown": -0.4854,
    "cyp2c9_12": -0.5211,
    "cyp2c9_13": -0.9357,
    "cyp2c9_22": -1.0616,
    "cyp2c9_23": -1.9206,
    "cyp2c9_33": -2.3312,
    "cyp2c9_unknown": -0.2188,
    "race_asian": -0.1092,
    "race_black": -0.2760,
    "race_missing_or_mixed": -0.1032,
    "enzyme_inducer": 1.1816,
    "amiodarone": -0.5503,
}

#: Encrypted inputs of the program, in this order.
COVARIATES = tuple(IWPC_COEFFICIENTS)

_GROUPS = {
    "VKORC1": ("vkorc1_ga", "vkorc1_aa", "vkorc1_unknown"),
    "CYP2C9": ("cyp2c9_12", "cyp2c9_13", "cyp2c9_22", "cyp2c9_23", "cyp2c9_33", "cyp2c9_unknown"),
    "race": ("race_asian", "race_black", "race_missing_or_mixed"),
}


def _default_ranges() -> dict[str, tuple[float, float]]:
    r = {k: (0.0, 1.0) for k in COVARIATES}
    r.update({"age_decades": (1.0, 10.0), "height_cm": (120.0, 220.0), "weight_kg": (30.0, 250.0)})
    return r


def age_in_decades(age_years) -> np.ndarray:
    """IWPC's age in decades: floor(age / 10) (10-19 years -> 1, ..., 90-99 -> 9)."""
    return np.floor(np.asarray(age_years, dtype=np.float64) / 10.0)


def covariates_from_record(record) -> dict[str, float]:
    """The model's covariates from a :class:`medtwin.twin.record.PatientRecord` (data minimisation).

    A missing CYP2C9 or VKORC1 genotype sets the IWPC "unknown" indicator of that gene.

    Raises:
        ValidationError: age, height or weight is missing from the record (names the field).
    """
    fields = ["age_years", "height_cm", "weight_kg", "race_asian", "race_black", "race_missing_or_mixed",
              "enzyme_inducer", "amiodarone"]
    for f in ("enzyme_inducer", "amiodarone"):
        if getattr(record, f, None) is None:
            fields.remove(f)
    base = record.minimise(fields)
    out = {"age_decades": float(age_in_decades(base.pop("age_years")))}
    out.update(base)
    out.setdefault("enzyme_inducer", 0.0)
    out.setdefault("amiodarone", 0.0)
    if getattr(record, "vkorc1", None) is None:
        out.update(vkorc1_ga=0.0, vkorc1_aa=0.0, vkorc1_unknown=1.0)
    else:
        out.update(record.minimise(["vkorc1_ga", "vkorc1_aa"]), vkorc1_unknown=0.0)
    if getattr(record, "cyp2c9", None) is None:
        out.update({k: 0.0 for k in _GROUPS["CYP2C9"][:-1]}, cyp2c9_unknown=1.0)
    else:
        out.update(record.minimise(list(_GROUPS["CYP2C9"][:-1])), cyp2c9_unknown=0.0)
    return {k: out[k] for k in COVARIATES}


@dataclass(frozen=True)
class IWPCWarfarin:
    """The IWPC pharmacogenetic warfarin dose algorithm with its declared input ranges."""

    name: str = "warfarin-iwpc-pharmacogenetic"
    intercept: float = IWPC_INTERCEPT
    coefficients: dict = field(default_factory=lambda: dict(IWPC_COEFFICIENTS))
    ranges: dict = field(default_factory=_default_ranges)
    citation: str = ("International Warfarin Pharmacogenetics Consortium. Estimation of the warfarin dose "
                     "with clinical and pharmacogenetic data. N Engl J Med 2009;360:753-764 "
                     "(Supplementary Appendix: pharmacogenetic algorithm)")
    version: str = "1"

    def validate_covariates(self, cov: dict) -> dict[str, np.ndarray]:
        """Check every covariate against its declared range and the indicator groups.

        Returns the covariates as float64 arrays (one value per patient).

        Raises:
            ValidationError: a covariate is missing; an indicator is not 0 or 1; more than one
                indicator of a group (VKORC1, CYP2C9, race) is set for a patient.
            RangeError: a value lies outside its declared range (names the field, not the value).
        """
        c = check_ranges(self.name, self.ranges, cov, COVARIATES)
        for k in COVARIATES[3:]:
            if not np.all((c[k] == 0.0) | (c[k] == 1.0)):
                raise ValidationError(f"model {self.name}: indicator {k} must be 0 or 1")
        if not np.all(c["age_decades"] == np.floor(c["age_decades"])):
            raise ValidationError(f"model {self.name}: age_decades must be a whole number (floor(age/10))")
        for g, names in _GROUPS.items():
            s = sum(c[k] for k in names)
            if np.any(s > 1.0):
                raise ValidationError(f"model {self.name}: more than one {g} indicator set for a patient")
        return c

    # -- plaintext reference -------------------------------------------------------------------
    def sqrt_dose(self, cov: dict) -> np.ndarray:
        """The linear predictor: sqrt(weekly dose in mg), float64, one value per patient."""
        c = {k: np.atleast_1d(np.asarray(cov[k], dtype=np.float64)) for k in COVARIATES}
        s = np.full_like(c["height_cm"], self.intercept)
        for k in COVARIATES:
            s = s + self.coefficients[k] * c[k]
        return s

    def reference(self, cov: dict) -> dict[str, np.ndarray]:
        """Plaintext reference: ``sqrt_dose``, ``weekly_dose_mg``, ``daily_dose_mg`` and ``valid``
        (False where the square-root dose is negative, i.e. outside the regression's sense).

        Raises:
            ValidationError, RangeError: as :meth:`validate_covariates`.
        """
        self.validate_covariates(cov)
        s = self.sqrt_dose(cov)
        w = s * s
        return {"sqrt_dose": s, "weekly_dose_mg": w, "daily_dose_mg": w / 7.0, "valid": s >= 0.0}

    # -- FHE program ---------------------------------------------------------------------------
    def build_program(self, slots: int, *, params=None, name: str | None = None):
        """The FHE program: one slot per patient, one encrypted input per covariate.

        Outputs ``sqrt_dose`` (depth 1) and ``weekly_dose_mg`` (depth 2). The program is exact up
        to CKKS noise (no approximation); ``program.error_bound(...)`` states the noise bound.

        Raises:
            ProgramError: ``slots`` is not a power of two, or the plan does not fit ``params``.
        """
        from medtwin.program.builder import ProgramBuilder

        b = ProgramBuilder(name=name or self.name, slots=slots)
        x = {k: b.input(k, range=self.ranges[k]) for k in COVARIATES}
        s = None
        for k in COVARIATES:
            t = x[k] * self.coefficients[k]
            s = t if s is None else s + t
        s = s + self.intercept
        b.output("sqrt_dose", s, scale_hint=6.0)
        b.output("weekly_dose_mg", s * s, scale_hint=35.0)
        return b.build(params)


IWPC = IWPCWarfarin()
