from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from medtwin.errors import RangeError, ValidationError
from medtwin.models.pk_oral import THEOPHYLLINE, cockcroft_gault
from medtwin.study.scenario import Regimen, Scenario

M = THEOPHYLLINE


def _cov(n=1, age=40.0, wt=70.0, scr=1.0, female=0.0):
    return {"age_years": np.full(n, age), "weight_kg": np.full(n, wt),
            "serum_creatinine_mg_dl": np.full(n, scr), "female": np.full(n, female)}


def test_published_theophylline_population_parameters():
    # Pinheiro and Bates (2000) sec. 8.2: lKe=-2.4327, lKa=0.4514, lCl=-3.2145 (Theoph data,
    # Boeckmann, Sheiner and Beal 1994).
    assert M.ka == pytest.approx(1.5705, rel=1e-3)
    assert M.ke_pop == pytest.approx(0.08779, rel=1e-3)
    assert M.cl_per_kg == pytest.approx(0.04016, rel=1e-3)
    # V/F = Cl/ke = 0.458 L/kg, within Ogilvie's (1978) clinical 0.45-0.5 L/kg.
    assert M.v_per_kg == pytest.approx(0.4574, rel=1e-3)
    # Adult half-life about 8 h (Ogilvie 1978): ln2/ke at reference renal function.
    p = M.individual_parameters(_cov(crcl_val := 1, age=40, wt=70, scr=1.0), Scenario("x", Regimen(100, 12, 1)))
    crcl = float(p["crcl"][0])
    assert crcl == pytest.approx(100.0 * 70 / 72, rel=1e-12)
    t_half = math.log(2) / float(p["ke"][0])
    assert 7.0 < t_half < 9.0


def test_single_dose_matches_bateman_closed_form_of_ssfol():
    # R's SSfol (the model Pinheiro and Bates fit): Dose*exp(lKe+lKa-lCl)*(exp(-ke t)-exp(-ka t))/(ka-ke),
    # with Dose in mg/kg. For the Theoph design (subject 1: 4.02 mg/kg, 79.6 kg) at reference
    # renal function our model is that curve.
    wt = 79.6
    scr = (140 - 40) * wt / (72 * 100.0)  # choose Scr so that CrCl = CrCl_ref exactly
    cov = _cov(age=40, wt=wt, scr=scr)
    sc = Scenario("single", Regimen(dose_mg=4.02 * wt, interval_h=24, count=1))
    t = np.array([0.25, 0.57, 1.12, 2.02, 3.82, 5.10, 7.03, 9.05, 12.12, 24.37])
    got = M.reference(cov, sc, t)["conc"][0]
    ke, ka, cl = math.exp(-2.4327), math.exp(0.4514), math.exp(-3.2145)
    want = 4.02 * math.exp(-2.4327 + 0.4514 + 3.2145) * (np.exp(-ke * t) - np.exp(-ka * t)) / (ka - ke)
    np.testing.assert_allclose(got, want, rtol=2e-3)
    # peak of the typical curve: tmax = ln(ka/ke)/(ka-ke) ~ 1.95 h; Cmax ~ 7.4 mg/L
    tm = math.log(ka / ke) / (ka - ke)
    assert tm == pytest.approx(1.946, abs=0.01)


def test_multiple_doses_agree_with_ode_solution():
    cov = _cov(n=2, age=np.array([30.0, 80.0]), wt=np.array([60.0, 95.0]), scr=np.array([0.8, 1.9]),
               female=np.array([1.0, 0.0]))
    sc = Scenario("q8", Regimen(dose_mg=300, interval_h=8, count=6), renal_factor=0.7, clearance_factor=1.6)
    times = np.linspace(0, 60, 121)
    ref = M.reference(cov, sc, times)
    par = M.individual_parameters(cov, sc)
    for p in range(2):
        ke, v = par["ke"][p], par["v"][p]

        def rhs(t, y):
            return [-M.ka * y[0], M.ka * M.f * y[0] - ke * y[1], y[1] / v]

        y = np.zeros(3)
        conc = np.zeros_like(times)
        auc = np.zeros_like(times)
        tdose = sc.regimen.dose_times()
        edges = sorted(set(np.concatenate([tdose, [times[-1]]])))
        cur = 0.0
        for e in edges:
            if e > cur:
                sol = solve_ivp(rhs, (cur, e), y, rtol=1e-10, atol=1e-12, dense_output=True)
                sel = (times >= cur) & (times <= e)
                vals = sol.sol(times[sel])
                conc[sel] = vals[1] / v
                auc[sel] = vals[2]
                y = sol.y[:, -1].copy()
                cur = e
            if e in tdose:
                y[0] += sc.regimen.dose_mg
        np.testing.assert_allclose(ref["conc"][p], conc, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(ref["auc"][p], auc, rtol=1e-6, atol=1e-7)


def test_steady_state_auc_over_interval_equals_dose_over_clearance():
    cov = _cov()
    tau, dose = 12.0, 300.0
    sc = Scenario("ss", Regimen(dose_mg=dose, interval_h=tau, count=40))
    t0 = 36 * tau
    auc = M.reference(cov, sc, np.array([t0, t0 + tau]))["auc"][0]
    cl = M.individual_parameters(cov, sc)["cl"][0]
    assert auc[1] - auc[0] == pytest.approx(dose / cl, rel=1e-6)


def test_iv_bolus_reference():
    cov = _cov()
    sc = Scenario("iv", Regimen(dose_mg=350, interval_h=12, count=2, route="iv_bolus"))
    par = M.individual_parameters(cov, sc)
    t = np.array([0.0, 6.0, 12.0, 18.0])
    got = M.reference(cov, sc, t)["conc"][0]
    ke, v = par["ke"][0], par["v"][0]
    want = 350 / v * np.exp(-ke * t) + np.where(t >= 12, 350 / v * np.exp(-ke * (t - 12)), 0)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_cockcroft_gault_female_factor():
    assert cockcroft_gault(40, 72, 1.0, 0) == pytest.approx(100.0)
    assert cockcroft_gault(40, 72, 1.0, 1) == pytest.approx(85.0)


def test_emax_at_ec50_is_half_maximal():
    e = M.emax
    assert e(e.ec50) == pytest.approx(e.e0 + e.emax / 2)
    assert e(0.0) == pytest.approx(e.e0)


def test_covariates_outside_declared_ranges_are_refused_naming_the_field():
    with pytest.raises(RangeError, match="weight_kg"):
        M.validate_covariates(_cov(wt=20.0))
    with pytest.raises(RangeError, match="creatinine clearance"):
        M.validate_covariates(_cov(age=20, wt=190, scr=0.45))
    with pytest.raises(ValidationError, match="female"):
        M.validate_covariates({k: v for k, v in _cov().items() if k != "female"})
