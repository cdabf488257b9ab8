"""Nothing under medtwin/ outside gui/ may import Qt (napari's rule: Qt only in the Qt layer)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import medtwin

QT_MODULES = ("PySide6", "PySide2", "PyQt5", "PyQt6", "qtpy", "pyqtgraph", "shiboken6")
_IMPORT = re.compile(r"^\s*(from|import)\s+(" + "|".join(QT_MODULES) + r")\b", re.M)
CORE = Path(medtwin.__file__).resolve().parent


def test_core_sources_do_not_import_qt():
    files = [p for p in CORE.rglob("*.py") if "gui" not in p.relative_to(CORE).parts]
    assert len(files) > 20, "the scan found too few files: wrong package root?"
    offenders = [str(p.relative_to(CORE)) for p in files if _IMPORT.search(p.read_text(encoding="utf-8"))]
    assert offenders == [], f"Qt imported outside medtwin.gui: {offenders}"


def test_scan_would_catch_a_qt_import():
    assert _IMPORT.search("import numpy\nfrom PySide6.QtCore import QObject\n")
    assert _IMPORT.search("    import pyqtgraph as pg\n")
    assert not _IMPORT.search("# PySide6 is used only in gui/\n")


def test_importing_every_core_module_loads_no_qt():
    code = r"""
import importlib, pkgutil, sys, json
import medtwin
loaded, failed = [], []
for m in pkgutil.walk_packages(medtwin.__path__, "medtwin."):
    if m.name == "medtwin.gui" or m.name.startswith("medtwin.gui."):
        continue
    try:
        importlib.import_module(m.name)
        loaded.append(m.name)
    except Exception as exc:  # modules still being written elsewhere: the source scan covers them
        failed.append(m.name)
qt = sorted(k for k in sys.modules if k.split(".")[0] in %r)
print(json.dumps({"loaded": loaded, "failed": failed, "qt": qt}))
""" % (QT_MODULES,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(CORE.parent))
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(res["loaded"]) > 20
    assert "medtwin.study.workflow" in res["loaded"] and "medtwin.reports.pdf" in res["loaded"]
    assert res["qt"] == [], f"core modules pulled in Qt: {res['qt']}"
