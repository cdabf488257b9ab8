"""Random programs for property tests: built with the builder and, independently, evaluated
directly with numpy on the same inputs."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from medtwin.program import ProgramBuilder, ps_depth

KINDS = ("add", "sub", "mul", "neg", "mul_const", "add_const", "mul_plain", "add_plain", "rotate", "cheb", "square")
ROTS = (1, 2, 3, 5, -1)


@st.composite
def random_program(draw, *, slots: int = 16, n_inputs: int | None = None, n_ops: int | None = None,
                   max_depth: int = 6, max_mag: float = 40.0, allow_cheb: bool = True,
                   rots: tuple[int, ...] = ROTS):
    """(program, inputs, expected outputs, whether any approximation is used)."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_in = n_inputs if n_inputs is not None else draw(st.integers(1, 3))
    n_op = n_ops if n_ops is not None else draw(st.integers(1, 12))
    b = ProgramBuilder(name=f"rand{seed}", slots=slots)
    exprs, vals, depth = [], [], []
    inputs = {}
    for i in range(n_in):
        lo = float(draw(st.sampled_from([-1.0, -2.0, 0.0, 0.5])))
        hi = lo + float(draw(st.sampled_from([0.5, 1.0, 2.0])))
        x = rng.uniform(lo, hi, slots)
        exprs.append(b.input(f"x{i}", range=(lo, hi)))
        vals.append(x)
        depth.append(0)
        inputs[f"x{i}"] = x
    used_cheb = False
    kinds = [k for k in KINDS if allow_cheb or k != "cheb"]
    for _ in range(n_op):
        kind = draw(st.sampled_from(kinds))
        i = draw(st.integers(0, len(exprs) - 1))
        j = draw(st.integers(0, len(exprs) - 1))
        a, va, b_, vb = exprs[i], vals[i], exprs[j], vals[j]
        c = float(draw(st.sampled_from([0.5, -1.25, 2.0, 3.0, 0.1, -0.7])))
        if kind == "add":
            e, v, d = a + b_, va + vb, max(depth[i], depth[j])
        elif kind == "sub":
            e, v, d = a - b_, va - vb, max(depth[i], depth[j])
        elif kind == "mul":
            e, v, d = a * b_, va * vb, max(depth[i], depth[j]) + 1
        elif kind == "square":
            e, v, d = b.square(a), va * va, depth[i] + 1
        elif kind == "neg":
            e, v, d = -a, -va, depth[i]
        elif kind == "mul_const":
            e, v, d = a * c, va * c, depth[i] + 1
        elif kind == "add_const":
            e, v, d = c - a, c - va, depth[i]
        elif kind == "mul_plain":
            p = rng.uniform(-1.5, 1.5, slots)
            e, v, d = a * p, va * p, depth[i] + 1
        elif kind == "add_plain":
            p = rng.uniform(-1.5, 1.5, slots)
            e, v, d = p + a, p + va, depth[i]
        elif kind == "rotate":
            k = draw(st.sampled_from(rots))
            e, v, d = b.rotate(a, k), np.roll(va, -k), depth[i]
        else:  # cheb
            lo, hi = a.range
            if hi - lo < 1e-6:
                continue
            fn = draw(st.sampled_from(["sin", "exp", "tanh"]))
            f = {"sin": np.sin, "exp": lambda t: np.exp(t / max(1.0, abs(lo), abs(hi))), "tanh": np.tanh}[fn]
            deg = draw(st.sampled_from([3, 7, 12]))
            e = b.chebyshev(f, a, domain=(lo, hi), degree=deg, label=fn)
            v = f(va)
            d = depth[i] + ps_depth(deg) + 1
            used_cheb = True
        lo, hi = e.range
        if max(abs(lo), abs(hi)) > max_mag or d > max_depth:
            continue
        exprs.append(e)
        vals.append(v)
        depth.append(d)
    n_out = draw(st.integers(1, min(3, len(exprs))))
    picks = sorted(set(draw(st.lists(st.integers(n_in if len(exprs) > n_in else 0, len(exprs) - 1),
                                     min_size=n_out, max_size=n_out))))
    expected = {}
    for k, p in enumerate(picks):
        b.output(f"y{k}", exprs[p])
        expected[f"y{k}"] = vals[p]
    return b, inputs, expected, used_cheb
