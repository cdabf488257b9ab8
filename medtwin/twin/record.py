"""The validated patient record, its plausibility ranges, derived quantities and data minimisation.

A :class:`PatientRecord` is what every importer (FHIR, CSV) produces and the only thing the
encryption layer reads, through :meth:`PatientRecord.minimise`. Units are fixed by the field
names (``weight_kg``, ``serum_creatinine_mg_dl``, ...); importers convert to them first.

Plausibility ranges (:data:`RANGES`) are deliberately wide: they reject unit mix-ups and typing
errors (a creatinine in umol/L entered as mg/dL, a weight in grams), not unusual patients.
Model-specific input ranges are narrower and are checked by the models themselves.

Errors name the field and the range, never the value (no patient values in messages).
"""
from __future__ import annotations

import decimal
import math
import numbers
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

from medtwin.errors import ImportFormatError, RangeError, ValidationError

__all__ = [
    "RANGES",
    "PatientRecord",
    "ImportRangeError",
    "COVARIATES",
    "CYP2C9_ACTIVITY",
    "check_range",
    "normalise_cyp2c9",
    "normalise_vkorc1",
    "cockcroft_gault",
]


class ImportRangeError(ImportFormatError, RangeError):
    """An imported value lies outside its plausibility range.

    Both an :class:`~medtwin.errors.ImportFormatError` (the message names the resource or row and
    the field) and a :class:`~medtwin.errors.RangeError` (the message names the range).
    """


@dataclass(frozen=True)
class PlausibleRange:
    """Closed interval ``[low, high]`` in the field's unit, with the reason for its bounds."""

    low: float
    high: float
    unit: str
    rationale: str

    def describe(self) -> str:
        return f"{self.low:g}-{self.high:g} {self.unit}".rstrip()


#: Plausibility range of every numeric field, in the unit named by the field.
RANGES: dict[str, PlausibleRange] = {
    "age_years": PlausibleRange(
        0.0, 120.0, "years",
        "0 (newborn) to 120: the oldest verified human lifespan is 122 years (Jeanne Calment); "
        "older values are data-entry errors."),
    "weight_kg": PlausibleRange(
        0.4, 350.0, "kg",
        "0.4 kg is the weight of the smallest surviving extremely preterm newborns; 350 kg "
        "bounds adult weights seen in clinical care (larger values are almost always lb or g "
        "entered as kg)."),
    "height_cm": PlausibleRange(
        30.0, 250.0, "cm",
        "30 cm covers extremely preterm newborns (crown-heel ~30 cm at 23 weeks); 250 cm is above "
        "the tallest recorded adults except one (272 cm), so larger values are unit errors (mm)."),
    "serum_creatinine_mg_dl": PlausibleRange(
        0.1, 20.0, "mg/dL",
        "adult reference interval is about 0.6-1.3 mg/dL; 0.1 allows small children and low "
        "muscle mass, 20 mg/dL covers untreated end-stage renal failure. A value in umol/L "
        "(x88.42) entered as mg/dL lands above 20 for any real patient with Scr > 0.23 mg/dL."),
    "hba1c_percent": PlausibleRange(
        3.0, 20.0, "%",
        "NGSP HbA1c: normal 4-5.6 %, assays report roughly 4-18 %; below 3 % or above 20 % is "
        "analytically implausible (and an IFCC mmol/mol value entered as % lands above 20)."),
    "inr": PlausibleRange(
        0.5, 15.0, "1",
        "INR is 0.8-1.2 untreated, 2-3 (up to 3.5) on warfarin; laboratories report up to about "
        "10-15 before flagging 'unmeasurable'. Below 0.5 is not produced by the PT/ISI formula "
        "for a normal reagent."),
    "albumin_g_dl": PlausibleRange(
        0.5, 7.0, "g/dL",
        "serum albumin reference 3.5-5.0 g/dL; severe nephrotic syndrome reaches ~1 g/dL and "
        "dehydration ~5.5-6; a g/L value (x10) entered as g/dL lands above 7."),
}

#: CYP2C9 star alleles recognised and their activity values in the CPIC CYP2C9 activity-score
#: scheme (Theken KN et al. CPIC guideline for CYP2C9 and NSAIDs. Clin Pharmacol Ther
#: 2020;108:191-200): normal function *1 = 1; decreased function *2, *5, *8, *11 = 0.5;
#: no function *3, *6 = 0. The diplotype score is the sum (0-2).
CYP2C9_ACTIVITY: dict[str, float] = {
    "*1": 1.0, "*2": 0.5, "*3": 0.0, "*5": 0.5, "*6": 0.0, "*8": 0.5, "*11": 0.5,
}

