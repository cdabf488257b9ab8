"""FHIR R4 bundle import: Patient + Observation resources -> :class:`PatientRecord` list.

Parsing and structural validation use ``fhir.resources``' R4B models (R4B is wire-compatible with
R4 for Patient, Observation and Bundle). On top of the model validation this module checks what
the models do not: the resource type, administrative-gender codes, that every Observation has a
subject that resolves to a Patient in the bundle, that recognised Observations carry a value,
units (through :mod:`medtwin.fhir.units`) and plausibility ranges.

Recognised Observation codes (system ``http://loinc.org``):

=========  ==================================================  =========================
LOINC      meaning                                             record field (unit)
=========  ==================================================  =========================
29463-7    Body weight                                         weight_kg (kg, g, [lb_av])
3141-9     Body weight Measured                                weight_kg
8302-2     Body height                                         height_cm (cm, m, mm, [in_i])
2160-0     Creatinine [Mass/volume] in Serum or Plasma         serum_creatinine_mg_dl
14682-9    Creatinine [Moles/volume] in Serum or Plasma        serum_creatinine_mg_dl (umol/L / 88.42)
4548-4     Hemoglobin A1c/Hemoglobin.total in Blood (NGSP %)   hba1c_percent
59261-8    Hemoglobin A1c/Hemoglobin.total in Blood (IFCC)     hba1c_percent (0.09148*mmol/mol + 2.152)
6301-6     INR in Platelet poor plasma by Coagulation assay    inr
1751-7     Albumin [Mass/volume] in Serum or Plasma            albumin_g_dl (g/dL, g/L)
46724-1    CYP2C9 gene targeted mutation analysis (Nominal)    cyp2c9 (diplotype)
50722-8    VKORC1 gene targeted mutation analysis (Nominal)    vkorc1 (-1639G>A genotype)
84413-4    Genotype display name (HL7 Genomics Reporting IG)   cyp2c9 / vkorc1, gene from component
           with component 48018-6 "Gene studied [ID]"          (HGNC:2623 CYP2C9, HGNC:23663 VKORC1)
72166-2    Tobacco smoking status                              smoker (SNOMED CT answer codes)
=========  ==================================================  =========================

The two gene-specific codes are the LOINC "<gene> gene targeted mutation analysis in Blood or
Tissue by Molecular genetics method Nominal" terms; they were taken from the LOINC table as
recalled and could not be re-checked against loinc.org offline, so the importer also accepts the
HL7 Genomics Reporting IG form (84413-4 + 48018-6 gene component; codes as used in that IG's
published examples, e.g. Observation Pgx-geno-1002, STU2). Genotypes are read from
``valueCodeableConcept`` (coding display, coding code, then text) or ``valueString``; VKORC1
may be written in gene orientation (-1639G>A: G/A) or, labelled rs9923231, on the genomic plus
strand (C/T), see :func:`medtwin.twin.record.normalise_vkorc1`.

Rules:

* One record per Patient, in bundle order. ``source_id`` is the first ``Patient.identifier``
  value, else ``Patient.id``, else the entry's fullUrl.
* Observation.subject.reference may be ``Patient/<id>``, the patient's fullUrl
  (``urn:uuid:<uuid>`` or an absolute URL), or an absolute or versioned form of ``Patient/<id>``
  (``https://host/fhir/Patient/<id>``, ``Patient/<id>/_history/2``).
* When several Observations give the same field, the latest ``effective[x]`` wins (dateTime,
  instant, or Period start); a missing effective time counts as oldest; ties go to the later
  entry in the bundle. Observations with status ``entered-in-error`` or ``cancelled`` are
  ignored; an Observation with ``dataAbsentReason`` and no value is skipped.
* Age is in completed years at ``as_of`` (default: today). A partial birthDate (``1960`` or
  ``1960-05``) is taken as 1 July or the 15th of the month.
* Sex from Patient.gender: ``male``/``female``; ``other``/``unknown`` give no sex.
* Race from the US Core race extension (ombCategory 2106-3 white, 2054-5 black, 2028-9 asian;
  any other category, several categories, or only a ``detailed`` race code -> other).
* amiodarone / enzyme_inducer: True when an ``active`` MedicationStatement or MedicationRequest
  for the patient names amiodarone, or an enzyme inducer as defined by the IWPC algorithm
  (carbamazepine, phenytoin, rifampin/rifampicin; IWPC, N Engl J Med 2009;360:753-764), in
  ``medicationCodeableConcept`` (coding display or text, matched by ingredient name). Absence of
  such a resource leaves the field missing (unknown), never False. Medications given only as a
  ``medicationReference`` are not resolved.

Every error is an :class:`~medtwin.errors.ImportFormatError` whose message names the resource
(type/id, or entry index) and the field at fault, never a patient value; an implausible value
raises :class:`~medtwin.twin.record.ImportRangeError` (both ImportFormatError and RangeError).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pydantic

from medtwin.errors import ImportFormatError, RangeError, ValidationError
from medtwin.fhir.units import convert
from medtwin.twin.record import (
    ImportRangeError,
    PatientRecord,
    check_range,
    normalise_cyp2c9,
    normalise_vkorc1,
)

__all__ = ["load_bundle", "QUANTITY_CODES", "GENOTYPE_CODES", "SMOKING_CODES", "MEDICATION_NAMES", "LOINC", "SNOMED"]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"

#: LOINC -> (record field, unit kind of medtwin.fhir.units)
QUANTITY_CODES: dict[str, tuple[str, str]] = {
    "29463-7": ("weight_kg", "mass"),
    "3141-9": ("weight_kg", "mass"),
    "8302-2": ("height_cm", "length"),
    "2160-0": ("serum_creatinine_mg_dl", "creatinine"),
    "14682-9": ("serum_creatinine_mg_dl", "creatinine"),
    "4548-4": ("hba1c_percent", "hba1c"),
    "59261-8": ("hba1c_percent", "hba1c"),
    "6301-6": ("inr", "ratio"),
    "1751-7": ("albumin_g_dl", "albumin"),
}
#: Default unit when a quantity carries none: only the dimensionless INR.
_DEFAULT_UNIT = {"ratio": "1"}

#: LOINC -> record field for gene-specific genotype observations.
GENOTYPE_CODES: dict[str, str] = {"46724-1": "cyp2c9", "50722-8": "vkorc1"}
GENOTYPE_DISPLAY_NAME = "84413-4"
GENE_STUDIED = "48018-6"
_HGNC = {"2623": "cyp2c9", "23663": "vkorc1"}
_GENE_SYMBOL = {"CYP2C9": "cyp2c9", "VKORC1": "vkorc1"}

SMOKING_STATUS = "72166-2"
#: SNOMED CT answers of 72166-2 (US Core smoking-status value set) -> current smoker?
SMOKING_CODES: dict[str, bool | None] = {
    "449868002": True,          # Smokes tobacco daily (current every day smoker)
    "428041000124106": True,    # Occasional tobacco smoker (current some day smoker)
    "77176002": True,           # Smoker (current status unknown)
    "428071000124103": True,    # Heavy tobacco smoker
    "428061000124105": True,    # Light tobacco smoker
    "8517006": False,           # Ex-smoker (former smoker)
    "266919005": False,         # Never smoked tobacco
    "266927001": None,          # Tobacco smoking consumption unknown
}

#: record field -> ingredient names (lower case) that set it for an active medication.
MEDICATION_NAMES: dict[str, tuple[str, ...]] = {
    "amiodarone": ("amiodarone",),
    "enzyme_inducer": ("carbamazepine", "phenytoin", "rifampin", "rifampicin"),
}

_RACE_OMB = {"2106-3": "white", "2054-5": "black", "2028-9": "asian"}
_IGNORED_STATUS = {"entered-in-error", "cancelled"}
_UTC = _dt.timezone.utc
_PATIENT_REF = re.compile(r"(Patient/[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")
_OLDEST = _dt.datetime.min.replace(tzinfo=_UTC)


# ---------------------------------------------------------------------------------- parsing
def _read_source(source: Any) -> Any:
    """Return the decoded JSON value of ``source`` (dict, JSON text, bytes, or a file path)."""
    if isinstance(source, dict):
        return source
    if isinstance(source, (bytes, bytearray)):
        try:
            source = bytes(source).decode("utf-8")
        except UnicodeDecodeError:
            raise ImportFormatError("bundle: bytes are not UTF-8 JSON") from None
        return _parse_json(source, "bundle text")
    if isinstance(source, os.PathLike):
        return _parse_json(_read_file(Path(source)), f"file {Path(source).name}")
    if isinstance(source, str):
        stripped = source.lstrip()
        if stripped[:1] not in ("{", "[", '"'):
            if _is_file(source):
                return _parse_json(_read_file(Path(source)), f"file {Path(source).name}")
            try:
                return json.loads(source)
            except (ValueError, RecursionError):
                raise ImportFormatError("bundle: neither an existing file nor JSON text") from None
        return _parse_json(source, "bundle text")
    raise ImportFormatError(
        f"bundle: expected a dict, JSON text or a path, got {type(source).__name__}")


def _is_file(s: str) -> bool:
    try:
        return len(s) < 4096 and os.path.isfile(s)
    except (OSError, ValueError):
        return False


def _read_file(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImportFormatError(f"file {p.name}: not found") from None
    except UnicodeDecodeError:
        raise ImportFormatError(f"file {p.name}: not UTF-8 text") from None
    except OSError as e:
        raise ImportFormatError(f"file {p.name}: cannot be read ({e.strerror})") from None


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ImportFormatError(f"{what}: not valid JSON (line {e.lineno}, column {e.colno})") from None
    except (RecursionError, ValueError):
        raise ImportFormatError(f"{what}: not valid JSON") from None


def _resource_label(raw_entry: Any, index: int) -> str:
    """'Observation/obs-1' from a raw entry dict, falling back to the entry index."""
    res = raw_entry.get("resource") if isinstance(raw_entry, dict) else None
    if isinstance(res, dict):
        rtype = res.get("resourceType")
        rid = res.get("id")
        rtype = rtype if isinstance(rtype, str) and len(rtype) < 64 else "resource"
        if isinstance(rid, str) and re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", rid):
            return f"{rtype}/{rid}"
        return f"{rtype} (entry {index})"
    return f"entry {index}"


def _loc_to_field(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


def _translate_pydantic(err: pydantic.ValidationError, raw: dict) -> ImportFormatError:
    """Turn a pydantic error on a Bundle into one message naming resource and field."""
    problems = []
    entries = raw.get("entry") if isinstance(raw.get("entry"), list) else []
    for e in err.errors()[:5]:
        loc = list(e.get("loc", ()))
        where = "Bundle"
        if len(loc) >= 2 and loc[0] == "entry" and isinstance(loc[1], int):
            idx = loc[1]
            rest = loc[2:]
            if rest[:1] == ["resource"]:
                rest = rest[1:]
                where = _resource_label(entries[idx] if idx < len(entries) else None, idx)
            else:
                where = f"Bundle entry {idx}"
            loc = rest
        field = _loc_to_field(loc)
        msg = str(e.get("msg", ""))
        inp = e.get("input")
        # Never echo the input: drop the message when it quotes the offending value.
        if inp is not None and not isinstance(inp, (dict, list)) and str(inp) and str(inp) in msg:
            msg = ""
        msg = " ".join(msg.split())[:160]
        kind = e.get("type", "invalid")
        problems.append(f"{where} field {field}: {kind}" + (f" ({msg})" if msg else ""))
    more = len(err.errors()) - len(problems)
    text = "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
    return ImportFormatError("invalid FHIR R4 bundle: " + text)


def _validate_bundle(raw: Any):
    from fhir.resources.R4B.bundle import Bundle

    if not isinstance(raw, dict):
        raise ImportFormatError(f"bundle: top-level JSON value is a {type(raw).__name__}, not a Bundle object")
    rtype = raw.get("resourceType")
    if rtype != "Bundle":
        shown = rtype if isinstance(rtype, str) and len(rtype) < 64 else type(rtype).__name__
        raise ImportFormatError(f"bundle field resourceType: expected 'Bundle', got {shown!r}")
    entries = raw.get("entry")
    if isinstance(entries, list):
        for i, ent in enumerate(entries):
            res = ent.get("resource") if isinstance(ent, dict) else None
            if isinstance(res, dict) and "resourceType" in res:
                rt = res["resourceType"]
                if not isinstance(rt, str) or not _known_resource_type(rt):
                    raise ImportFormatError(
                        f"{_resource_label(ent, i)} field resourceType: not a FHIR R4 resource type")
    try:
        return Bundle.model_validate(raw)
    except pydantic.ValidationError as e:
        raise _translate_pydantic(e, raw) from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as e:
        raise ImportFormatError(f"invalid FHIR R4 bundle: {type(e).__name__} while validating") from None


def _known_resource_type(rt: str) -> bool:
    if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", rt):
        return False
    try:
        from fhir.resources.R4B import get_fhir_model_class

        get_fhir_model_class(rt)
        return True
    except (KeyError, ValueError, AttributeError, ImportError):
        return False


# ---------------------------------------------------------------------------------- helpers
def _codes(concept: Any, system: str | None = None) -> list[str]:
    out = []
    for c in (getattr(concept, "coding", None) or []):
        if c.code and (system is None or c.system == system):
            out.append(str(c.code))
    return out


def _as_utc(value: Any) -> _dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_UTC)
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day, tzinfo=_UTC)
    if isinstance(value, str):
        m = re.fullmatch(r"(\d{4})(?:-(\d{2}))?", value)
        if m:
            return _dt.datetime(int(m.group(1)), int(m.group(2) or 1), 1, tzinfo=_UTC)
    return None


def _effective(obs: Any) -> _dt.datetime:
    for attr in ("effectiveDateTime", "effectiveInstant"):
        t = _as_utc(getattr(obs, attr, None))
        if t is not None:
            return t
    period = getattr(obs, "effectivePeriod", None)
    if period is not None:
        t = _as_utc(period.start) or _as_utc(period.end)
        if t is not None:
            return t
    return _OLDEST


def _birth_date(value: Any, where: str) -> _dt.date:
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"(\d{4})(?:-(\d{2}))?", value)
        if m:
            year = int(m.group(1))
            if m.group(2):
                month = int(m.group(2))
                if 1 <= month <= 12:
                    return _dt.date(year, month, 15)
            else:
                return _dt.date(year, 7, 1)
    raise ImportFormatError(f"{where} field birthDate: not a FHIR date")


def _age_years(birth: _dt.date, as_of: _dt.date, where: str) -> float:
    if birth > as_of:
        raise ImportFormatError(f"{where} field birthDate: later than the reference date")
    years = as_of.year - birth.year - ((as_of.month, as_of.day) < (birth.month, birth.day))
    return float(years)


def _race(patient: Any) -> str | None:
    for ext in (getattr(patient, "extension", None) or []):
        if ext.url != US_CORE_RACE:
            continue
        cats = [x.valueCoding.code for x in (ext.extension or [])
                if x.url == "ombCategory" and x.valueCoding is not None and x.valueCoding.code]
        if len(cats) == 1:
            return _RACE_OMB.get(str(cats[0]), "other")
        if len(cats) > 1:
            return "other"
        if any(x.url == "detailed" for x in (ext.extension or [])):
            return "other"
    return None


def _genotype_texts(obs: Any) -> list[str]:
    texts: list[str] = []
    cc = getattr(obs, "valueCodeableConcept", None)
    if cc is not None:
        for c in (cc.coding or []):
            for t in (c.display, c.code):
                if t:
                    texts.append(str(t))
        if cc.text:
            texts.append(str(cc.text))
    if getattr(obs, "valueString", None):
        texts.append(str(obs.valueString))
    return texts


def _gene_of_display_name(obs: Any, texts: list[str]) -> str | None:
    for comp in (getattr(obs, "component", None) or []):
        if GENE_STUDIED in _codes(comp.code, LOINC) and comp.valueCodeableConcept is not None:
            for c in (comp.valueCodeableConcept.coding or []):
                code = str(c.code or "").upper().removeprefix("HGNC:")
                if code in _HGNC:
                    return _HGNC[code]
                sym = str(c.display or "").strip().upper()
                if sym in _GENE_SYMBOL:
                    return _GENE_SYMBOL[sym]
            return None  # a gene we do not read (e.g. CYP2C19)
    for t in texts:
        s = t.strip().upper()
        for sym, field in _GENE_SYMBOL.items():
            if s.startswith(sym) and not s[len(sym):len(sym) + 1].isdigit():
                return field
    return None


@dataclass
class _Found:
    when: _dt.datetime
    order: int
    value: Any


# ---------------------------------------------------------------------------------- main API
def load_bundle(source: Any, *, as_of: _dt.date | None = None) -> list[PatientRecord]:
    """Import a FHIR R4 Bundle into one :class:`PatientRecord` per Patient, in bundle order.

    Args:
        source: the bundle as a dict, JSON text (str or bytes), or a path (str or PathLike) to a
            JSON file.
        as_of: date at which ages are computed (default: today).

    Returns:
        One record per Patient resource; Observations are linked through subject.reference and
        normalised as described in the module docstring.

    Raises:
        ImportFormatError: the source is not JSON, not a Bundle, fails FHIR R4 model validation,
            has an Observation, MedicationStatement or MedicationRequest without subject or whose
            subject is not a Patient in the bundle,
            a recognised Observation without value, an unknown unit, an unknown gender/genotype/
            smoking code. The message names the resource type/id (or entry index) and the field.
        ImportRangeError: a value outside its plausibility range (an ImportFormatError and a
            RangeError; the message names the resource, field and range).
    """
    if as_of is None:
        as_of = _dt.date.today()
    elif isinstance(as_of, _dt.datetime):
        as_of = as_of.date()
    elif not isinstance(as_of, _dt.date):
        raise ValidationError("as_of must be a datetime.date")
    raw = _read_source(source)
    bundle = _validate_bundle(raw)

    patients: list[tuple[str, Any, str | None]] = []      # (label, resource, fullUrl)
    ref_index: dict[str, int] = {}
    observations: list[tuple[int, str, Any]] = []
    medications: list[tuple[int, str, Any]] = []
    for i, entry in enumerate(bundle.entry or []):
        res = entry.resource
        if res is None:
            continue
        rtype = res.get_resource_type()
        label = f"{rtype}/{res.id}" if res.id else f"{rtype} (entry {i})"
        if rtype == "Patient":
            k = len(patients)
            patients.append((label, res, entry.fullUrl))
            keys = []
            if res.id:
                keys.append(f"Patient/{res.id}")
            if entry.fullUrl:
                full = str(entry.fullUrl)
                keys.append(full)
                m = re.search(r"(Patient/[A-Za-z0-9\-.]{1,64})$", full)
                if m:
                    keys.append(m.group(1))
            for key in keys:
                if key in ref_index and ref_index[key] != k:
                    raise ImportFormatError(f"{label} field id: duplicate Patient id or fullUrl in the bundle")
                ref_index[key] = k
        elif rtype == "Observation":
            observations.append((i, label, res))
        elif rtype in ("MedicationStatement", "MedicationRequest"):
            medications.append((i, label, res))

    found: list[dict[str, _Found]] = [{} for _ in patients]
    for order, label, obs in observations:
        k = _subject_index(obs, label, ref_index)
        if obs.status in _IGNORED_STATUS:
            continue
        got = _extract(obs, label)
        if got is None:
            continue
        field, value = got
        when = _effective(obs)
        prev = found[k].get(field)
        if prev is None or (when, order) >= (prev.when, prev.order):
            found[k][field] = _Found(when, order, value)

    for _, label, med in medications:
        k = _subject_index(med, label, ref_index)
        if med.status != "active":
            continue
        for field in _medication_fields(med):
            found[k][field] = _Found(_OLDEST, -1, True)

    records = []
    for k, (label, pat, full_url) in enumerate(patients):
        values: dict[str, Any] = {f: x.value for f, x in found[k].items()}
        values["source_id"] = _source_id(pat, full_url, label)
        if pat.birthDate is not None:
            age = _age_years(_birth_date(pat.birthDate, label), as_of, label)
            try:
                values["age_years"] = check_range("age_years", age)
            except RangeError as e:
                raise ImportRangeError(f"{label} field birthDate: {e}") from None
        gender = pat.gender
        if gender is not None:
            if gender in ("male", "female"):
                values["sex"] = gender
            elif gender not in ("other", "unknown"):
                raise ImportFormatError(
                    f"{label} field gender: not an administrative-gender code (male, female, other, unknown)")
        values["race"] = _race(pat)
        try:
            records.append(PatientRecord(**values))
        except ValidationError as e:
            raise ImportFormatError(f"{label}: {e}") from None
    return records


def _subject_index(res: Any, label: str, ref_index: dict[str, int]) -> int:
    """Index of the Patient that ``res.subject`` refers to."""
    if res.subject is None or not res.subject.reference:
        raise ImportFormatError(f"{label} field subject: missing (the resource needs a Patient subject)")
    ref = str(res.subject.reference)
    k = ref_index.get(ref)
    if k is None:  # absolute or versioned form of a relative reference: .../Patient/<id>[/_history/<v>]
        m = _PATIENT_REF.search(ref)
        k = ref_index.get(m.group(1)) if m else None
    if k is None:
        raise ImportFormatError(f"{label} field subject.reference: does not resolve to a Patient in this bundle")
    return k


def _medication_fields(med: Any) -> set[str]:
    cc = getattr(med, "medicationCodeableConcept", None)
    if cc is None:
        return set()
    words = " ".join([str(c.display or "") for c in (cc.coding or [])] + [str(cc.text or "")]).lower()
    return {field for field, names in MEDICATION_NAMES.items() if any(n in words for n in names)}


def _source_id(pat: Any, full_url: Any, label: str) -> str:
    for ident in (pat.identifier or []):
        if ident.value and str(ident.value).strip():
            return str(ident.value)
    if pat.id:
        return str(pat.id)
    if full_url:
        return str(full_url)
    raise ImportFormatError(f"{label} field identifier: the Patient has no identifier, id or fullUrl")


def _extract(obs: Any, label: str) -> tuple[str, Any] | None:
    """(record field, normalised value) of a recognised Observation, or None if not ours."""
    codes = _codes(obs.code, LOINC)
    has_value = any(getattr(obs, a, None) is not None for a in (
        "valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean", "valueInteger",
        "valueRange", "valueRatio", "valueSampledData", "valueTime", "valueDateTime", "valuePeriod"))
    for code in codes:
        if code in QUANTITY_CODES:
            field, kind = QUANTITY_CODES[code]
            if obs.valueQuantity is None:
                return _no_value(obs, label, "valueQuantity", has_value)
            q = obs.valueQuantity
            if q.value is None:
                raise ImportFormatError(f"{label} field valueQuantity.value: missing value")
            if q.comparator is not None:
                raise ImportFormatError(
                    f"{label} field valueQuantity.comparator: censored values ('<', '>') are not accepted")
            unit = q.code if q.code else q.unit
            if unit is None:
                unit = _DEFAULT_UNIT.get(kind)
            where = f"{label} field valueQuantity"
            v = convert(float(q.value), unit, kind, where=where)
            try:
                return field, check_range(field, v)
            except RangeError as e:
                raise ImportRangeError(f"{where}: {e}") from None
            except ValidationError as e:
                raise ImportFormatError(f"{where}: {e}") from None
        if code in GENOTYPE_CODES or code == GENOTYPE_DISPLAY_NAME:
            texts = _genotype_texts(obs)
            if not texts:
                return _no_value(obs, label, "valueCodeableConcept or valueString", has_value)
            field = GENOTYPE_CODES.get(code) or _gene_of_display_name(obs, texts)
            if field is None:
                return None
            norm = normalise_cyp2c9 if field == "cyp2c9" else normalise_vkorc1
            for t in texts:
                try:
                    return field, norm(t)
                except ValidationError:
                    continue
            what = "CYP2C9 diplotype (e.g. *1/*3)" if field == "cyp2c9" else "VKORC1 -1639G>A genotype (G/G, G/A, A/A)"
            raise ImportFormatError(f"{label} field valueCodeableConcept/valueString: not a recognised {what}")
        if code == SMOKING_STATUS:
            cc = obs.valueCodeableConcept
            if cc is None:
                return _no_value(obs, label, "valueCodeableConcept", has_value)
            for c in _codes(cc, SNOMED):
                if c in SMOKING_CODES:
                    return "smoker", SMOKING_CODES[c]
            raise ImportFormatError(
                f"{label} field valueCodeableConcept: not a SNOMED CT smoking-status answer code")
    return None


def _no_value(obs: Any, label: str, expected: str, has_other_value: bool) -> None:
    if has_other_value:
        raise ImportFormatError(f"{label} field value[x]: expected {expected} for this code")
    if obs.dataAbsentReason is not None:
        return None
    raise ImportFormatError(f"{label} field {expected}: missing value (and no dataAbsentReason)")
