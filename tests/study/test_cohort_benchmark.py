"""The cohort benchmark script runs (tiny size, test ring); its numbers are reported, never asserted."""
from __future__ import annotations

import json


def test_cohort_benchmark_smoke(tmp_path):
    from benchmarks.cohort import main

    assert main(["--model", "theophylline", "--preset", "test-insecure", "--patients", "3", "--backends", "openfhe",
                 "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "cohort.json").read_text())
    b = r["backends"]["openfhe"]
    assert r["scenarios"] == 16 and r["results"] == 3 * 16 * 19
    assert b["max_conc_deviation"] <= b["conc_bound"]


def test_vancomycin_cohort_benchmark_smoke(tmp_path):
    from benchmarks.cohort import main

    assert main(["--preset", "test-insecure", "--patients", "12", "--backends", "native", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "cohort_vancomycin.json").read_text())
    assert r["model"] == "vancomycin" and r["scenarios"] == 16 and r["results"] == 12 * 16 * 2
    assert [(b["mode"], b["backend"]) for b in r["runs"]] == [("objects", "native"), ("wire", "native")]
    for b in r["runs"]:
        assert b["within_bound"] and b["aggregate_within_bound"]
    md = (tmp_path / "cohort_vancomycin.md").read_text()
    assert "| objects | native |" in md and "| wire | native |" in md
