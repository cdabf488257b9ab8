"""One-compartment pharmacokinetics with first-order absorption, multiple doses by superposition,
a Cockcroft-Gault renal covariate model, and Emax pharmacodynamics.

Equations
---------
Single oral dose D at time 0 (Bateman function; e.g. Gibaldi and Perrier, *Pharmacokinetics*,
2nd ed., 1982, ch. 1)::

    C(t) = F*D*ka / (V*(ka - ke)) * (exp(-ke*t) - exp(-ka*t)),      ke = CL/V

Multiple doses D_i at t_i add by superposition (linear kinetics). The cumulative exposure is::

    AUC(0..t) = sum_i F*D_i/CL * [1 - (ka*exp(-ke*dt_i) - ke*exp(-ka*dt_i)) / (ka - ke)],  dt_i = t - t_i > 0

IV bolus (route ``iv_bolus``): C(t) = sum_i D_i/V * exp(-ke*dt_i), AUC = sum_i D_i/CL*(1-exp(-ke*dt_i)).

Covariates
----------
* Creatinine clearance by Cockcroft and Gault (Nephron 1976;16:31-41)::

      CrCl [mL/min] = (140 - age) * weight / (72 * Scr[mg/dL]) * (0.85 if female)

* Clearance by Dettli's method (Dettli, Clin Pharmacokinet 1976;1:126-134): a non-renal part and a
  renal part proportional to CrCl, both scaled by body weight as in the population model the drug
  parameters come from::

      CL = CL_kg * weight * ((1 - fe) + fe * CrCl * renal_factor / CrCl_ref) * clearance_factor
      V  = V_kg * weight

  so ke = (CL_kg / V_kg) * ((1 - fe) + fe * CrCl * renal_factor / CrCl_ref) * clearance_factor.

Theophylline parameters
-----------------------
The population estimates of Pinheiro and Bates (*Mixed-Effects Models in S and S-PLUS*, Springer
2000, section 8.2) for the theophylline study of Boeckmann, Sheiner and Beal (NONMEM Users Guide
Part V, 1994), first-order-absorption model on log scale: lKe = -2.4327, lKa = 0.4514,
lCl = -3.2145 (Cl in L/h per kg, oral so Cl/F), i.e. ke = 0.0878 /h (half-life 7.9 h), ka = 1.570 /h,
Cl/F = 0.0402 L/h/kg and V/F = Cl/ke = 0.458 L/kg. These agree with the clinical summary of
Ogilvie (Clin Pharmacokinet 1978;3:267-293): adult non-smoker half-life about 8-9 h, Vd about
0.45-0.5 L/kg, about 10% of a dose excreted unchanged in urine (fe = 0.1). Therapeutic range
10-20 mg/L (Ogilvie 1978). Smoking raises theophylline clearance roughly 1.5-2 fold (Jusko et al.,
J Pharm Sci 1979;68:1358-1366); scenarios express this as ``clearance_factor``.

Pharmacodynamics
----------------
Sigmoid Emax (Holford and Sheiner, Clin Pharmacokinet 1981;6:429-453)::

    E(C) = E0 + Emax * C^h / (EC50^h + C^h)

Under encryption the model computes, for every (patient, scenario, time point) slot, CrCl, ke, the
superposed concentration and the cumulative AUC, and smooth window metrics. Non-polynomial
pieces (1/Scr, 1/weight, exp(-ke*t), 1/(ka-ke), 1/clearance factor, the window indicators) are
Chebyshev approximations over declared ranges; inputs outside the ranges are refused before
encryption (:meth:`OralPKModel.validate_covariates`).

Window metrics and score
------------------------
With the therapeutic range [lo, hi] (theophylline 10-20 mg/L, Ogilvie 1978) and logistic edges
of width w = 1 mg/L, per (patient, scenario) pair over the horizon [t_0, t_T]::

    tiw   = 1/(t_T - t_0) * integral of [s((C - lo)/w) - s((C - hi)/w)] dt     (time in window)
    above = 1/(t_T - t_0) * integral of s((C - hi)/w) dt                      (time above it)
    score = tiw - penalty * above,                 s(x) = 1/(1 + exp(-x)), trapezoid rule

``tiw`` is the fraction of the horizon with a bronchodilating but not toxic level; ``above`` the
fraction spent at levels where theophylline's adverse effects (nausea, vomiting, tachycardia;
at higher levels arrhythmias and seizures) become frequent (Ogilvie 1978); the score rewards
the first and penalises the second (``penalty``, a plaintext study parameter, default 1: an
hour above the window costs as much as an hour inside it gains). Time below the window is not
penalised beyond the lost time in window. All three are computed under encryption (see
:func:`build_program`), so is the difference of each from a baseline scenario and the mean of
the score over IIV replicates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from medtwin.errors import RangeError, ValidationError
from medtwin.study.scenario import Scenario

COVARIATES = ("age_years", "weight_kg", "serum_creatinine_mg_dl", "female")


def cockcroft_gault(age_years, weight_kg, scr_mg_dl, female) -> np.ndarray:
    """Creatinine clearance [mL/min], Cockcroft and Gault 1976 (vectorised; female in {0, 1})."""
    age = np.asarray(age_years, dtype=float)
    wt = np.asarray(weight_kg, dtype=float)
    scr = np.asarray(scr_mg_dl, dtype=float)
    f = np.asarray(female, dtype=float)
    return (140.0 - age) * wt / (72.0 * scr) * (1.0 - 0.15 * f)


@dataclass(frozen=True)
class EmaxModel:
    """Sigmoid Emax pharmacodynamics (Holford and Sheiner 1981)."""

    e0: float
    emax: float
    ec50: float
    hill: float = 1.0
    effect: str = "effect"
    citation: str = "Holford NHG, Sheiner LB. Clin Pharmacokinet 1981;6:429-453"

    def __post_init__(self) -> None:
        if self.ec50 <= 0 or self.hill <= 0:
            raise ValidationError("Emax model needs ec50 > 0 and hill > 0")

    def __call__(self, conc) -> np.ndarray:
        c = np.maximum(np.asarray(conc, dtype=float), 0.0)
        ch = c ** self.hill
        return self.e0 + self.emax * ch / (self.ec50 ** self.hill + ch)


@dataclass(frozen=True)
class OralPKModel:
    """Drug parameters plus the declared ranges in which the encrypted program is valid."""

    name: str
    drug: str
    ka: float            # absorption rate constant [1/h]
    f: float             # bioavailability (1.0 when CL and V are apparent, CL/F and V/F)
    cl_per_kg: float     # clearance at reference renal function [L/h/kg]
    v_per_kg: float      # volume of distribution [L/kg]
    fe: float            # fraction excreted unchanged by the kidneys at reference renal function
    crcl_ref: float = 100.0                       # mL/min
    window: tuple[float, float] = (10.0, 20.0)    # therapeutic range [mg/L]
    window_edge: float = 1.0                      # logistic edge width of the smooth window [mg/L]
    conc_domain: tuple[float, float] = (-2.0, 45.0)  # concentrations the window polynomial covers
    ranges: dict = field(default_factory=lambda: {
        "age_years": (18.0, 95.0),
        "weight_kg": (35.0, 200.0),
        "serum_creatinine_mg_dl": (0.4, 10.0),
        "female": (0.0, 1.0),
        "crcl_ml_min": (5.0, 250.0),
    })
    citation: str = ""
    emax: EmaxModel | None = None
    version: str = "1"

    def __post_init__(self) -> None:
        if not (self.ka > 0 and 0 < self.f <= 1 and self.cl_per_kg > 0 and self.v_per_kg > 0 and 0 <= self.fe <= 1):
            raise ValidationError(f"model {self.name}: invalid PK parameters")
        if self.ka <= self.ke_range(4.0)[1]:
            raise ValidationError(f"model {self.name}: ka must exceed every reachable ke (flip-flop not supported)")

    # -- derived quantities ----------------------------------------------------------------
    @property
    def ke_pop(self) -> float:
        return self.cl_per_kg / self.v_per_kg

    def kfac_range(self, max_clearance_factor: float = 4.0, min_clearance_factor: float = 0.25,
                   renal=(0.1, 2.0)) -> tuple[float, float]:
        lo_c, hi_c = self.ranges["crcl_ml_min"]
        g_lo = (1 - self.fe) + self.fe * lo_c * renal[0] / self.crcl_ref
        g_hi = (1 - self.fe) + self.fe * hi_c * renal[1] / self.crcl_ref
        return g_lo * min_clearance_factor, g_hi * max_clearance_factor

    def ke_range(self, max_clearance_factor: float = 4.0) -> tuple[float, float]:
        lo, hi = self.kfac_range(max_clearance_factor)
        return self.ke_pop * lo, self.ke_pop * hi

    # -- validation (before encryption) --------------------------------------------------------
    def validate_covariates(self, cov: dict[str, np.ndarray]) -> None:
        """Refuse covariates outside the model's declared ranges (names the field, not the value).

        Raises:
            RangeError: a covariate or the derived CrCl lies outside the declared range.
            ValidationError: a covariate is missing.
        """
        for k in COVARIATES:
            if k not in cov:
                raise ValidationError(f"model {self.name} needs covariate {k!r}")
            v = np.asarray(cov[k], dtype=float)
            lo, hi = self.ranges[k]
            bad = np.flatnonzero(~((v >= lo) & (v <= hi)))
            if bad.size:
                raise RangeError(f"model {self.name}: {k} of {bad.size} patient(s) (first at index {int(bad[0])}) "
                                 f"outside the valid range [{lo:g}, {hi:g}]")
        crcl = cockcroft_gault(cov["age_years"], cov["weight_kg"], cov["serum_creatinine_mg_dl"], cov["female"])
        lo, hi = self.ranges["crcl_ml_min"]
        bad = np.flatnonzero(~((crcl >= lo) & (crcl <= hi)))
        if bad.size:
            raise RangeError(f"model {self.name}: Cockcroft-Gault creatinine clearance of {bad.size} patient(s) "
                             f"(first at index {int(bad[0])}) outside the valid range [{lo:g}, {hi:g}] mL/min")

    # -- plaintext reference -----------------------------------------------------------------
    def individual_parameters(self, cov: dict, scenario: Scenario) -> dict[str, np.ndarray]:
        crcl = cockcroft_gault(cov["age_years"], cov["weight_kg"], cov["serum_creatinine_mg_dl"], cov["female"])
        kfac = ((1 - self.fe) + self.fe * crcl * scenario.renal_factor / self.crcl_ref) * scenario.clearance_factor
        wt = np.asarray(cov["weight_kg"], dtype=float)
        cl = self.cl_per_kg * wt * kfac
        v = self.v_per_kg * wt
        return {"crcl": crcl, "cl": cl, "v": v, "ke": cl / v}

    def reference(self, cov: dict, scenario: Scenario, times: np.ndarray,
                  taken: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Plaintext reference: concentration [mg/L] and cumulative AUC [mg*h/L] at ``times``.

        ``cov`` holds arrays of one value per patient; ``taken`` is (patients, doses) 0/1
        (default: every dose taken). Returns arrays of shape (patients, len(times)).
        Computed directly by summing the closed-form single-dose terms over the doses.
        """
        p = self.individual_parameters(cov, scenario)
        ke = p["ke"][:, None, None]
        cl = p["cl"][:, None, None]
        v = p["v"][:, None, None]
        reg = scenario.regimen
        t_dose = reg.dose_times()[None, None, :]
        amounts = reg.dose_amounts()[None, None, :]
        if taken is not None:
            amounts = amounts * np.asarray(taken, dtype=float)[:, None, :]
        dt = np.asarray(times, dtype=float)[None, :, None] - t_dose
        on = dt >= 0
        dtp = np.where(on, dt, 0.0)
        if reg.route == "iv_bolus":
            conc = np.where(on, amounts / v * np.exp(-ke * dtp), 0.0).sum(-1)
            auc = np.where(on, amounts / cl * (1 - np.exp(-ke * dtp)), 0.0).sum(-1)
        else:
            ka = self.ka
            conc = np.where(on, self.f * amounts * ka / (v * (ka - ke)) * (np.exp(-ke * dtp) - np.exp(-ka * dtp)), 0.0).sum(-1)
            auc = np.where(on, self.f * amounts / cl * (1 - (ka * np.exp(-ke * dtp) - ke * np.exp(-ka * dtp)) / (ka - ke)), 0.0).sum(-1)
        return {"conc": conc, "auc": auc}

    def smooth_window(self, conc) -> np.ndarray:
        """The smooth therapeutic-window indicator used under encryption: logistic edges."""
        lo, hi = self.window
        w = self.window_edge
        c = np.asarray(conc, dtype=float)
        return 1.0 / (1.0 + np.exp(-(c - lo) / w)) - 1.0 / (1.0 + np.exp(-(c - hi) / w))

    def smooth_above(self, conc) -> np.ndarray:
        """The smooth above-the-window indicator: the upper logistic edge of :meth:`smooth_window`.

        1 well above the window's upper limit (toxic exposure), 0 well inside or below it, 1/2 at
        the limit itself; ``smooth_window + smooth_above`` is the smooth "at least the lower limit"
        indicator. For theophylline the upper limit is 20 mg/L: above it nausea, vomiting and
        tachycardia become common and seizures and arrhythmias possible (Ogilvie 1978).
        """
        hi = self.window[1]
        c = np.asarray(conc, dtype=float)
        return 1.0 / (1.0 + np.exp(-(c - hi) / self.window_edge))

    def time_metrics(self, conc, times, penalty: float = 1.0) -> dict[str, np.ndarray]:
        """Plaintext (float64) per-pair window metrics of trajectories ``conc`` (..., times).

        ``tiw``: smooth fraction of the horizon inside the therapeutic window; ``above``: smooth
        fraction of the horizon above it; ``score = tiw - penalty * above``. Both fractions are
        trapezoid integrals over the output grid (:func:`trapezoid_weights`), exactly what the
        encrypted program computes slot by slot.
        """
        w = trapezoid_weights(times)
        tiw = (self.smooth_window(conc) * w).sum(axis=-1)
        above = (self.smooth_above(conc) * w).sum(axis=-1)
        return {"tiw": tiw, "above": above, "score": tiw - float(penalty) * above}


