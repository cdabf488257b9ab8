"""The GUI's Qt-free helpers and the PDF writer, on a plaintext-reference result (no encryption)."""
from __future__ import annotations

import numpy as np
import pytest

from medtwin.errors import MedTwinError, ValidationError
from medtwin.gui.model import (ScenarioRow, build_scenario, field_of_error, parse_cell, ranking, subset_result,
                               top_ranked)
from medtwin.reports.pdf import write_pdf
from medtwin.study.scenario import Regimen, Scenario
from medtwin.study.study import StudyResult, StudySpec, reference_outcome


def _result(doses=(200.0, 400.0, 300.0)):
    scen = [Scenario(f"S{i}", Regimen(dose_mg=d, interval_h=12, count=4)) for i, d in enumerate(doses)]
    spec = StudySpec.grid("theophylline", scen, 48.0, 4.0, preset="test-insecure")
    cov = {"age_years": np.array([40.0, 60.0, 75.0]), "weight_kg": np.array([70.0, 85.0, 60.0]),
           "serum_creatinine_mg_dl": np.array([0.9, 1.1, 1.4]), "female": np.array([0.0, 1.0, 1.0])}
    ref = reference_outcome(spec, cov)
    res = StudyResult(spec, ["tw-a", "tw-b", "tw-c"], np.asarray(spec.times), ref["conc"], ref["auc"], ref["tiw"],
                      {"conc": 0.01, "auc": 0.5}, "0" * 64, 20, "reference", 0.0)
    res.extra["insecure"] = True
    return res


def test_parse_cell_and_error_fields():
    assert parse_cell("dose_mg", " 250 ") == 250.0
    assert parse_cell("count", "6") == 6 and parse_cell("loading_dose_mg", "") is None
    with pytest.raises(ValidationError, match="Doses: expected a whole number"):
        parse_cell("count", "2.5")
    with pytest.raises(ValidationError, match="Dose \\[mg\\]: expected a number"):
        parse_cell("dose_mg", "abc")
    with pytest.raises(ValidationError) as e:
        build_scenario(ScenarioRow(loading_dose_mg=9000.0))
    assert field_of_error(str(e.value)) == "loading_dose_mg"
    with pytest.raises(ValidationError) as e:
        build_scenario(ScenarioRow(renal_factor=5.0))
    assert field_of_error(str(e.value)) == "renal_factor"


def test_ranking_and_subset():
    res = _result()
    r = ranking(res)
    tiw = [s.tiw_mean for s in res.summaries()]
    assert [i for i, _ in r] == list(np.argsort(tiw)[::-1])
    assert r[0][0] in top_ranked(res)
    sub = subset_result(res, [2, 0])
    assert [s.name for s in sub.spec.scenarios] == ["S0", "S2"]
    np.testing.assert_array_equal(sub.conc, res.conc[:, [0, 2]])
    np.testing.assert_array_equal(sub.tiw, res.tiw[:, [0, 2]])
    with pytest.raises(ValidationError):
        subset_result(res, [])
    with pytest.raises(ValidationError):
        subset_result(res, [3])


def test_nothing_highlighted_when_every_score_is_zero():
    res = _result(doses=(1.0, 2.0))  # far below the window: time in window ~0
    res.tiw = np.zeros_like(res.tiw)
    assert top_ranked(res) == set()


def test_pdf_written_never_overwritten(tmp_path):
    res = _result()
    p = write_pdf(subset_result(res, [1]), tmp_path / "s.pdf", basis={"model": "theophylline – Pinheiro ≥ 2000"},
                  include_twins=True)
    data = p.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 20_000
    with pytest.raises(MedTwinError, match="refusing to overwrite"):
        write_pdf(res, p)
    assert p.read_bytes() == data
    small = write_pdf(res, tmp_path / "no-plot.pdf", include_plot=False)
    assert len(small.read_bytes()) < len(data)
    assert not list(tmp_path.glob(".*.tmp"))


def test_unlocking_another_keystore_keeps_this_sessions_data(tmp_path):
    from gui_helpers import FIXTURES, PASSPHRASE, shallow_keys

    from medtwin.custody.kdf import TEST_KDF
    from medtwin.errors import KeyMismatchError
    from medtwin.gui.model import AppModel, ScenarioRow, SessionLockedError

    m = AppModel(keygen=shallow_keys)
    m.create_keystore(tmp_path / "ks1", PASSPHRASE, preset="test-insecure", kdf=TEST_KDF, allow_weak=True)
    other = AppModel(keygen=shallow_keys)
    other.create_keystore(tmp_path / "ks2", PASSPHRASE, preset="test-insecure", kdf=TEST_KDF, allow_weak=True)
    m.import_files([f"{FIXTURES}/basic_mgdl.json"])
    m.scenarios = [ScenarioRow("A", 300.0, 12.0, 2)]
    m.horizon_h, m.step_h = 24.0, 4.0
    enc = m.encrypt()
    tag = m.key_tag
    m.lock()
    with pytest.raises(SessionLockedError):
        m.pseudonyms()
    with pytest.raises(KeyMismatchError):
        m.unlock(tmp_path / "ks2", PASSPHRASE)
    assert m.cohort is enc and m.key_tag == tag and not m.unlocked
    m.unlock(tmp_path / "ks1", PASSPHRASE)
    assert m.cohort is enc and m.unlocked
    with pytest.raises(MedTwinError, match="exists already"):
        m.create_keystore(tmp_path / "ks1", PASSPHRASE, preset="test-insecure", kdf=TEST_KDF, allow_weak=True)
