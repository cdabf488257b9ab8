"""A small UCUM conversion table for the quantities the FHIR importer reads.

Each quantity kind has one canonical unit (the unit in the :class:`~medtwin.twin.record.PatientRecord`
field name) and a table of accepted UCUM codes (https://ucum.org/ucum) with the affine map to the
canonical unit. Unknown units are refused rather than guessed.

Conversions and their sources:

* mass: 1 kg = 1000 g; 1 [lb_av] = 0.45359237 kg exactly (international avoirdupois pound, 1959).
* length: 1 m = 100 cm; 1 mm = 0.1 cm; 1 [in_i] = 2.54 cm exactly (international inch, 1959).
* serum creatinine: 1 mg/dL = 88.42 umol/L (creatinine molar mass 113.12 g/mol:
  10 mg/L / 113.12 mg/mmol = 0.08840 mmol/L; the laboratory convention is 88.42, e.g. KDIGO 2012
  CKD guideline, and is used here); 1 mmol/L = 1000 umol/L.
* HbA1c: IFCC mmol/mol to NGSP % by the master equation NGSP = 0.09148 * IFCC + 2.152
  (Hoelzel W et al. Clin Chem 2004;50:166-174).
* albumin: 1 g/dL = 10 g/L.
* INR: dimensionless ratio; UCUM ``1`` or the annotation ``{INR}``/``{ratio}``/``{index}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from medtwin.errors import ImportFormatError

__all__ = ["KINDS", "UnitKind", "canonical_unit", "convert", "accepted_units"]

_LB_KG = 0.45359237
_IN_CM = 2.54
CREATININE_UMOL_PER_MG_DL = 88.42


@dataclass(frozen=True)
class UnitKind:
    """One quantity kind: its canonical unit and the accepted UCUM codes -> converter."""

    name: str
    canonical: str
    table: dict[str, Callable[[float], float]]
    aliases: dict[str, str]


def _scale(f: float) -> Callable[[float], float]:
    return lambda v: v * f


KINDS: dict[str, UnitKind] = {
    "mass": UnitKind("mass", "kg",
                     {"kg": _scale(1.0), "g": _scale(1e-3), "[lb_av]": _scale(_LB_KG)},
                     {"lb": "[lb_av]", "lbs": "[lb_av]", "pound": "[lb_av]", "pounds": "[lb_av]"}),
    "length": UnitKind("length", "cm",
                       {"cm": _scale(1.0), "m": _scale(100.0), "mm": _scale(0.1), "[in_i]": _scale(_IN_CM)},
                       {"in": "[in_i]", "inch": "[in_i]", "inches": "[in_i]"}),
    "creatinine": UnitKind("creatinine", "mg/dL",
                           {"mg/dL": _scale(1.0), "umol/L": _scale(1.0 / CREATININE_UMOL_PER_MG_DL),
                            "mmol/L": _scale(1000.0 / CREATININE_UMOL_PER_MG_DL)},
                           {"\u00b5mol/L": "umol/L", "\u03bcmol/L": "umol/L", "mg/dl": "mg/dL",
                            "umol/l": "umol/L", "micromol/L": "umol/L"}),
    "hba1c": UnitKind("hba1c", "%",
                      {"%": _scale(1.0), "mmol/mol": lambda v: 0.09148 * v + 2.152},
                      {}),
    "albumin": UnitKind("albumin", "g/dL",
                        {"g/dL": _scale(1.0), "g/L": _scale(0.1)},
                        {"g/dl": "g/dL", "g/l": "g/L"}),
    "ratio": UnitKind("ratio", "1",
                      {"1": _scale(1.0), "{INR}": _scale(1.0), "{ratio}": _scale(1.0),
                       "{index}": _scale(1.0)},
                      {"INR": "{INR}", "ratio": "{ratio}"}),
}


def canonical_unit(kind: str) -> str:
    """The canonical unit of ``kind``.

    Raises:
        KeyError: unknown kind (a programming error, not bad input).
    """
    return KINDS[kind].canonical


def accepted_units(kind: str) -> tuple[str, ...]:
    """The UCUM codes accepted for ``kind`` (aliases not included)."""
    return tuple(KINDS[kind].table)


def convert(value: float, unit: str | None, kind: str, *, where: str = "quantity") -> float:
    """Convert ``value`` in ``unit`` to the canonical unit of ``kind``.

    ``unit`` is a UCUM code; a few common display spellings (``lb``, ``in``, ``µmol/L``) are
    accepted as aliases. ``where`` names the resource and field for error messages
    (e.g. ``"Observation/obs-1 field valueQuantity"``).

    Raises:
        ImportFormatError: the unit is missing or not accepted for ``kind``; the message names
            ``where``, the unit and the accepted units (never the value).
    """
    k = KINDS[kind]
    if unit is None or not isinstance(unit, str) or not unit.strip():
        raise ImportFormatError(f"{where}: missing unit (accepted for {kind}: {', '.join(k.table)})")
    u = unit.strip()
    u = k.aliases.get(u, u)
    fn = k.table.get(u)
    if fn is None:
        shown = unit if len(unit) <= 40 else unit[:40] + "..."
        raise ImportFormatError(
            f"{where}: unknown unit {shown!r} for {kind} (accepted: {', '.join(k.table)})")
    return float(fn(float(value)))
