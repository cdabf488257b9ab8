from __future__ import annotations

import pytest

from medtwin.errors import ImportFormatError
from medtwin.fhir.units import KINDS, accepted_units, canonical_unit, convert


@pytest.mark.parametrize("value, unit, kind, expected", [
    (70, "kg", "mass", 70.0),
    (70500, "g", "mass", 70.5),
    (154, "[lb_av]", "mass", 69.85322498),   # 1 lb = 0.45359237 kg exactly
    (154, "lb", "mass", 69.85322498),        # display alias
    (175, "cm", "length", 175.0),
    (1.75, "m", "length", 175.0),
    (1750, "mm", "length", 175.0),
    (69, "[in_i]", "length", 175.26),        # 1 in = 2.54 cm exactly
    (1.2, "mg/dL", "creatinine", 1.2),
    (88.42, "umol/L", "creatinine", 1.0),
    (176.84, "\u00b5mol/L", "creatinine", 2.0),
    (0.08842, "mmol/L", "creatinine", 1.0),
    (6.5, "%", "hba1c", 6.5),
    (48, "mmol/mol", "hba1c", 6.54304),      # Hoelzel 2004: 0.09148 * 48 + 2.152
    (4.1, "g/dL", "albumin", 4.1),
    (41, "g/L", "albumin", 4.1),
    (2.5, "{INR}", "ratio", 2.5),
    (2.5, "1", "ratio", 2.5),
])
def test_conversions(value, unit, kind, expected):
    assert convert(value, unit, kind) == pytest.approx(expected, rel=1e-9)


def test_ifcc_reference_points():
    # IFCC 42 mmol/mol ~ 6.0 % NGSP and 53 ~ 7.0 % (the commonly quoted equivalences)
    assert convert(42, "mmol/mol", "hba1c") == pytest.approx(6.0, abs=0.01)
    assert convert(53, "mmol/mol", "hba1c") == pytest.approx(7.0, abs=0.01)


@pytest.mark.parametrize("unit, kind", [("[stone_av]", "mass"), ("mg/dL", "mass"), ("ft", "length"),
                                        ("mg/L", "creatinine"), ("mmol/L", "hba1c"), ("g/mL", "albumin")])
def test_unknown_unit_names_where_and_unit(unit, kind):
    with pytest.raises(ImportFormatError) as ei:
        convert(1.0, unit, kind, where="Observation/o1 field valueQuantity")
    msg = str(ei.value)
    assert "Observation/o1 field valueQuantity" in msg and repr(unit) in msg and kind in msg


@pytest.mark.parametrize("unit", [None, "", "   "])
def test_missing_unit(unit):
    with pytest.raises(ImportFormatError, match="missing unit"):
        convert(1.0, unit, "mass", where="Observation/o1")


def test_canonical_units_match_record_fields():
    assert [canonical_unit(k) for k in ("mass", "length", "creatinine", "hba1c", "albumin", "ratio")] == \
        ["kg", "cm", "mg/dL", "%", "g/dL", "1"]
    assert "[lb_av]" in accepted_units("mass") and set(KINDS) >= {"mass", "length"}
