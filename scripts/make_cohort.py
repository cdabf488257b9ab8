#!/usr/bin/env python
"""Generate the bundled synthetic cohort: ``medtwin/data/cohort.csv`` and ``cohort_fhir_sample.json``.

Usage::

    python scripts/make_cohort.py [--n 1200] [--seed 20261128] [--out medtwin/data] [--fhir-n 25]

Every value is synthetic. The joint distribution is built to look like an adult outpatient
population (the kind that starts warfarin or a renally cleared drug), from these sources and
assumptions:

* race: US Census 2020 (white alone 61.6 %, Black alone 12.4 %, Asian alone 6.0 %; the rest,
  about 20 %, as "other").
* sex: 1:1. age: normal(60, 16) truncated to 18-90 years (assumption: clinic population skewed to
  older adults), whole years.
* height: NHANES 2015-2018 adult means, men 175.4 cm, women 161.7 cm (Fryar CD et al.,
  Anthropometric reference data for children and adults: United States, 2015-2018. Vital Health
  Stat 3(46), 2021); SD 7.5 / 7.0 cm (assumption from the same tables' percentiles); asian
  -4 cm (assumption).
* weight: BMI log-normal, median 28 kg/m^2, sigma 0.19 (NHANES 2015-2018 mean BMI about 29,
  Fryar 2021), clipped to 16-55, times height^2; weight clipped to 40-180 kg.
* serum creatinine: median 0.95 mg/dL (men) / 0.75 (women), +0.6 % per year of age above 40
  (assumption mirroring the ~1 mL/min/1.73 m^2 per year GFR decline), +8 % in Black patients,
  log-normal sigma 0.15; 12 % of patients have CKD with a further log-normal factor (median 1.8,
  sigma 0.35) (US adult CKD prevalence about 14 %, CDC Chronic Kidney Disease in the United
  States, 2023). Draws whose Cockcroft-Gault clearance falls outside 15-200 mL/min are redrawn,
  so the cohort fits the declared ranges of the bundled PK model (5-250 mL/min).
* HbA1c: 11 % diabetic, normal(7.3, 1.2) %, else normal(5.4, 0.35) %, clipped 4.0-14.0
  (diagnosed + undiagnosed diabetes ~11 % of US adults, CDC National Diabetes Statistics Report).
* INR: log-normal, median 1.0, sigma 0.07, clipped 0.8-1.5 (untreated reference interval ~0.8-1.2).
* albumin: normal(4.1, 0.35) - 0.004 per year above 40, clipped 2.5-5.3 g/dL.
* smoker: 11.5 % current smokers (Cornelius ME et al. MMWR 2023;72:475-483, US adults 2021).
* amiodarone 3 %, enzyme inducer 1.5 % (assumptions of the order seen in warfarin cohorts).
* CYP2C9 *2/*3 and VKORC1 -1639A allele frequencies by population, diplotypes by Hardy-Weinberg
  equilibrium. Source: ARUP Laboratories test directory interpretive data, tests 2012766
  (CYP2C9 2 variants: *2 Caucasian 13 %, Asian <1 %, African American 3 %; *3 7 %, 4 %, 2 %)
  and 0051370 (VKORC1 -1639A 0.42 Caucasian, 0.89 Asian, 0.08 African American). Asian *2 is
  set to 0.5 %; "other" uses intermediate values (*2 8 %, *3 5 %, -1639A 0.40; assumption).

The FHIR sample holds the first ``--fhir-n`` patients as a collection Bundle with urn:uuid
references (deterministic UUIDs), LOINC-coded Observations (creatinine alternately in mg/dL and
umol/L, weight in kg), genotype and smoking-status Observations, the US Core race extension, and
an active MedicationStatement for each amiodarone or enzyme-inducer user (none for non-users, so
the importer reads those as unknown).
Its birthDates give the CSV ages at ``medtwin.data.REFERENCE_DATE``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medtwin.data import COHORT_CSV, REFERENCE_DATE, SAMPLE_BUNDLE  # noqa: E402
from medtwin.twin.csv_io import write_csv  # noqa: E402
from medtwin.twin.record import PatientRecord, cockcroft_gault  # noqa: E402

RACES = ("white", "black", "asian", "other")
RACE_P = (0.616, 0.124, 0.060, 0.200)
CYP2C9_FREQ = {  # (*2, *3) allele frequencies
    "white": (0.13, 0.07), "black": (0.03, 0.02), "asian": (0.005, 0.04), "other": (0.08, 0.05)}
VKORC1_A_FREQ = {"white": 0.42, "black": 0.08, "asian": 0.89, "other": 0.40}
US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
# OMB categories of the CDC Race & Ethnicity code set; "other" goes in a `detailed` coding.
OMB = {"white": ("2106-3", "White"), "black": ("2054-5", "Black or African American"),
       "asian": ("2028-9", "Asian"), "other": ("2131-1", "Other Race")}
UUID_NS = uuid.UUID("0b6a3c52-5d2e-4f0a-9a57-6f1d2c3b4a59")


def _truncnorm(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    while True:
        x = rng.normal(mean, sd)
        if lo <= x <= hi:
            return x


def _allele(rng: np.random.Generator, p2: float, p3: float) -> int:
    u = rng.random()
    return 2 if u < p2 else 3 if u < p2 + p3 else 1


def make_patient(rng: np.random.Generator, i: int) -> PatientRecord:
    race = RACES[rng.choice(4, p=RACE_P)]
    female = bool(rng.random() < 0.5)
    age = int(round(_truncnorm(rng, 60.0, 16.0, 18.0, 90.0)))
    h_mean = (161.7 if female else 175.4) - (4.0 if race == "asian" else 0.0)
    height = round(float(np.clip(rng.normal(h_mean, 7.0 if female else 7.5), 140.0, 205.0)), 1)
    bmi = float(np.clip(28.0 * np.exp(rng.normal(0.0, 0.19)), 16.0, 55.0))
    weight = round(float(np.clip(bmi * (height / 100.0) ** 2, 40.0, 180.0)), 1)
    ckd = rng.random() < 0.12
    base = (0.75 if female else 0.95) * (1.08 if race == "black" else 1.0)
    for _ in range(1000):
        scr = base * np.exp(0.006 * max(age - 40, 0) + rng.normal(0.0, 0.15))
        if ckd:
            scr *= 1.8 * np.exp(rng.normal(0.0, 0.35))
        scr = round(float(np.clip(scr, 0.4, 8.0)), 2)
        if 15.0 <= cockcroft_gault(age, weight, scr, female) <= 200.0:
            break
    else:  # pragma: no cover - the loop always finds a value for these distributions
        raise RuntimeError("could not draw a creatinine in range")
    diabetic = rng.random() < 0.11
    hba1c = rng.normal(7.3, 1.2) if diabetic else rng.normal(5.4, 0.35)
    hba1c = round(float(np.clip(hba1c, 4.0, 14.0)), 1)
    inr = round(float(np.clip(np.exp(rng.normal(0.0, 0.07)), 0.8, 1.5)), 2)
    alb = round(float(np.clip(rng.normal(4.1, 0.35) - 0.004 * max(age - 40, 0), 2.5, 5.3)), 1)
    p2, p3 = CYP2C9_FREQ[race]
    a, b = sorted((_allele(rng, p2, p3), _allele(rng, p2, p3)))
    pa = VKORC1_A_FREQ[race]
    n_a = int(rng.random() < pa) + int(rng.random() < pa)
    return PatientRecord(
        source_id=f"SYN-{i:06d}", age_years=float(age), sex="female" if female else "male",
        weight_kg=weight, height_cm=height, serum_creatinine_mg_dl=scr, hba1c_percent=hba1c,
        inr=inr, albumin_g_dl=alb, cyp2c9=f"*{a}/*{b}", vkorc1=("G/G", "G/A", "A/A")[n_a],
        smoker=bool(rng.random() < 0.115), race=race,
        amiodarone=bool(rng.random() < 0.03), enzyme_inducer=bool(rng.random() < 0.015))


def make_cohort(n: int, seed: int) -> list[PatientRecord]:
    """``n`` synthetic patients from a numpy Generator seeded with ``seed`` (reproducible)."""
    rng = np.random.default_rng(seed)
    return [make_patient(rng, i + 1) for i in range(n)]


def _uuid(*parts: str) -> str:
    return "urn:uuid:" + str(uuid.uuid5(UUID_NS, "/".join(parts)))


def _obs(subject: str, full: str, loinc: str, display: str, when: str, **value) -> dict:
    return {"fullUrl": full, "resource": {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": display}]},
        "subject": {"reference": subject}, "effectiveDateTime": when, **value}}


def _qty(v: float, code: str, unit: str | None = None) -> dict:
    return {"valueQuantity": {"value": v, "unit": unit or code, "system": "http://unitsofmeasure.org",
                              "code": code}}


def fhir_bundle(records: list[PatientRecord], seed: int) -> dict:
    """A FHIR R4 collection Bundle carrying ``records`` (see module docstring)."""
    ref = dt.date.fromisoformat(REFERENCE_DATE)
    rng = np.random.default_rng(seed + 1)
    entries = []
    when = "2025-12-01T09:00:00Z"
    for k, r in enumerate(records):
        pid = _uuid(r.source_id, "Patient")
        days = int(rng.integers(1, 301))
        birth = dt.date(ref.year - int(r.age_years), ref.month, ref.day) - dt.timedelta(days=days)
        code, disp = OMB[r.race]
        entries.append({"fullUrl": pid, "resource": {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:medtwin:synthetic-cohort", "value": r.source_id}],
            "gender": r.sex, "birthDate": birth.isoformat(),
            "extension": [{"url": US_CORE_RACE, "extension": [
                {"url": "ombCategory" if r.race != "other" else "detailed", "valueCoding": {
                    "system": "urn:oid:2.16.840.1.113883.6.238", "code": code, "display": disp}},
                {"url": "text", "valueString": disp}]}]}})

        def full(tag: str) -> str:
            return _uuid(r.source_id, tag)

        entries.append(_obs(pid, full("wt"), "29463-7", "Body weight", when, **_qty(r.weight_kg, "kg")))
        entries.append(_obs(pid, full("ht"), "8302-2", "Body height", when, **_qty(r.height_cm, "cm")))
        if k % 2 == 0:
            entries.append(_obs(pid, full("scr"), "2160-0", "Creatinine [Mass/volume] in Serum or Plasma",
                                when, **_qty(r.serum_creatinine_mg_dl, "mg/dL")))
        else:
            umol = round(r.serum_creatinine_mg_dl * 88.42, 4)
            entries.append(_obs(pid, full("scr"), "14682-9", "Creatinine [Moles/volume] in Serum or Plasma",
                                when, **_qty(umol, "umol/L")))
        entries.append(_obs(pid, full("a1c"), "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood",
                            when, **_qty(r.hba1c_percent, "%")))
        entries.append(_obs(pid, full("inr"), "6301-6", "INR in Platelet poor plasma by Coagulation assay",
                            when, **_qty(r.inr, "{INR}", "INR")))
        entries.append(_obs(pid, full("alb"), "1751-7", "Albumin [Mass/volume] in Serum or Plasma",
                            when, **_qty(r.albumin_g_dl, "g/dL")))
        entries.append(_obs(pid, full("cyp"), "46724-1", "CYP2C9 gene targeted mutation analysis",
                            "2025-06-01", valueCodeableConcept={"text": f"CYP2C9 {r.cyp2c9}"}))
        entries.append(_obs(pid, full("vk"), "50722-8", "VKORC1 gene targeted mutation analysis",
                            "2025-06-01", valueString=r.vkorc1))
        for flag, drug in ((r.amiodarone, "Amiodarone hydrochloride 200 MG Oral Tablet"),
                           (r.enzyme_inducer, "Carbamazepine 200 MG Oral Tablet")):
            if flag:  # only positives: absence of a statement means "unknown" to the importer
                entries.append({"fullUrl": full(drug.split()[0]), "resource": {
                    "resourceType": "MedicationStatement", "status": "active",
                    "medicationCodeableConcept": {"text": drug}, "subject": {"reference": pid}}})
        smk = ("449868002", "Smokes tobacco daily") if r.smoker else ("266919005", "Never smoked tobacco")
        entries.append(_obs(pid, full("smk"), "72166-2", "Tobacco smoking status", when,
                            valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct",
                                                              "code": smk[0], "display": smk[1]}]}))
    return {"resourceType": "Bundle", "id": "medtwin-synthetic-sample", "type": "collection",
            "timestamp": "2026-01-01T00:00:00Z", "entry": entries}


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1200, help="number of patients (default 1200)")
    ap.add_argument("--seed", type=int, default=20261128, help="numpy seed (default 20261128)")
    ap.add_argument("--fhir-n", type=int, default=25, help="patients in the FHIR sample (default 25)")
    ap.add_argument("--out", type=Path, default=REPO / "medtwin" / "data", help="output directory")
    args = ap.parse_args(argv)
    if args.n < 1 or not 0 <= args.fhir_n <= args.n:
        ap.error("need n >= 1 and 0 <= fhir-n <= n")
    args.out.mkdir(parents=True, exist_ok=True)
    records = make_cohort(args.n, args.seed)
    write_csv(records, args.out / COHORT_CSV, overwrite=True)
    bundle = fhir_bundle(records[: args.fhir_n], args.seed)
    _write_text(args.out / SAMPLE_BUNDLE, json.dumps(bundle, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.n} patients to {args.out / COHORT_CSV} and {args.fhir_n} to {args.out / SAMPLE_BUNDLE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
