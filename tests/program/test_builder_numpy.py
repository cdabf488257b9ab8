from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.polynomial import chebyshev as C

from medtwin.errors import ProgramError, RangeError
from medtwin.program import (CallbackProgress, NumpyExecutor, PlanParams, Program, ProgramBuilder,
                             eval_chebyshev_ps, get_executor, ps_depth)
from medtwin.program import chebyshev as cheb
from tests.program.randprog import random_program

N = 16


def test_example_program_matches_numpy_and_reports():
    b = ProgramBuilder(name="demo", slots=N)
    x = b.input("weight", range=(40.0, 150.0))
    t = b.plain(np.linspace(0.0, 1.0, N))
    y = (x * 0.5 + t) * x - 3.0
    z = b.chebyshev(lambda v: np.exp(-v / 1e4), y, domain=y.range, degree=15, label="exp")
    s = b.sum_blocks(z, block=4)
    b.output("y", y * 1e-3, scale_hint=10.0)
    b.output("z", z)
    b.output("s", s)
    prog = b.build()
    xs = np.linspace(40.0, 150.0, N)
    out = NumpyExecutor().run(prog, {"weight": xs})
    ref_y = (xs * 0.5 + np.linspace(0, 1, N)) * xs - 3.0
    np.testing.assert_allclose(out["y"], ref_y * 1e-3, rtol=1e-13)
    assert np.max(np.abs(out["z"] - np.exp(-ref_y / 1e4))) <= prog.regions[0].approx_error
    blocks = np.exp(-ref_y / 1e4).reshape(-1, 4).sum(axis=1)
    assert np.max(np.abs(out["s"][::4] - blocks)) <= prog.error_bound("s")
    rep = prog.report()
    for word in ("depth", "rotation keys needed: [1, 2]", "exp: chebyshev degree 15", "error bound"):
        assert word in rep
    assert prog.rotation_indices() == [1, 2]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_program())
def test_random_programs_numpy_executor_agrees_with_direct_numpy(case):
    b, inputs, expected, used_cheb = case
    prog = b.build(PlanParams(40, 60))
    out = NumpyExecutor().run(prog, inputs)
    for name, want in expected.items():
        diff = np.max(np.abs(out[name] - want))
        scale = max(1.0, float(np.max(np.abs(want))))
        if used_cheb:
            assert diff <= prog.error_bound(name) + 1e-12 * scale
        else:
            assert diff <= 1e-12 * scale, name
        lo, hi = prog.output_range(name)
        assert np.all(want >= lo - 1e-9 * scale) and np.all(want <= hi + 1e-9 * scale)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_program())
def test_random_programs_are_structurally_valid_and_round_trip(case):
    b, inputs, _, _ = case
    prog = b.build(PlanParams(40, 60))
    prog.validate()
    for op in prog.ops:  # every multiplication is followed by its rescale
        if op.kind in ("mul", "mul_plain", "mul_const"):
            users = [o for o in prog.ops if op.out in o.args]
            assert len(users) == 1 and users[0].kind == ("relin" if op.kind == "mul" else "rescale")
    back = Program.from_json(prog.to_json())
    assert back.digest() == prog.digest()
    assert back.errors == prog.errors and back.ranges == prog.ranges
    a = NumpyExecutor().run(prog, inputs)
    c = NumpyExecutor().run(back, inputs)
    for k in a:
        np.testing.assert_array_equal(a[k], c[k])


def test_batch_runs_per_element_and_progress_reports():
    b = ProgramBuilder("batch", N)
    x = b.input("x", (0.0, 1.0))
    y = b.input("y", (0.0, 1.0))
    b.output("p", x * y + 1.0)
    prog = b.build()
    xs = [np.full(N, 0.5), np.full(N, 0.25)]
    ys = [np.full(N, 0.5), np.full(N, 1.0)]
    seen = []
    out = get_executor("numpy").run(prog, {"x": xs, "y": ys}, progress=CallbackProgress(lambda d, t: seen.append((d, t)), 0.0))
    assert len(out["p"]) == 2
    np.testing.assert_allclose(out["p"][0], 1.25)
    np.testing.assert_allclose(out["p"][1], 1.25)
    assert seen[-1][0] == seen[-1][1] == 2 * len(prog.ops)
    with pytest.raises(ProgramError, match="different lengths"):
        NumpyExecutor().run(prog, {"x": xs, "y": ys[:1]})
    with pytest.raises(ProgramError, match="missing inputs"):
        NumpyExecutor().run(prog, {"x": xs[0]})


@pytest.mark.parametrize("degree", [1, 2, 3, 5, 8, 15, 16, 31, 40, 63, 100, 127])
def test_ps_evaluation_matches_chebval(degree):
    rng = np.random.default_rng(degree)
    c = rng.normal(size=degree + 1) / (1 + np.arange(degree + 1))
    y = np.linspace(-1, 1, 1001)
    got = eval_chebyshev_ps(c, y)
    np.testing.assert_allclose(got, C.chebval(y, c), atol=1e-12 * np.sum(np.abs(c)))


