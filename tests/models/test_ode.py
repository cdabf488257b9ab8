from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from medtwin.errors import RangeError, ValidationError
from medtwin.models.ode import ODEModel, Series, integrate_encrypted, key_holder_refresh


def logistic(y, p):
    (n,) = y
    return [p["r"] * n * (1.0 - n * 0.01) - p["kill"] * n]


def lotka_volterra(y, p):
    x, z = y
    return [x * (p["a"] - z * p["b"]), z * (x * p["d"] - p["c"])]


LOG = ODEModel(logistic, states=("n",), state_ranges={"n": (0.0, 100.0)},
               params={"r": (0.05, 0.5), "kill": (0.0, 0.3)}, name="logistic-kill")
LV = ODEModel(lotka_volterra, states=("x", "z"), state_ranges={"x": (0.0, 10.0), "z": (0.0, 10.0)},
              params={"a": (0.5, 1.5), "b": (0.2, 0.6), "c": (0.5, 1.5), "d": (0.2, 0.6)}, name="lotka-volterra")
LV_VALUES = {"x": [2.0, 1.0], "z": [1.0, 0.5], "a": [1.0, 1.2], "b": [0.4, 0.5], "c": [1.0, 0.8], "d": [0.3, 0.4]}


def _solve_lv(i, t_end, ts):
    v = {k: LV_VALUES[k][i] for k in LV_VALUES}
    f = lambda t, y: lotka_volterra(list(y), v)
    return solve_ivp(f, (0, t_end), [v["x"], v["z"]], t_eval=ts, rtol=1e-12, atol=1e-12).y


@pytest.mark.parametrize("method,order,h,tol", [("euler", 4, 0.001, 5e-3), ("rk4", 4, 0.05, 1e-6),
                                                ("taylor", 4, 0.05, 1e-5), ("taylor", 6, 0.05, 1e-8)])
def test_reference_converges_to_solve_ivp(method, order, h, tol):
    steps = int(round(2.0 / h))
    traj = LV.reference(LV_VALUES, h=h, steps=steps, method=method, order=order)
    ts = np.arange(steps + 1) * h
    for i in range(2):
        ref = _solve_lv(i, ts[-1], ts)
        assert np.max(np.abs(traj[:, :, i].T - ref)) < tol


def test_rk4_order_of_accuracy():
    errs = []
    for h in (0.2, 0.1):
        steps = int(round(2.0 / h))
        traj = LV.reference(LV_VALUES, h=h, steps=steps, method="rk4")
        errs.append(np.max(np.abs(traj[-1, :, 0] - _solve_lv(0, 2.0, [2.0])[:, 0])))
    assert 12.0 < errs[0] / errs[1] < 20.0  # ~2^4


def test_series_arithmetic():
    a, b = Series([1.0, 2.0], 3), Series([3.0, 0.0, 1.0], 3)
    c = a * b + 2.0 - a
    assert [float(x) for x in c.c] == [4.0, 4.0, 1.0, 2.0]


def test_bad_inputs():
    with pytest.raises(RangeError, match="kill"):
        LOG.reference({"n": [10.0], "r": [0.1], "kill": [0.9]}, h=0.1, steps=2)
    with pytest.raises(ValidationError, match="method"):
        LOG.reference({"n": [10.0], "r": [0.1], "kill": [0.1]}, h=0.1, steps=2, method="midpoint")
    with pytest.raises(ValidationError):
        ODEModel(logistic, states=("n",), state_ranges={})
    with pytest.raises(RangeError, match="state n left"):
        LOG.check_trajectory({"n": np.array([50.0, 120.0])})


def test_depth_per_step_and_horizon():
    # logistic rhs: r*n (1 level), *(1 - 0.01 n) (1 more, the constant 0.01 costs one): d_f = 2.
    assert LOG.depth_per_step(h=0.5, method="euler") == 3
    assert LOG.depth_per_step(h=0.5, method="rk4") == 12
    assert LOG.max_steps(20, h=0.5, method="euler") == 6