THEOPHYLLINE = OralPKModel(
    name="theophylline-1cpt-oral",
    drug="theophylline",
    ka=math.exp(0.4514),
    f=1.0,
    cl_per_kg=math.exp(-3.2145),
    v_per_kg=math.exp(-3.2145) / math.exp(-2.4327),
    fe=0.10,
    window=(10.0, 20.0),
    citation=("Pinheiro JC, Bates DM. Mixed-Effects Models in S and S-PLUS. Springer 2000, sec. 8.2 "
              "(Theophylline data of Boeckmann, Sheiner, Beal, NONMEM Users Guide Part V, 1994); "
              "Cockcroft DW, Gault MH. Nephron 1976;16:31-41; Dettli L. Clin Pharmacokinet 1976;1:126-134; "
              "Ogilvie RI. Clin Pharmacokinet 1978;3:267-293"),
    # Bronchodilation (FEV1 % improvement) vs theophylline concentration: log-linear over 5-20 mg/L
    # in Mitenko and Ogilvie (N Engl J Med 1973;289:600-603); expressed as a hyperbolic Emax
    # with EC50 10 mg/L as in Holford and Sheiner's review of that data.
    emax=EmaxModel(e0=0.0, emax=63.0, ec50=10.0, hill=1.0, effect="FEV1 improvement [%]"),
)

