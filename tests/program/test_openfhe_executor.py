"""The planned programs under OpenFHE (small insecure ring) against numpy, within the stated bound."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

openfhe = pytest.importorskip("openfhe")

from medtwin.errors import ProgramError  # noqa: E402
from medtwin.program import NoiseModel, OpenFHEExecutor, PlanParams, ProgramBuilder, get_executor  # noqa: E402
from tests.program.randprog import ROTS, random_program  # noqa: E402

RING = 1 << 12
SLOTS = RING // 2
DEPTH = 10
SCALE_BITS, FIRST_BITS = 40, 50
PARAMS = PlanParams(SCALE_BITS, FIRST_BITS, RING)


class Ctx:
    def __init__(self):
        p = openfhe.CCParamsCKKSRNS()
        p.SetMultiplicativeDepth(DEPTH)
        p.SetScalingModSize(SCALE_BITS)
        p.SetFirstModSize(FIRST_BITS)
        p.SetRingDim(RING)
        p.SetSecurityLevel(openfhe.SecurityLevel.HEStd_NotSet)
        p.SetScalingTechnique(openfhe.ScalingTechnique.FIXEDMANUAL)
        p.SetKeySwitchTechnique(openfhe.KeySwitchTechnique.HYBRID)
        cc = openfhe.GenCryptoContext(p)
        for f in (openfhe.PKESchemeFeature.PKE, openfhe.PKESchemeFeature.KEYSWITCH,
                  openfhe.PKESchemeFeature.LEVELEDSHE):
            cc.Enable(f)
        kp = cc.KeyGen()
        cc.EvalMultKeyGen(kp.secretKey)
        cc.EvalRotateKeyGen(kp.secretKey, sorted({r % SLOTS for r in ROTS} | {4, 8, 16}))
        self.cc, self.kp = cc, kp
        self.noise = NoiseModel.from_context(cc)

    def enc(self, v):
        return self.cc.Encrypt(self.kp.publicKey, self.cc.MakeCKKSPackedPlaintext(np.asarray(v).tolist(), 1, 0))

    def dec(self, ct):
        pt = self.cc.Decrypt(ct, self.kp.secretKey)
        pt.SetLength(SLOTS)
        return np.asarray(pt.GetRealPackedValue())


@pytest.fixture(scope="module")
def ctx():
    return Ctx()



def test_noise_model_reads_the_primes(ctx):
    nm = ctx.noise
    assert nm.ring_dim == RING and nm.scaling_mod_size == SCALE_BITS
    assert 0 < nm.rescale_rel < 1e-5
    est = NoiseModel.from_params(PARAMS, DEPTH)
    assert est.rescale_rel >= nm.rescale_rel  # the estimate without a context is conservative


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=random_program(slots=SLOTS, max_depth=DEPTH, max_mag=30.0))
def test_random_programs_under_openfhe_within_bound(ctx, case):
    b, inputs, expected, _ = case
    prog = b.build(PARAMS)
    assert prog.depth <= DEPTH
    cts = {k: ctx.enc(v) for k, v in inputs.items()}
    for correct in (True, False):
        ex = OpenFHEExecutor(ctx.cc, correct_scale=correct)
        out = ex.run(prog, cts)
        for name, want in expected.items():
            got = ctx.dec(out[name])
            observed = float(np.max(np.abs(got - want)))
            bound = prog.error_bound(name, noise=ex.noise_model())
            assert observed <= bound, (name, correct, observed, bound)
            # Outputs that cancel exactly (x - x, ...) show only decryption noise: no ratio to check.
            if observed > ctx.noise.fresh:
                assert bound <= 1e3 * observed, (name, correct, observed, bound)


def test_batch_plaintext_cache_and_levels(ctx):
    rng = np.random.default_rng(5)
    b = ProgramBuilder("batch", SLOTS)
    x = b.input("x", (0.5, 2.0))
    w = rng.uniform(0, 1, SLOTS)
    y = b.inverse(x, (0.5, 2.0), tol=1e-5) * w + b.sum_blocks(x * w, 8)
    b.output("y", y)
    prog = b.build(PARAMS)
    xs = [rng.uniform(0.5, 2.0, SLOTS) for _ in range(3)]
    ex = get_executor("openfhe", cc=ctx.cc, threads=2)
    outs = ex.run(prog, {"x": [ctx.enc(v) for v in xs]})["y"]
    assert len(outs) == 3
    bound = prog.error_bound("y", noise=ctx.noise)
    for v, ct in zip(xs, outs):
        assert ct.GetLevel() == prog.ops[prog.output("y").value].level
        want = w / v + np.repeat((v * w).reshape(-1, 8).sum(1), 8)
        got = ctx.dec(ct)
        np.testing.assert_array_less(np.abs(got - want)[::8], bound)


def test_openfhe_errors_name_the_op(ctx):
    b = ProgramBuilder("rot", SLOTS)
    x = b.input("x", (0.0, 1.0))
    b.output("r", b.rotate(x, 7))  # no key for 7
    prog = b.build(PARAMS)
    with pytest.raises(ProgramError, match=r"rotate.*rotation key for 7"):
        OpenFHEExecutor(ctx.cc).run(prog, {"x": ctx.enc(np.zeros(SLOTS))})
    b = ProgramBuilder("lvl", SLOTS)
    x = b.input("x", (0.0, 1.0))
    b.output("y", x * x)
    prog = b.build(PARAMS)
    room = len(OpenFHEExecutor(ctx.cc).noise_model().rescale_factors)
    too_deep = ctx.cc.LevelReduce(ctx.enc(np.zeros(SLOTS)), None, room - prog.depth + 1)
    with pytest.raises(ProgramError, match=f"arrive at level {room - prog.depth + 1}"):
        OpenFHEExecutor(ctx.cc).run(prog, {"x": too_deep})
    unscaled = ctx.cc.EvalMultNoRelin(ctx.enc(np.zeros(SLOTS)), ctx.enc(np.zeros(SLOTS)))
    with pytest.raises(ProgramError, match="scale degree 2"):
        OpenFHEExecutor(ctx.cc).run(prog, {"x": unscaled})
    with pytest.raises(ProgramError, match="needs a crypto context"):
        OpenFHEExecutor()


def test_scale_correction_cancels_fixedmanual_drift(ctx):
    b = ProgramBuilder("drift", SLOTS)
    x = b.input("x", (1.0, 2.0))
    y = x
    for _ in range(8):
        y = y * 1.1 + 0.25
    b.output("y", y * 0.1)
    prog = b.build(PARAMS)
    xs = np.random.default_rng(7).uniform(1.0, 2.0, SLOTS)
    want = xs
    for _ in range(8):
        want = want * 1.1 + 0.25
    want = want * 0.1
    ct = ctx.enc(xs)
    errs = {}
    for correct in (False, True):
        ex = OpenFHEExecutor(ctx.cc, correct_scale=correct)
        errs[correct] = float(np.max(np.abs(ctx.dec(ex.run(prog, {"x": ct})["y"]) - want)))
        assert errs[correct] <= prog.error_bound("y", noise=ex.noise_model())
    # uncorrected, nine rescales each off by |2^40/q - 1| ~ 1e-7 .. 7e-7 relative; corrected, noise only
    assert errs[True] < errs[False] / 5
    assert prog.error_bound("y", noise=OpenFHEExecutor(ctx.cc, correct_scale=True).noise_model()) < \
        prog.error_bound("y", noise=ctx.noise)


def test_inputs_below_level_zero_run_from_their_level(ctx):
    """Ciphertexts that arrive deeper in the chain (e.g. after a bootstrap) run the same plan from
    their level: plaintexts are encoded there, shallower inputs are level-reduced to it, and the
    shifted noise model's bound holds."""
    b = ProgramBuilder("deep", SLOTS)
    x = b.input("x", (0.0, 2.0))
    w = b.input("w", (0.0, 1.0))
    b.output("y", x * x * b.plain(np.linspace(0.5, 1.5, SLOTS)) + w * 0.3 + 0.25)
    prog = b.build(PARAMS)
    ex = OpenFHEExecutor(ctx.cc, correct_scale=True)
    xv, wv = np.linspace(0.1, 1.9, SLOTS), np.linspace(0.0, 1.0, SLOTS)
    deep = ctx.cc.LevelReduce(ctx.enc(xv), None, 2)
    out = ex.run(prog, {"x": deep, "w": ctx.enc(wv)})["y"]
    assert out.GetLevel() == 2 + prog.ops[prog.output("y").value].level
    want = xv * xv * np.linspace(0.5, 1.5, SLOTS) + wv * 0.3 + 0.25
    err = np.abs(ctx.dec(out) - want).max()
    assert err <= prog.error_bound("y", noise=ex.noise_model(2))
    # an input error (say from a bootstrap) is propagated into the bound: x^2 doubles it near 2
    base = prog.error_bound("y", noise=ex.noise_model(2))
    more = prog.error_bound("y", noise=ex.noise_model(2), input_errors={"x": 1e-3})
    assert more - base == pytest.approx(2 * 2.0 * 1.5 * 1e-3, rel=0.05)
    with pytest.raises(ProgramError, match="not an input"):
        prog.error_bound("y", input_errors={"z": 1.0})
