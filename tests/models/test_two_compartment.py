from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from medtwin.errors import RangeError, ValidationError
from medtwin.models.two_compartment import (Dosing, TwoCompartmentIV, concentration, cumulative_auc,
                                            macro_constants, unit_coefficients)

K10, K12, K21, V1 = 0.3, 0.8, 0.4, 10.0


def _ode(dosing: Dosing, t_end: float, ts):
    def rhs(t, x):
        rate = sum(a / T for ti, a, T in zip(dosing.times, dosing.amounts, dosing.durations) if T > 0 and ti <= t < ti + T)
        x1, x2, _ = x
        return [rate - (K10 + K12) * x1 + K21 * x2, K12 * x1 - K21 * x2, x1 / V1]

    # integrate piecewise so that boluses enter as jumps of the central amount
    x = np.zeros(3)
    out = np.zeros((3, len(ts)))
    edges = sorted(set([0.0, t_end] + [float(t) for t in dosing.times]
                       + [float(t + d) for t, d in zip(dosing.times, dosing.durations) if d > 0]))
    for lo, hi in zip(edges[:-1], edges[1:]):
        for ti, a, T in zip(dosing.times, dosing.amounts, dosing.durations):
            if T == 0 and ti == lo:
                x[0] += a
        sel = (ts >= lo) & (ts < hi) if hi < t_end else (ts >= lo) & (ts <= hi)
        sol = solve_ivp(rhs, (lo, hi), x, t_eval=ts[sel], rtol=1e-11, atol=1e-11, method="LSODA")
        out[:, sel] = sol.y
        x = solve_ivp(rhs, (lo, hi), x, rtol=1e-11, atol=1e-11, method="LSODA").y[:, -1]
    return out


def test_gibaldi_perrier_identities():
    a_, b_ = macro_constants(K10, K12, K21)
    assert a_ + b_ == pytest.approx(K10 + K12 + K21, rel=1e-14)
    assert a_ * b_ == pytest.approx(K10 * K21, rel=1e-14)
    a, b = unit_coefficients(K10, K12, K21)
    assert a + b == pytest.approx(1.0)                       # A + B = D/V1
    assert a / a_ + b / b_ == pytest.approx(1.0 / K10)        # AUC = D/(k10 V1) = D/CL
    # single bolus: C(0) = D/V1 and AUC(inf) = D/CL
    d = Dosing.regular(100.0, 24.0, 1)
    assert concentration(0.0, d, K10, K12, K21, V1) == pytest.approx(10.0)
    assert cumulative_auc(2000.0, d, K10, K12, K21, V1) == pytest.approx(100.0 / (K10 * V1), rel=1e-10)


@pytest.mark.parametrize("infusion_h", [0.0, 1.0])
def test_multiple_doses_match_solve_ivp(infusion_h):
    d = Dosing.regular(500.0, 12.0, 3, infusion_h=infusion_h, taken=[1, 0, 1])
    ts = np.linspace(0.0, 40.0, 161)
    ref = _ode(d, 40.0, ts)
    c = concentration(ts, d, K10, K12, K21, V1)
    auc = cumulative_auc(ts, d, K10, K12, K21, V1)
    np.testing.assert_allclose(c, ref[0] / V1, atol=1e-6)
    np.testing.assert_allclose(auc, ref[2], atol=1e-5)


def test_bad_dosing_and_ranges():
    with pytest.raises(ValidationError):
        Dosing.regular(100.0, 4.0, 2, infusion_h=5.0)
    with pytest.raises(ValidationError):
        Dosing(np.array([0.0]), np.array([-1.0]), np.array([0.0]))
    m = TwoCompartmentIV("t", K12, K21)
    with pytest.raises(RangeError, match="k10"):
        m.reference({"k10": [5.0], "v1_l": [10.0]}, Dosing.regular(1, 1, 1), [0.0])


def test_program_bolus_numpy_and_encrypted_within_bound(backend):
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import preset
    from medtwin.program.executors import get_executor

    m = TwoCompartmentIV("two-cpt-test", K12, K21, ranges={"k10": (0.1, 0.6), "v1_l": (5.0, 20.0)})
    k10 = np.array([0.15, 0.3, 0.45, 0.55])
    v1 = np.array([6.0, 10.0, 14.0, 19.0])
    times = np.array([0.0, 2.0, 5.0, 9.0])
    ref = m.reference({"k10": k10, "v1_l": v1}, Dosing.regular(1.0, 8.0, 2), times)["conc"].ravel()
    params = preset("test-insecure", depth=20)
    prog = m.build_program(16, np.tile(times, 4), dose_mg=1.0, interval_h=8.0, count=2, params=params, tol=1e-6)
    inputs = {"k10": np.repeat(k10, 4), "inv_v1": np.repeat(1.0 / v1, 4)}
    num = get_executor("numpy").run(prog, inputs)["conc"][:16]
    assert np.max(np.abs(num - ref)) <= prog.error_bound("conc")
    ctx, _ = generate_keys(params.with_depth(prog.depth), prog.rotation_indices())
    ex = get_executor(backend, cc=ctx.cc)
    out = ex.run(prog, {k: ctx.encrypt(v) for k, v in inputs.items()})
    got = ctx.decrypt(out["conc"], 16)
    err = np.max(np.abs(got - ref))
    assert err <= prog.error_bound("conc", noise=ex.noise_model())
    assert err < 1e-4