MODELS = {THEOPHYLLINE.name: THEOPHYLLINE, "theophylline": THEOPHYLLINE}


def get_model(name: str) -> OralPKModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ValidationError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None


# ------------------------------------------------------------------------------------------------
# Encrypted evaluation
# ------------------------------------------------------------------------------------------------
#
# Superposition without one exponential per dose: for a regimen with interval tau starting at t0,
# a slot at time t has m = floor((t - t0)/tau) completed intervals and r = t - t0 - m*tau in
# [0, tau). Dose i contributes exp(-ke*(t - t_i)) = exp(-ke*r) * u^(m-i) with u = exp(-ke*tau), so
#
#     S(t) = sum_i a_i exp(-ke*(t - t_i)) = exp(-ke*r) * sum_j c_j(t) u^j,   c_j(t) = a_(m-j)
#
# a polynomial in the encrypted u with plaintext per-slot coefficients (a_i = amount actually taken).
# The absorption terms use the population ka, so K(t) = sum_i a_i exp(-ka*(t - t_i)) is plaintext,
# and M(t) = sum_i a_i (dose taken so far) too. Then, per slot,
#
#     C   = inv_wt * coefC * (S - K),        coefC = F*ka/(V_kg*(ka - ke)) (oral) | 1/V_kg (IV)
#     AUC = inv_wt * inv_kfac * Fs/CL_kg * [M - o*(ka*S - ke*K)*inv_kdiff - i*S]
#
# where o / i select oral / IV slots. Two Chebyshev exponentials (u and exp(-ke*r)), three
# Chebyshev reciprocals (Scr, weight, ka - ke, clearance factor) and the window indicator are the
# only non-polynomial pieces.

