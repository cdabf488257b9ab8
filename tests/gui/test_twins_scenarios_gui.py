"""Twins screen (import by dialog path and drag-and-drop, review, pseudonymous list) and the scenario
table's inline validation."""
from __future__ import annotations

import json
import os

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from medtwin.gui.model import AppModel

from gui_helpers import FIXTURES, PASSPHRASE, close_error, create_keystore, error_text, set_scenarios, shallow_keys

pytestmark = pytest.mark.gui


def _drop(widget, paths):
    """Drag the files over the widget (its drag-enter filter must accept them), then drop them.

    Offscreen Qt delivers a drop only during a real drag session, so the drop handler is called
    directly with the event the platform would send.
    """
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(os.path.abspath(p)) for p in paths])
    pos = QPointF(widget.rect().center())
    enter = QDragEnterEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted(), "the drag-enter filter refused files it should take"
    ev = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(ev)
    assert ev.isAccepted()
    return ev


def test_import_review_and_pseudonymous_list(make_window, qtbot, tmp_path):
    w = make_window(AppModel(keygen=shallow_keys))
    w.go(1)
    t = w.twins
    t.import_paths([os.path.join(FIXTURES, "basic_mgdl.json"), os.path.join(FIXTURES, "genomics_ig.json")])
    assert t.review.rowCount() == 3
    heads = [t.review.horizontalHeaderItem(j).text() for j in range(t.review.columnCount())]
    assert "Weight [kg]" in heads and "Serum creatinine [mg/dL]" in heads and "Validation" in heads
    status = [t.review.item(i, t.review.columnCount() - 1).text() for i in range(3)]
    assert status.count("OK") == 2
    bad = next(s for s in status if s != "OK")
    assert "serum_creatinine_mg_dl" in bad  # the validation message names the missing field
    assert "2 eligible" in t.summary.text() and "1 excluded" in t.summary.text()
    # before unlocking there are no twin ids (the pseudonym key derives from the secret key)
    assert "unlock" in t.twins.item(0, 1).text()
    assert not t.encrypt_btn.isEnabled()
    create_keystore(qtbot, w, tmp_path / "ks", PASSPHRASE)
    w.go(1)
    ids = [t.twins.item(i, 0).text() for i in range(t.twins.rowCount())]
    assert len(ids) == 2 and all(i.startswith("tw-") for i in ids)
    source_ids = {r.record.source_id for r in w.model.review}
    assert not source_ids & set(ids)
    assert t.encrypt_btn.isEnabled()


def test_drag_and_drop_and_bad_files(make_window, qtbot, tmp_path):
    w = make_window(AppModel(keygen=shallow_keys))
    w.go(1)
    t = w.twins
    _drop(t, [os.path.join(FIXTURES, "serial_observations.json"), os.path.join(FIXTURES, "units_uuid.json")])
    assert error_text(w) == "" and len(w.model.review) == 2
    # a malformed file: error shown, nothing imported
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "id": "x", "gender": "sometimes"}}]}))
    t.import_paths([str(bad), os.path.join(FIXTURES, "basic_mgdl.json")])
    assert "Nothing was imported" in error_text(w)
    assert len(w.model.review) == 2
    close_error(w)
    # the same patients twice: refused
    t.import_paths([os.path.join(FIXTURES, "units_uuid.json")])
    assert "more than once" in error_text(w) and len(w.model.review) == 2
    close_error(w)
    # a CSV file works too, and an unsupported type is refused by the drop handler's filter
    csv = tmp_path / "two.csv"
    csv.write_text("source_id,age_years,sex,weight_kg,serum_creatinine_mg_dl\np-1,54,female,70,0.9\np-2,61,male,88,1.2\n")
    _drop(t, [str(csv)])
    assert len(w.model.review) == 4
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "notes.txt"))])
    ev = QDragEnterEvent(QPointF(t.rect().center()), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                         Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(t, ev)
    assert not ev.isAccepted()


def test_scenario_table_inline_validation(make_window, qtbot):
    w = make_window(AppModel(keygen=shallow_keys))
    w.go(2)
    s = w.scenarios
    assert s.valid and s.errors == []
    assert "Pinheiro" in s.citation.text() and "Cockcroft" in s.citation.text()
    assert "weight_kg 35–200 kg" in s.ranges.text() and "10–20 mg/L" in s.ranges.text()
    col = lambda c: [x for x, *_ in __import__("medtwin.gui.model", fromlist=["x"]).SCENARIO_COLUMNS].index(c)
    # not a number
    s.set_cell(1, "dose_mg", "lots")
    assert not s.valid and "Row 2: Dose [mg]: expected a number" in s.errors
    assert s.table.item(1, col("dose_mg")).background().color().red() == 255
    assert "expected a number" in s.table.item(1, col("dose_mg")).toolTip()
    # out of range: the message from Regimen validation names the field; the right cell turns red
    s.set_cell(1, "dose_mg", "200")
    s.set_cell(1, "interval_h", "0.1")
    assert not s.valid and any("interval_h" in e for e in s.errors)
    assert s.table.item(1, col("interval_h")).toolTip().startswith("regimen interval_h")
    assert s.table.item(1, col("dose_mg")).toolTip() == ""
    s.set_cell(1, "interval_h", "8")
    s.set_cell(0, "adherence", "1.5")
    assert any("adherence" in e for e in s.errors) and "Row 1" in s.message.text()
    s.set_cell(0, "adherence", "0.9")
    s.set_cell(2, "name", s.cell(0, "name"))
    assert any("unique" in e for e in s.errors)
    s.set_cell(2, "name", "C")
    assert s.valid and s.message.text() == ""
    # the run button follows validity
    s.set_cell(0, "count", "2.5")
    assert any("whole number" in e for e in s.errors)
    w.go(3)
    assert not w.run.run_btn.isEnabled() and "invalid" in w.run.summary.text()
    w.go(2)
    s.set_cell(0, "count", "3")
    # horizon too long for the u-polynomial: refused with a reason
    s.step.setValue(2.0)
    s.horizon.setValue(1000.0)
    assert any("dosing intervals" in e for e in s.errors)
    s.horizon.setValue(24.0)
    s.step.setValue(4.0)
    assert s.valid and "7 output time points" in s.grid_info.text()
    set_scenarios(w, [["only", "250", "12", "2", "oral", "", "1", "1", "1"]])
    assert s.valid and len(w.model.spec().scenarios) == 1
    assert w.model.model.name == s.model_box.currentData()