def test_numpy_program_equals_reference_and_encrypted_within_bound(backend):
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import preset
    from medtwin.program.executors import get_executor

    vals = {"n": np.array([5.0, 20.0, 60.0, 90.0]), "r": np.array([0.1, 0.3, 0.5, 0.2]),
            "kill": np.array([0.0, 0.1, 0.05, 0.3])}
    ref = LOG.reference(vals, h=0.5, steps=5, method="euler")
    params = preset("test-insecure", depth=20)
    prog = LOG.build_program(8, h=0.5, steps=5, method="euler", record=[1, 5], params=params)
    num = get_executor("numpy").run(prog, vals)
    np.testing.assert_allclose(num["n@5"][:4], ref[5, 0], rtol=1e-12)
    ctx, _ = generate_keys(params.with_depth(prog.depth))
    ex = get_executor(backend, cc=ctx.cc)
    out = ex.run(prog, {k: ctx.encrypt(v) for k, v in vals.items()})
    noise = ex.noise_model()
    for name, want in (("n@1", ref[1, 0]), ("n@5", ref[5, 0])):
        err = np.max(np.abs(ctx.decrypt(out[name], 4) - want))
        assert err <= prog.error_bound(name, noise=noise) <= prog.error_bound(name), name
        assert err < 1e-4