def _regimen_terms(model: OralPKModel, scenario: Scenario, times: np.ndarray, taken: np.ndarray):
    """Per time point: r, m, c (times x J+1), K, M for one (patient, scenario) pair."""
    reg = scenario.regimen
    tau = reg.interval_h
    amounts = reg.dose_amounts() * taken
    rel = np.asarray(times, dtype=float) - reg.start_h
    m = np.where(rel >= 0, np.floor(rel / tau + 1e-12), -1).astype(int)
    r = np.where(rel >= 0, rel - np.maximum(m, 0) * tau, 0.0)
    r = np.clip(r, 0.0, tau)
    jmax = int(max(m.max(), 0))
    n = int(reg.count)
    c = np.zeros((len(rel), jmax + 1))
    for k, mk in enumerate(m):
        for i in range(0, min(mk, n - 1) + 1):
            c[k, mk - i] = amounts[i]
    t_dose = reg.dose_times()
    dt = np.asarray(times, dtype=float)[:, None] - t_dose[None, :]
    on = dt >= 0
    if reg.route == "iv_bolus":
        K = np.zeros(len(rel))
    else:
        K = np.where(on, amounts[None, :] * np.exp(-model.ka * np.where(on, dt, 0.0)), 0.0).sum(1)
    M = np.where(on, amounts[None, :], 0.0).sum(1)
    return r, c, K, M