_VKORC1_GENOTYPES = ("G/G", "G/A", "A/A")
_SEXES = ("male", "female")
_RACES = ("asian", "black", "white", "other")

_NUMERIC_FIELDS = tuple(RANGES)
_BOOL_FIELDS = ("smoker", "amiodarone", "enzyme_inducer")


def check_range(field: str, value: Any) -> float:
    """Return ``value`` as a float after checking its type and plausibility range.

    Raises:
        ValidationError: ``field`` is not a numeric record field, or the value is not a finite
            real number (booleans are refused).
        RangeError: the value lies outside ``RANGES[field]``; the message names the field and
            the range, never the value.
    """
    rng = RANGES.get(field)
    if rng is None:
        raise ValidationError(f"{field!r} is not a numeric patient-record field")
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal)):
        raise ValidationError(f"field {field}: expected a number")
    v = float(value)
    if not math.isfinite(v):
        raise ValidationError(f"field {field}: expected a finite number")
    if not (rng.low <= v <= rng.high):
        raise RangeError(f"field {field} outside its plausible range {rng.describe()}")
    return v


_CYP_ALLELE = re.compile(r"^\*?(\d{1,2})$")


def normalise_cyp2c9(text: str) -> str:
    """Canonical CYP2C9 diplotype ``"*a/*b"`` with the lower allele number first.

    Accepts ``"*1/*3"``, ``"*3/*1"``, ``"1/3"``, ``"CYP2C9*1/*3"``, ``"CYP2C9 *1/*3"``,
    Free text around the diplotype (``"*1/*3 (intermediate metaboliser)"``) is not accepted.

    Raises:
        ValidationError: not a diplotype of recognised alleles (:data:`CYP2C9_ACTIVITY`).
    """
    if not isinstance(text, str):
        raise ValidationError("field cyp2c9: expected a diplotype string like '*1/*3'")
    s = text.strip().upper().replace(" ", "")
    if s.startswith("CYP2C9"):
        s = s[len("CYP2C9"):]
    parts = s.split("/")
    if len(parts) != 2:
        raise ValidationError("field cyp2c9: expected a diplotype like '*1/*3'")
    alleles = []
    for p in parts:
        m = _CYP_ALLELE.match(p)
        if not m or f"*{int(m.group(1))}" not in CYP2C9_ACTIVITY:
            raise ValidationError(
                "field cyp2c9: unrecognised allele (recognised: " + ", ".join(CYP2C9_ACTIVITY) + ")")
        alleles.append(int(m.group(1)))
    a, b = sorted(alleles)
    return f"*{a}/*{b}"


_VK_LABELS = ("VKORC1", "C.-1639G>A", "-1639G>A", "1639G>A", "-1639", ":", "(", ")", ",")
_GENOMIC_TO_GENE = str.maketrans({"C": "G", "T": "A"})


def normalise_vkorc1(text: str) -> str:
    """Canonical VKORC1 -1639G>A genotype: ``"G/G"``, ``"G/A"`` or ``"A/A"``.

    Alleles are on the gene's (coding) strand, where the promoter variant is c.-1639G>A. Accepts
    ``"G/A"``, ``"A/G"``, ``"GA"``, ``"ag"``, ``"VKORC1 -1639G>A G/A"``. When the text names the
    dbSNP id ``rs9923231`` the alleles may also be given on the genomic plus strand, where the same
    variant reads C>T because VKORC1 lies on the minus strand of chromosome 16 (this is how the HL7
    Genomics Reporting IG example Observation Pgx-geno-1003 writes it: "VKORC1 rs9923231 C/T");
    C/T is then read as G/A. C/T without the rs9923231 label is refused: it could be the linked
    but distinct 1173C>T (rs9934438).

    Raises:
        ValidationError: not one of the three genotypes.
    """
    if not isinstance(text, str):
        raise ValidationError("field vkorc1: expected a genotype string like 'G/A'")
    s = text.strip().upper().replace(" ", "")
    genomic = "RS9923231" in s
    s = s.replace("RS9923231", "")
    for p in _VK_LABELS:
        s = s.replace(p, "")
    s = s.replace("/", "").replace("|", "")
    if genomic and len(s) == 2 and all(c in "CT" for c in s):
        s = s.translate(_GENOMIC_TO_GENE)
    if len(s) != 2 or any(c not in "GA" for c in s):
        raise ValidationError("field vkorc1: expected a -1639G>A genotype G/G, G/A or A/A")
    return _VKORC1_GENOTYPES[s.count("A")]


