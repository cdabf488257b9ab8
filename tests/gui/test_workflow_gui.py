"""The whole clinician workflow through the real widgets on the insecure test ring: create keystore,
import a FHIR fixture, configure scenarios, encrypt, run, see results, export; plus cancel mid-run
and an error from the compute side shown in a dialog."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from PySide6.QtCore import Qt

from medtwin.custody.audit import AuditLog
from medtwin.custody.identity import Identity
from medtwin.gui.model import AppModel, top_ranked

from gui_helpers import FIXTURES, PASSPHRASE, close_error, create_keystore, error_text, set_scenarios, shallow_keys

pytestmark = pytest.mark.gui


def _configure(qtbot, w, rows, horizon=24.0, step=4.0):
    w.go(2)
    set_scenarios(w, rows)
    w.scenarios.horizon.setValue(horizon)
    w.scenarios.step.setValue(step)
    assert w.scenarios.valid, w.scenarios.errors


def test_whole_workflow(make_window, qtbot, tmp_path):
    actor = Identity.generate("dr-gui", "clinician")
    audit = AuditLog(tmp_path / "audit.sqlite")
    w = make_window(AppModel(audit=audit, actor=actor))
    create_keystore(qtbot, w, tmp_path / "ks", PASSPHRASE)
    assert w.model.preset == "test-insecure" and w.status_insecure.isVisible()
    assert w.pages.currentIndex() == 1  # on to the Twins screen

    w.twins.import_paths([os.path.join(FIXTURES, "basic_mgdl.json")])
    assert "2 eligible" in w.twins.summary.text()
    _configure(qtbot, w, [["low 200 q12h", "200", "12", "2", "oral", "", "1", "1", "1"],
                          ["high 400 q12h", "400", "12", "2", "oral", "600", "1", "1", "1"]])

    # encrypt from the Twins screen: ids listed, status names the study
    w.go(1)
    qtbot.mouseClick(w.twins.encrypt_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.model.cohort is not None and not w.runner.busy, timeout=60_000)
    assert error_text(w) == ""
    assert "encrypted for study" in w.twins.twins.item(0, 1).text()
    assert w.model.cohort_matches_spec()

    # run
    w.go(3)
    assert w.run.run_btn.isEnabled() and w.run.insecure.isVisible()
    qtbot.mouseClick(w.run.run_btn, Qt.MouseButton.LeftButton)
    assert not w.run.run_btn.isEnabled() and w.run.cancel_btn.isEnabled()
    # any end of the run (a failure names its error below at once, instead of a 300 s timeout)
    qtbot.waitUntil(lambda: w.run.state in ("done", "failed", "cancelled") and w.run.worker is None,
                    timeout=300_000)
    assert w.run.state == "done", (w.run.state, error_text(w))
    assert error_text(w) == "", error_text(w)
    res = w.model.result
    assert res.conc.shape == (2, 2, 7)
    dev = res.deviations()
    assert dev["conc_abs"] <= res.bounds["conc"]  # encrypted result within its stated bound of the reference
    log = w.run.log.toPlainText()
    assert "Simulating" in log and "Decrypting" in log and "done" in log

    # results: table, highlight of the top-ranked option, basis one click away, plot items
    assert w.pages.currentIndex() == 4
    r = w.results
    assert r.table.rowCount() == 2
    top = top_ranked(res)
    head = [r.table.horizontalHeaderItem(j).text() for j in range(r.table.columnCount())]
    assert head[0] == "rank" and head[-1] == "score"
    for i in range(2):
        bold = r.table.item(i, 1).font().bold()
        assert bold == (i in top)
    # the higher dose (with a loading dose) reaches more of the window: it is ranked first
    assert r.table.item(1, 0).text() == "1" and 1 in top
    qtbot.mouseClick(r.basis_btn, Qt.MouseButton.LeftButton)
    html = r.basis_dialog.text.toPlainText()
    assert "Pinheiro" in html and "weight_kg [kg]" in html and "INSECURE" in html and "error bounds" in html
    r.basis_dialog.close()
    items = r.plot.getPlotItem().listDataItems()
    assert len(items) == 2 * 3  # median plus two band edges per scenario
    r.scen_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert len(r.plot.getPlotItem().listDataItems()) == 3

    # dashboard
    w.go(5)
    assert w.dashboard.scenario.count() == 2 and "2 twins" in w.dashboard.info.text()

    # export only the chosen scenario, CSV and PDF
    dest = tmp_path / "export"
    r.export(dest_dir=dest, scenarios=[1], csv_metrics=True, csv_summary=True, pdf=True, pdf_plots=True, pdf_twins=True)
    qtbot.waitUntil(lambda: len(r.last_export) == 3, timeout=60_000)
    rows = list(csv.DictReader(open(dest / "twin-metrics.csv")))
    assert {row["scenario"] for row in rows} == {"high 400 q12h"} and len(rows) == 2
    assert {row["twin_id"] for row in rows} == set(res.twin_ids)
    summ = list(csv.DictReader(open(dest / "scenario-summary.csv")))
    assert [s["scenario"] for s in summ] == ["high 400 q12h"]
    pdf = (dest / "study-summary.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000  # has the plot image
    # exporting again into the same folder never overwrites
    r.last_export = []
    r.export(dest_dir=dest, scenarios=[0], csv_metrics=True, csv_summary=False, pdf=False)
    qtbot.waitUntil(lambda: "refusing to overwrite" in error_text(w), timeout=30_000)
    close_error(w)

    # the audit log has every step and no patient value
    actions = [e.action for e in audit.entries()]
    for a in ("key.create", "twin.encrypt", "simulation.run", "result.decrypt", "export.write"):
        assert a in actions, actions
    assert actions.count("export.write") == 3
    values = []
    for row in w.model.review:
        values.append(row.record.source_id)
        values += [row.values[k] for k in ("age_years", "weight_kg", "serum_creatinine_mg_dl")]
    assert audit.scan_for_values(values) == []


def test_cancel_mid_run(make_window, qtbot, tmp_path):
    w = make_window(AppModel())
    create_keystore(qtbot, w, tmp_path / "ks", PASSPHRASE)
    w.twins.import_paths([os.path.join(FIXTURES, "basic_mgdl.json")])
    _configure(qtbot, w, [["A", "300", "12", "2", "oral", "", "1", "1", "1"]])
    w.go(3)
    seen = []
    with qtbot.waitSignal(w.run.state_changed, timeout=10_000):
        qtbot.mouseClick(w.run.run_btn, Qt.MouseButton.LeftButton)

    def first_progress(stage, frac):
        seen.append(stage)
        if len(seen) == 1:
            qtbot.mouseClick(w.run.cancel_btn, Qt.MouseButton.LeftButton)

    w.run.worker.progress.connect(first_progress)
    qtbot.waitUntil(lambda: w.run.worker is None, timeout=300_000)
    assert w.run.state == "cancelled", (w.run.state, error_text(w))
    assert "Cancelled" in w.run.stage.text()
    assert w.model.result is None and error_text(w) == ""
    assert "decrypt" not in seen
    # nothing lost: the set-up is intact and a new run can start
    assert w.model.scenarios[0].name == "A" and len(w.model.review) == 2
    assert w.run.run_btn.isEnabled()


def test_compute_error_is_shown(make_window, qtbot, tmp_path):
    # keys made for depth 2 cannot run the study: simulate refuses, the dialog says why
    w = make_window(AppModel(keygen=shallow_keys))
    create_keystore(qtbot, w, tmp_path / "ks", PASSPHRASE)
    w.twins.import_paths([os.path.join(FIXTURES, "units_uuid.json")])
    _configure(qtbot, w, [["A", "300", "12", "2", "oral", "", "1", "1", "1"]])
    w.go(3)
    qtbot.mouseClick(w.run.run_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.run.worker is None, timeout=120_000)
    assert w.run.state == "failed"
    assert "ProgramError" in error_text(w) and "depth" in error_text(w)
    assert w.model.result is None
