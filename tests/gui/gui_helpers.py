"""Drive the real widgets the way a user would (shared by the GUI tests and the screenshot script)."""
from __future__ import annotations

import os

from PySide6.QtCore import Qt

PASSPHRASE = "correct horse battery staple 42"
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "fhir", "valid")


def shallow_keys(preset_name: str, model: str):
    """Real OpenFHE keys on the test ring, but only depth 2: for key-custody tests that never simulate."""
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import preset

    assert preset_name == "test-insecure"
    return generate_keys(preset("test-insecure", depth=2), [1])


def create_keystore(qtbot, w, path, passphrase: str, *, preset: str = "test-insecure", timeout: int = 120_000):
    """Fill in the Keys screen's create form and wait until the session is unlocked."""
    w.go(0)
    k = w.keys
    k.path.setText(str(path))
    qtbot.keyClicks(k.new_pw, passphrase)
    qtbot.keyClicks(k.new_pw2, passphrase)
    k.preset.setCurrentIndex(k.preset.findData(preset))
    qtbot.mouseClick(k.create_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.model.unlocked, timeout=timeout)
    qtbot.waitUntil(lambda: not w.runner.busy, timeout=timeout)


def error_text(w) -> str:
    box = getattr(w, "_last_error", None)
    return "" if box is None else box.text()


def close_error(w) -> None:
    box = getattr(w, "_last_error", None)
    if box is not None:
        box.close()
        w._last_error = None


def set_scenarios(w, rows):
    """Replace the scenario table by ``rows`` (lists of cell texts in column order)."""
    s = w.scenarios
    s.table.setRowCount(0)
    for r in rows:
        s.add_row()
        i = s.table.rowCount() - 1
        for col, text in zip(["name", "dose_mg", "interval_h", "count", "route", "loading_dose_mg", "adherence",
                              "renal_factor", "clearance_factor"], r):
            s.set_cell(i, col, text)