def cockcroft_gault(age_years: float, weight_kg: float, scr_mg_dl: float, female: bool) -> float:
    """Creatinine clearance [mL/min] by Cockcroft and Gault.

    CrCl = (140 - age) * weight / (72 * Scr), times 0.85 for women.
    Source: Cockcroft DW, Gault MH. Prediction of creatinine clearance from serum creatinine.
    Nephron 1976;16:31-41. This plaintext function is the reference that the encrypted
    Cockcroft-Gault computation is checked against.

    Raises:
        ValidationError: ``scr_mg_dl`` is not positive or an argument is not finite.
    """
    vals = (float(age_years), float(weight_kg), float(scr_mg_dl))
    if not all(math.isfinite(v) for v in vals):
        raise ValidationError("Cockcroft-Gault: arguments must be finite")
    if vals[2] <= 0:
        raise ValidationError("Cockcroft-Gault: serum creatinine must be positive")
    crcl = (140.0 - vals[0]) * vals[1] / (72.0 * vals[2])
    return crcl * 0.85 if female else crcl


def _bool_value(field: str, v: Any) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    raise ValidationError(f"field {field}: expected true, false or missing")


@dataclass(frozen=True, repr=False)
class PatientRecord:
    """One patient's covariates after unit normalisation and plausibility checks.

    Only ``source_id`` is required. ``source_id`` is the identifier from the source system; it
    stays on the client (use :func:`medtwin.twin.pseudonym.pseudonym` for anything that leaves
    it). Construction normalises genotypes (see :func:`normalise_cyp2c9`,
    :func:`normalise_vkorc1`), lower-cases ``sex`` and ``race`` and converts ints to floats.

    Raises (from the constructor):
        ValidationError: a field has the wrong type or an unknown code (sex, race, genotype).
        RangeError: a numeric field lies outside :data:`RANGES`.
    """

    source_id: str
    age_years: float | None = None
    sex: str | None = None
    weight_kg: float | None = None
    height_cm: float | None = None
    serum_creatinine_mg_dl: float | None = None
    hba1c_percent: float | None = None
    inr: float | None = None
    albumin_g_dl: float | None = None
    cyp2c9: str | None = None
    vkorc1: str | None = None
    smoker: bool | None = None
    race: str | None = None
    amiodarone: bool | None = None
    enzyme_inducer: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source_id, str) or not self.source_id.strip():
            raise ValidationError("field source_id: a non-empty identifier is required")
        set_ = object.__setattr__
        for name in _NUMERIC_FIELDS:
            v = getattr(self, name)
            if v is not None:
                set_(self, name, check_range(name, v))
        if self.sex is not None:
            s = self.sex.strip().lower() if isinstance(self.sex, str) else None
            if s not in _SEXES:
                raise ValidationError("field sex: expected 'male', 'female' or missing")
            set_(self, "sex", s)
        if self.race is not None:
            r = self.race.strip().lower() if isinstance(self.race, str) else None
            if r not in _RACES:
                raise ValidationError("field race: expected one of " + ", ".join(_RACES) + " or missing")
            set_(self, "race", r)
        if self.cyp2c9 is not None:
            set_(self, "cyp2c9", normalise_cyp2c9(self.cyp2c9))
        if self.vkorc1 is not None:
            set_(self, "vkorc1", normalise_vkorc1(self.vkorc1))
        for name in _BOOL_FIELDS:
            _bool_value(name, getattr(self, name))

    def __repr__(self) -> str:
        # Values (and the source identifier) are withheld so that a record never leaks into logs.
        present = [f.name for f in fields(self) if f.name != "source_id" and getattr(self, f.name) is not None]
        return f"PatientRecord(<values withheld>; present: {', '.join(present) or 'none'})"

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """All field names in declaration order (the CSV column order)."""
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (None for missing)."""
        return asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "PatientRecord":
        """Build from a mapping of field names; unknown keys raise.

        Raises:
            ValidationError: an unknown key, or any constructor error.
        """
        unknown = set(data) - set(cls.field_names())
        if unknown:
            raise ValidationError("unknown patient-record field(s): " + ", ".join(sorted(unknown)))
        return cls(**dict(data))

    # ------------------------------------------------------------------ derived quantities
    def _need(self, *names: str) -> None:
        for n in names:
            if getattr(self, n) is None:
                raise ValidationError(f"field {n} is required for this quantity but missing")

    @property
    def female(self) -> bool:
        """True for female, False for male.

        Raises:
            ValidationError: sex is missing.
        """
        self._need("sex")
        return self.sex == "female"

    def bmi(self) -> float:
        """Body-mass index [kg/m^2] = weight / height^2 (Quetelet; Keys A et al. J Chronic Dis
        1972;25:329-343).

        Raises:
            ValidationError: weight or height is missing.
        """
        self._need("weight_kg", "height_cm")
        h = self.height_cm / 100.0
        return self.weight_kg / (h * h)

    def bsa_mosteller(self) -> float:
        """Body surface area [m^2] = sqrt(height_cm * weight_kg / 3600).

        Source: Mosteller RD. Simplified calculation of body-surface area. N Engl J Med
        1987;317:1098.

        Raises:
            ValidationError: weight or height is missing.
        """
        self._need("weight_kg", "height_cm")
        return math.sqrt(self.height_cm * self.weight_kg / 3600.0)

    def ideal_body_weight_devine(self) -> float:
        """Ideal body weight [kg]: 50 kg (men) or 45.5 kg (women) + 2.3 kg per inch over 5 ft.

        Source: Devine BJ. Gentamicin therapy. Drug Intell Clin Pharm 1974;8:650-655.
        Defined for adults; below 60 in (152.4 cm) the line is extrapolated.

        Raises:
            ValidationError: sex or height is missing, or the result is not positive (heights
                far below the adult range).
        """
        self._need("sex", "height_cm")
        inches = self.height_cm / 2.54
        base = 45.5 if self.sex == "female" else 50.0
        ibw = base + 2.3 * (inches - 60.0)
        if ibw <= 0:
            raise ValidationError("Devine ideal body weight is not defined at this height")
        return ibw

    def creatinine_clearance_cg(self) -> float:
        """Cockcroft-Gault creatinine clearance [mL/min] with total body weight.

        See :func:`cockcroft_gault` (Cockcroft and Gault 1976, Nephron 16:31-41).

        Raises:
            ValidationError: age, weight, serum creatinine or sex is missing.
        """
        self._need("age_years", "weight_kg", "serum_creatinine_mg_dl", "sex")
        return cockcroft_gault(self.age_years, self.weight_kg, self.serum_creatinine_mg_dl,
                               self.sex == "female")

    # ------------------------------------------------------------------ data minimisation
    def minimise(self, fields: Sequence[str]) -> dict[str, float]:
        """Only the named covariates, as floats, in the order asked (data minimisation).

        Covariate names and encodings are listed in :data:`COVARIATES`. Numeric fields are
        returned as is; ``sex``/``female`` -> 1.0 female, 0.0 male; booleans -> 1.0/0.0;
        genotypes and race through the documented encodings; derived quantities (``bmi``,
        ``bsa_m2``, ``ibw_kg``, ``crcl_ml_min``) are computed.

        Raises:
            ValidationError: an unknown covariate name, a repeated name, or a covariate whose
                source field is missing from this record (the message names the field).
        """
        if isinstance(fields, str):
            raise ValidationError("minimise() takes a sequence of covariate names, not one string")
        out: dict[str, float] = {}
        for name in fields:
            enc = COVARIATES.get(name)
            if enc is None:
                raise ValidationError(f"unknown covariate {name!r}; known: " + ", ".join(COVARIATES))
            if name in out:
                raise ValidationError(f"covariate {name!r} asked for twice")
            for src in enc.needs:
                if getattr(self, src) is None:
                    raise ValidationError(
                        f"covariate {name!r} needs field {src}, which is missing from the record")
            out[name] = float(enc.fn(self))
        return out


@dataclass(frozen=True)
class Covariate:
    """A numeric covariate derived from record fields."""

    needs: tuple[str, ...]
    fn: Any
    doc: str


def _cyp_alleles(r: PatientRecord) -> tuple[str, str]:
    a, b = r.cyp2c9.split("/")
    return a, b


def _cyp_count(allele: str):
    return lambda r: float(_cyp_alleles(r).count(allele))


def _cyp_is(dip: str):
    return lambda r: 1.0 if r.cyp2c9 == dip else 0.0


def _num(name: str) -> Covariate:
    rng = RANGES[name]
    return Covariate((name,), lambda r: getattr(r, name), f"{name} [{rng.unit}] as is")


def _flag(name: str) -> Covariate:
    return Covariate((name,), lambda r: 1.0 if getattr(r, name) else 0.0, f"{name}: 1.0 yes, 0.0 no")


#: Covariates :meth:`PatientRecord.minimise` can return, with their numeric encodings.
COVARIATES: dict[str, Covariate] = {
    **{n: _num(n) for n in _NUMERIC_FIELDS},
    "female": Covariate(("sex",), lambda r: 1.0 if r.sex == "female" else 0.0, "1.0 female, 0.0 male"),
    "sex": Covariate(("sex",), lambda r: 1.0 if r.sex == "female" else 0.0,
                     "same as 'female': 1.0 female, 0.0 male"),
    "smoker": _flag("smoker"),
    "amiodarone": _flag("amiodarone"),
    "enzyme_inducer": _flag("enzyme_inducer"),
    # CYP2C9: CPIC activity score (sum of allele values), star-allele counts, IWPC indicators.
    "cyp2c9_activity_score": Covariate(
        ("cyp2c9",), lambda r: sum(CYP2C9_ACTIVITY[a] for a in _cyp_alleles(r)),
        "sum of CPIC allele activity values (0-2; *1/*1 = 2)"),
    "cyp2c9_star2_count": Covariate(("cyp2c9",), _cyp_count("*2"), "number of *2 alleles (0, 1, 2)"),
    "cyp2c9_star3_count": Covariate(("cyp2c9",), _cyp_count("*3"), "number of *3 alleles (0, 1, 2)"),
    **{f"cyp2c9_{d.replace('*', '').replace('/', '')}": Covariate(
        ("cyp2c9",), _cyp_is(d), f"IWPC indicator: 1.0 if diplotype is {d}")
       for d in ("*1/*2", "*1/*3", "*2/*2", "*2/*3", "*3/*3")},
    "cyp2c9_other": Covariate(
        ("cyp2c9",), lambda r: 0.0 if set(_cyp_alleles(r)) <= {"*1", "*2", "*3"} else 1.0,
        "1.0 if the diplotype has an allele other than *1, *2, *3 (the IWPC indicators above are "
        "then all 0, which a model may want to treat as 'unknown' rather than *1/*1)"),
    # VKORC1 -1639G>A
    "vkorc1_a_count": Covariate(("vkorc1",), lambda r: float(r.vkorc1.count("A")),
                                "number of -1639A alleles: G/G 0, G/A 1, A/A 2"),
    "vkorc1_ga": Covariate(("vkorc1",), lambda r: 1.0 if r.vkorc1 == "G/A" else 0.0,
                           "IWPC indicator: 1.0 if G/A"),
    "vkorc1_aa": Covariate(("vkorc1",), lambda r: 1.0 if r.vkorc1 == "A/A" else 0.0,
                           "IWPC indicator: 1.0 if A/A"),
    # Race (IWPC encoding: Asian, Black or African American, missing or mixed; white is baseline)
    "race_asian": Covariate((), lambda r: 1.0 if r.race == "asian" else 0.0, "1.0 if asian"),
    "race_black": Covariate((), lambda r: 1.0 if r.race == "black" else 0.0, "1.0 if black"),
    "race_missing_or_mixed": Covariate(
        (), lambda r: 1.0 if r.race in (None, "other") else 0.0, "1.0 if race is other or missing"),
    # Derived
    "bmi": Covariate(("weight_kg", "height_cm"), lambda r: r.bmi(), "kg/m^2"),
    "bsa_m2": Covariate(("weight_kg", "height_cm"), lambda r: r.bsa_mosteller(), "Mosteller, m^2"),
    "ibw_kg": Covariate(("sex", "height_cm"), lambda r: r.ideal_body_weight_devine(), "Devine, kg"),
    "crcl_ml_min": Covariate(("age_years", "weight_kg", "serum_creatinine_mg_dl", "sex"),
                             lambda r: r.creatinine_clearance_cg(), "Cockcroft-Gault, mL/min"),
}
