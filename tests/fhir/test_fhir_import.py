from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pytest

from medtwin.errors import ImportFormatError, RangeError
from medtwin.fhir.importer import load_bundle
from medtwin.twin.record import ImportRangeError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"
AS_OF = dt.date(2026, 1, 1)


def load(name, **kw):
    return load_bundle(FIX / name, as_of=kw.pop("as_of", AS_OF), **kw)


# ------------------------------------------------------------------------------ valid fixtures
def test_basic_bundle_mg_dl_and_patient_references():
    p1, p2 = load("valid/basic_mgdl.json")
    # p1: born 1971-06-15 -> 54 completed years on 2026-01-01; identifier value is the source id
    assert p1.source_id == "MRN-0001" and p1.age_years == 54 and p1.sex == "male"
    assert (p1.weight_kg, p1.height_cm, p1.serum_creatinine_mg_dl) == (80.0, 175.0, 1.2)
    assert (p1.hba1c_percent, p1.inr, p1.albumin_g_dl) == (5.9, 1.1, 4.2)
    assert (p1.cyp2c9, p1.vkorc1, p1.smoker, p1.race) == ("*1/*3", "G/A", False, None)
    # active amiodarone MedicationStatement; the rifampin request is completed, so no inducer known
    assert (p1.amiodarone, p1.enzyme_inducer) == (True, None)
    assert (p2.amiodarone, p2.enzyme_inducer) == (None, True)  # active phenytoin request
    # p2: no identifier -> Patient.id; born 1950-03-01 -> 75; blood pressure observation ignored
    assert p2.source_id == "p2" and p2.age_years == 75 and p2.sex == "female"
    assert (p2.weight_kg, p2.serum_creatinine_mg_dl, p2.height_cm, p2.cyp2c9) == (62.0, 0.9, None, None)
    # Cockcroft-Gault on the import: (140-54)*80/(72*1.2) = 79.63 mL/min
    assert p1.creatinine_clearance_cg() == pytest.approx(86 * 80 / 86.4)


def test_units_and_urn_uuid_references():
    (r,) = load("valid/units_uuid.json")
    assert r.source_id == "urn:uuid:6f1c2d4e-1b7a-4c1e-9d55-2a3b4c5d6e70"  # only fullUrl identifies it
    assert r.age_years == 45 and r.sex == "female" and r.race == "asian"  # born 1980-12-31
    assert r.weight_kg == pytest.approx(154 * 0.45359237)            # 69.853 kg from [lb_av]
    assert r.height_cm == pytest.approx(64 * 2.54)                    # 162.56 cm from [in_i]
    assert r.serum_creatinine_mg_dl == pytest.approx(97 / 88.42)      # 1.0970 mg/dL from umol/L
    assert r.hba1c_percent == pytest.approx(0.09148 * 53 + 2.152)     # 7.0004 % from IFCC mmol/mol
    assert r.albumin_g_dl == pytest.approx(3.8)                       # 38 g/L
    assert r.inr == 2.4 and r.smoker is True                         # INR without unit


def test_latest_observation_wins_and_ignored_ones():
    (r,) = load("valid/serial_observations.json")
    # weights 2023 (81 kg), 2025-06-30 (72500 g), 2024 (76.4 kg), entered-in-error 2025-12 (ignored)
    assert r.weight_kg == pytest.approx(72.5)
    # creatinine: 2160-0 1.0 mg/dL (2024) vs 14682-9 132.63 umol/L (2025) -> 1.5 mg/dL
    assert r.serum_creatinine_mg_dl == pytest.approx(132.63 / 88.42)
    assert r.height_cm == pytest.approx(182.0)  # 1.82 m
    assert r.albumin_g_dl is None  # dataAbsentReason, no value: skipped
    assert r.inr == 2.9  # same effective time: the later entry wins
    assert r.age_years == 81  # born 1944-02-29
    assert r.source_id == "serial"


def test_genomics_reporting_ig_genotypes_partial_birthdate_unknown_gender():
    (r,) = load("valid/genomics_ig.json")
    assert r.source_id == "GX-42"
    # "CYP2C9*3/*2" -> *2/*3; "VKORC1 rs9923231 T/T" (genomic strand) -> A/A; CYP2C19 ignored
    assert (r.cyp2c9, r.vkorc1) == ("*2/*3", "A/A")
    assert r.sex is None and r.weight_kg == 58.0
    assert r.age_years == 65  # birthDate "1960" read as 1960-07-01