@pytest.mark.parametrize("degree", [7, 8, 15, 16, 31, 32, 63, 64, 100, 127])
def test_ps_depth_in_program_ops(degree):
    b = ProgramBuilder("d", N)
    x = b.input("x", (-1.0, 1.0))
    b.output("y", b.chebyshev(np.sin, x, (-1.0, 1.0), degree))  # domain [-1, 1]: no affine map
    prog = b.build()
    assert prog.depth == ps_depth(degree) <= math.ceil(math.log2(degree + 1)) + 1
    b = ProgramBuilder("d", N)
    x = b.input("x", (0.0, 3.0))
    b.output("y", b.chebyshev(np.sin, x, (0.0, 3.0), degree))
    assert b.build().depth == ps_depth(degree) + 1 <= math.ceil(math.log2(degree)) + 2


def test_degree_selection_meets_tolerance():
    for tol in (1e-3, 1e-6, 1e-9):
        d = cheb.choose_degree(np.exp, (-2.0, 1.0), tol)
        assert cheb.measured_error(np.exp, cheb.interpolate(np.exp, (-2.0, 1.0), d), (-2.0, 1.0)) <= tol
        assert d == 0 or cheb.measured_error(np.exp, cheb.interpolate(np.exp, (-2.0, 1.0), d - 1), (-2.0, 1.0)) > tol / 2
    b = ProgramBuilder("tol", N)
    x = b.input("x", (-2.0, 1.0))
    b.output("e", b.apply(np.exp, x, (-2.0, 1.0), tol=1e-7))
    prog = b.build()
    assert prog.regions[0].approx_error <= 1e-7
    xs = np.linspace(-2, 1, N)
    assert np.max(np.abs(NumpyExecutor().run(prog, {"x": xs})["e"] - np.exp(xs))) <= 1e-7
    with pytest.raises(ProgramError, match="no Chebyshev degree"):
        cheb.choose_degree(np.abs, (-1.0, 1.0), 1e-12, max_degree=63)


@pytest.mark.parametrize("method", ["chebyshev", "newton", "auto"])
def test_inverse(method):
    b = ProgramBuilder("inv", N)
    x = b.input("x", (0.5, 20.0))
    b.output("r", b.inverse(x, (0.5, 20.0), tol=1e-6, method=method))
    prog = b.build()
    xs = np.linspace(0.5, 20.0, N)
    got = NumpyExecutor().run(prog, {"x": xs})["r"]
    assert np.max(np.abs(got - 1 / xs)) <= 1e-6
    assert prog.regions[0].approx_error <= 1e-6
    assert prog.regions[0].method == ("newton" if method == "newton" else prog.regions[0].method)
    with pytest.raises(ProgramError, match="must not contain 0"):
        b.inverse(x, (-1.0, 1.0))


def test_level_alignment_inserts_level_down():
    b = ProgramBuilder("align", N)
    x = b.input("x", (0.0, 1.0))
    y = b.input("y", (0.0, 1.0))
    deep = (x * x) * x  # level 2
    b.output("s", deep + y)
    b.output("p", deep * y)
    b.output("q", deep - y * 0.5)  # y*0.5 at level 1 -> aligned to 2
    prog = b.build()
    downs = [op for op in prog.ops if op.kind == "level_down"]
    # x to level 1 (for x^2 * x), y to level 2 (one copy shared by s and p), y*0.5 from 1 to 2
    got = sorted((prog.ops[d.args[0]].name or prog.ops[d.args[0]].kind, prog.ops[d.args[0]].level, d.level)
                 for d in downs)
    assert got == [("rescale", 1, 2), ("x", 0, 1), ("y", 0, 2)]
    for op in prog.ops:
        if op.kind in ("add", "sub", "mul"):
            assert prog.ops[op.args[0]].level == prog.ops[op.args[1]].level == op.level
    assert prog.depth == 3
    xs, ys = np.linspace(0, 1, N), np.linspace(1, 0, N)
    out = NumpyExecutor().run(prog, {"x": xs, "y": ys})
    np.testing.assert_allclose(out["q"], xs ** 3 - ys * 0.5)


def test_constant_multiplications_by_small_integers_cost_no_level():
    b = ProgramBuilder("ints", N)
    x = b.input("x", (0.0, 1.0))
    b.output("y", x * 3.0 - x * 2.0 + x * -1.0 + x * 0.0)
    prog = b.build()
    assert prog.depth == 0 and prog.op_counts()["mul_const"] == 0
    np.testing.assert_allclose(NumpyExecutor().run(prog, {"x": np.linspace(0, 1, N)})["y"], 0.0, atol=1e-15)


def test_chebyshev_input_outside_domain_is_rejected():
    b = ProgramBuilder("dom", N)
    x = b.input("x", (0.0, 2.0))
    with pytest.raises(ProgramError, match=r"approximation 'exp'.*not inside its domain"):
        b.chebyshev(np.exp, x * 2.0, domain=(0.0, 2.0), degree=7, label="exp")


