"""Phenobarbital in neonates: one-compartment IV bolus with weight-based parameters and an asphyxia effect.

Population model (Grasela TH Jr, Donn SM. Neonatal population pharmacokinetics of phenobarbital
derived from routine clinical data. Dev Pharmacol Ther 1985;8:374-383; NONMEM analysis of 59
preterm infants, birth weight 0.6-3.62 kg, gestational age 24-42 weeks). From the abstract:
clearance 0.0047 L/h/kg (CV 19%), volume of distribution 0.96 L/kg (CV 16%), mean half-life 141 h;
clearance unaffected by gestational age, sex, asphyxia or duration of therapy; the volume
increased by 13% with asphyxia (5-minute Apgar score below 5)::

    CL = 0.0047 * weight                     [L/h]
    V  = 0.96 * weight * (1 + 0.13 * APGAR5)  [L]     APGAR5 = 1 if the 5-min Apgar score < 5
    ke = CL / V

IV bolus doses D_i at t_i add by superposition (one-compartment, first-order elimination; e.g.
Gibaldi and Perrier, *Pharmacokinetics*, 2nd ed. 1982, ch. 1)::

    C(t)   = sum_i D_i / V * exp(-ke (t - t_i))
    AUC(t) = sum_i D_i / CL * (1 - exp(-ke (t - t_i)))

Under encryption (inputs ``weight_kg`` and ``apgar_lt5`` per slot): ke takes one of two
population values, so each exponential is *linear in the 0/1 indicator* with plaintext per-slot
coefficients: sum_i D_i exp(-ke (t - t_i)) = S0 + APGAR5 * (S1 - S0), S0 and S1 the sums with the
two rate constants. 1/(1 + 0.13 APGAR5) is likewise 1 + APGAR5 (1/1.13 - 1). The only
approximation is 1/weight (Newton-refined Chebyshev on the declared weight range) when doses are
given in mg; for doses in mg/kg the weight cancels and the program is exact up to CKKS noise.

Declared ranges: weight 0.5-4.5 kg (covers the study's 0.6-3.62 kg), APGAR5 0 or 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from medtwin.errors import ValidationError
from medtwin.models.two_compartment import Dosing, check_ranges

COVARIATES = ("weight_kg", "apgar_lt5")


@dataclass(frozen=True)
class NeonatalPhenobarbital:
    """Grasela and Donn (1985) population parameters and the model's declared ranges."""

    name: str = "phenobarbital-neonate-1cpt-iv"
    cl_per_kg: float = 0.0047      # L/h/kg
    v_per_kg: float = 0.96         # L/kg
    asphyxia_v_factor: float = 1.13  # V x 1.13 when the 5-min Apgar score < 5
    window: tuple[float, float] = (15.0, 40.0)  # mg/L, usual neonatal target range
    ranges: dict = field(default_factory=lambda: {"weight_kg": (0.5, 4.5), "apgar_lt5": (0.0, 1.0)})
    citation: str = ("Grasela TH Jr, Donn SM. Neonatal population pharmacokinetics of phenobarbital derived "
                     "from routine clinical data. Dev Pharmacol Ther 1985;8:374-383")
    version: str = "1"

    def validate_covariates(self, cov: dict) -> dict[str, np.ndarray]:
        """Raises RangeError (names the field) or ValidationError (missing field, indicator not 0/1)."""
        c = check_ranges(self.name, self.ranges, cov, COVARIATES)
        if not np.all((c["apgar_lt5"] == 0.0) | (c["apgar_lt5"] == 1.0)):
            raise ValidationError(f"model {self.name}: apgar_lt5 must be 0 or 1")
        return c

    def ke(self, apgar_lt5) -> np.ndarray:
        a = np.asarray(apgar_lt5, dtype=np.float64)
        return self.cl_per_kg / (self.v_per_kg * (1.0 + (self.asphyxia_v_factor - 1.0) * a))

    def half_life_h(self, apgar_lt5=0.0) -> np.ndarray:
        return math.log(2.0) / self.ke(apgar_lt5)

    def individual_parameters(self, cov: dict) -> dict[str, np.ndarray]:
        c = self.validate_covariates(cov)
        wt = c["weight_kg"]
        v = self.v_per_kg * wt * (1.0 + (self.asphyxia_v_factor - 1.0) * c["apgar_lt5"])
        return {"cl": self.cl_per_kg * wt, "v": v, "ke": self.ke(c["apgar_lt5"])}

    def reference(self, cov: dict, dosing: Dosing, times, *, per_kg: bool = False) -> dict[str, np.ndarray]:
        """Concentration [mg/L] and cumulative AUC [mg*h/L], arrays (patients, len(times)).

        ``per_kg``: the dosing amounts are mg/kg (multiplied by each patient's weight).

        Raises:
            ValidationError: infusion durations (this model is IV bolus only); covariate errors.
        """
        if np.any(dosing.durations > 0):
            raise ValidationError(f"model {self.name} takes IV bolus doses only")
        p = self.individual_parameters(cov)
        wt = np.asarray(cov["weight_kg"], dtype=np.float64)[:, None, None]
        amt = dosing.amounts[None, None, :] * (wt if per_kg else 1.0)
        dt = np.asarray(times, dtype=np.float64)[None, :, None] - dosing.times[None, None, :]
        on = dt >= 0
        e = np.exp(-p["ke"][:, None, None] * np.where(on, dt, 0.0))
        conc = np.where(on, amt * e, 0.0).sum(-1) / p["v"][:, None]
        auc = np.where(on, amt * (1.0 - e), 0.0).sum(-1) / p["cl"][:, None]
        return {"conc": conc, "auc": auc}

    def build_program(self, slots: int, times: np.ndarray, dosing: Dosing, *, per_kg: bool = False, params=None,
                      tol: float = 1e-8, name: str | None = None):
        """FHE program: encrypted ``weight_kg`` and ``apgar_lt5`` per slot, plaintext ``times`` per slot.

        Outputs ``conc`` [mg/L] and ``auc_k`` = AUC / 1000 [1000 mg*h/L].

        Raises:
            ValidationError: infusion durations in ``dosing``.
            ProgramError: the plan does not fit ``params``.
        """
        from medtwin.program.builder import ProgramBuilder

        if np.any(dosing.durations > 0):
            raise ValidationError(f"model {self.name} takes IV bolus doses only")
        t = np.resize(np.asarray(times, dtype=np.float64), slots)
        dt = t[:, None] - dosing.times[None, :]
        on = dt >= 0
        sums = []
        for a in (0.0, 1.0):
            e = np.exp(-float(self.ke(a)) * np.where(on, dt, 0.0))
            sums.append(np.where(on, dosing.amounts[None, :] * e, 0.0).sum(1))
        given = np.where(on, dosing.amounts[None, :], 0.0).sum(1)
        s0, s1 = sums
        b = ProgramBuilder(name=name or self.name, slots=slots)
        wt = b.input("weight_kg", range=self.ranges["weight_kg"])
        asph = b.input("apgar_lt5", range=self.ranges["apgar_lt5"])
        f = self.asphyxia_v_factor
        s = asph * b.plain(s1 - s0) + b.plain(s0)           # sum_i D_i exp(-ke dt_i)
        inv_vfac = asph * (1.0 / f - 1.0) + 1.0             # 1 / (1 + 0.13 APGAR5)
        conc_unit = s * inv_vfac                              # C * V_kg [* weight]
        auc_unit = (asph * b.plain(s0 - s1) + b.plain(given - s0))  # sum D_i (1 - exp(-ke dt_i))
        if per_kg:
            conc = conc_unit * (1.0 / self.v_per_kg)
            auc = auc_unit * (1.0 / self.cl_per_kg / 1000.0)
        else:
            inv_wt = b.inverse(wt, domain=self.ranges["weight_kg"], tol=tol, method="newton", label="1/weight")
            conc = (conc_unit * (1.0 / self.v_per_kg)) * inv_wt
            auc = (auc_unit * (1.0 / self.cl_per_kg / 1000.0)) * inv_wt
        b.output("conc", conc, scale_hint=20.0)
        b.output("auc_k", auc, scale_hint=5.0)
        return b.build(params)


PHENOBARBITAL_NEONATE = NeonatalPhenobarbital()