def test_age_relative_to_as_of_and_default_today():
    raw = json.loads((FIX / "valid/basic_mgdl.json").read_text())
    assert load_bundle(raw, as_of=dt.date(2026, 6, 14))[0].age_years == 54
    assert load_bundle(raw, as_of=dt.date(2026, 6, 15))[0].age_years == 55
    today = dt.date.today()
    birth = dt.date(today.year - 30, today.month, min(today.day, 28))
    raw["entry"][0]["resource"]["birthDate"] = birth.isoformat()
    assert load_bundle(raw)[0].age_years == 30


def test_input_forms_agree(tmp_path):
    path = FIX / "valid/units_uuid.json"
    text = path.read_text()
    expected = load_bundle(path, as_of=AS_OF)
    assert load_bundle(str(path), as_of=AS_OF) == expected
    assert load_bundle(text, as_of=AS_OF) == expected
    assert load_bundle(text.encode(), as_of=AS_OF) == expected
    assert load_bundle(json.loads(text), as_of=AS_OF) == expected


def test_input_dict_is_not_modified():
    raw = json.loads((FIX / "valid/serial_observations.json").read_text())
    before = copy.deepcopy(raw)
    load_bundle(raw, as_of=AS_OF)
    assert raw == before


# ------------------------------------------------------------------------------ malformed fixtures
MALFORMED = [
    ("not_json.json", ImportFormatError, ["not_json.json", "not valid JSON"]),
    ("top_level_list.json", ImportFormatError, ["not a Bundle"]),
    ("wrong_resource_type.json", ImportFormatError, ["resourceType", "Bundle", "Patient"]),
    ("unknown_resource_type.json", ImportFormatError, ["Patinet/typo", "resourceType"]),
    ("bad_gender.json", ImportFormatError, ["Patient/m1", "gender"]),
    ("observation_no_value.json", ImportFormatError, ["Observation/w-novalue", "valueQuantity", "missing value"]),
    ("observation_no_subject.json", ImportFormatError, ["Observation/h-nosubject", "subject"]),
    ("dangling_subject.json", ImportFormatError, ["Observation/scr-x", "subject.reference"]),
    ("unknown_unit.json", ImportFormatError, ["Observation/w-stone", "valueQuantity", "[stone_av]"]),
    ("implausible_value.json", ImportRangeError, ["Observation/scr-umol-as-mg", "serum_creatinine_mg_dl", "0.1-20 mg/dL"]),
    ("invalid_decimal.json", ImportFormatError, ["Observation/inr-text", "valueQuantity.value"]),
    ("bad_genotype.json", ImportFormatError, ["Observation/cyp-bad", "CYP2C9"]),
]


@pytest.mark.parametrize("name, exc, needles", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_bundles_rejected_naming_resource_and_field(name, exc, needles):
    path = FIX / "malformed" / name
    before = path.read_bytes()
    with pytest.raises(exc) as ei:
        load_bundle(path, as_of=AS_OF)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, (n, msg)
    assert path.read_bytes() == before


def test_messages_never_carry_patient_values():
    msgs = {}
    for name in ("implausible_value.json", "invalid_decimal.json", "bad_genotype.json", "bad_gender.json"):
        with pytest.raises(ImportFormatError) as ei:
            load(f"malformed/{name}")
        msgs[name] = str(ei.value)
    assert "97" not in msgs["implausible_value.json"]
    assert "one point one" not in msgs["invalid_decimal.json"]
    assert "*99" not in msgs["bad_genotype.json"]
    assert "'mal'" not in msgs["bad_gender.json"] and "1970" not in msgs["bad_gender.json"]


def test_implausible_value_is_both_format_and_range_error():
    with pytest.raises(ImportFormatError):
        load("malformed/implausible_value.json")
    with pytest.raises(RangeError):
        load("malformed/implausible_value.json")


def test_every_malformed_fixture_is_covered():
    on_disk = {p.name for p in (FIX / "malformed").glob("*.json")}
    assert on_disk == {m[0] for m in MALFORMED}


# ------------------------------------------------------------------------------ more rules
def _bundle(*resources, patient=None):
    patient = patient or {"resourceType": "Patient", "id": "p", "gender": "male", "birthDate": "1970-01-01"}
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": patient}] + [{"resource": r} for r in resources]}


def _obs(code, id="o", **value):
    return {"resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": "Patient/p"}, **value}


