from __future__ import annotations

import dataclasses
import math

import pytest

from medtwin.errors import RangeError, ValidationError
from medtwin.twin.record import (
    COVARIATES,
    RANGES,
    PatientRecord,
    check_range,
    cockcroft_gault,
    normalise_cyp2c9,
    normalise_vkorc1,
)


def full(**kw):
    base = dict(source_id="S-1", age_years=55, sex="male", weight_kg=80, height_cm=180,
                serum_creatinine_mg_dl=1.9, hba1c_percent=5.9, inr=1.1, albumin_g_dl=4.2,
                cyp2c9="*1/*3", vkorc1="G/A", smoker=False, race="white", amiodarone=True,
                enzyme_inducer=False)
    base.update(kw)
    return PatientRecord(**base)


def test_only_source_id_required_and_everything_else_missing():
    r = PatientRecord("only-id")
    assert all(getattr(r, f) is None for f in PatientRecord.field_names() if f != "source_id")


def test_construction_normalises():
    r = full(sex=" Female ", race="ASIAN", cyp2c9="CYP2C9 *3/*1", vkorc1="ag", age_years=55)
    assert (r.sex, r.race, r.cyp2c9, r.vkorc1) == ("female", "asian", "*1/*3", "G/A")
    assert isinstance(r.age_years, float) and r.age_years == 55.0


def test_frozen():
    r = full()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.weight_kg = 90.0  # type: ignore[misc]


def test_repr_withholds_values_and_identifier():
    text = repr(full(source_id="MRN-SECRET", weight_kg=83.7))
    assert "83.7" not in text and "MRN-SECRET" not in text and "weight_kg" in text


@pytest.mark.parametrize("field", sorted(RANGES))
def test_range_bounds_inclusive_and_outside_rejected(field):
    rng = RANGES[field]
    assert check_range(field, rng.low) == rng.low
    assert check_range(field, rng.high) == rng.high
    PatientRecord("x", **{field: rng.low})
    PatientRecord("x", **{field: rng.high})
    for bad in (rng.low - 0.0123, rng.high + 0.0123):
        with pytest.raises(RangeError) as ei:
            PatientRecord("x", **{field: bad})
        msg = str(ei.value)
        assert field in msg and rng.describe() in msg
        assert f"{bad:g}" not in msg and "0123" not in msg  # never the value


def test_documented_ranges_match_the_brief():
    assert (RANGES["weight_kg"].low, RANGES["weight_kg"].high) == (0.4, 350.0)
    assert (RANGES["serum_creatinine_mg_dl"].low, RANGES["serum_creatinine_mg_dl"].high) == (0.1, 20.0)
    assert (RANGES["age_years"].low, RANGES["age_years"].high) == (0.0, 120.0)
    assert (RANGES["height_cm"].low, RANGES["height_cm"].high) == (30.0, 250.0)
    assert (RANGES["hba1c_percent"].low, RANGES["hba1c_percent"].high) == (3.0, 20.0)
    assert (RANGES["inr"].low, RANGES["inr"].high) == (0.5, 15.0)
    assert (RANGES["albumin_g_dl"].low, RANGES["albumin_g_dl"].high) == (0.5, 7.0)
    assert all(len(r.rationale) > 40 for r in RANGES.values())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "80", [80]])
def test_non_numbers_rejected(bad):
    with pytest.raises(ValidationError, match="weight_kg"):
        PatientRecord("x", weight_kg=bad)


@pytest.mark.parametrize("kw, field", [
    (dict(sex="m"), "sex"), (dict(sex=1), "sex"), (dict(race="martian"), "race"),
    (dict(cyp2c9="*1/*99"), "cyp2c9"), (dict(cyp2c9="*1"), "cyp2c9"), (dict(cyp2c9=13), "cyp2c9"),
    (dict(vkorc1="G/T"), "vkorc1"), (dict(vkorc1="GGA"), "vkorc1"),
    (dict(smoker="yes"), "smoker"), (dict(amiodarone=1), "amiodarone"),
    (dict(source_id=""), "source_id"), (dict(source_id="   "), "source_id"), (dict(source_id=7), "source_id"),
])
def test_bad_codes_rejected(kw, field):
    with pytest.raises(ValidationError, match=field):
        full(**kw)


def test_range_error_is_a_validation_error():
    assert issubclass(RangeError, ValidationError)


@pytest.mark.parametrize("text, expected", [
    ("*1/*1", "*1/*1"), ("*3/*2", "*2/*3"), ("1/3", "*1/*3"), ("CYP2C9*2/*2", "*2/*2"),
    ("cyp2c9 *11/*1", "*1/*11"), (" *1 / *8 ", "*1/*8")])
