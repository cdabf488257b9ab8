from __future__ import annotations

import numpy as np
import pytest

from medtwin.errors import ValidationError
from medtwin.study.layout import SlotLayout
from medtwin.study.scenario import Regimen, Scenario


@pytest.mark.parametrize("P,S,T,slots", [(1, 1, 1, 16), (7, 3, 5, 64), (1000, 3, 37, 32768), (13, 4, 16, 256)])
def test_layout_round_trip(P, S, T, slots):
    lay = SlotLayout(P, S, T, slots)
    a = np.random.default_rng(0).random((P, S, T))
    packed = lay.spread_pairs(a)
    assert packed.shape == (lay.n_ciphertexts, slots)
    np.testing.assert_array_equal(lay.gather(packed), a)
    # every ciphertext holds whole patients, so the scenario pattern repeats
    sc_idx = lay._slot_coords()[1]
    assert (sc_idx == sc_idx[0]).all()
    pv = lay.spread_patients(np.arange(P, dtype=float))
    np.testing.assert_array_equal(lay.gather(pv)[:, 0, 0], np.arange(P))
    assert lay.valid_mask().sum() == P * S * T


def test_layout_rejects_what_does_not_fit():
    with pytest.raises(ValidationError):
        SlotLayout(1, 1, 100, 64)
    with pytest.raises(ValidationError):
        SlotLayout(0, 1, 1, 64)


def test_scenario_validation_and_digest():
    r = Regimen(dose_mg=300, interval_h=12, count=4)
    s = Scenario("a", r)
    assert s.digest() == Scenario.from_dict(s.to_dict()).digest()
    assert s.digest() != Scenario("a", r, adherence=0.8).digest()
    for bad in (dict(dose_mg=-1, interval_h=12, count=1), dict(dose_mg=10, interval_h=0.1, count=1),
                dict(dose_mg=10, interval_h=12, count=0), dict(dose_mg=10, interval_h=12, count=1, route="im")):
        with pytest.raises(ValidationError):
            Regimen(**bad)
    with pytest.raises(ValidationError, match="adherence"):
        Scenario("b", r, adherence=1.5)
    with pytest.raises(ValidationError, match="missed dose"):
        Scenario("b", r, missed_doses=(9,))


def test_adherence_draw_is_reproducible_per_pair():
    s = Scenario("a", Regimen(dose_mg=300, interval_h=12, count=50), adherence=0.7, seed=3)
    a, b = s.taken_fraction(5), s.taken_fraction(5)
    np.testing.assert_array_equal(a, b)
    assert 0.4 < a.mean() < 0.95
    assert not np.array_equal(a, s.taken_fraction(6))
