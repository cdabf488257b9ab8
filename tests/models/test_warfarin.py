from __future__ import annotations

import numpy as np
import pytest

from medtwin.errors import RangeError, ValidationError
from medtwin.models.warfarin import COVARIATES, IWPC, age_in_decades, covariates_from_record
from medtwin.twin.record import PatientRecord


def _patient(**kw):
    c = {k: 0.0 for k in COVARIATES}
    c.update(age_decades=6.0, height_cm=175.0, weight_kg=80.0)
    c.update(kw)
    return {k: np.array([v], dtype=float) for k, v in c.items()}


def _stack(patients):
    return {k: np.concatenate([p[k] for p in patients]) for k in COVARIATES}


def test_published_coefficients():
    # IWPC, N Engl J Med 2009;360:753-764, Supplementary Appendix (pharmacogenetic algorithm).
    c = IWPC.coefficients
    assert IWPC.intercept == 5.6044
    assert (c["age_decades"], c["height_cm"], c["weight_kg"]) == (-0.2614, 0.0087, 0.0128)
    assert (c["vkorc1_ga"], c["vkorc1_aa"], c["vkorc1_unknown"]) == (-0.8677, -1.6974, -0.4854)
    assert (c["cyp2c9_12"], c["cyp2c9_13"], c["cyp2c9_22"], c["cyp2c9_23"], c["cyp2c9_33"],
            c["cyp2c9_unknown"]) == (-0.5211, -0.9357, -1.0616, -1.9206, -2.3312, -0.2188)
    assert (c["race_asian"], c["race_black"], c["race_missing_or_mixed"]) == (-0.1092, -0.2760, -0.1032)
    assert (c["enzyme_inducer"], c["amiodarone"]) == (1.1816, -0.5503)


def test_worked_examples_by_hand():
    # Reference patient (white, 60-69 years, 175 cm, 80 kg, VKORC1 G/G, CYP2C9 *1/*1, no drugs):
    # 5.6044 - 6*0.2614 + 175*0.0087 + 80*0.0128 = 6.5825 -> 43.33 mg/week.
    r = IWPC.reference(_patient())
    assert r["sqrt_dose"][0] == pytest.approx(6.5825, abs=1e-12)
    assert r["weekly_dose_mg"][0] == pytest.approx(6.5825 ** 2, rel=1e-12)
    # Sensitive patient: 70-79 years, 160 cm, 60 kg, Asian, VKORC1 A/A, CYP2C9 *1/*3, amiodarone:
    # 5.6044 - 1.8298 + 1.392 + 0.768 - 1.6974 - 0.9357 - 0.1092 - 0.5503 = 2.642 -> 6.98 mg/week.
    r = IWPC.reference(_patient(age_decades=7.0, height_cm=160.0, weight_kg=60.0, race_asian=1.0,
                                vkorc1_aa=1.0, cyp2c9_13=1.0, amiodarone=1.0))
    assert r["sqrt_dose"][0] == pytest.approx(2.642, abs=1e-12)
    assert r["daily_dose_mg"][0] == pytest.approx(2.642 ** 2 / 7, rel=1e-12)
    assert bool(r["valid"][0])


def test_genotype_ordering_matches_the_paper():
    # Each variant lowers the dose; *3/*3 lowest among CYP2C9, A/A lowest among VKORC1.
    base = IWPC.reference(_patient())["weekly_dose_mg"][0]
    doses = {k: IWPC.reference(_patient(**{k: 1.0}))["weekly_dose_mg"][0]
             for k in ("cyp2c9_12", "cyp2c9_13", "cyp2c9_22", "cyp2c9_23", "cyp2c9_33")}
    assert all(d < base for d in doses.values())
    assert list(doses) == sorted(doses, key=lambda k: -doses[k])
    assert IWPC.reference(_patient(enzyme_inducer=1.0))["weekly_dose_mg"][0] > base