@pytest.mark.parametrize("resource, needles", [
    (_obs("29463-7", valueString="70 kg"), ["Observation/o", "value[x]", "valueQuantity"]),
    (_obs("29463-7", valueQuantity={"unit": "kg", "code": "kg"}), ["Observation/o", "valueQuantity.value"]),
    (_obs("29463-7", valueQuantity={"value": 70}), ["Observation/o", "missing unit"]),
    (_obs("2160-0", valueQuantity={"value": 1, "comparator": "<", "code": "mg/dL"}), ["comparator"]),
    (_obs("72166-2", valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct", "code": "123"}]}),
     ["Observation/o", "valueCodeableConcept", "smoking"]),
    (_obs("50722-8", valueString="C/T"), ["Observation/o", "VKORC1"]),
])
def test_more_observation_errors(resource, needles):
    with pytest.raises(ImportFormatError) as ei:
        load_bundle(_bundle(resource), as_of=AS_OF)
    for n in needles:
        assert n in str(ei.value)


def test_patient_level_errors():
    with pytest.raises(ImportFormatError, match="Patient/p field birthDate: later"):
        load_bundle(_bundle(patient={"resourceType": "Patient", "id": "p", "birthDate": "2030-01-01"}), as_of=AS_OF)
    with pytest.raises(ImportRangeError, match="Patient/p field birthDate.*age_years"):
        load_bundle(_bundle(patient={"resourceType": "Patient", "id": "p", "birthDate": "1880-01-01"}), as_of=AS_OF)
    dup = _bundle({"resourceType": "Patient", "id": "p"})
    with pytest.raises(ImportFormatError, match="duplicate"):
        load_bundle(dup, as_of=AS_OF)


def test_other_gender_gives_no_sex_and_unknown_codes_are_ignored():
    b = _bundle(_obs("8480-6", valueQuantity={"value": 120, "code": "mm[Hg]"}),
                patient={"resourceType": "Patient", "id": "p", "gender": "other"})
    (r,) = load_bundle(b, as_of=AS_OF)
    assert r.sex is None and r.age_years is None


def test_medication_subject_is_checked():
    med = {"resourceType": "MedicationStatement", "id": "ms", "status": "active",
           "medicationCodeableConcept": {"text": "amiodarone"}, "subject": {"reference": "Patient/other"}}
    with pytest.raises(ImportFormatError, match="MedicationStatement/ms field subject.reference"):
        load_bundle(_bundle(med), as_of=AS_OF)


def test_subject_must_be_a_patient_in_the_bundle():
    o = _obs("29463-7", valueQuantity={"value": 70, "code": "kg"})
    o["subject"] = {"reference": "Group/p"}
    with pytest.raises(ImportFormatError, match="subject.reference"):
        load_bundle(_bundle(o), as_of=AS_OF)


@pytest.mark.parametrize("ref", ["Patient/p", "https://fhir.example.org/r4/Patient/p", "Patient/p/_history/3"])
def test_reference_forms(ref):
    o = _obs("29463-7", valueQuantity={"value": 70, "code": "kg"})
    o["subject"] = {"reference": ref}
    assert load_bundle(_bundle(o), as_of=AS_OF)[0].weight_kg == 70.0


def test_bundle_without_patients_gives_empty_list():
    assert load_bundle({"resourceType": "Bundle", "type": "collection"}, as_of=AS_OF) == []


@pytest.mark.parametrize("source", ["", "{", "[]", "null", "42", '"Bundle"', b"\xff\xfe", 3.5,
                                    "/no/such/file.json", {"resourceType": "Bundle"}])
def test_garbage_sources(source):
    with pytest.raises(ImportFormatError):
        load_bundle(source, as_of=AS_OF)


def test_missing_file_path_object(tmp_path):
    with pytest.raises(ImportFormatError, match="missing.json: not found"):
        load_bundle(tmp_path / "missing.json")
