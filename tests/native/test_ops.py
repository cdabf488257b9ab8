"""Every engine operation against OpenFHE on the same ciphertexts: bit-exact RNS towers, and
OpenFHE decrypts the engine's output to the same values within CKKS precision."""
from __future__ import annotations

import numpy as np
import pytest

from tests.native.conftest import make_setup

# (ring dimension, depth, dnum); dnum 0 = OpenFHE's default
CASES = [(16, 1, 0), (16, 3, 0), (64, 2, 1), (256, 4, 2), (1024, 10, 3), (2048, 20, 0), (4096, 20, 3),
         (8192, 3, 0)]  # 8192: the first ring on the rescale's fused centring pass (n/2 > 2048)
SLOW_CASES = [(1 << 14, 10, 0), (1 << 16, 20, 0)]


def _check(s, ours, theirs, want, tol):
    np.testing.assert_array_equal(ours.data, s.imp(theirs).data)
    got = s.decrypt(s.exp(ours))
    assert np.max(np.abs(got - want)) < tol


def _run_all(s):
    rng = np.random.default_rng(s.n + s.depth)
    x, y = rng.uniform(-1, 1, s.slots), rng.uniform(-1, 1, s.slots)
    cx, cy = s.encrypt(x), s.encrypt(y)
    a, b = s.imp(cx), s.imp(cy)
    e, cc = s.engine, s.cc
    tol = 1e-4
    _check(s, e.add(a, b), cc.EvalAdd(cx, cy), x + y, tol)
    _check(s, e.sub(a, b), cc.EvalSub(cx, cy), x - y, tol)
    _check(s, e.negate(a), cc.EvalNegate(cx), -x, tol)
    _check(s, e.mul_const(a, -1.75), cc.EvalMult(cx, -1.75), -1.75 * x, tol)
    if s.depth >= 1:  # the fused form the program executor uses for a mul_const read only by its rescale
        for c in (-1.75, 0.3, 9.445580514566371):
            _check(s, e.mul_const_rescale(a, c), cc.Rescale(cc.EvalMult(cx, c)), c * x, tol)
    _check(s, e.add_const(a, 0.3), cc.EvalAdd(cx, 0.3), x + 0.3, tol)
    _check(s, e.mul_plain(a, y), cc.EvalMult(cx, cc.MakeCKKSPackedPlaintext(y.tolist())), x * y, tol)
    _check(s, e.add_plain(a, y), cc.EvalAdd(cx, cc.MakeCKKSPackedPlaintext(y.tolist())), x + y, tol)
    t = e.tensor(a, b)
    np.testing.assert_array_equal(t.data, s.imp(cc.EvalMultNoRelin(cx, cy)).data)
    m = e.mul(a, b)
    _check(s, m, cc.EvalMult(cx, cy), x * y, tol)
    _check(s, e.relinearize(t), cc.EvalMult(cx, cy), x * y, tol)
    r = e.rescale(m)
    cr = cc.Rescale(cc.EvalMult(cx, cy))
    _check(s, r, cr, x * y, tol)
    # the fused form (ModDown and rescale sharing their transforms), alone and with a sum
    _check(s, e.mul_rescale(a, b), cr, x * y, tol)
    _check(s, e.mul_rescale(a, b, r), cc.EvalAdd(cr, cr), 2 * x * y, tol)
    for k in (1, -1, 3):
        _check(s, e.rotate(a, k), cc.EvalRotate(cx, k), np.roll(x, -k), tol)
    for ours, k in zip(e.rotate_many(a, [1, 2, 5]), (1, 2, 5)):
        _check(s, ours, cc.EvalRotate(cx, k), np.roll(x, -k), tol)
    assert e.rotate_many(a, []) == []
    if s.depth >= 2:
        # after a rescale: fewer towers, partial digits
        _check(s, e.mul(r, r), cc.EvalMult(cr, cr), (x * y) ** 2, tol)
        _check(s, e.rotate(r, 2), cc.EvalRotate(cr, 2), np.roll(x * y, -2), tol)
        for ours, k in zip(e.rotate_many(r, [2, -1]), (2, -1)):  # hoisted, with a partial last digit
            _check(s, ours, cc.EvalRotate(cr, k), np.roll(x * y, -k), tol)
        _check(s, e.rescale(e.mul(r, r)), cc.Rescale(cc.EvalMult(cr, cr)), (x * y) ** 2, tol)
        _check(s, e.mul_rescale(r, r), cc.Rescale(cc.EvalMult(cr, cr)), (x * y) ** 2, tol)
        # level alignment: a (level 0) + r (level 1) drops a's top tower like OpenFHE
        _check(s, e.level_down(a, 1), cc.LevelReduce(cx, None, 1), x, tol)
        _check(s, e.add(r, e.level_down(a, 1)), cc.EvalAdd(cr, cc.LevelReduce(cx, None, 1)), x * y + x, tol)


