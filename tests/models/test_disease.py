from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from medtwin.errors import RangeError, ValidationError
from medtwin.models.disease import (ADAG_EAG, CKD_EPI_2021, EGFR_DECLINE, ClaretTGI, adag_eag_mg_dl, ckd_epi_2021,
                                    stein_biexponential, stein_nadir)


def _openfhe(prog, inputs, n, backend="openfhe"):
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import preset
    from medtwin.program.executors import get_executor

    params = preset("test-insecure", depth=max(prog.depth, 1))
    ctx, _ = generate_keys(params, prog.rotation_indices())
    ex = get_executor(backend, cc=ctx.cc)
    out = ex.run(prog, {k: ctx.encrypt(v) for k, v in inputs.items()})
    noise = ex.noise_model()
    return {k: ctx.decrypt(v, n) for k, v in out.items()}, noise


def _params(depth=20):
    from medtwin.he.params import preset

    return preset("test-insecure", depth=depth)


# -- ADAG ----------------------------------------------------------------------------------------

def test_adag_table_of_nathan_2008():
    # Nathan et al. 2008, table (half up: 6 % gives 125.5 -> 126): A1C 5..12 % -> eAG 97, 126, 154, 183, 212, 240, 269, 298 mg/dL
    # and 7.0, 8.6, 10.2 mmol/L at 6, 7, 8 %.
    a1c = np.arange(5.0, 13.0)
    np.testing.assert_array_equal(np.floor(adag_eag_mg_dl(a1c) + 0.5 + 1e-9), [97, 126, 154, 183, 212, 240, 269, 298])
    r = ADAG_EAG.reference({"hba1c_percent": [6.0, 7.0, 8.0]})
    np.testing.assert_array_equal(np.round(r["eag_mmol_l"], 1), [7.0, 8.6, 10.2])
    with pytest.raises(RangeError, match="hba1c_percent"):
        ADAG_EAG.reference({"hba1c_percent": [21.0]})


def test_adag_encrypted_within_bound(backend):
    a1c = np.linspace(4.5, 14.0, 8)
    prog = ADAG_EAG.build_program(8, params=_params(1))
    got, noise = _openfhe(prog, {"hba1c_percent": a1c}, 8, backend)
    ref = ADAG_EAG.reference({"hba1c_percent": a1c})
    for k in ("eag_mg_dl", "eag_mmol_l"):
        assert np.max(np.abs(got[k] - ref[k])) <= prog.error_bound(k, noise=noise) <= prog.error_bound(k)


# -- CKD-EPI 2021 --------------------------------------------------------------------------------

def test_ckd_epi_2021_equation_by_hand():
    # Inker et al. 2021 (NKF form): 142 * min(Scr/k,1)^a * max(Scr/k,1)^-1.2 * 0.9938^age * 1.012 [female]
    f50 = 142 * 0.9938 ** 50 * 1.012                      # female, 50 y, Scr = k = 0.7
    assert ckd_epi_2021(0.7, 50, 1) == pytest.approx(f50, rel=1e-13)
    assert ckd_epi_2021(0.5, 50, 1) == pytest.approx(f50 * (0.5 / 0.7) ** -0.241, rel=1e-13)
    m60 = 142 * 0.9938 ** 60
    assert ckd_epi_2021(1.8, 60, 0) == pytest.approx(m60 * 2.0 ** -1.2, rel=1e-13)
    assert ckd_epi_2021(0.6, 60, 0) == pytest.approx(m60 * (0.6 / 0.9) ** -0.302, rel=1e-13)


def test_ckd_epi_refusals():
    with pytest.raises(RangeError, match="serum_creatinine_mg_dl"):
        CKD_EPI_2021.reference({"serum_creatinine_mg_dl": [16.0], "age_years": [50.0], "female": [0.0]})
    with pytest.raises(ValidationError, match="scr_above_k"):
        CKD_EPI_2021.validate_branch({"serum_creatinine_mg_dl": [1.0], "age_years": [50.0], "female": [0.0],
                                      "scr_above_k": [0.0]})