def test_headroom_overflow_is_rejected():
    b = ProgramBuilder("big", N)
    x = b.input("x", (0.0, 100.0))
    b.output("sq", x * x)  # up to 1e4 > 2^(49-40-1) = 256
    with pytest.raises(ProgramError, match=r"output 'sq' may reach .* above the headroom"):
        b.build()
    assert b.build(PlanParams(40, 60)).depth == 1
    assert b.build(headroom_bits=20).depth == 1
    b2 = ProgramBuilder("big2", N)
    x = b2.input("x", (0.0, 100.0))
    b2.output("small", (x * x) * 1e-3)  # intermediate 1e4 at level 1 of depth 2: 2^(49+40-40-1) fits
    assert b2.build().depth == 2


def test_assume_range_narrows_and_is_recorded():
    b = ProgramBuilder("assume", N)
    x = b.input("x", (0.0, 10.0))
    y = b.assume_range(x * x, (0.0, 50.0))
    assert y.range == (0.0, 50.0)
    b.output("y", y * 0.1)
    prog = b.build()
    assert prog.output_range("y") == pytest.approx((0.0, 5.0))
    assert any(a.reason == "user" for a in prog.assumptions)
    with pytest.raises(ProgramError, match="does not meet"):
        b.assume_range(x, (20.0, 30.0))


def test_poly_and_poly_plain():
    rng = np.random.default_rng(3)
    b = ProgramBuilder("poly", N)
    x = b.input("x", (0.0, 1.0))
    cs = [rng.uniform(-1, 1, N) for _ in range(20)]
    b.output("pp", b.poly_plain(x, cs))
    b.output("p", b.poly(x, [1.0, -2.0, 0.0, 0.5]))
    prog = b.build()
    xs = np.linspace(0, 1, N)
    out = NumpyExecutor().run(prog, {"x": xs})
    np.testing.assert_allclose(out["pp"], sum(c * xs ** j for j, c in enumerate(cs)), atol=1e-12)
    np.testing.assert_allclose(out["p"], 1 - 2 * xs + 0.5 * xs ** 3, atol=1e-14)
    assert prog.depth <= math.ceil(math.log2(20)) + 1


def test_sum_blocks_broadcast():
    b = ProgramBuilder("sb", N)
    x = b.input("x", (0.0, 1.0))
    b.output("first", b.sum_blocks(x, 4))
    b.output("all", b.sum_blocks(x, 4, broadcast=True))
    prog = b.build()
    xs = np.random.default_rng(1).uniform(0, 1, N)
    out = NumpyExecutor().run(prog, {"x": xs})
    sums = xs.reshape(-1, 4).sum(1)
    np.testing.assert_allclose(out["first"][::4], sums)
    np.testing.assert_allclose(out["all"], np.repeat(sums, 4))
    with pytest.raises(ProgramError, match="power of two"):
        b.sum_blocks(x, 3)


def test_serialisation_digest_is_stable_and_sensitive():
    def make(c):
        b = ProgramBuilder("dig", N)
        x = b.input("x", (0.0, 1.0))
        b.output("y", b.chebyshev(np.exp, x * c, (0.0, 1.0), 7, label="exp"))
        return b.build()

    p1, p2, p3 = make(0.5), make(0.5), make(0.25)
    assert p1.digest() == p2.digest() != p3.digest()
    d = json.loads(p1.to_json())
    assert Program.from_dict(d).digest() == p1.digest()
    assert Program.from_dict(json.loads(json.dumps(d))) == p1
    d["ops"][-1]["const"] = 1.5 if d["ops"][-1].get("const") is not None else None
    d2 = json.loads(p1.to_json())
    d2["ops"][1]["args"] = [5]
    with pytest.raises(ProgramError):
        Program.from_dict(d2)
    with pytest.raises(ProgramError, match="IR version"):
        Program.from_dict({"ir_version": 99})
    with pytest.raises(ProgramError, match="does not parse"):
        Program.from_json("{not json")


def test_bad_inputs_are_named():
    b = ProgramBuilder("bad", N)
    with pytest.raises(ProgramError, match="power of two"):
        ProgramBuilder("x", 12)
    x = b.input("x", (0.0, 1.0))
    with pytest.raises(ProgramError, match="declared twice"):
        b.input("x", (0.0, 1.0))
    with pytest.raises(ProgramError, match="shape"):
        x * np.ones(3)
    with pytest.raises(ProgramError, match="no outputs"):
        b.build()
    b.output("x", x)
    prog = b.build()
    with pytest.raises(RangeError, match="'x' lies outside"):
        prog.check_inputs({"x": np.full(N, 2.0)})
    prog.check_inputs({"x": np.full(N, 0.5)})
    with pytest.raises(ProgramError, match="unknown executor"):
        get_executor("nope")