def test_cyp2c9_normalisation(text, expected):
    assert normalise_cyp2c9(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("G/G", "G/G"), ("A/G", "G/A"), ("ga", "G/A"), ("AA", "A/A"), ("VKORC1 -1639G>A G/A", "G/A"),
    ("rs9923231 A/A", "A/A"), ("c.-1639G>A: G/G", "G/G"),
    # genomic plus strand, as in the HL7 Genomics Reporting IG example "VKORC1 rs9923231 C/T"
    ("VKORC1 rs9923231 C/T", "G/A"), ("rs9923231 T/T", "A/A"), ("rs9923231 C/C", "G/G")])
def test_vkorc1_normalisation(text, expected):
    assert normalise_vkorc1(text) == expected


@pytest.mark.parametrize("text", ["C/T", "VKORC1 1173C>T C/T", "rs9923231 C/A", "rs9934438 C/T"])
def test_vkorc1_strand_ambiguity_refused(text):
    with pytest.raises(ValidationError, match="vkorc1"):
        normalise_vkorc1(text)


# ---------------------------------------------------------------- Cockcroft-Gault
def test_cockcroft_gault_published_worked_example():
    # Bauer LA. Applied Clinical Pharmacokinetics, 2nd ed. McGraw-Hill 2008, ch. 3 (patient "JM";
    # cited from the book as recalled, not re-checked offline): 55-year-old, 80-kg man, serum
    # creatinine 1.9 mg/dL: CrCl = [(140 - 55) * 80] / (72 * 1.9) = 50 mL/min (rounded).
    r = PatientRecord("JM", age_years=55, sex="male", weight_kg=80, serum_creatinine_mg_dl=1.9)
    crcl = r.creatinine_clearance_cg()
    assert round(crcl) == 50
    assert crcl == pytest.approx(6800 / 136.8, rel=1e-12)


def test_cockcroft_gault_si_units_worked_example():
    # TRC Pharmacology (trc-p.nl/561), elderly-patient exercise: 84-year-old, 48-kg woman, serum
    # creatinine 186 umol/L; SI form (140 - age) * weight / (0.81 * Scr[umol/L]) * 0.85
    # = 56 * 48 / 150.66 * 0.85 = 15.2 mL/min. Through mg/dL (186 / 88.42 = 2.104) the same
    # patient gives 15.1 mL/min; 0.81 is 72 / 88.42 = 0.814 rounded, hence the 0.6 % difference.
    r = PatientRecord("trc", age_years=84, sex="female", weight_kg=48, serum_creatinine_mg_dl=186 / 88.42)
    assert r.creatinine_clearance_cg() == pytest.approx(56 * 48 / (72 / 88.42 * 186) * 0.85, rel=1e-12)
    assert r.creatinine_clearance_cg() == pytest.approx(56 * 48 / (0.81 * 186) * 0.85, rel=0.01)
    assert round(r.creatinine_clearance_cg(), 1) == 15.1


def test_cockcroft_gault_formula_and_female_factor():
    # Cockcroft & Gault 1976: (140 - age) * weight / (72 * Scr), x0.85 for women.
    assert cockcroft_gault(40, 72, 1.0, False) == pytest.approx(100.0)
    assert cockcroft_gault(40, 72, 1.0, True) == pytest.approx(85.0)
    r = PatientRecord("f", age_years=45, sex="female", weight_kg=65, serum_creatinine_mg_dl=0.9)
    assert r.creatinine_clearance_cg() == pytest.approx(95 * 65 / (72 * 0.9) * 0.85, rel=1e-12)


def test_cockcroft_gault_refuses_nonpositive_creatinine():
    with pytest.raises(ValidationError):
        cockcroft_gault(50, 70, 0.0, False)


@pytest.mark.parametrize("missing", ["age_years", "weight_kg", "serum_creatinine_mg_dl", "sex"])
def test_cockcroft_gault_names_missing_field(missing):
    r = full(**{missing: None})
    with pytest.raises(ValidationError, match=missing):
        r.creatinine_clearance_cg()


# ---------------------------------------------------------------- other derived quantities
def test_bmi_bsa_ibw_hand_computed():
    r = full(weight_kg=80, height_cm=180)
    assert r.bmi() == pytest.approx(80 / 1.8 ** 2)
    assert r.bsa_mosteller() == pytest.approx(2.0)  # sqrt(180 * 80 / 3600) = sqrt(4)
    # Devine: 69 in man = 50 + 2.3 * 9 = 70.7 kg; 63 in woman = 45.5 + 2.3 * 3 = 52.4 kg
    assert full(height_cm=69 * 2.54).ideal_body_weight_devine() == pytest.approx(70.7)
    assert full(sex="female", height_cm=63 * 2.54).ideal_body_weight_devine() == pytest.approx(52.4)