def test_ckd_epi_encrypted_within_bound(backend):
    rng = np.random.default_rng(1)
    n = 16
    scr = np.concatenate([[0.7, 0.9, 0.69, 0.91, 0.3, 15.0], rng.uniform(0.4, 5.0, n - 6)])
    age = rng.uniform(20, 90, n)
    fem = (np.arange(n) % 2).astype(float)
    cov = {"serum_creatinine_mg_dl": scr, "age_years": age, "female": fem,
           "scr_above_k": CKD_EPI_2021.branch_indicator(scr, fem)}
    CKD_EPI_2021.validate_branch(cov)
    ref = CKD_EPI_2021.reference(cov)
    prog = CKD_EPI_2021.build_program(n, fem, params=_params())
    got, noise = _openfhe(prog, {k: cov[k] for k in ("serum_creatinine_mg_dl", "age_years", "scr_above_k")}, n, backend)
    err = np.max(np.abs(got["egfr"] - ref))
    assert err <= prog.error_bound("egfr", noise=noise) <= prog.error_bound("egfr")
    assert err < 0.05  # mL/min/1.73 m^2; measured about 2e-4


# -- linear progression --------------------------------------------------------------------------

def test_linear_progression_offset_and_slope_effects():
    cov = {"baseline": [60.0, 45.0], "slope_per_year": [-3.0, -5.0]}
    t = np.array([0.0, 1.0, 2.0, 5.0])
    untreated = EGFR_DECLINE.reference(cov, t)
    np.testing.assert_allclose(untreated[0], [60, 57, 54, 45])
    slope = EGFR_DECLINE.reference(cov, t, slope_effect=2.0)       # disease-modifying
    offset = EGFR_DECLINE.reference(cov, t, offset=3.0)            # symptomatic
    np.testing.assert_allclose(slope[1] - untreated[1], [0, 2, 4, 10])   # benefit grows with time
    np.testing.assert_allclose(offset[1] - untreated[1], [0, 3, 3, 3])   # constant benefit
    with pytest.raises(RangeError, match="slope_per_year"):
        EGFR_DECLINE.reference({"baseline": [60.0], "slope_per_year": [-30.0]}, t)


def test_linear_progression_encrypted_within_bound(backend):
    t = np.tile(np.array([0.0, 1.0, 3.0, 5.0]), 2)
    prog = EGFR_DECLINE.build_program(8, t, slope_effect=np.repeat([0.0, 2.0], 4), params=_params(1))
    inp = {"baseline": np.full(8, 72.0), "slope_per_year": np.full(8, -4.0)}
    got, noise = _openfhe(prog, inp, 8, backend)
    want = np.concatenate([72 - 4 * t[:4], 72 - 2 * t[4:]])
    assert np.max(np.abs(got["value"] - want)) <= prog.error_bound("value", noise=noise)


# -- tumour growth inhibition --------------------------------------------------------------------

TGI = ClaretTGI(kl=0.02, kd=0.05, lam=0.1)  # illustrative rates per week (not published estimates)


def test_claret_closed_form_matches_solve_ivp_and_nadir():
    cov = {"baseline_size": [80.0], "exposure": [2.0]}
    t = np.linspace(0.0, 52.0, 53)
    sol = solve_ivp(TGI.rhs(2.0), (0, 52), [80.0], t_eval=t, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(TGI.reference(cov, t)[0], sol.y[0], rtol=1e-8)
    tn = float(TGI.nadir_week(2.0))
    assert tn == pytest.approx(math.log(0.05 * 2.0 / 0.02) / 0.1)
    f = lambda s: float(TGI.reference(cov, [s])[0, 0])
    assert f(tn) < f(tn - 0.5) and f(tn) < f(tn + 0.5)
    assert float(TGI.nadir_week(0.1)) == 0.0  # exposure too low to shrink the tumour


def test_stein_model_nadir():
    d, g = 0.01, 0.002
    tn = float(stein_nadir(d, g))
    f = lambda s: float(stein_biexponential(s, d, g))
    assert f(0.0) == 1.0 and f(tn) < f(tn - 1) and f(tn) < f(tn + 1)


def test_claret_encrypted_within_bound(backend):
    t = np.tile(np.array([0.0, 4.0, 12.0, 26.0, 40.0, 52.0, 8.0, 20.0]), 2)
    y0 = np.repeat([40.0, 150.0], 8)
    e = np.repeat([0.5, 3.0], 8)
    prog = TGI.build_program(16, t, params=_params())
    got, noise = _openfhe(prog, {"baseline_size": y0, "exposure": e}, 16, backend)
    want = np.concatenate([TGI.reference({"baseline_size": [y0[0]], "exposure": [e[0]]}, t[:8])[0],
                           TGI.reference({"baseline_size": [y0[8]], "exposure": [e[8]]}, t[8:])[0]])
    err = np.max(np.abs(got["size_cm"] * 10 - want))
    assert err <= 10 * prog.error_bound("size_cm", noise=noise)
    assert err < 1e-5 * np.max(want)
    err_r = np.max(np.abs(got["ratio"] - want / y0))
    assert err_r <= prog.error_bound("ratio", noise=noise)
