from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin.errors import ImportFormatError, RangeError, ValidationError
from medtwin.twin.csv_io import COLUMNS, load_csv, write_csv
from medtwin.twin.record import ImportRangeError, PatientRecord

HEADER = ",".join(COLUMNS)


def _records():
    return [
        PatientRecord("A-1", age_years=61, sex="female", weight_kg=67.3, height_cm=162.5,
                      serum_creatinine_mg_dl=0.87, hba1c_percent=6.1, inr=1.02, albumin_g_dl=4.0,
                      cyp2c9="*1/*2", vkorc1="A/A", smoker=True, race="black", amiodarone=False,
                      enzyme_inducer=True),
        PatientRecord("A-2"),
        PatientRecord("A,3 \"quoted\"", weight_kg=0.1 + 0.2 + 70, sex="male", cyp2c9="*3/*3"),
    ]


def _write(tmp_path, text, name="p.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_round_trip_exact(tmp_path):
    recs = _records()
    p = tmp_path / "out.csv"
    write_csv(recs, p)
    assert load_csv(p) == recs
    assert p.read_text(encoding="utf-8").splitlines()[0] == HEADER


def test_header_names_carry_units():
    for col in ("weight_kg", "height_cm", "serum_creatinine_mg_dl", "hba1c_percent", "albumin_g_dl", "age_years"):
        assert col in COLUMNS


def test_subset_of_columns_and_blank_lines_and_bool_spellings(tmp_path):
    p = _write(tmp_path, "source_id,weight_kg,smoker\nX1,70.5,YES\n\nX2,,0\n")
    a, b = load_csv(p)
    assert (a.weight_kg, a.smoker, b.weight_kg, b.smoker) == (70.5, True, None, False)


def test_bom_accepted(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufeffsource_id,inr\nX,1.1\n".encode("utf-8"))
    assert load_csv(p)[0].inr == 1.1


@pytest.mark.parametrize("body, row, column", [
    ("source_id,weight_kg\nA,70\nB,seventy\n", 2, "weight_kg"),
    ("source_id,weight_kg\nA,nan\n", 1, "weight_kg"),
    ("source_id,sex\nA,male\nB,M\n", 2, "sex"),
    ("source_id,smoker\nA,maybe\n", 1, "smoker"),
    ("source_id,cyp2c9\nA,*1/*1\nB,*1/*1\nC,*4/*40\n", 3, "cyp2c9"),
    ("source_id,vkorc1\nA,C/T\n", 1, "vkorc1"),
    ("source_id,race\nA,martian\n", 1, "race"),
    ("source_id,inr\nA,1.0\nA,1.1\n", 2, "source_id"),
    ("source_id,inr\n,1.0\n", 1, "source_id"),
])
def test_bad_rows_name_row_and_column(tmp_path, body, row, column):
    with pytest.raises(ImportFormatError) as ei:
        load_csv(_write(tmp_path, body))
    msg = str(ei.value)
    assert f"row {row}" in msg and f"column {column}" in msg
    for secret in ("seventy", "martian", "maybe", "*4/*40", "C/T"):
        assert secret not in msg


def test_out_of_range_cell_is_range_and_format_error(tmp_path):
    p = _write(tmp_path, "source_id,serum_creatinine_mg_dl\nA,1.1\nB,97.25\n")
    with pytest.raises(ImportRangeError) as ei:
        load_csv(p)
    assert isinstance(ei.value, RangeError) and isinstance(ei.value, ImportFormatError)
    msg = str(ei.value)
    assert "row 2" in msg and "serum_creatinine_mg_dl" in msg and "0.1-20 mg/dL" in msg and "97" not in msg


def test_wrong_cell_count(tmp_path):
    with pytest.raises(ImportFormatError, match="row 1: 3 cells"):
        load_csv(_write(tmp_path, "source_id,inr\nA,1.0,extra\n"))


@pytest.mark.parametrize("body, needle", [
    ("source_id,weight_lb\nA,150\n", "unknown column"),
    ("source_id,inr,inr\nA,1,1\n", "appears twice"),
    ("weight_kg\n70\n", "source_id column is required"),
    ("", "empty"),
])
def test_bad_headers(tmp_path, body, needle):
    with pytest.raises(ImportFormatError, match=needle):
        load_csv(_write(tmp_path, body))


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(ImportFormatError, match="not found"):
        load_csv(tmp_path / "nope.csv")
    p = tmp_path / "latin1.csv"
    p.write_bytes("source_id,race\nJos\xe9,white\n".encode("latin-1"))
    with pytest.raises(ImportFormatError, match="UTF-8"):
        load_csv(p)


def test_malformed_quoting(tmp_path):
    with pytest.raises(ImportFormatError, match="malformed CSV"):
        load_csv(_write(tmp_path, 'source_id,inr\n"A"x,1\n'))


def test_write_refuses_to_overwrite_and_leaves_file_unchanged(tmp_path):
    p = tmp_path / "keep.csv"
    p.write_text("precious\n")
    with pytest.raises(ValidationError, match="exists"):
        write_csv(_records(), p)
    assert p.read_text() == "precious\n"
    write_csv(_records(), p, overwrite=True)
    assert load_csv(p) == _records()


def test_write_rejects_bad_input_without_writing(tmp_path):
    p = tmp_path / "x.csv"
    with pytest.raises(ValidationError, match="repeats the source_id"):
        write_csv([PatientRecord("same"), PatientRecord("same")], p)
    with pytest.raises(ValidationError, match="not a PatientRecord"):
        write_csv([{"source_id": "a"}], p)  # type: ignore[list-item]
    assert not p.exists() and list(tmp_path.iterdir()) == []


def test_bundled_cohort_round_trips_byte_for_byte(tmp_path):
    from medtwin.data import cohort_csv_path

    src = cohort_csv_path()
    recs = load_csv(src)
    out = tmp_path / "again.csv"
    write_csv(recs, out)
    assert out.read_bytes() == src.read_bytes()


_cells = st.one_of(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8), st.sampled_from(["", "70", "1e999", "nan", "true", "male", "*1/*3", "G/A",
                                                         "-5", "0.1", '"', ",", "\n"]))


@settings(max_examples=200, deadline=None)
@given(header=st.lists(st.sampled_from(list(COLUMNS) + ["junk", ""]), min_size=0, max_size=6),
       rows=st.lists(st.lists(_cells, max_size=7), max_size=5))
def test_random_csv_only_raises_import_format_error(header, rows):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.csv"
        with p.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            if header:
                w.writerow(header)
            w.writerows(rows)
        try:
            out = load_csv(p)
        except ImportFormatError:
            return
        assert all(isinstance(r, PatientRecord) for r in out)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_raw_text_only_raises_import_format_error(text):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.csv"
        p.write_text("source_id,weight_kg,sex\n" + text, encoding="utf-8")
        try:
            out = load_csv(p)
        except ImportFormatError:
            return
        assert all(isinstance(r, PatientRecord) for r in out)