@pytest.mark.parametrize("n,depth,dnum", CASES)
def test_ops_match_openfhe(n, depth, dnum):
    _run_all(make_setup(n, depth, dnum))


@pytest.mark.slow
@pytest.mark.parametrize("n,depth,dnum", SLOW_CASES)
def test_ops_match_openfhe_large(n, depth, dnum):
    _run_all(make_setup(n, depth, dnum))


def test_deep_chain_decrypts():
    """Depth 20: square-and-rescale all the way down; OpenFHE decrypts the engine's result."""
    s = make_setup(1024, 20, 0)
    x = np.random.default_rng(1).uniform(0.9, 1.0, s.slots)
    c = s.imp(s.encrypt(x))
    want = x.copy()
    for _ in range(20):
        c = s.engine.rescale(s.engine.mul(c, c))
        want = want * want
    assert c.towers == 1
    np.testing.assert_allclose(s.decrypt(s.exp(c)), want, atol=1e-3)


def test_encoder_matches_openfhe_slot_order(small):
    """Encode with the engine and with MakeCKKSPackedPlaintext: multiplying the same ciphertext by
    either gives identical towers (so the slot order and the rounding agree)."""
    s = small
    v = np.random.default_rng(2).uniform(-5, 5, s.slots // 2)
    ct = s.encrypt(np.ones(s.slots))
    a = s.imp(ct)
    np.testing.assert_array_equal(s.engine.mul_plain(a, v).data,
                                  s.imp(s.cc.EvalMult(ct, s.cc.MakeCKKSPackedPlaintext(v.tolist()))).data)


def test_encode_refuses_a_tower_count_out_of_range_before_allocating(small):
    from medtwin.errors import ValidationError
    for towers in (0, small.depth + 2, 2 ** 31):  # 2^31 towers would be a 16 TiB output array
        with pytest.raises(ValidationError, match="tower count out of range"):
            small.engine.encode(np.ones(4), towers, 2.0 ** 40, small.slots)
    assert small.engine.encode(np.ones(4), small.depth + 1, 2.0 ** 40, small.slots).shape == (small.depth + 1, small.n)


@pytest.mark.parametrize("n,depth,dnum", [(1024, 10, 3), (4096, 20, 0)])
def test_ops_match_openfhe_portable_path(n, depth, dnum):
    """The same checks with the vector (IFMA / AVX-512) kernels switched off: the portable
    kernels, including the fused NTT epilogues, are bit-exact with OpenFHE too."""
    from medtwin import _core

    _core.set_ifma_enabled(False)
    try:
        _run_all(make_setup(n, depth, dnum))
    finally:
        _core.set_ifma_enabled(True)


@pytest.mark.parametrize("n,depth,dnum", [(1024, 33, 2), (1024, 20, 21)])
def test_ops_match_openfhe_extreme_digit_shapes(n, depth, dnum):
    """Digits of 17 towers (ModUp converts from more than 15 towers into the other digit's) and
    21 digits of one tower (an inner product over more than 15 digits): the exact-accumulation
    kernels hand these to their per-product fallbacks, which must agree with OpenFHE bit for bit."""
    s = make_setup(n, depth, dnum)
    assert s.engine.dnum == dnum
    _run_all(s)
