"""Contexts whose towers are wider than the IFMA (< 2^50) kernels take: a 60-bit first prime q0
with 49-bit scaling primes (the ``cohort-128`` shape), and scaling primes of 50..59 bits. Every
operation is bit-exact with OpenFHE at every level down to the last (only q0 left), on the vector
kernels and on the portable ones, and whole planned programs give the same towers on both backends."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from medtwin import _core
from medtwin.he.native import NativeExecutor
from medtwin.program import OpenFHEExecutor, PlanParams, ProgramBuilder
from tests.native.conftest import make_setup
from tests.native.test_ops import _run_all
from tests.program.randprog import ROTS, random_program

SCALE, FIRST = 49, 60

# (ring dimension, depth, dnum): the digits put q0 alone, with scaling primes, or in every digit
CASES = [(16, 1, 0), (64, 2, 1), (256, 4, 2), (1024, 6, 3), (2048, 10, 0),
         (4096, 28, 6)]  # the last: cohort-128's towers and digits (cohort-test-insecure's ring)


@pytest.fixture(params=[True, False], ids=["vector", "portable"])
def kernels(request):
    """Run a test on the IFMA / AVX-512 kernels (where the CPU has them) and on the portable ones."""
    _core.set_ifma_enabled(request.param)
    try:
        yield request.param
    finally:
        _core.set_ifma_enabled(True)


def test_context_has_a_wide_first_prime():
    s = make_setup(64, 2, 1, scaling=SCALE, first=FIRST)
    assert not s.engine.all_moduli_below_2_50
    q = s.engine.moduli_q
    assert int(q[0]).bit_length() == FIRST
    assert all(int(v) < 1 << 50 for v in q[1:])  # the scaling primes stay on the IFMA kernels


@pytest.mark.parametrize("n,depth,dnum", CASES)
def test_ops_match_openfhe_wide_q0(n, depth, dnum, kernels):
    _run_all(make_setup(n, depth, dnum, scaling=SCALE, first=FIRST))


@pytest.mark.slow
def test_ops_match_openfhe_cohort_128_ring():
    """cohort-128 itself (N = 2^16, depth 28, dnum 6) with HEStd_NotSet so the test picks the ring."""
    _run_all(make_setup(1 << 16, 28, 6, scaling=SCALE, first=FIRST))


@pytest.mark.parametrize("scaling", [50, 52, 55, 59])
def test_ops_match_openfhe_wide_scaling_primes(scaling, kernels):
    """Scaling primes at and above the IFMA bound: every Q tower on the 64-bit kernels."""
    _run_all(make_setup(256, 3, 2, scaling=scaling, first=FIRST))


def _eq(s, ours, theirs, what):
    assert np.array_equal(ours.data, s.imp(theirs).data), what


@pytest.mark.parametrize("n,depth,dnum", [(64, 4, 2), (1024, 5, 0)])
def test_every_level_down_to_q0(n, depth, dnum, kernels):
    """At each level (towers depth+1 .. 1): add, mul_plain, mul_const, tensor, tensor + relin,
    rotation, rescale and level alignment against OpenFHE; the last level holds only q0."""
    s = make_setup(n, depth, dnum, scaling=SCALE, first=FIRST)
    e, cc = s.engine, s.cc
    rng = np.random.default_rng(n + depth)
    x, y = rng.uniform(-1, 1, s.slots), rng.uniform(-1, 1, s.slots)
    cx0, cy0 = s.encrypt(x), s.encrypt(y)
    for lv in range(depth + 1):
        cx = cc.LevelReduce(cx0, None, lv) if lv else cx0
        cy = cc.LevelReduce(cy0, None, lv) if lv else cy0
        a, b = s.imp(cx), s.imp(cy)
        assert a.towers == depth + 1 - lv
        tag = f"level {lv}"
        _eq(s, e.add(a, b), cc.EvalAdd(cx, cy), f"add at {tag}")
        _eq(s, e.mul_plain(a, y), cc.EvalMult(cx, cc.MakeCKKSPackedPlaintext(y.tolist(), 1, lv)), f"mul_plain at {tag}")
        for c in (-1.75, 0.3, -100.3):
            _eq(s, e.mul_const(a, c), cc.EvalMult(cx, c), f"mul_const {c} at {tag}")
        _eq(s, e.tensor(a, b), cc.EvalMultNoRelin(cx, cy), f"tensor at {tag}")
        m = e.mul(a, b)
        cm = cc.EvalMult(cx, cy)
        _eq(s, m, cm, f"tensor+relin at {tag}")
        for k in (1, -1, 3):
            _eq(s, e.rotate(a, k), cc.EvalRotate(cx, k), f"rotate {k} at {tag}")
        if lv < depth:
            r = e.rescale(m)
            cr = cc.Rescale(cm)
            _eq(s, r, cr, f"rescale at {tag}")
            # level alignment: a (level lv) + r (level lv + 1) drops a's top tower like OpenFHE
            _eq(s, e.level_down(a, 1), cc.LevelReduce(cx, None, 1), f"level_down at {tag}")
            _eq(s, e.add(r, a), cc.EvalAdd(cr, cc.LevelReduce(cx, None, 1)), f"aligned add at {tag}")
        else:
            assert a.towers == 1  # only q0 (a product's scale 2^98 no longer fits it: decrypt a sum)
            got = s.decrypt(s.exp(e.add(e.rotate(a, 1), b)))
            assert float(np.max(np.abs(got - (np.roll(x, -1) + y)))) < 1e-3


def test_deep_chain_to_q0_decrypts(kernels):
    s = make_setup(1024, 8, 0, scaling=SCALE, first=FIRST)
    x = np.random.default_rng(1).uniform(0.9, 1.0, s.slots)
    ct = s.encrypt(x)
    c = s.imp(ct)
    want = x.copy()
    for _ in range(8):
        c = s.engine.rescale(s.engine.mul(c, c))
        ct = s.cc.Rescale(s.cc.EvalMult(ct, ct))
        want = want * want
    assert c.towers == 1
    _eq(s, c, ct, "square-and-rescale chain")
    np.testing.assert_allclose(s.decrypt(s.exp(c)), want, atol=1e-3)


@pytest.mark.parametrize("scaling", [40, 49, 55])
def test_mul_const_rounds_like_openfhe(scaling):
    """OpenFHE rounds c * 2^p + 0.5 in double precision before truncating: negative constants and
    products above 2^52 must give the same towers (they did not before this was matched)."""
    s = make_setup(64, 2, 0, scaling=scaling, first=FIRST)
    x = np.random.default_rng(4).uniform(-1, 1, s.slots)
    cx = s.encrypt(x)
    a = s.imp(cx)
    for c in (-1.75, 1.75, -3.3, -100.0, -100.3, 100.3, -1024.5, 1e6 + 0.1, -1e6 - 0.7, -0.123456789):
        _eq(s, s.engine.mul_const(a, c), s.cc.EvalMult(cx, c), f"mul_const {c} at {scaling} bits")


RING = 1 << 10
SLOTS = RING // 2
DEPTH = 8
PARAMS = PlanParams(SCALE, FIRST, RING)


@pytest.fixture(scope="module")
def setup():
    return make_setup(RING, DEPTH, 0, scaling=SCALE, first=FIRST,
                      rotations=tuple(sorted({r % SLOTS for r in ROTS} | {4, 8})))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=random_program(slots=SLOTS, max_depth=DEPTH, max_mag=30.0))
def test_random_programs_match_openfhe_wide_q0(setup, case):
    b, inputs, expected, _ = case
    prog = b.build(PARAMS)
    cts = {k: setup.encrypt(v) for k, v in inputs.items()}
    ex = NativeExecutor(engine=setup.engine)
    ours = ex.run(prog, cts)
    theirs = OpenFHEExecutor(setup.cc, threads=1).run(prog, cts)
    for name, want in expected.items():
        assert np.array_equal(setup.imp(ours[name]).data, setup.imp(theirs[name]).data), name
        got = setup.decrypt(ours[name])
        assert float(np.max(np.abs(got - want))) <= prog.error_bound(name, noise=ex.noise_model())


def test_planned_program_with_scale_correction_wide_q0(setup):
    """A program that uses every level (down to q0), with and without scale correction."""
    rng = np.random.default_rng(9)
    b = ProgramBuilder("wide", SLOTS)
    x = b.input("x", (0.5, 1.0))
    w = rng.uniform(0, 1, SLOTS)
    y = x
    for _ in range(DEPTH - 3):
        y = y * x
    b.output("y", (y * w + b.rotate(x, 1) * -0.7 + 0.1) * x * 0.9)
    prog = b.build(PARAMS)
    assert prog.depth == DEPTH  # the result is at the last level: only q0
    ct = setup.encrypt(rng.uniform(0.5, 1.0, SLOTS))
    for corr in (False, True):
        ours = NativeExecutor(engine=setup.engine, correct_scale=corr).run(prog, {"x": ct})["y"]
        theirs = OpenFHEExecutor(setup.cc, correct_scale=corr).run(prog, {"x": ct})["y"]
        np.testing.assert_array_equal(setup.imp(ours).data, setup.imp(theirs).data)


@pytest.mark.parametrize("scaling,first", [(40, 49), (SCALE, FIRST)])
def test_add_const_to_a_degree_2_product_matches_openfhe(scaling, first):
    """OpenFHE scales a constant added to an unrescaled product by the prime the next rescale drops
    (round(c 2^p) q_last), not by 2^(2p): the engine must do the same, or every tower differs."""
    import openfhe

    s = make_setup(64, 4, 1, scaling=scaling, first=first)
    x = np.linspace(-1, 1, 32)
    ct = s.cc.Encrypt(s.kp.publicKey, s.cc.MakeCKKSPackedPlaintext(x.tolist()))
    ct2 = s.cc.EvalMultNoRelin(ct, ct)
    for c in (0.3, -0.3, -3.7123456789, 1e-3, -1234.56789):
        want = s.engine.import_ciphertext(openfhe.Serialize(s.cc.EvalAdd(ct2, c), openfhe.BINARY)).data
        got = s.engine.add_const(s.engine.import_ciphertext(openfhe.Serialize(ct2, openfhe.BINARY)), c).data
        assert np.array_equal(want, got), c


@pytest.mark.parametrize("degree", [1, 2])
def test_add_const_rounds_ties_like_openfhe(degree):
    """|c| 2^p between 2^52 and 2^53 (49-bit scale, |c| in [8, 16)): OpenFHE rounds |c| 2^p + 0.5
    in double precision, a tie that goes to even, so an odd |c| 2^p is rounded up by one. A whole
    cohort program once differed from OpenFHE in every tower from such a constant on (9.4455...)."""
    import openfhe

    s = make_setup(64, 4, 1, scaling=SCALE, first=FIRST)
    x = np.linspace(-1, 1, 32)
    ct = s.cc.Encrypt(s.kp.publicKey, s.cc.MakeCKKSPackedPlaintext(x.tolist()))
    if degree == 2:
        ct = s.cc.EvalMultNoRelin(ct, ct)
    odd = (2 ** 52 + 2 * 12345 + 1) / 2 ** SCALE  # |c| 2^p odd, in [2^52, 2^53)
    even = (2 ** 52 + 2 * 12345) / 2 ** SCALE
    consts = [9.445580514566371, odd, even, -odd, -even, 15.999999999999998, 2 ** 53 / 2 ** SCALE + 2 ** -SCALE * 2,
              0.5 + 2 ** -SCALE / 2, -(0.5 + 2 ** -SCALE / 2), 1e6 + 0.25]
    assert (int(odd * 2 ** SCALE) & 1) == 1
    base = s.engine.import_ciphertext(openfhe.Serialize(ct, openfhe.BINARY))
    for c in consts:
        want = s.engine.import_ciphertext(openfhe.Serialize(s.cc.EvalAdd(ct, c), openfhe.BINARY)).data
        got = s.engine.add_const(base, c).data
        assert np.array_equal(want, got), c
