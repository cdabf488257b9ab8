"""Decryption policy: flooding noise of the documented size, rounding, minimum cohort size, audit."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medtwin.custody.audit import AuditLog
from medtwin.custody.identity import Identity
from medtwin.custody.policy import (FloodingPolicy, aggregate, flooding_sigma, gaussian_noise,
                                    release)
from medtwin.errors import SecurityPolicyError, ValidationError


def test_sigma_follows_the_documented_rules():
    assert flooding_sigma(1e-3) == pytest.approx(2 ** 15 * 1e-3)
    assert FloodingPolicy(stat_bits=40, queries=4).sigma(1e-6) == pytest.approx(2 * 2 ** 20 * 1e-6)
    assert FloodingPolicy(stat_bits=30, rule="statistical").sigma(1.0) == pytest.approx(2.0 ** 29)
    for bad in (dict(stat_bits=8), dict(stat_bits=65), dict(queries=0), dict(rule="none")):
        with pytest.raises(ValidationError):
            FloodingPolicy(**bad)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "x"):
        with pytest.raises(ValidationError):
            flooding_sigma(bad)


def test_csprng_gaussian_has_the_stated_spread():
    z = gaussian_noise((40001,), 2.5)
    assert z.shape == (40001,)
    assert abs(z.mean()) < 5 * 2.5 / math.sqrt(z.size)
    assert z.std() == pytest.approx(2.5, rel=0.03)
    assert stats.kstest(z / 2.5, "norm").pvalue > 1e-6
    assert not np.array_equal(gaussian_noise((8,), 1.0), gaussian_noise((8,), 1.0))
    assert np.all(gaussian_noise((2, 3), 0.0) == 0)
    with pytest.raises(ValidationError):
        gaussian_noise((3,), -1.0)


def test_release_floods_then_rounds_to_the_precision():
    x = np.full(20000, 7.0)
    sigma = flooding_sigma(1e-4)                       # 3.28
    out = release(x, precision=0.001, error_bound=1e-4, purpose="export")
    assert out.shape == x.shape
    assert np.allclose(out / 0.001, np.round(out / 0.001), atol=1e-6)   # on the grid
    assert (out - x).std() == pytest.approx(sigma, rel=0.03)            # the documented noise
    assert abs((out - x).mean()) < 5 * sigma / math.sqrt(x.size)
    # a tiny bound: the flooding noise is far below the precision, the values come back rounded
    y = np.array([[1.234, 5.0], [0.01, -3.21]])
    assert np.array_equal(release(y, precision=0.01, error_bound=1e-12, purpose="export"),
                          np.round(y / 0.01) * 0.01)
    assert y[0, 0] == 1.234                             # input untouched


@pytest.mark.parametrize("kw", [dict(values=[np.nan]), dict(values=[]), dict(precision=0.0),
                                dict(precision=-1.0), dict(error_bound=0.0), dict(purpose=""),
                                dict(purpose="x" * 80), dict(purpose="bad\nname")])
def test_release_refuses_bad_arguments(kw):
    args = dict(values=[1.0, 2.0], precision=0.1, error_bound=1e-6, purpose="export") | kw
    values = args.pop("values")
    with pytest.raises(ValidationError):
        release(values, **args)


def test_aggregate_refuses_small_cohorts_naming_size_and_minimum(tmp_path):
    me = Identity.generate("dr.a", "researcher")
    log = AuditLog(tmp_path / "a.db")
    vals = np.arange(9 * 3, dtype=float).reshape(9, 3) + 0.123
    with pytest.raises(SecurityPolicyError, match=r"cohort of 9 patients .* minimum cohort size of 10"):
        aggregate(vals, precision=0.1, error_bound=1e-9, log=log, actor=me)
    with pytest.raises(SecurityPolicyError, match=r"cohort of 9 patients .* of 20"):
        aggregate(np.vstack([vals, vals])[:9], precision=0.1, error_bound=1e-9, min_cohort=20)
    e = log.entries()[-1]
    assert e.action == "result.decrypt" and e.objects["outcome"] == "refused" and e.objects["n_patients"] == 9
    with pytest.raises(ValidationError):
        aggregate(vals, precision=0.1, error_bound=1e-9, min_cohort=1)


def test_aggregate_at_the_minimum_is_released_and_logged_without_values(tmp_path):
    me = Identity.generate("dr.a", "researcher")
    log = AuditLog(tmp_path / "a.db")
    rng = np.random.default_rng(3)
    vals = rng.uniform(1, 20, size=(10, 4))
    for stat, want in (("mean", vals.mean(0)), ("median", np.median(vals, 0)), ("sum", vals.sum(0))):
        got = aggregate(vals, precision=0.01, error_bound=1e-12, stat=stat, log=log, actor=me)
        assert np.allclose(got, np.round(want / 0.01) * 0.01, atol=1e-9)
    entries = log.entries(action="result.decrypt")
    assert [e.objects["outcome"] for e in entries if e.objects.get("mode") == "aggregate"] == ["released"] * 3
    sum_entry = [e for e in entries if e.details.get("statistic") == "sum"][0]
    assert sum_entry.details["error_bound"] == pytest.approx(10 * 1e-12)   # bound scaled to the sum
    assert log.scan_for_values(list(vals.ravel()) + list(vals.mean(0)) + list(vals.sum(0))) == []
    with pytest.raises(ValidationError):
        aggregate(vals, precision=0.01, error_bound=1e-6, stat="max")


def test_openfhe_flooding_mode_needs_estimate_in_context():
    """The wheel's NOISE_FLOODING_DECRYPT works at N=2^10, HEStd_NotSet, FIXEDMANUAL, but the noise
    estimate is a context parameter fixed before key generation (hence policy.py's equivalent)."""
    openfhe = pytest.importorskip("openfhe")

    def context(mode, estimate=None):
        p = openfhe.CCParamsCKKSRNS()
        p.SetMultiplicativeDepth(2)
        p.SetScalingModSize(36)
        p.SetFirstModSize(49)
        p.SetSecurityLevel(openfhe.SecurityLevel.HEStd_NotSet)
        p.SetRingDim(1 << 10)
        p.SetScalingTechnique(openfhe.ScalingTechnique.FIXEDMANUAL)
        p.SetKeySwitchTechnique(openfhe.KeySwitchTechnique.HYBRID)
        p.SetDecryptionNoiseMode(openfhe.DecryptionNoiseMode.NOISE_FLOODING_DECRYPT)
        p.SetExecutionMode(mode)
        if estimate is not None:
            p.SetNoiseEstimate(estimate)
        cc = openfhe.GenCryptoContext(p)
        for f in (openfhe.PKESchemeFeature.PKE, openfhe.PKESchemeFeature.KEYSWITCH,
                  openfhe.PKESchemeFeature.LEVELEDSHE):
            cc.Enable(f)
        return cc

    x = np.linspace(-1, 1, 8)

    def square_errors(cc, reps=1):
        kp = cc.KeyGen()
        cc.EvalMultKeyGen(kp.secretKey)
        ct = cc.Encrypt(kp.publicKey, cc.MakeCKKSPackedPlaintext(list(x)))
        sq = cc.Rescale(cc.EvalMult(ct, ct))
        errs = []
        for _ in range(reps):
            pt = cc.Decrypt(sq, kp.secretKey)
            pt.SetLength(len(x))
            errs.append(np.asarray(pt.GetRealPackedValue()) - x * x)
        return pt, np.array(errs)

    pt, _ = square_errors(context(openfhe.ExecutionMode.EXEC_NOISE_ESTIMATION))
    estimate = pt.GetLogError()
    assert 0 < estimate < 20
    _, small = square_errors(context(openfhe.ExecutionMode.EXEC_EVALUATION, estimate), reps=10)
    _, large = square_errors(context(openfhe.ExecutionMode.EXEC_EVALUATION, estimate + 16), reps=10)
    assert large.std() > 100 * small.std()            # the flooding follows the context's estimate
    with pytest.raises(Exception, match="must be 56 or less"):
        context(openfhe.ExecutionMode.EXEC_EVALUATION, 40.0)
