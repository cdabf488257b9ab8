"""PDF summary of a decrypted study (fpdf2): comparison table, plot, basis, optional per-twin rows.

Only what the caller passes is written: give it a result restricted to the scenarios the clinician
chose (``medtwin.gui.model.subset_result`` does that). Twins appear by pseudonymous id only. The
file is written to a temporary name and renamed, and an existing file is never overwritten.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from medtwin.errors import MedTwinError, ValidationError

__all__ = ["write_pdf"]


def _latin1(text) -> str:
    """fpdf2's core fonts are Latin-1: replace what they cannot show."""
    s = str(text).replace("\u2013", "-").replace("\u2014", "-").replace("\u2264", "<=").replace("\u2265", ">=")
    return s.encode("latin-1", "replace").decode("latin-1")


def write_pdf(result, path: str | os.PathLike, *, basis: dict | None = None, include_plot: bool = True,
              include_twins: bool = False, title: str | None = None, overwrite: bool = False) -> Path:
    """Write a study summary PDF.

    Args:
        result: a decrypted :class:`~medtwin.study.study.StudyResult`.
        basis: label -> text lines describing the model, citation, covariates and bounds (shown as
            "Basis of the comparison").
        include_plot: add the median and 5-95% concentration plot with the therapeutic window.
        include_twins: add one row per (twin, scenario) with AUC, peak, trough and time in window.
        title: heading (default names the drug and cohort size).

    Returns:
        The path written.

    Raises:
        MedTwinError: ``path`` exists and ``overwrite`` is false, or it cannot be written.
        ValidationError: the result has no scenarios.
        ImportError: fpdf2 is not installed (``pip install fpdf2``; the ``gui`` extra has it).
    """
    from fpdf import FPDF

    from medtwin.reports.study_report import comparison_rows, plot_png

    path = Path(path)
    if path.exists() and not overwrite:
        raise MedTwinError(f"{path} exists already; refusing to overwrite it")
    rows = comparison_rows(result)
    if not rows:
        raise ValidationError("the result has no scenarios to report")
    pk = result.spec.pk
    insecure = bool(getattr(result, "extra", {}).get("insecure", False)) or result.spec.preset == "test-insecure"

    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.set_title(_latin1(title or "PrivateMedTwin study summary"))
    pdf.set_creator("PrivateMedTwin")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    heading = title or (f"Encrypted study: {pk.drug}, {len(result.twin_ids)} twins, "
                        f"{len(result.spec.scenarios)} scenario(s)")
    pdf.cell(0, 9, _latin1(heading), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pdf.cell(0, 5, _latin1(f"Generated {stamp}. Results decrypted on the clinician's workstation; "
                           "twins by pseudonymous id only."), new_x="LMARGIN", new_y="NEXT")
    if insecure:
        pdf.set_text_color(200, 0, 0)
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(0, 6, "INSECURE: computed with the small test ring (no security level). Not for clinical use.",
                 new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0, 0, 0)
    pdf.ln(2)

    # Comparison table
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 7, "Scenario comparison (cohort medians)", new_x="LMARGIN", new_y="NEXT")
    cols = list(rows[0])
    widths = [24, 40, 13, 22, 18, 17, 18, 22, 22]
    widths = tuple((widths + [20] * len(cols))[:len(cols)])
    pdf.set_font("Helvetica", "", 8)
    with pdf.table(col_widths=widths, line_height=4.6, text_align="LEFT", first_row_as_headings=True) as table:
        head = table.row()
        for c in cols:
            head.cell(_latin1(c))
        for r in rows:
            row = table.row()
            for c in cols:
                row.cell(_latin1(r[c]))
    pdf.ln(3)

    if include_plot:
        with tempfile.TemporaryDirectory(prefix="medtwin-pdf-") as tmp:
            png = plot_png(result, Path(tmp) / "concentrations.png")
            if pdf.get_y() > pdf.h - 110:
                pdf.add_page()
            pdf.image(str(png), w=min(200.0, pdf.w - pdf.l_margin - pdf.r_margin))
        pdf.ln(2)

    if basis:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, "Basis of the comparison", new_x="LMARGIN", new_y="NEXT")
        for k, v in basis.items():
            pdf.set_font("Helvetica", "B", 8.5)
            pdf.cell(38, 4.8, _latin1(k))
            pdf.set_font("Helvetica", "", 8.5)
            pdf.multi_cell(0, 4.8, _latin1(v), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)

    if include_twins:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, "Per twin (pseudonymous ids)", new_x="LMARGIN", new_y="NEXT")
        head = ["twin id", "scenario", "AUC 0-T [mg*h/L]", "peak [mg/L]", "trough [mg/L]", "time in window"]
        pdf.set_font("Helvetica", "", 8)
        peak, trough = result.peak, result.trough
        with pdf.table(col_widths=(45, 60, 38, 30, 30, 30), line_height=4.6, text_align="LEFT") as table:
            row = table.row()
            for h in head:
                row.cell(h)
            for p, tid in enumerate(result.twin_ids):
                for s, sc in enumerate(result.spec.scenarios):
                    tiw = "" if result.tiw is None else f"{result.tiw[p, s]:.3f}"
                    row = table.row()
                    for v in (tid, sc.name, f"{result.auc[p, s, -1]:.1f}", f"{peak[p, s]:.2f}",
                              f"{trough[p, s]:.2f}", tiw):
                        row.cell(_latin1(v))

    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pdf.output(str(tmp))
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrites
    except FileExistsError:
        raise MedTwinError(f"{path} exists already; refusing to overwrite it") from None
    except OSError as exc:
        raise MedTwinError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