def test_age_in_decades_and_record_minimisation():
    assert list(age_in_decades([18, 29.9, 30, 65, 99])) == [1, 2, 3, 6, 9]
    rec = PatientRecord(source_id="p1", age_years=67.0, sex="female", weight_kg=72.0, height_cm=165.0,
                        cyp2c9="*1/*3", vkorc1="G/A", race="black", amiodarone=True, enzyme_inducer=False)
    cov = covariates_from_record(rec)
    assert list(cov) == list(COVARIATES)
    assert cov["age_decades"] == 6.0 and cov["vkorc1_ga"] == 1.0 and cov["cyp2c9_13"] == 1.0
    assert cov["race_black"] == 1.0 and cov["amiodarone"] == 1.0 and cov["vkorc1_unknown"] == 0.0
    rec2 = PatientRecord(source_id="p2", age_years=50.0, sex="male", weight_kg=90.0, height_cm=180.0)
    cov2 = covariates_from_record(rec2)
    assert cov2["vkorc1_unknown"] == 1.0 and cov2["cyp2c9_unknown"] == 1.0 and cov2["race_missing_or_mixed"] == 1.0


def test_ranges_and_indicator_groups_refused_without_values():
    with pytest.raises(RangeError, match="weight_kg") as e:
        IWPC.reference(_patient(weight_kg=251.5))
    assert "251" not in str(e.value)
    with pytest.raises(ValidationError, match="VKORC1"):
        IWPC.reference(_patient(vkorc1_ga=1.0, vkorc1_aa=1.0))
    with pytest.raises(ValidationError, match="indicator"):
        IWPC.reference(_patient(amiodarone=0.5))
    with pytest.raises(ValidationError, match="whole"):
        IWPC.reference(_patient(age_decades=6.5))
    with pytest.raises(ValidationError, match="needs covariate"):
        IWPC.reference({k: v for k, v in _patient().items() if k != "race_black"})


def test_program_numpy_executor_is_exact():
    from medtwin.program.executors import get_executor

    pats = _stack([_patient(), _patient(vkorc1_aa=1.0, cyp2c9_33=1.0, age_decades=9.0),
                   _patient(enzyme_inducer=1.0, weight_kg=140.0, height_cm=200.0, age_decades=2.0)])
    prog = IWPC.build_program(8)
    assert prog.depth == 2
    out = get_executor("numpy").run(prog, pats)
    ref = IWPC.reference(pats)
    np.testing.assert_allclose(out["weekly_dose_mg"][:3], ref["weekly_dose_mg"], rtol=1e-12)


def test_encrypted_within_stated_bound(backend):
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import preset
    from medtwin.program.executors import get_executor

    rng = np.random.default_rng(7)
    n = 16
    pats = []
    for _ in range(n):
        kw = {"age_decades": float(rng.integers(2, 10)), "height_cm": float(rng.uniform(140, 200)),
              "weight_kg": float(rng.uniform(45, 150))}
        for grp in (("vkorc1_ga", "vkorc1_aa", None), ("cyp2c9_12", "cyp2c9_13", "cyp2c9_33", None, None),
                    ("race_asian", "race_black", None)):
            g = grp[rng.integers(len(grp))]
            if g:
                kw[g] = 1.0
        pats.append(_patient(**kw))
    cov = _stack(pats)
    ref = IWPC.reference(cov)
    params = preset("test-insecure", depth=2)
    prog = IWPC.build_program(16, params=params)
    ctx, _ = generate_keys(params.with_depth(prog.depth), prog.rotation_indices())
    enc = {k: ctx.encrypt(np.pad(cov[k], (0, 16 - n))) for k in COVARIATES}
    ex = get_executor(backend, cc=ctx.cc)
    out = ex.run(prog, enc)
    for name in ("sqrt_dose", "weekly_dose_mg"):
        got = ctx.decrypt(out[name], n)
        err = np.max(np.abs(got - ref[name]))
        assert err <= prog.error_bound(name, noise=ex.noise_model()) <= prog.error_bound(name), name
        assert err < 1e-3
