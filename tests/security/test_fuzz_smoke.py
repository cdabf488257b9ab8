"""A small, reproducible run of scripts/fuzz.py over every parser that reads outside input.

Requirements checked per target: no crash, no hang, only documented (MedTwinError) exceptions,
nothing stored changed. A second run of the harness's self-test target proves that it does see
a crash, a hang, an undocumented exception and a changed input.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz.py"
TARGETS = ["fhir", "csv", "keystore", "public_bundle", "ct_bundle", "ciphertext", "signature", "audit",
           "native_bridge", "native_program"]


def _run(tmp_path, *args, timeout=120):
    out = tmp_path / "report.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out), "--crash-dir", str(tmp_path / "found"),
                        "--workdir", str(tmp_path / "work"), *args],
                       capture_output=True, text=True, timeout=timeout)
    reports = {r["target"]: r for r in json.loads(out.read_text())["reports"]}
    return p, reports


def test_bounded_campaign_over_every_parser(tmp_path):
    p, reports = _run(tmp_path, "--examples", "12", "--seed", "1", "--timeout", "10")
    assert list(reports) == TARGETS
    assert "| target" in p.stdout and "inputs tried" in p.stdout
    problems = {t: r["findings"] for t, r in reports.items() if r["failures"] or r["crashes"] or r["hangs"]}
    assert problems == {}, p.stdout[-3000:]
    assert p.returncode == 0
    for t, r in reports.items():
        assert r["tried"] == 12, t
        assert r["accepted"] + r["refused"] == r["tried"], t
    assert sum(r["refused"] for r in reports.values()) > 50   # the inputs were mostly bad ones


def test_harness_counts_crashes_hangs_and_undocumented_errors(tmp_path):
    p, reports = _run(tmp_path, "--targets", "selftest", "--examples", "20", "--seed", "3", "--timeout", "2")
    r = reports["selftest"]
    assert (r["crashes"], r["hangs"], r["failures"]) == (1, 1, 2), p.stdout
    assert p.returncode == 1
    kinds = " ".join(f["detail"] for f in r["findings"])
    assert "SIGABRT" in kinds and "no answer within 2 s" in kinds
    assert "undocumented KeyError" in kinds and "stored input changed" in kinds
    assert len(list((tmp_path / "found").glob("selftest-*.pkl"))) == 4   # inputs kept to replay