def test_devine_undefined_for_very_short_height():
    with pytest.raises(ValidationError, match="Devine"):
        full(height_cm=50).ideal_body_weight_devine()


def test_derived_quantities_name_missing_field():
    with pytest.raises(ValidationError, match="height_cm"):
        full(height_cm=None).bmi()
    with pytest.raises(ValidationError, match="weight_kg"):
        full(weight_kg=None).bsa_mosteller()
    with pytest.raises(ValidationError, match="sex"):
        full(sex=None).ideal_body_weight_devine()


# ---------------------------------------------------------------- minimise
def test_minimise_returns_only_named_covariates_in_order():
    r = full()
    out = r.minimise(["serum_creatinine_mg_dl", "female", "age_years", "weight_kg"])
    assert list(out) == ["serum_creatinine_mg_dl", "female", "age_years", "weight_kg"]
    assert out == {"serum_creatinine_mg_dl": 1.9, "female": 0.0, "age_years": 55.0, "weight_kg": 80.0}
    assert all(type(v) is float for v in out.values())
    assert full(sex="female").minimise(["sex"]) == {"sex": 1.0}


def test_minimise_encodings():
    r = full(cyp2c9="*2/*3", vkorc1="A/A", smoker=True, race="asian", amiodarone=True, enzyme_inducer=False)
    out = r.minimise(["cyp2c9_activity_score", "cyp2c9_star2_count", "cyp2c9_star3_count", "cyp2c9_23",
                      "cyp2c9_13", "vkorc1_a_count", "vkorc1_ga", "vkorc1_aa", "smoker", "race_asian",
                      "race_black", "race_missing_or_mixed", "amiodarone", "enzyme_inducer"])
    assert out == {"cyp2c9_activity_score": 0.5, "cyp2c9_star2_count": 1.0, "cyp2c9_star3_count": 1.0,
                   "cyp2c9_23": 1.0, "cyp2c9_13": 0.0, "vkorc1_a_count": 2.0, "vkorc1_ga": 0.0,
                   "vkorc1_aa": 1.0, "smoker": 1.0, "race_asian": 1.0, "race_black": 0.0,
                   "race_missing_or_mixed": 0.0, "amiodarone": 1.0, "enzyme_inducer": 0.0}
    assert full(race=None).minimise(["race_missing_or_mixed"]) == {"race_missing_or_mixed": 1.0}
    assert full(cyp2c9="*1/*1").minimise(["cyp2c9_activity_score"]) == {"cyp2c9_activity_score": 2.0}
    assert full(cyp2c9="*1/*5").minimise(["cyp2c9_other", "cyp2c9_13", "cyp2c9_activity_score"]) == \
        {"cyp2c9_other": 1.0, "cyp2c9_13": 0.0, "cyp2c9_activity_score": 1.5}
    assert full(cyp2c9="*2/*3").minimise(["cyp2c9_other"]) == {"cyp2c9_other": 0.0}


def test_minimise_derived():
    r = full()
    out = r.minimise(["crcl_ml_min", "bmi", "bsa_m2", "ibw_kg"])
    assert out["crcl_ml_min"] == pytest.approx(r.creatinine_clearance_cg())
    assert out["bsa_m2"] == pytest.approx(2.0)


def test_minimise_names_missing_required_field():
    r = full(weight_kg=None)
    with pytest.raises(ValidationError, match="weight_kg"):
        r.minimise(["age_years", "weight_kg"])
    with pytest.raises(ValidationError, match="serum_creatinine_mg_dl"):
        full(serum_creatinine_mg_dl=None).minimise(["crcl_ml_min"])
    with pytest.raises(ValidationError, match="cyp2c9"):
        full(cyp2c9=None).minimise(["cyp2c9_13"])


def test_minimise_refuses_unknown_repeated_or_string():
    with pytest.raises(ValidationError, match="unknown covariate"):
        full().minimise(["source_id"])  # the identifier is never a covariate
    with pytest.raises(ValidationError, match="twice"):
        full().minimise(["age_years", "age_years"])
    with pytest.raises(ValidationError, match="sequence"):
        full().minimise("age_years")


def test_every_covariate_is_computable_on_a_full_record():
    r = full()
    out = r.minimise(list(COVARIATES))
    assert set(out) == set(COVARIATES) and all(math.isfinite(v) for v in out.values())


def test_from_mapping_rejects_unknown_keys():
    with pytest.raises(ValidationError, match="weight_lb"):
        PatientRecord.from_mapping({"source_id": "x", "weight_lb": 150})
    assert PatientRecord.from_mapping({"source_id": "x", "inr": 1}).inr == 1.0
