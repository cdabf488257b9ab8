"""CSV import and export of :class:`~medtwin.twin.record.PatientRecord`.

Format (RFC 4180, UTF-8, optional BOM, one header line, one patient per row). Column names are
the record field names, units in the names:

==========================  ====================================================================
column                      content
==========================  ====================================================================
source_id                   identifier in the source system (required, unique in the file)
age_years                   age in years (number)
sex                         ``male`` or ``female``
weight_kg                   body weight, kg
height_cm                   body height, cm
serum_creatinine_mg_dl      serum creatinine, mg/dL (convert umol/L by dividing by 88.42)
hba1c_percent               HbA1c, NGSP %
inr                         INR (dimensionless)
albumin_g_dl                serum albumin, g/dL
cyp2c9                      CYP2C9 diplotype, e.g. ``*1/*3``
vkorc1                      VKORC1 -1639G>A genotype: ``G/G``, ``G/A`` or ``A/A``
smoker                      ``true`` / ``false`` (also yes/no, 1/0)
race                        ``asian``, ``black``, ``white``, ``other``
amiodarone                  ``true`` / ``false``: takes amiodarone
enzyme_inducer              ``true`` / ``false``: takes a CYP inducer (carbamazepine, phenytoin,
                            rifampicin), as in the IWPC algorithm
==========================  ====================================================================

Only ``source_id`` must be present as a column; an empty cell means "missing". Unknown columns
are refused (a misspelt unit suffix must not silently drop a covariate). Errors name the data row
number (1 = first row after the header) and the column, never the value.
"""
from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable

from medtwin.errors import ImportFormatError, RangeError, ValidationError
from medtwin.twin.record import ImportRangeError, PatientRecord, check_range

__all__ = ["COLUMNS", "load_csv", "write_csv"]

#: Column order written by :func:`write_csv` (the record's field order).
COLUMNS: tuple[str, ...] = PatientRecord.field_names()
_NUMERIC = ("age_years", "weight_kg", "height_cm", "serum_creatinine_mg_dl", "hba1c_percent",
            "inr", "albumin_g_dl")
_BOOL = ("smoker", "amiodarone", "enzyme_inducer")
_TRUE = {"true", "yes", "1", "y", "t"}
_FALSE = {"false", "no", "0", "n", "f"}


def _cell(row_no: int, col: str, text: str):
    t = text.strip()
    if t == "":
        return None
    if col in _NUMERIC:
        try:
            v = float(t)
        except ValueError:
            raise ImportFormatError(f"row {row_no} column {col}: not a number") from None
        if not math.isfinite(v):
            raise ImportFormatError(f"row {row_no} column {col}: not a finite number")
        try:
            return check_range(col, v)
        except RangeError as e:
            raise ImportRangeError(f"row {row_no} column {col}: {e}") from None
    if col in _BOOL:
        low = t.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ImportFormatError(f"row {row_no} column {col}: expected true or false")
    return t


def load_csv(path: str | os.PathLike) -> list[PatientRecord]:
    """Read patient records from a CSV file in the format described in the module docstring.

    Raises:
        ImportFormatError: the file is missing, unreadable or not UTF-8; the header is empty,
            lacks ``source_id``, repeats a column or has an unknown column; a row has the wrong
            number of cells, a non-numeric number, a bad code (sex, race, genotype, boolean) or a
            repeated source_id. The message names the row number and column.
        ImportRangeError: a value outside its plausibility range (row, column and range named).
    """
    p = Path(path)
    try:
        with p.open("r", encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, strict=True)
            try:
                header = next(reader)
            except StopIteration:
                raise ImportFormatError(f"file {p.name}: empty (no header line)") from None
            cols = [h.strip() for h in header]
            seen: set[str] = set()
            for c in cols:
                if c in seen:
                    raise ImportFormatError(f"file {p.name} header: column {c} appears twice")
                seen.add(c)
                if c not in COLUMNS:
                    raise ImportFormatError(
                        f"file {p.name} header: unknown column {c[:40]!r} (known: {', '.join(COLUMNS)})")
            if "source_id" not in seen:
                raise ImportFormatError(f"file {p.name} header: the source_id column is required")
            records: list[PatientRecord] = []
            first_row: dict[str, int] = {}
            row_no = 0
            for cells in reader:
                row_no += 1
                if not cells or all(not c.strip() for c in cells):
                    continue
                if len(cells) != len(cols):
                    raise ImportFormatError(
                        f"row {row_no}: {len(cells)} cells, the header has {len(cols)} columns")
                values = {c: _cell(row_no, c, t) for c, t in zip(cols, cells)}
                if values["source_id"] is None:
                    raise ImportFormatError(f"row {row_no} column source_id: empty")
                sid = values["source_id"]
                if sid in first_row:
                    raise ImportFormatError(
                        f"row {row_no} column source_id: same identifier as row {first_row[sid]}")
                first_row[sid] = row_no
                try:
                    records.append(PatientRecord(**values))
                except ValidationError as e:
                    col = _column_named_in(str(e), cols)
                    raise ImportFormatError(f"row {row_no} column {col}: {e}") from None
            return records
    except FileNotFoundError:
        raise ImportFormatError(f"file {p.name}: not found") from None
    except UnicodeDecodeError:
        raise ImportFormatError(f"file {p.name}: not UTF-8 text") from None
    except csv.Error as e:
        raise ImportFormatError(f"file {p.name}: malformed CSV ({e})") from None


def _column_named_in(message: str, cols: list[str]) -> str:
    for c in sorted(cols, key=len, reverse=True):
        if f"field {c}" in message:
            return c
    return "?"


def _format(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # shortest repr that round-trips exactly
    return str(v)


def write_csv(records: Iterable[PatientRecord], path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write records to ``path`` in the format of :func:`load_csv` (all columns, field order).

    The file is written to a temporary file in the same directory and renamed into place, so a
    failure never leaves a half-written file or damages an existing one.

    Raises:
        ValidationError: an element is not a PatientRecord, two records share a source_id, or the
            file exists and ``overwrite`` is False (nothing is written in these cases).
        OSError: the directory is not writable.
    """
    p = Path(path)
    recs = list(records)
    seen: set[str] = set()
    for i, r in enumerate(recs, start=1):
        if not isinstance(r, PatientRecord):
            raise ValidationError(f"write_csv: element {i} is not a PatientRecord")
        if r.source_id in seen:
            raise ValidationError(f"write_csv: record {i} repeats the source_id of an earlier record")
        seen.add(r.source_id)
    if p.exists() and not overwrite:
        raise ValidationError(f"write_csv: {p.name} exists; pass overwrite=True to replace it")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(COLUMNS)
            for r in recs:
                w.writerow([_format(getattr(r, c)) for c in COLUMNS])
        os.chmod(tmp, (p.stat().st_mode & 0o777) if p.exists() else 0o644)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
