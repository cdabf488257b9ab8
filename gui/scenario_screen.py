"""Scenario set-up: the model (citation, valid ranges), the regimen grid with inline validation,
horizon and output step."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QStyledItemDelegate, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from medtwin.errors import ValidationError
from medtwin.models.pk_oral import MAX_POWER
from medtwin.gui.common import BAD_BG, heading, hint
from medtwin.gui.model import SCENARIO_COLUMNS, AppModel, ScenarioRow, build_scenario, field_of_error, model_names
from medtwin.gui.model import parse_cell

_COLS = [c for c, _, _ in SCENARIO_COLUMNS]


class _RouteDelegate(QStyledItemDelegate):
    def createEditor(self, parent, option, index):  # noqa: N802 - Qt override
        from medtwin.study.scenario import ROUTES

        box = QComboBox(parent)
        box.addItems(list(ROUTES))
        return box

    def setEditorData(self, editor, index):  # noqa: N802
        i = editor.findText(index.data() or "")
        editor.setCurrentIndex(max(i, 0))

    def setModelData(self, editor, model, index):  # noqa: N802
        model.setData(index, editor.currentText())


class ScenarioScreen(QWidget):
    """Edits ``model.scenarios``, ``model.model_name``, ``horizon_h`` and ``step_h``.

    ``validity_changed(bool)`` fires when the set-up turns valid or invalid; ``errors`` holds the
    current messages (one per bad row, naming the field).
    """

    validity_changed = Signal(bool)
    model_changed = Signal()

    def __init__(self, model: AppModel, parent=None):
        super().__init__(parent)
        self.model = model
        self.errors: list[str] = []
        self._valid = True
        self._loading = False
        root = QVBoxLayout(self)
        root.addWidget(heading("Scenario set-up"))

        g = QGroupBox("Model")
        f = QFormLayout(g)
        self.model_box = QComboBox()
        self.model_box.setAccessibleName("Model")
        for name in model_names():
            self.model_box.addItem(name, name)
        self.model_box.currentIndexChanged.connect(self._model_chosen)
        self.citation = QLabel()
        self.citation.setWordWrap(True)
        self.citation.setObjectName("citation")
        self.citation.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.ranges = QLabel()
        self.ranges.setWordWrap(True)
        self.ranges.setObjectName("ranges")
        f.addRow("Model:", self.model_box)
        f.addRow("Citation:", self.citation)
        f.addRow("Valid input ranges:", self.ranges)
        root.addWidget(g)

        g2 = QGroupBox("Scenarios (regimen grid and factors)")
        v = QVBoxLayout(g2)
        v.addWidget(hint("Each row is one candidate protocol. Adherence is the chance each dose is taken; the renal "
                         "factor scales creatinine clearance, the clearance factor total clearance (e.g. 1.6 for "
                         "smokers on theophylline). Invalid cells turn red and the reason is shown below."))
        self.table = QTableWidget(0, len(SCENARIO_COLUMNS))
        self.table.setObjectName("scenarioTable")
        self.table.setHorizontalHeaderLabels([lab.replace(" [", "\n[") if len(lab) > 12 else lab
                                              for _, lab, _ in SCENARIO_COLUMNS])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setMinimumSectionSize(70)
        self.table.setItemDelegateForColumn(_COLS.index("route"), _RouteDelegate(self.table))
        self.table.itemChanged.connect(self._validate)
        v.addWidget(self.table)
        h = QHBoxLayout()
        add = QPushButton("&Add scenario")
        add.clicked.connect(self.add_row)
        rm = QPushButton("&Remove selected")
        rm.clicked.connect(self._remove)
        h.addWidget(add)
        h.addWidget(rm)
        h.addStretch(1)
        v.addLayout(h)
        self.message = QLabel("")
        self.message.setObjectName("scenarioErrors")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("QLabel { color: #c62828; }")
        v.addWidget(self.message)
        root.addWidget(g2, 1)

        g3 = QGroupBox("Time grid")
        f3 = QFormLayout(g3)
        self.horizon = QDoubleSpinBox()
        self.horizon.setRange(1.0, 1440.0)
        self.horizon.setDecimals(1)
        self.horizon.setSuffix(" h")
        self.horizon.setAccessibleName("Horizon in hours")
        self.step = QDoubleSpinBox()
        self.step.setRange(0.1, 240.0)
        self.step.setDecimals(2)
        self.step.setSuffix(" h")
        self.step.setAccessibleName("Output step in hours")
        self.horizon.valueChanged.connect(self._validate)
        self.step.valueChanged.connect(self._validate)
        self.grid_info = QLabel("")
        f3.addRow("Horizon:", self.horizon)
        f3.addRow("Output every:", self.step)
        f3.addRow("", self.grid_info)
        root.addWidget(g3)
        self.load_from_model()

    # ------------------------------------------------------------------ data
    def load_from_model(self) -> None:
        self._loading = True
        m = self.model
        self.model_box.setCurrentIndex(max(0, self.model_box.findData(m.model.name)))
        self.table.setRowCount(0)
        for r in m.scenarios:
            self._append(r)
        self.horizon.setValue(m.horizon_h)
        self.step.setValue(m.step_h)
        self._loading = False
        self._show_model()
        self._validate()

    def _append(self, r: ScenarioRow) -> None:
        i = self.table.rowCount()
        self.table.insertRow(i)
        for j, c in enumerate(_COLS):
            v = getattr(r, c)
            text = "" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
            self.table.setItem(i, j, QTableWidgetItem(text))

    def add_row(self) -> None:
        n = self.table.rowCount() + 1
        names = {self.cell(i, "name") for i in range(self.table.rowCount())}
        name = next(f"S{k}" for k in range(n, n + 100) if f"S{k}" not in names)
        self._loading = True
        self._append(ScenarioRow(name=name))
        self._loading = False
        self._validate()

    def _remove(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True)
        for r in rows:
            self.table.removeRow(r)
        self._validate()

    def cell(self, row: int, column: str) -> str:
        it = self.table.item(row, _COLS.index(column))
        return "" if it is None else it.text()

    def set_cell(self, row: int, column: str, text: str) -> None:
        """Set a cell's text as the user would (validation runs)."""
        it = self.table.item(row, _COLS.index(column))
        if it is None:
            it = QTableWidgetItem()
            self.table.setItem(row, _COLS.index(column), it)
        it.setText(text)

    def _model_chosen(self) -> None:
        if self._loading:
            return
        self.model.model_name = self.model_box.currentData()
        self.model.revalidate()
        self._show_model()
        self._validate()
        self.model_changed.emit()

    def _show_model(self) -> None:
        m = self.model.model
        self.citation.setText(m.citation)
        lo, hi = m.window
        units = {"age_years": "years", "weight_kg": "kg", "serum_creatinine_mg_dl": "mg/dL", "female": "0/1",
                 "crcl_ml_min": "mL/min"}
        rng = ", ".join(f"{k} {a:g}–{b:g} {units.get(k, '')}".rstrip() for k, (a, b) in m.ranges.items())
        self.ranges.setText(f"{rng}. Therapeutic window {lo:g}–{hi:g} mg/L. Patients outside these ranges are "
                            "refused before encryption.")

    # ------------------------------------------------------------------ validation
    @property
    def valid(self) -> bool:
        return self._valid

    def _validate(self, *_) -> None:
        if self._loading:
            return
        rows: list[ScenarioRow] = []
        errors: list[str] = []
        names: set[str] = set()
        for i in range(self.table.rowCount()):
            bad_col: str | None = None
            msg = ""
            vals = {}
            for c in _COLS:
                try:
                    vals[c] = parse_cell(c, self.cell(i, c))
                except ValidationError as exc:
                    bad_col, msg = c, str(exc)
                    break
            row = None
            if bad_col is None:
                row = ScenarioRow(**vals)
                try:
                    build_scenario(row)
                    if row.name in names:
                        raise ValidationError("scenario name must be unique")
                except ValidationError as exc:
                    msg = str(exc)
                    bad_col = field_of_error(msg) or "name"
            for j, c in enumerate(_COLS):
                it = self.table.item(i, j)
                if it is None:
                    continue
                self.table.blockSignals(True)
                if c == bad_col:
                    it.setBackground(BAD_BG)
                    it.setToolTip(msg)
                else:
                    it.setData(Qt.ItemDataRole.BackgroundRole, None)
                    it.setToolTip("")
                self.table.blockSignals(False)
            if bad_col is not None:
                errors.append(f"Row {i + 1}: {msg}")
            else:
                names.add(row.name)
                rows.append(row)
        if self.table.rowCount() == 0:
            errors.append("Add at least one scenario.")
        horizon, step = self.horizon.value(), self.step.value()
        if step > horizon:
            errors.append("The output step must not exceed the horizon.")
        n_t = int(round(horizon / step)) + 1 if step > 0 else 0
        self.grid_info.setText(f"{n_t} output time points from 0 to {(n_t - 1) * step:g} h")
        if not errors:
            self.model.scenarios = rows
            self.model.horizon_h, self.model.step_h = horizon, step
            self.model.scenario_errors = []
            try:
                spec = self.model.spec()
                for sc in spec.scenarios:
                    k = int(np.floor((spec.times[-1] - sc.regimen.start_h) / sc.regimen.interval_h + 1e-12))
                    if k > MAX_POWER:
                        raise ValidationError(f"scenario {sc.name!r}: the horizon spans {k} dosing intervals; at most "
                                              f"{MAX_POWER} are supported (shorten the horizon or lengthen the interval)")
            except ValidationError as exc:
                errors.append(str(exc))
        self.errors = errors
        self.model.scenario_errors = list(errors)
        self.message.setText("\n".join(errors))
        valid = not errors
        if valid != self._valid:
            self._valid = valid
            self.validity_changed.emit(valid)
