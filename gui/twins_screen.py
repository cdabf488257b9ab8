"""Twins: import FHIR bundles or CSV (dialog or drag-and-drop), review covariates, encrypt, list twins."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
                               QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from medtwin.gui.common import BAD_BG, Runner, heading, hint, show_error
from medtwin.gui.model import AppModel

ACCEPTED = (".json", ".csv")
_UNITS = {"age_years": "Age [years]", "weight_kg": "Weight [kg]", "serum_creatinine_mg_dl": "Serum creatinine [mg/dL]",
          "female": "Female [1/0]", "crcl_ml_min": "CrCl (Cockcroft-Gault) [mL/min]"}


def _fmt(v) -> str:
    if v is None:
        return "missing"
    if float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.2f}".rstrip("0").rstrip(".")


class TwinsScreen(QWidget):
    """Import and review patients; encrypt them into twins. Emits ``changed`` after imports."""

    changed = Signal()
    encrypted = Signal()

    def __init__(self, model: AppModel, runner: Runner, parent=None):
        super().__init__(parent)
        self.model, self.runner = model, runner
        self.setAcceptDrops(True)
        root = QVBoxLayout(self)
        root.addWidget(heading("Twins"))
        root.addWidget(hint("Import FHIR R4 bundles (.json) or CSV files with the button or by dropping them here. "
                            "Review the covariates before encryption: plaintext is shown only on this workstation and "
                            "is never written to disk. Only the model's covariates are encrypted."))
        bar = QHBoxLayout()
        self.import_btn = QPushButton("&Import files…")
        self.import_btn.clicked.connect(self._import_dialog)
        self.clear_btn = QPushButton("Clear")
        self.clear_btn.clicked.connect(self._clear)
        self.encrypt_btn = QPushButton("&Encrypt twins")
        self.encrypt_btn.clicked.connect(self.encrypt)
        self.summary = QLabel("")
        self.summary.setObjectName("twinSummary")
        bar.addWidget(self.import_btn)
        bar.addWidget(self.clear_btn)
        bar.addWidget(self.summary, 1)
        bar.addWidget(self.encrypt_btn)
        root.addLayout(bar)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        root.addWidget(self.progress)

        split = QSplitter(Qt.Orientation.Vertical)
        box = QWidget()
        v = QVBoxLayout(box)
        v.setContentsMargins(0, 0, 0, 0)
        v.addWidget(QLabel("Review (plaintext, in memory only)"))
        self.review = QTableWidget()
        self.review.setObjectName("reviewTable")
        self.review.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.review.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.review.setAlternatingRowColors(True)
        v.addWidget(self.review)
        split.addWidget(box)
        box2 = QWidget()
        v2 = QVBoxLayout(box2)
        v2.setContentsMargins(0, 0, 0, 0)
        v2.addWidget(QLabel("Twins (pseudonymous ids)"))
        self.twins = QTableWidget(0, 2)
        self.twins.setObjectName("twinTable")
        self.twins.setHorizontalHeaderLabels(["Twin id", "Status"])
        self.twins.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.twins.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        v2.addWidget(self.twins)
        split.addWidget(box2)
        split.setSizes([400, 200])
        root.addWidget(split, 1)
        self.refresh()

    # ------------------------------------------------------------------ import
    def _import_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Import patients", str(Path.home()),
                                                "FHIR bundles and CSV (*.json *.csv);;All files (*)")
        if files:
            self.import_paths(files)

    def import_paths(self, paths) -> None:
        """Import files (the same path the dialog and drag-and-drop take); errors go to a dialog."""
        try:
            n = self.model.import_files(paths)
        except Exception as exc:  # noqa: BLE001 - MedTwinError and OS errors both go to the user
            show_error(self.window(), "Import", f"Nothing was imported.\n\n{type(exc).__name__}: {exc}")
            return
        self.refresh(extra=f"imported {n} patient(s)")
        self.changed.emit()

    def dragEnterEvent(self, ev) -> None:  # noqa: N802 - Qt override
        urls = ev.mimeData().urls() if ev.mimeData().hasUrls() else []
        if urls and all(u.isLocalFile() and Path(u.toLocalFile()).suffix.lower() in ACCEPTED for u in urls):
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dragMoveEvent(self, ev) -> None:  # noqa: N802
        self.dragEnterEvent(ev)

    def dropEvent(self, ev) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if paths:
            ev.acceptProposedAction()
            self.import_paths(paths)

    def _clear(self) -> None:
        self.model.clear_patients()
        self.refresh()
        self.changed.emit()

    # ------------------------------------------------------------------ encrypt
    def encrypt(self) -> None:
        if not self.model.unlocked:
            show_error(self.window(), "Encrypt twins", "Unlock the keystore first (Keys screen).")
            return
        try:
            self.model.spec()
        except Exception as exc:  # noqa: BLE001
            show_error(self.window(), "Encrypt twins", f"Fix the scenario set-up first: {exc}")
            return
        self.progress.setVisible(True)
        self.progress.setValue(0)
        self.encrypt_btn.setEnabled(False)

        def done():
            self.progress.setVisible(False)
            self.refresh()

        def ok(_):
            self.encrypted.emit()

        self.runner.start(self, self.model.encrypt, "Encrypt twins", wants_progress=True,
                          on_progress=lambda s, f: self.progress.setValue(int(100 * f)),
                          on_success=ok, on_done=done)

    # ------------------------------------------------------------------ view
    def refresh(self, extra: str = "") -> None:
        m = self.model
        names = list(m.covariate_names()) + ["crcl_ml_min"]
        heads = ["Source file", "Patient (source id)"] + [_UNITS.get(k, k) for k in names] + ["Validation"]
        self.review.clear()
        self.review.setColumnCount(len(heads))
        self.review.setHorizontalHeaderLabels(heads)
        self.review.setRowCount(len(m.review))
        for i, row in enumerate(m.review):
            cells = [row.source, row.record.source_id] + [_fmt(row.values.get(k)) for k in names]
            cells.append("OK" if row.ok else "; ".join(row.problems))
            for j, c in enumerate(cells):
                it = QTableWidgetItem(c)
                if not row.ok:
                    it.setBackground(BAD_BG)
                    it.setToolTip("excluded: " + "; ".join(row.problems))
                if j >= 2 and j < len(cells) - 1:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.review.setItem(i, j, it)
        self.review.resizeColumnsToContents()
        self.review.horizontalHeader().setStretchLastSection(True)
        n = len(m.review)
        ok = sum(r.ok for r in m.review)
        text = f"{n} imported, {ok} eligible for {m.model.drug}, {n - ok} excluded"
        if extra:
            text = f"{extra}; {text}"
        self.summary.setText(text)

        self.twins.setRowCount(0)
        if m.unlocked and ok:
            ids = m.pseudonyms()
            status = "not encrypted yet"
            if m.cohort is not None:
                if m.cohort_matches_spec():
                    status = (f"encrypted for study {m.cohort.spec.digest()[:12]} "
                              f"({m.cohort.layout.n_ciphertexts} ciphertext chunk(s) per covariate)")
                else:
                    status = "encrypted for an earlier study set-up; re-encrypted when you run"
            self.twins.setRowCount(len(ids))
            for i, tid in enumerate(ids):
                self.twins.setItem(i, 0, QTableWidgetItem(tid))
                self.twins.setItem(i, 1, QTableWidgetItem(status))
        elif ok:
            self.twins.setRowCount(1)
            self.twins.setItem(0, 0, QTableWidgetItem("—"))
            self.twins.setItem(0, 1, QTableWidgetItem("unlock the keystore to derive pseudonymous twin ids"))
        self.twins.resizeColumnToContents(0)
        self.encrypt_btn.setEnabled(m.unlocked and ok > 0 and not self.progress.isVisible())
