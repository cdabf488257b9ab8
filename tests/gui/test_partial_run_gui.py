"""Partial results while a run goes on, and cancel after the current ciphertext chunk, through the
real widgets on the insecure test ring."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from medtwin.custody.audit import AuditLog
from medtwin.custody.identity import Identity
from medtwin.gui.model import AppModel

from gui_helpers import PASSPHRASE, create_keystore, error_text, set_scenarios

pytestmark = pytest.mark.gui

N_PATIENTS = 5


def _csv(path, n: int):
    rows = "".join(f"P{i},{35 + 7 * i},{'female' if i % 2 else 'male'},{58 + 6 * i},{0.8 + 0.1 * i:.1f}\n"
                   for i in range(n))
    path.write_text("source_id,age_years,sex,weight_kg,serum_creatinine_mg_dl\n" + rows)
    return path


def _setup(make_window, qtbot, tmp_path, n_patients: int):
    """A window with an audited session and a study of 2 patients per ciphertext chunk: 129 time
    points -> 256 slots per time grid; 2048 slots / 256 = 8 (patient, scenario) pairs per
    ciphertext; 4 scenarios -> 2 patients per chunk."""
    actor = Identity.generate("dr-gui", "clinician")
    audit = AuditLog(tmp_path / "audit.sqlite")
    w = make_window(AppModel(audit=audit, actor=actor))
    create_keystore(qtbot, w, tmp_path / "ks", PASSPHRASE)
    w.twins.import_paths([str(_csv(tmp_path / "cohort.csv", n_patients))])
    w.go(2)
    set_scenarios(w, [[f"S{i}", str(200 + 50 * i), "12", "2", "oral", "", "1", "1", "1"] for i in range(4)])
    w.scenarios.horizon.setValue(32.0)
    w.scenarios.step.setValue(0.25)
    assert w.scenarios.valid, w.scenarios.errors
    w.go(3)
    return w, audit


def test_partial_results_match_final(make_window, qtbot, tmp_path):
    w, audit = _setup(make_window, qtbot, tmp_path, 3)  # 2 chunks: patients [0, 1] and [2]
    parts = []
    w.run.partial_drawn.connect(lambda p: parts.append((p, w.run.state, w.model.result)))
    qtbot.mouseClick(w.run.run_btn, Qt.MouseButton.LeftButton)
    # any end of the run (a failure names its error below at once, instead of a 300 s timeout)
    qtbot.waitUntil(lambda: w.run.state in ("done", "failed", "cancelled") and w.run.worker is None,
                    timeout=300_000)
    assert w.run.state == "done", (w.run.state, error_text(w))
    assert error_text(w) == "", error_text(w)
    res = w.model.result
    assert [list(p.patients) for p, _, _ in parts] == [[0, 1], [0, 1, 2]]
    assert parts[0][2] is None  # the first chunk was drawn while the run went on
    for p, state, _ in parts:
        assert state == "running"
        assert p.n_chunks == 2 and p.n_patients == 3
        assert np.isfinite(p.conc).all() and np.isfinite(p.auc).all() and np.isfinite(p.tiw).all()
        np.testing.assert_allclose(p.conc, res.conc[p.patients], rtol=0, atol=1e-9)
        np.testing.assert_allclose(p.auc, res.auc[p.patients], rtol=0, atol=1e-9)
        np.testing.assert_allclose(p.tiw, res.tiw[p.patients], rtol=0, atol=1e-9)
    # the final result replaced the partial drawing on the run screen
    assert "Final result: all 3" in w.run.plot_info.text()
    assert len(w.run.plot.getPlotItem().listDataItems()) == 4 * 3
    assert w.results.table.rowCount() == 4
    # one audit entry per decrypted chunk, then one for the whole result
    dec = [e for e in audit.entries() if e.action == "result.decrypt"]
    assert [e.details for e in dec] == [{"chunk": 0, "mode": "partial"}, {"chunk": 1, "mode": "partial"},
                                        {"mode": "final"}]
    assert [e.objects["n_twins"] for e in dec] == [2, 1, 3]
    # every ciphertext was decrypted once: the final result reused the chunks' decryptions
    assert dec[-1].objects["n_ciphertexts"] == 0


def test_cancel_after_first_partial_result(make_window, qtbot, tmp_path):
    w, audit = _setup(make_window, qtbot, tmp_path, N_PATIENTS)  # 3 chunks
    parts, stages, during = [], [], []

    def on_partial(p) -> None:  # cancel as soon as the first partial result is drawn
        parts.append(p)
        if len(parts) == 1:
            during.append((w.run.state, w.run.worker is not None, len(w.run.plot.getPlotItem().listDataItems()),
                           w.run.plot_info.text()))
            qtbot.mouseClick(w.run.cancel_btn, Qt.MouseButton.LeftButton)

    w.run.partial_drawn.connect(on_partial)
    with qtbot.waitSignal(w.run.state_changed, timeout=10_000):
        qtbot.mouseClick(w.run.run_btn, Qt.MouseButton.LeftButton)
    w.run.worker.progress.connect(lambda s, f: stages.append((s, f)))
    qtbot.waitUntil(lambda: len(parts) >= 1, timeout=300_000)
    assert parts[0].n_chunks == 3 and parts[0].chunks_done == 1
    # the partial result was drawn while the run went on: median and band edges per scenario
    state, running, n_items, info = during[0]
    assert state == "running" and running and n_items == 4 * 3 and "2 of 5" in info
    qtbot.waitUntil(lambda: w.run.worker is None, timeout=300_000)

    assert w.run.state == "cancelled", (w.run.state, error_text(w))
    assert error_text(w) == "" and w.model.result is None
    # stopped before the last chunk: simulate never reported completion, nothing decrypted afterwards
    sim = [f for s, f in stages if s == "simulate"]
    assert sim and max(sim) == pytest.approx(1 / 3)  # chunk 2 was simulated, never reported, chunk 3 never ran
    assert not any(s == "decrypt" for s, _ in stages)
    assert len(parts) == 1 and list(parts[0].patients) == [0, 1]
    entries = audit.entries()
    assert [e.action for e in entries].count("simulation.run") == 0
    dec = [e for e in entries if e.action == "result.decrypt"]
    assert len(dec) == 1  # only the first chunk was ever decrypted
    assert dec[0].details == {"chunk": 0, "mode": "partial"} and dec[0].objects["n_twins"] == 2
    # the UI stays usable: a new run can start, the set-up is unchanged, the partial plot stays
    assert w.run.run_btn.isEnabled() and not w.run.cancel_btn.isEnabled()
    assert "Cancelled" in w.run.stage.text() and len(w.model.review) == N_PATIENTS
    assert len(w.run.plot.getPlotItem().listDataItems()) == 4 * 3
    w.go(2)
    assert w.pages.currentIndex() == 2 and len(w.model.scenarios) == 4
