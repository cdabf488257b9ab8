"""Noise accounting of rotations: sources tracked per slot shift (medtwin.program.bounds)."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from medtwin.program import NoiseModel, PlanParams, ProgramBuilder
from medtwin.program.bounds import error_parts

RING = 1 << 12
SLOTS = RING // 2
PARAMS = PlanParams(40, 50, RING)


def _model(**kw) -> NoiseModel:
    return replace(NoiseModel.make(RING, 40, 1e-6), **kw)


def _sum_program(m: int, *, slots: int = SLOTS):
    b = ProgramBuilder(name="rotsum", slots=slots)
    x = b.input("x", range=(-0.2, 0.2))  # the sum of 2048 slots stays within the 2^9 headroom
    s, step = x, 1
    while step < m:
        s = s + b.rotate(s, step)
        step *= 2
    b.output("y", s)
    return b.build(PARAMS)


def _parts(prog, noise, name):
    return error_parts(prog, noise)[prog.output(name).value]


@pytest.mark.parametrize("m", [2, 16, 256, SLOTS])
def test_rotate_and_sum_grows_like_sqrt_m(m):
    # only the fresh encryption's noise: the sum's random part is exactly sqrt(M) times it
    nm = _model(keyswitch=0.0, rotate_bias=0.0)
    prog = _sum_program(m)
    fixed, rnd = _parts(prog, nm, "y")
    assert rnd == pytest.approx(math.sqrt(m) * nm.fresh, rel=1e-9)
    assert fixed == pytest.approx(0.0, abs=1e-15)
    # with every source: the rotations' key-switch noise adds at most a constant factor, and the
    # deterministic rotation bias still adds linearly: bias_k = 2 bias_(k-1) + bias -> (M - 1) bias
    full = _model()
    fixed, rnd = _parts(prog, full, "y")
    assert math.sqrt(m) * full.fresh <= rnd <= 2.0 * math.sqrt(m) * full.fresh
    assert fixed == pytest.approx(full.rotate_bias * (m - 1), rel=1e-9)
    # far below the old linear accounting (M times the fresh noise) for large M
    if m >= 256:
        assert rnd < 0.2 * m * full.fresh


def test_same_shift_still_adds_linearly():
    nm = _model(keyswitch=0.0, rotate_bias=0.0)
    b = ProgramBuilder(name="shift0", slots=SLOTS)
    x = b.input("x", range=(-1.0, 1.0))
    back = b.rotate(b.rotate(x, 5), SLOTS - 5)  # shift 5 + (slots - 5) = 0 mod slots
    b.output("lin", x + back)
    b.output("self", x + b.rotate(x, SLOTS))  # a rotation by `slots` is x itself
    b.output("two", x + b.rotate(x, 5))
    b.output("mixed", (x + b.rotate(x, 5)) + b.rotate(x + b.rotate(x, 5), SLOTS - 5))
    prog = b.build(PARAMS)
    assert _parts(prog, nm, "lin")[1] == pytest.approx(2.0 * nm.fresh, rel=1e-12)
    assert _parts(prog, nm, "self")[1] == pytest.approx(2.0 * nm.fresh, rel=1e-12)
    assert _parts(prog, nm, "two")[1] == pytest.approx(math.sqrt(2.0) * nm.fresh, rel=1e-12)
    # shifts 0, 5, -5, 0: weights 2 at shift 0, 1 at 5 and -5 -> sqrt(4 + 1 + 1)
    assert _parts(prog, nm, "mixed")[1] == pytest.approx(math.sqrt(6.0) * nm.fresh, rel=1e-12)


def test_products_and_constants_keep_shifts():
    nm = _model(keyswitch=0.0, rotate_bias=0.0, rescale_round=0.0, encode=0.0)
    b = ProgramBuilder(name="scaled", slots=SLOTS)
    x = b.input("x", range=(0.0, 1.0))
    s = x * 3.0
    s = s + b.rotate(s, 4)
    b.output("y", s * 0.5)
    prog = b.build(PARAMS)
    rnd = _parts(prog, nm, "y")[1]
    f = NoiseModel.make(RING, 40, 1e-6).factor_range(0)[1]  # rescale factor bound on the sensitivity
    assert 1.5 * math.sqrt(2.0) * nm.fresh <= rnd <= 1.5 * math.sqrt(2.0) * nm.fresh * f ** 2 * (1 + 1e-9)


def test_error_parts_match_the_bound():
    nm = _model()
    prog = _sum_program(64)
    fixed, rnd = _parts(prog, nm, "y")
    ks = nm.k_sigma * math.sqrt(1.0 + nm.decrypt ** 2)
    assert prog.error_bound("y", noise=nm) == pytest.approx(fixed + ks * rnd, rel=1e-12)


openfhe = pytest.importorskip("openfhe")


@pytest.fixture(scope="module")
def ctx():
    p = openfhe.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(2)
    p.SetScalingModSize(40)
    p.SetFirstModSize(50)
    p.SetRingDim(RING)
    p.SetSecurityLevel(openfhe.SecurityLevel.HEStd_NotSet)
    p.SetScalingTechnique(openfhe.ScalingTechnique.FIXEDMANUAL)
    p.SetKeySwitchTechnique(openfhe.KeySwitchTechnique.HYBRID)
    cc = openfhe.GenCryptoContext(p)
    for f in (openfhe.PKESchemeFeature.PKE, openfhe.PKESchemeFeature.KEYSWITCH, openfhe.PKESchemeFeature.LEVELEDSHE):
        cc.Enable(f)
    kp = cc.KeyGen()
    cc.EvalRotateKeyGen(kp.secretKey, [1 << i for i in range(int(math.log2(SLOTS)))])
    return cc, kp


def test_rotate_and_sum_bound_holds_under_openfhe(ctx):
    from medtwin.program import OpenFHEExecutor

    cc, kp = ctx
    prog = _sum_program(SLOTS)
    ex = OpenFHEExecutor(cc)
    nm = NoiseModel.from_context(cc)
    bound = prog.error_bound("y", noise=nm)
    rng = np.random.default_rng(7)
    worst = 0.0
    for _ in range(3):
        v = rng.uniform(-0.2, 0.2, SLOTS)
        ct = cc.Encrypt(kp.publicKey, cc.MakeCKKSPackedPlaintext(v.tolist(), 1, 0))
        out = ex.run(prog, {"x": ct})["y"]
        pt = cc.Decrypt(out, kp.secretKey)
        pt.SetLength(SLOTS)
        got = np.asarray(pt.GetRealPackedValue())
        worst = max(worst, float(np.max(np.abs(got - v.sum()))))
    assert worst <= bound
    # the random part alone is within a small factor of what OpenFHE shows (the linear accounting
    # charged M = 2048 times the fresh noise, about 100x the observed error: 30x is asserted, as
    # OpenFHE's encryption noise is not seeded and the observed maximum varies run to run; once a
    # margin of 100x failed at 97x); the rest of the bound is the rotations' deterministic slot-0
    # term, still added linearly
    fixed, rnd = _parts(prog, nm, "y")
    ks = nm.k_sigma * math.sqrt(1.0 + nm.decrypt ** 2)
    assert ks * rnd < 20.0 * worst
    assert ks * SLOTS * nm.fresh > 30.0 * worst
