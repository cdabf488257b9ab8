from __future__ import annotations

import math

import numpy as np
import pytest

from medtwin.errors import RangeError, ValidationError
from medtwin.models.two_compartment import Dosing, macro_constants
from medtwin.models.vancomycin import VANCOMYCIN as M


def _cov(wt, crcl):
    return {"weight_kg": np.atleast_1d(np.asarray(wt, float)), "crcl_ml_min": np.atleast_1d(np.asarray(crcl, float))}


def test_matzke_1984_clearance_and_volume():
    # Matzke et al. 1984: CLS [mL/min] = 3.66 + 0.689 CLCR; Vss 0.72-0.90 L/kg.
    for crcl in (0.0, 10.0, 60.0, 120.0):
        assert M.clearance_l_h(crcl) == pytest.approx((3.66 + 0.689 * crcl) * 0.06, rel=1e-14)
    p = M.individual_parameters(_cov(70.0, 100.0))
    assert p["vss"][0] == pytest.approx(0.72 * 70.0)
    assert p["v1"][0] == pytest.approx(0.15 * 70.0)  # Matzke 1986: Vc about 0.15 L/kg


def test_half_lives_in_published_ranges_at_normal_renal_function():
    # Rybak 2006 (Clin Infect Dis 42:S35): alpha phase 30 min - 1 h, beta half-life 6-12 h.
    for wt, crcl in ((60.0, 100.0), (70.0, 120.0), (80.0, 130.0)):
        k10 = M.individual_parameters(_cov(wt, crcl))["k10"][0]
        a, b = macro_constants(k10, M.k12, M.k21)
        assert 0.5 <= math.log(2) / a <= 1.0
        assert 6.0 <= math.log(2) / b <= 12.0


def test_rybak_2020_auc_relation_and_dose_for_target():
    cov = _cov([70.0, 80.0], [100.0, 40.0])
    cl = M.individual_parameters(cov)["cl"]
    # AUC24,ss = daily dose / CL; e.g. 1 g q12h for CL 4.35 L/h gives 459 mg*h/L (in 400-600).
    auc = M.auc24_ss(cov, 1000.0, 12.0)
    np.testing.assert_allclose(auc, 2000.0 / cl, rtol=1e-14)
    assert 400.0 <= auc[0] <= 600.0
    dose = M.daily_dose_for_target(cov, 500.0, mic=1.0)
    np.testing.assert_allclose(M.auc24_ss(cov, dose / 2, 12.0), 500.0, rtol=1e-12)
    # the simulated AUC over a 24 h interval at (near) steady state agrees with dose/CL
    d = Dosing.regular(1000.0, 12.0, 40, infusion_h=1.0)
    ref = M.reference(cov, d, [432.0, 456.0])
    np.testing.assert_allclose(ref["auc"][:, 1] - ref["auc"][:, 0], 2000.0 / cl, rtol=2e-3)
    assert list(M.regimen_for_daily_dose([2180.0, 900.0])) == [1000.0, 500.0]
    with pytest.raises(ValidationError):
        M.daily_dose_for_target(cov, 0.0)


def test_ranges_refused_without_values():
    with pytest.raises(RangeError, match="crcl_ml_min") as e:
        M.individual_parameters(_cov(70.0, 260.5))
    assert "260" not in str(e.value)


def test_encrypted_within_stated_bound(backend):
    # 4 patients x 2 regimens per ciphertext (1000 mg q12h and 750 mg q8h, 1 h infusions) x 4 times.
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import preset
    from medtwin.program.executors import get_executor

    wts, crcl = np.array([50.0, 70.0, 90.0, 120.0]), np.array([30.0, 60.0, 100.0, 150.0])
    regs = [(1000.0, 12.0), (750.0, 8.0)]
    tp = np.array([0.5, 6.0, 13.0, 23.9])
    ref, auc, dose_t, cl = [], [], [], []
    for i in range(4):
        cov = _cov(wts[i], crcl[i])
        for d, t in regs:
            ref.append(M.reference(cov, Dosing.regular(d, t, 3, infusion_h=1.0), tp)["conc"][0])
            auc.append(np.full(4, M.auc24_ss(cov, d, t)[0] / 100))
            dose_t.append(np.full(4, M.daily_dose_for_target(cov, 500.0)[0] / 1000))
            cl.append(np.full(4, M.individual_parameters(cov)["cl"][0]))
    ref = np.concatenate(ref)
    exact = {"auc24_h": np.concatenate(auc), "dose_g_day": np.concatenate(dose_t), "cl": np.concatenate(cl)}
    dose = np.tile(np.repeat([r[0] for r in regs], 4), 4)
    tau = np.tile(np.repeat([r[1] for r in regs], 4), 4)
    params = preset("test-insecure", depth=20)
    prog = M.build_program(32, np.tile(tp, 8), dose_mg=dose, interval_h=tau, count=3, infusion_h=1.0,
                           mic=1.0, target_auc=500.0, params=params)
    slots = {"weight_kg": np.repeat(wts, 8), "crcl_ml_min": np.repeat(crcl, 8)}
    num = get_executor("numpy").run(prog, slots)
    assert np.max(np.abs(num["conc_h"][:32] * 100 - ref)) <= 100 * prog.error_bound("conc_h")
    ctx, _ = generate_keys(params.with_depth(prog.depth), prog.rotation_indices())
    ex = get_executor(backend, cc=ctx.cc)
    out = ex.run(prog, {k: ctx.encrypt(v) for k, v in slots.items()})
    noise = ex.noise_model()
    conc = ctx.decrypt(out["conc_h"], 32) * 100
    err = np.max(np.abs(conc - ref))
    assert err <= 100 * prog.error_bound("conc_h", noise=noise)
    assert err < 0.1  # mg/L; measured about 0.005
    for name, want in exact.items():
        got = ctx.decrypt(out[name], 32)
        assert np.max(np.abs(got - want)) <= prog.error_bound(name, noise=noise), name


def test_regimen_grid_in_one_ciphertext():
    # 2 patients x 2x2 grid (750/1250 mg, q8h/q12h, 1 h infusions) x 4 times = 32 slots, one pass.
    from medtwin.program.executors import get_executor

    wts, crcl = np.array([60.0, 95.0]), np.array([45.0, 110.0])
    grid = [(750.0, 8.0), (750.0, 12.0), (1250.0, 8.0), (1250.0, 12.0)]
    tp = np.array([0.5, 9.0, 20.0, 30.0])
    dose = np.repeat(np.tile([g[0] for g in grid], 2), 4)
    tau = np.repeat(np.tile([g[1] for g in grid], 2), 4)
    prog = M.build_program(32, np.tile(tp, 8), dose_mg=dose, interval_h=tau, count=4, infusion_h=1.0)
    slots = {"weight_kg": np.repeat(wts, 16), "crcl_ml_min": np.repeat(crcl, 16)}
    out = get_executor("numpy").run(prog, slots)
    want, auc = [], []
    for i in range(2):
        for d, t in grid:
            cov = _cov(wts[i], crcl[i])
            want.append(M.reference(cov, Dosing.regular(d, t, 4, infusion_h=1.0), tp)["conc"][0])
            auc.append(np.full(4, M.auc24_ss(cov, d, t)[0]))
    np.testing.assert_allclose(out["conc_h"] * 100, np.concatenate(want), atol=100 * prog.error_bound("conc_h"))
    np.testing.assert_allclose(out["conc_h"] * 100, np.concatenate(want), atol=1e-3)
    np.testing.assert_allclose(out["auc24_h"] * 100, np.concatenate(auc), rtol=1e-6)
