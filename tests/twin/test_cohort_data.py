from __future__ import annotations

import datetime as dt
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from medtwin.data import REFERENCE_DATE, cohort_csv_path, sample_bundle_path
from medtwin.fhir.importer import load_bundle
from medtwin.twin.csv_io import load_csv

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cohort():
    return load_csv(cohort_csv_path())


@pytest.fixture(scope="module")
def make_cohort():
    spec = importlib.util.spec_from_file_location("make_cohort", REPO / "scripts" / "make_cohort.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bundled_cohort_size_and_completeness(cohort):
    # load_csv already enforced every plausibility range.
    assert len(cohort) == 1200
    assert len({r.source_id for r in cohort}) == 1200
    for r in cohort:
        assert None not in (r.age_years, r.sex, r.weight_kg, r.height_cm, r.serum_creatinine_mg_dl,
                            r.hba1c_percent, r.inr, r.albumin_g_dl, r.cyp2c9, r.vkorc1, r.smoker, r.race)
        assert 18 <= r.age_years <= 90
        assert 15.0 <= r.creatinine_clearance_cg() <= 200.0  # inside the PK model's 5-250 mL/min


def test_bundled_cohort_distributions_are_plausible(cohort):
    races = Counter(r.race for r in cohort)
    assert 0.55 < races["white"] / 1200 < 0.68
    men = [r for r in cohort if r.sex == "male"]
    women = [r for r in cohort if r.sex == "female"]
    assert 0.45 < len(women) / 1200 < 0.55
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean([r.height_cm for r in men]) - mean([r.height_cm for r in women]) > 10
    assert mean([r.serum_creatinine_mg_dl for r in men]) > mean([r.serum_creatinine_mg_dl for r in women])
    old = [r.serum_creatinine_mg_dl for r in cohort if r.age_years >= 70]
    young = [r.serum_creatinine_mg_dl for r in cohort if r.age_years < 40]
    assert mean(old) > mean(young)
    # VKORC1 -1639A allele frequency: ~0.42 in white, ~0.89 in Asian patients (ARUP 0051370)
    def a_freq(race):
        rs = [r for r in cohort if r.race == race]
        return sum(r.vkorc1.count("A") for r in rs) / (2 * len(rs))
    assert 0.36 < a_freq("white") < 0.48
    assert a_freq("asian") > 0.75
    assert a_freq("black") < 0.2
    star2_white = [r.cyp2c9.count("*2") for r in cohort if r.race == "white"]
    assert 0.09 < sum(star2_white) / (2 * len(star2_white)) < 0.17
    assert 0.07 < sum(r.smoker for r in cohort) / 1200 < 0.16


def test_fhir_sample_matches_first_25_csv_rows(cohort):
    recs = load_bundle(sample_bundle_path(), as_of=dt.date.fromisoformat(REFERENCE_DATE))
    assert len(recs) == 25
    for f, c in zip(recs, cohort[:25]):
        for name in ("source_id", "age_years", "sex", "weight_kg", "height_cm", "hba1c_percent", "inr",
                     "albumin_g_dl", "cyp2c9", "vkorc1", "smoker", "race"):
            assert getattr(f, name) == getattr(c, name), name
        assert f.serum_creatinine_mg_dl == pytest.approx(c.serum_creatinine_mg_dl, rel=1e-9)
        assert f.amiodarone == (True if c.amiodarone else None)
        assert f.enzyme_inducer == (True if c.enzyme_inducer else None)
    raw = json.loads(sample_bundle_path().read_text())
    assert raw["resourceType"] == "Bundle" and raw["type"] in ("collection", "transaction")
    codes = {e["resource"]["code"]["coding"][0]["code"] for e in raw["entry"] if e["resource"]["resourceType"] == "Observation"}
    assert {"2160-0", "14682-9", "46724-1", "50722-8", "72166-2"} <= codes


def test_generator_is_seeded_and_reproduces_the_bundled_file(make_cohort, cohort, tmp_path):
    a = make_cohort.make_cohort(40, 7)
    assert a == make_cohort.make_cohort(40, 7)
    assert a != make_cohort.make_cohort(40, 8)
    assert make_cohort.main(["--n", "1200", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "cohort.csv").read_bytes() == cohort_csv_path().read_bytes()
    assert (tmp_path / "cohort_fhir_sample.json").read_bytes() == sample_bundle_path().read_bytes()