def trapezoid_weights(times: np.ndarray) -> np.ndarray:
    """Trapezoid-rule weights over the output grid, normalised to 1 over the horizon: the
    time-in-window fraction is sum_k w_k * window(C(t_k))."""
    times = np.asarray(times, dtype=float)
    w = np.zeros(times.size)
    if times.size > 1:
        d = np.diff(times)
        w[:-1] += d / 2
        w[1:] += d / 2
        w /= times[-1] - times[0]
    else:
        w[:] = 1.0
    return w


def encode_plaintexts(model: OralPKModel, scenarios: list[Scenario], layout, times: np.ndarray,
                      taken: list[list[np.ndarray]] | None = None,
                      base_index: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Plaintext vectors of the program, shape (n_ciphertexts, slots) each.

    ``taken[p][s]`` is the 0/1 per-dose indicator of patient p under scenario s (default: from the
    scenario's adherence with the pair index as seed). Contains no patient covariate.

    ``base_index[s]`` (optional): the scenario whose regimen, factors and taken doses serve as
    the baseline of scenario s's blocks; its plaintext terms are replicated into those blocks
    under the prefix ``b_`` (``b_r``, ``b_c0``, ..., ``b_jmax``), so the program evaluates the
    baseline beside every scenario from the same encrypted covariates, without rotations.

    Raises:
        ValidationError: a baseline index outside the scenarios.
    """
    times = np.asarray(times, dtype=float)
    P, S, T = layout.n_patients, layout.n_scenarios, layout.n_times
    per = []
    for p in range(P):
        row = []
        for s, sc in enumerate(scenarios):
            tk = taken[p][s] if taken is not None else sc.taken_fraction(p)
            row.append(_regimen_terms(model, sc, times, tk))
        per.append(row)
    shape = (P, S, T)

    def pack(index: Sequence[int], prefix: str) -> dict[str, np.ndarray]:
        jmax = max(per[p][index[s]][1].shape[1] - 1 for p in range(P) for s in range(S))
        r_all = np.zeros(shape); K_all = np.zeros(shape); M_all = np.zeros(shape)
        c_all = np.zeros((jmax + 1,) + shape)
        for p in range(P):
            for s in range(S):
                r, c, K, M = per[p][index[s]]
                r_all[p, s] = r; K_all[p, s] = K; M_all[p, s] = M
                c_all[: c.shape[1], p, s] = c.T
        sc_of = [scenarios[i] for i in index]
        per_s = lambda f: np.broadcast_to(np.array([f(sc) for sc in sc_of], dtype=float)[None, :, None], shape)
        out = {
            "r": layout.spread_pairs(r_all),
            "tau": layout.spread_pairs(per_s(lambda sc: sc.regimen.interval_h)),
            "K": layout.spread_pairs(K_all),
            "M": layout.spread_pairs(M_all),
            "oral": layout.spread_pairs(per_s(lambda sc: 1.0 if sc.regimen.route == "oral" else 0.0)),
            "renal": layout.spread_pairs(per_s(lambda sc: sc.renal_factor)),
            "clf": layout.spread_pairs(per_s(lambda sc: sc.clearance_factor)),
        }
        for j in range(jmax + 1):
            out[f"c{j}"] = layout.spread_pairs(c_all[j])
        out["jmax"] = np.array(jmax)
        return {prefix + k: v for k, v in out.items()}

    out = pack(range(S), "")
    if base_index is not None:
        base_index = [int(i) for i in base_index]
        if len(base_index) != S or any(not 0 <= i < S for i in base_index):
            raise ValidationError("baseline index: one scenario index per scenario is needed")
        out.update(pack(base_index, "b_"))
    w = trapezoid_weights(times)
    out["tiw_w"] = layout.spread_pairs(np.broadcast_to(w[None, None, :], shape)) * layout.valid_mask()
    return out


def plaintext_digest(plain: dict[str, np.ndarray], chunk: int) -> str:
    import hashlib
    h = hashlib.sha256()
    for k in sorted(plain):
        a = np.asarray(plain[k])
        h.update(k.encode())
        h.update(np.ascontiguousarray(a[chunk] if a.ndim == 2 else a).tobytes())
    return h.hexdigest()


# Chebyshev tolerances (absolute, on the approximated function) for the program's pieces.
TOLERANCES = {"reciprocal": 1e-7, "exp": 1e-8, "window": 2e-4}
DOSE_UNIT = 100.0  # mg; the program works in dose units of this size
MAX_POWER = 48  # dosing intervals within the horizon that the u-polynomial covers


def _span(expr, pad: float = 0.0) -> tuple[float, float]:
    lo, hi = expr.range
    w = (hi - lo) * pad
    return float(lo - w), float(hi + w)


def _regimen_outputs(b, model: OralPKModel, pv, prefix: str, crcl, inv_wt):
    """Concentration [mg/L] and AUC/100 [100 mg*h/L] per slot for the regimen terms under
    ``prefix`` ("" for the scenario's own regimen, "b_" for the baseline's)."""
    jmax = int(pv(prefix + "jmax"))
    if jmax > MAX_POWER:
        raise ValidationError(f"the horizon spans {jmax} dosing intervals; at most {MAX_POWER} are supported "
                              "(shorten the horizon or lengthen the interval)")
    P = lambda key: pv(prefix + key)
    # Dettli: kfac = ((1 - fe) + fe * CrCl * renal / CrCl_ref) * clearance_factor
    renal, clf = P("renal"), P("clf")
    kfac = crcl * b.plain(renal * clf * model.fe / model.crcl_ref) + b.plain((1.0 - model.fe) * clf)
    k_dom = _span(kfac, 0.01)
    ke_pop = model.ke_pop
    x_tau = kfac * b.plain(ke_pop * P("tau"))
    x_r = kfac * b.plain(ke_pop * P("r"))
    x_hi = max(_span(x_tau)[1], _span(x_r)[1]) * 1.01 + 1e-6
    u = b.apply(lambda x: np.exp(-x), x_tau, domain=(0.0, x_hi), tol=TOLERANCES["exp"])
    er = b.apply(lambda x: np.exp(-x), x_r, domain=(0.0, x_hi), tol=TOLERANCES["exp"])
    # Doses in units of DOSE_UNIT mg inside the program: keeps S, K, M of order 1-30, so that the
    # cancellation in S - K and OpenFHE's fixed-scale rescaling error act on small magnitudes.
    U = DOSE_UNIT
    coeffs = [P(f"c{j}") / U for j in range(jmax + 1)]
    poly = b.poly_plain(u, coeffs)  # sum_j c_j(slot) * u^j, baby-step giant-step
    S = er * poly
    inv_kdiff = b.apply(lambda k: 1.0 / (model.ka - ke_pop * k), kfac, domain=k_dom, tol=1e-8)
    inv_kfac = b.apply(lambda k: 1.0 / k, kfac, domain=k_dom, tol=TOLERANCES["reciprocal"])
    oral = P("oral")
    Q = S - b.plain(P("K") / U)
    D1 = inv_kdiff * b.plain(oral * model.f * model.ka * U / model.v_per_kg) + b.plain((1.0 - oral) * U / model.v_per_kg)
    conc = (inv_wt * D1) * Q
    fs = np.where(oral > 0, model.f, 1.0)
    inner = (b.plain(P("M") / U) - inv_kdiff * (S * b.plain(oral * model.ka) - kfac * b.plain(oral * ke_pop * P("K") / U))
             - S * b.plain(1.0 - oral))
    auc_h = (inv_wt * inv_kfac) * (inner * b.plain(fs * U / model.cl_per_kg / 100.0))
    return conc, auc_h


def build_program(model: OralPKModel, plain: dict[str, np.ndarray], chunk: int, slots: int, block: int,
                  *, time_in_window: bool = True, sum_in_program: bool = False, name: str | None = None,
                  params=None, noise=None, penalty: float = 1.0, replicates: int = 1):
    """The FHE program of one ciphertext chunk (see the module docstring for the algebra).

    Inputs (encrypted, one value per slot): ``age_years``, ``weight_kg``,
    ``serum_creatinine_mg_dl``, ``female``. Outputs: ``conc`` [mg/L] per slot, ``auc_h`` =
    AUC/100 [100 mg*h/L] per slot, and (optionally) the smooth window metrics, each as
    per-time-point terms (indicator times the trapezoid weight; the client adds a pair's terms
    after decryption, so the keys need no rotations for them):

    * ``tiw_terms``: inside the therapeutic window (:meth:`OralPKModel.smooth_window`);
    * ``above_terms``: above it (:meth:`OralPKModel.smooth_above`), i.e. toxic exposure;
    * ``score_terms`` = ``tiw_terms - penalty * above_terms``, computed in the slot (the penalty,
      a plaintext study parameter, is folded into the trapezoid-weight plaintext).

    With ``sum_in_program`` the window sum ``tiw`` lands in the first slot of every pair's block
    instead (rotation keys 1, 2, 4, ... < block needed; used when only aggregates may be decrypted).

    Baseline (when ``plain`` carries ``b_*`` terms, see :func:`encode_plaintexts`): the baseline
    regimen is evaluated in every block from the same encrypted covariates (this roughly doubles
    the work) and the program outputs ``auc_diff_h`` (AUC/100 minus the baseline's, per slot) and,
    with the window metrics, ``tiw_diff_terms`` and ``score_diff_terms``.

    Expected score over IIV replicates (``replicates`` = R > 1, a power of two, the replicates of
    a regimen in R adjacent blocks): ``score_mean_terms`` = (1/R) * sum of the R blocks' score
    terms, by log2(R) rotations by block, 2 block, ..., (R/2) block, landing in the group's first
    block (the other blocks hold partial sums that are never read); with a baseline also
    ``score_diff_mean_terms``, the expected score minus the baseline's over the same replicates.

    Raises:
        ValidationError: the horizon spans more than MAX_POWER dosing intervals; ``replicates``
            is not a power of two.
        ProgramError: the plan does not fit ``params``.
    """
    from medtwin.program import ProgramBuilder

    R_ = int(replicates)
    if R_ < 1 or R_ & (R_ - 1):
        raise ValidationError(f"replicates must be a power of two for the encrypted mean, got {replicates}")
    pv = lambda key: np.asarray(plain[key][chunk] if np.asarray(plain[key]).ndim == 2 else plain[key],
                                dtype=np.float64)
    R = model.ranges
    b = ProgramBuilder(name=name or model.name, slots=slots)
    age = b.input("age_years", range=R["age_years"])
    wt = b.input("weight_kg", range=R["weight_kg"])
    scr = b.input("serum_creatinine_mg_dl", range=R["serum_creatinine_mg_dl"])
    fem = b.input("female", range=R["female"])

    # Cockcroft-Gault: (140 - age) * wt / (72 * Scr) * (1 - 0.15 female)
    inv_scr = b.apply(lambda x: 1.0 / x, scr, domain=R["serum_creatinine_mg_dl"], tol=TOLERANCES["reciprocal"] * 2.5)
    inv_wt = b.apply(lambda x: 1.0 / x, wt, domain=R["weight_kg"], tol=TOLERANCES["reciprocal"] / 35.0)
    sex = fem * (-0.15 / 72.0) + 1.0 / 72.0
    crcl = ((140.0 - age) * wt) * (inv_scr * sex)
    crcl = b.assume_range(crcl, R["crcl_ml_min"])  # checked on the client before encryption
    conc, auc_h = _regimen_outputs(b, model, pv, "", crcl, inv_wt)
    b.output("conc", conc)
    b.output("auc_h", auc_h)
    base = "b_jmax" in plain
    if base:
        conc_b, auc_b = _regimen_outputs(b, model, pv, "b_", crcl, inv_wt)
        b.output("auc_diff_h", auc_h - auc_b)
    if time_in_window:
        cdom = model.conc_domain
        w = pv("tiw_w")
        pen = float(penalty)

        def window_terms(c, weight):
            """(inside-window terms, penalised above-window terms, above-window terms)."""
            c_in = b.assume_range(c, cdom)  # verified on the decrypted trajectory by the client
            win = b.apply(model.smooth_window, c_in, domain=cdom, tol=TOLERANCES["window"])
            above = b.apply(model.smooth_above, c_in, domain=cdom, tol=TOLERANCES["window"])
            return win, above, win * b.plain(weight), above * b.plain(weight)

        win, above, tiw_t, above_t = window_terms(conc, w)
        score_t = tiw_t - above * b.plain(w * pen) if pen != 0.0 else tiw_t
        if sum_in_program:
            b.output("tiw", b.sum_blocks(tiw_t, block))  # needs rotation keys 1, 2, 4, ... < block
        else:
            b.output("tiw_terms", tiw_t)  # the client adds the block's terms after decryption
        b.output("above_terms", above_t)
        b.output("score_terms", score_t)
        if base:
            win_b, above_b, tiw_bt, _ = window_terms(conc_b, w)
            b.output("tiw_diff_terms", tiw_t - tiw_bt)
            score_bt = tiw_bt - above_b * b.plain(w * pen) if pen != 0.0 else tiw_bt
            b.output("score_diff_terms", score_t - score_bt)
        if R_ > 1:
            # 1/R folded into the weights: one more plaintext product per indicator, no level.
            def mean_terms(wn, ab):
                return wn * b.plain(w / R_) - ab * b.plain(w * (pen / R_)) if pen != 0.0 else wn * b.plain(w / R_)

            def replicate_sum(m):
                step = block
                while step < block * R_:
                    m = m + b.rotate(m, step)
                    step *= 2
                return m

            m = mean_terms(win, above)
            b.output("score_mean_terms", replicate_sum(m))
            if base:  # expected score minus the baseline's (same rotations, no more keys)
                b.output("score_diff_mean_terms", replicate_sum(m - mean_terms(win_b, above_b)))
    elif R_ > 1:
        raise ValidationError("the expected score over replicates needs the time-in-window metrics")
    return b.build(params, noise=noise)
