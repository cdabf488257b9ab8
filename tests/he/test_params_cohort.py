"""The cohort-128 preset: moduli, the ring OpenFHE picks for the cohort program's depth, and the
native engine's limit on the first prime."""
from __future__ import annotations

import math

import pytest

from medtwin.errors import SecurityPolicyError, ValidationError
from medtwin.he import params as P


def test_cohort_presets():
    p = P.preset("cohort-128")
    assert (p.security, p.scaling_mod_size, p.first_mod_size, p.dnum) == ("HEStd_128_classic", 49, 60, 6)
    assert p.headroom_bits == 11 and not p.insecure
    t = P.preset("cohort-test-insecure", allow_insecure=True)
    assert (t.scaling_mod_size, t.first_mod_size, t.ring_dim, t.insecure) == (49, 60, 1 << 12, True)
    assert "cohort-128" in P.preset_names()


def test_cohort_test_preset_refused_without_permission(monkeypatch):
    monkeypatch.delenv(P.INSECURE_ENV, raising=False)
    with pytest.raises(SecurityPolicyError):
        P.preset("cohort-test-insecure")


def test_native_supported():
    assert P.native_supported(P.preset("standard-128"))
    assert P.native_supported(P.preset("cohort-128"))
    assert P.native_supported({"first_mod_size": 60, "scaling_mod_size": 59})
    assert not P.native_supported({"first_mod_size": 61, "scaling_mod_size": 40})
    assert not P.native_supported({"first_mod_size": 60, "scaling_mod_size": 61})
    with pytest.raises(ValidationError):
        P.native_supported({"first_mod_size": 52})


def test_openfhe_keeps_n_2_16_at_the_cohort_depth():
    """Depth 28 (the vancomycin cohort program): Q = 60 + 28 x 49 = 1432 bits, P = 5 x 60 with
    6 digits; log QP = 1732 <= 1772, so 128-bit security allows N = 2^16 (no keys made)."""
    pytest.importorskip("openfhe")
    from medtwin.he.openfhe_backend import _make_cc

    cc = _make_cc(P.preset("cohort-128", depth=28))
    assert cc.GetRingDimension() == 1 << 16
    assert math.log2(int(cc.GetElementParams().GetModulus())) == pytest.approx(1432, abs=0.5)
    assert int(cc.GetModulusCKKS()).bit_length() == 60