def test_segments_with_key_holder_refresh_pass_the_depth_limit():
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import preset
    from medtwin.program.executors import get_executor

    vals = {"n": np.array([5.0, 40.0]), "r": np.array([0.3, 0.2]), "kill": np.array([0.05, 0.1])}
    steps = 12
    ref = LOG.reference(vals, h=0.5, steps=steps, method="euler")
    seg = LOG.max_steps(18, h=0.5, method="euler")
    assert seg < steps  # one context could not hold the horizon
    params = preset("test-insecure", depth=18)
    ctx, _ = generate_keys(params)
    enc = {k: ctx.encrypt(v) for k, v in vals.items()}
    outs, progs = integrate_encrypted(LOG, get_executor("openfhe", cc=ctx.cc, threads=1), enc, h=0.5, steps=steps,
                                      segment_steps=seg, refresh=key_holder_refresh(ctx, LOG, slots=2),
                                      method="euler", slots=8, params=params)
    assert len(outs) == -(-steps // seg) >= 2
    got = ctx.decrypt(outs[-1]["n"], 2)
    assert np.max(np.abs(got - ref[steps, 0])) < 1e-3
    # the key holder refuses to refresh a state outside its declared range
    with pytest.raises(RangeError, match="state n left"):
        key_holder_refresh(ctx, LOG, slots=2)(ctx.encrypt(np.array([50.0, 130.0])), "n")


@pytest.mark.slow
def test_bootstrapping_extends_the_horizon_without_the_key_holder():
    # OpenFHE CKKS bootstrapping at N = 2^12 (insecure test ring): 11 Euler steps need more levels
    # than the context's 30; one bootstrap (18 levels, ~2e-4 of the range) carries the run on.
    from medtwin.models.ode import bootstrap_context, integrate_bootstrapped

    vals = {"n": np.array([5.0, 40.0]), "r": np.array([0.3, 0.2]), "kill": np.array([0.05, 0.1])}
    steps = 11
    ref = LOG.reference(vals, h=0.5, steps=steps, method="euler")
    b = bootstrap_context(8, levels_after=12)
    assert b.depth == 30 and b.boot_depth == 18
    out, boots = integrate_bootstrapped(LOG, b, {k: b.encrypt(v) for k, v in vals.items()}, h=0.5, steps=steps,
                                        method="euler")
    assert len(boots) == 1
    got = b.decrypt(out["n"], 2)
    assert np.max(np.abs(got - ref[steps, 0])) < 0.03  # range 100; measured 0.015 after four bootstraps


def test_bootstrap_context_refuses_insecure_ring_without_permission(monkeypatch):
    from medtwin.errors import SecurityPolicyError
    from medtwin.models.ode import bootstrap_context

    monkeypatch.delenv("MEDTWIN_ALLOW_INSECURE", raising=False)
    with pytest.raises(SecurityPolicyError):
        bootstrap_context(8)


def test_planned_segments_bootstrap_on_the_compute_node_with_a_stated_bound():
    """Planned programs + OpenFHE CKKS bootstrapping (FIXEDMANUAL, 55/60-bit, two iterations) at
    N = 2^12: the horizon runs past the context's depth without the key holder, and the decrypted
    states lie within the stated bound, which carries every segment's error into the next."""
    from medtwin.models.ode import BootstrapRefresh, bootstrap_context, integrate_planned
    from medtwin.program.executors import get_executor

    b = bootstrap_context(8, levels_after=12, scaling="fixedmanual", scaling_mod_size=55, first_mod_size=60,
                          iterations=2, calibration_trials=16)
    # one bootstrap errs by up to ~1.6e-7 (see bootstrap_context), the bound is 16x the worst seen
    assert b.boot_bound is not None and 0 < b.boot_bound < 1e-5
    vals = {"n": np.array([5.0, 40.0]), "r": np.array([0.3, 0.2]), "kill": np.array([0.05, 0.1])}
    steps = 14
    ref = LOG.reference(vals, h=0.5, steps=steps, method="euler")
    assert LOG.max_steps(b.depth, h=0.5, method="euler") < steps  # one context could not hold it
    rf = BootstrapRefresh(b, LOG)
    ex = get_executor("openfhe", cc=b.cc, correct_scale=True)
    res = integrate_planned(LOG, ex, {k: b.encrypt(v) for k, v in vals.items()}, h=0.5, steps=steps,
                            refresh=rf, method="euler", slots=8, params=rf.plan_params)
    assert rf.count == len(res.segments) - 1 >= 2
    assert res.refresh_levels[0] == 0 and all(lv == b.out_level + 1 for lv in res.refresh_levels[1:])
    got = b.decrypt(res.states["n"], 2)
    err = np.max(np.abs(got - ref[steps, 0]))
    assert err <= res.bound["n"] < 0.05, (err, res.bounds)
    # each segment's bound includes what came before it
    seq = [bd["n"] for bd in res.bounds]
    assert all(x < y for x, y in zip(seq, seq[1:]))
    # a shallow ciphertext is level-reduced first, so it is really bootstrapped
    fresh = b.encrypt(np.full(8, 0.5))
    out = b.raw_bootstrap(fresh)
    assert out.GetLevel() == b.out_level and abs(b.decrypt(out, 1)[0] - 0.5) < b.boot_bound


def test_bootstrap_refresh_needs_a_calibrated_fixedmanual_context():
    from medtwin.models.ode import BootstrapContext, BootstrapRefresh

    auto = BootstrapContext(None, None, 8, 30, 18, True, scaling="flexibleauto", boot_bound=1e-8)
    with pytest.raises(ValidationError, match="FIXEDMANUAL"):
        BootstrapRefresh(auto, LOG)
    raw = BootstrapContext(None, None, 8, 30, 18, True, scaling="fixedmanual")
    with pytest.raises(ValidationError, match="calibrated"):
        BootstrapRefresh(raw, LOG)


def test_planned_segments_with_key_holder_refresh_state_their_bound(backend):
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import preset
    from medtwin.models.ode import integrate_planned
    from medtwin.program.executors import get_executor

    vals = {k: np.asarray(v) for k, v in LV_VALUES.items()}
    steps, h = 6, 0.1
    ref = LV.reference(vals, h=h, steps=steps, method="rk4")
    params = preset("test-insecure", depth=18)
    ctx, _ = generate_keys(params)
    seg = LV.max_steps(18, h=h, method="rk4")
    assert 1 <= seg < steps
    ex = get_executor(backend, cc=ctx.cc, correct_scale=True)
    res = integrate_planned(LV, ex, {k: ctx.encrypt(v) for k, v in vals.items()}, h=h, steps=steps,
                            segment_steps=seg, refresh=key_holder_refresh(ctx, LV, slots=2), method="rk4",
                            slots=8, params=params)
    assert len(res.segments) == -(-steps // seg)
    for i, s in enumerate(LV.states):
        err = np.max(np.abs(ctx.decrypt(res.states[s], 2) - ref[steps, i]))
        assert err <= res.bound[s], (s, err, res.bound)
    # the bound carries the first segment's error into the second
    last_k = steps - seg * (len(res.segments) - 1)
    assert res.bounds[-1]["x"] > res.programs[-1].error_bound(f"x@{last_k}", noise=ex.noise_model())
    with pytest.raises(ValidationError, match="segment_steps"):
        integrate_planned(LV, ex, {k: ctx.encrypt(v) for k, v in vals.items()}, h=h, steps=steps,
                          refresh=key_holder_refresh(ctx, LV), method="rk4", slots=8, params=params)
