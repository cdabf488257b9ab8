"""Results: trajectories per scenario (window and 5-95% bands), the comparison table with the top
options highlighted and their basis one click away, the cohort dashboard, and export."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog,
                               QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QListWidget, QListWidgetItem, QPushButton, QSplitter, QTableWidget,
                               QTableWidgetItem, QTextBrowser, QVBoxLayout, QWidget)

from medtwin.gui.common import TOP_BG, Runner, heading, hint, insecure_label, show_error
from medtwin.gui.model import SCORE_DESCRIPTION, AppModel, ranking, top_ranked
from medtwin.reports.study_report import comparison_rows

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def colour(i: int, alpha: int = 255) -> QColor:
    r, g, b = PALETTE[i % len(PALETTE)]
    return QColor(r, g, b, alpha)


def _plot() -> pg.PlotWidget:
    w = pg.PlotWidget(background="w")
    w.showGrid(x=True, y=True, alpha=0.25)
    for ax in ("left", "bottom"):
        w.getAxis(ax).setPen(pg.mkPen("#444"))
        w.getAxis(ax).setTextPen(pg.mkPen("#222"))
    return w


def draw_trajectories(plot: pg.PlotWidget, legend, spec, times, conc, scenarios) -> None:
    """Draw the therapeutic window and, per scenario index in ``scenarios``, the median
    concentration over the patients in ``conc`` (patients, scenarios, times) with its 5-95% band.
    Used for the final result and for the partial results while a run goes on."""
    lo, hi = spec.pk.window
    band = pg.LinearRegionItem(values=(lo, hi), orientation="horizontal", movable=False,
                               brush=pg.mkBrush(46, 160, 67, 40), pen=pg.mkPen(46, 160, 67, 90))
    plot.addItem(band)
    legend.addItem(pg.BarGraphItem(x=[0], height=[0], width=0, brush=pg.mkBrush(46, 160, 67, 90)),
                   f"therapeutic window {lo:g}–{hi:g} mg/L")
    t = np.asarray(times, dtype=float)
    dpr = max(1.0, float(plot.devicePixelRatioF()))  # cosmetic pens are in device pixels
    if len(conc) == 0:
        return
    for i in scenarios:
        c = conc[:, i, :]
        med = np.median(c, axis=0)
        p5, p95 = np.percentile(c, [5, 95], axis=0)
        lo_c = pg.PlotDataItem(t, p5, pen=pg.mkPen(colour(i, 90), width=dpr))
        hi_c = pg.PlotDataItem(t, p95, pen=pg.mkPen(colour(i, 90), width=dpr))
        plot.addItem(lo_c)
        plot.addItem(hi_c)
        plot.addItem(pg.FillBetweenItem(lo_c, hi_c, brush=pg.mkBrush(colour(i, 45))))
        plot.plot(t, med, pen=pg.mkPen(colour(i), width=2.5 * dpr), name=f"{spec.scenarios[i].name} median (band 5–95%)")


class BasisDialog(QDialog):
    """What a ranking rests on: model, citation, covariates, ranges, bounds, run facts."""

    def __init__(self, basis: dict, scenario: str, summary_row: dict, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Basis of the result for {scenario}")
        self.setObjectName("basisDialog")
        self.resize(760, 520)
        v = QVBoxLayout(self)
        txt = QTextBrowser()
        parts = [f"<h3>{scenario}</h3><table>"]
        for k, val in summary_row.items():
            parts.append(f"<tr><td><b>{k}</b></td><td>{val}</td></tr>")
        parts.append("</table><h3>Basis</h3><table cellspacing=4>")
        for k, val in basis.items():
            parts.append(f"<tr><td valign=top><b>{k}</b></td><td>{val}</td></tr>")
        parts.append("</table>")
        txt.setHtml("".join(parts))
        self.text = txt
        v.addWidget(txt)
        bb = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        bb.rejected.connect(self.reject)
        bb.accepted.connect(self.accept)
        v.addWidget(bb)


class ExportDialog(QDialog):
    """Choose which scenarios and which parts to export, and the folder."""

    def __init__(self, scenario_names: list[str], preselect: set[int], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Export results")
        self.setObjectName("exportDialog")
        v = QVBoxLayout(self)
        v.addWidget(hint("Only what you tick is written. Twins appear by pseudonymous id; files are never overwritten."))
        g = QGroupBox("Scenarios")
        gv = QVBoxLayout(g)
        self.scen: list[QCheckBox] = []
        for i, n in enumerate(scenario_names):
            cb = QCheckBox(n)
            cb.setChecked(i in preselect)
            self.scen.append(cb)
            gv.addWidget(cb)
        v.addWidget(g)
        g2 = QGroupBox("Contents")
        gv2 = QVBoxLayout(g2)
        self.csv_metrics = QCheckBox("Per-twin metrics (CSV)")
        self.csv_summary = QCheckBox("Scenario comparison (CSV)")
        self.pdf = QCheckBox("PDF summary")
        self.pdf_plots = QCheckBox("   with the concentration plot")
        self.pdf_twins = QCheckBox("   with the per-twin table")
        for cb, on in ((self.csv_metrics, True), (self.csv_summary, True), (self.pdf, True), (self.pdf_plots, True),
                       (self.pdf_twins, False)):
            cb.setChecked(on)
            gv2.addWidget(cb)
        self.pdf.toggled.connect(self.pdf_plots.setEnabled)
        self.pdf.toggled.connect(self.pdf_twins.setEnabled)
        v.addWidget(g2)
        h = QHBoxLayout()
        self.folder = QLineEdit(str(Path.home() / "medtwin-export"))
        self.folder.setAccessibleName("Export folder")
        b = QPushButton("Browse…")
        b.clicked.connect(self._browse)
        h.addWidget(QLabel("Folder:"))
        h.addWidget(self.folder, 1)
        h.addWidget(b)
        v.addLayout(h)
        bb = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        bb.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        v.addWidget(bb)

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export folder", self.folder.text())
        if d:
            self.folder.setText(d)

    def choices(self) -> dict:
        return {"dest_dir": Path(self.folder.text()).expanduser(),
                "scenarios": [i for i, cb in enumerate(self.scen) if cb.isChecked()],
                "csv_metrics": self.csv_metrics.isChecked(), "csv_summary": self.csv_summary.isChecked(),
                "pdf": self.pdf.isChecked(), "pdf_plots": self.pdf_plots.isChecked(),
                "pdf_twins": self.pdf_twins.isChecked()}


class ResultsScreen(QWidget):
    """Trajectories and the comparison table of the last run."""

    def __init__(self, model: AppModel, runner: Runner, parent=None):
        super().__init__(parent)
        self.model, self.runner = model, runner
        self.last_export: list[Path] = []
        root = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(heading("Results"))
        top.addStretch(1)
        self.insecure = insecure_label()
        top.addWidget(self.insecure)
        self.export_btn = QPushButton("E&xport…")
        self.export_btn.clicked.connect(self._export_dialog)
        top.addWidget(self.export_btn)
        root.addLayout(top)
        self.info = hint("Run a study to see results.")
        root.addWidget(self.info)

        split = QSplitter(Qt.Orientation.Vertical)
        upper = QWidget()
        uh = QHBoxLayout(upper)
        uh.setContentsMargins(0, 0, 0, 0)
        self.scen_list = QListWidget()
        self.scen_list.setObjectName("scenarioList")
        self.scen_list.setMaximumWidth(180)
        self.scen_list.setAccessibleName("Scenarios shown in the plot")
        self.scen_list.itemChanged.connect(self._draw)
        uh.addWidget(self.scen_list)
        self.plot = _plot()
        self.plot.setLabel("bottom", "time [h]")
        self.plot.setLabel("left", "concentration [mg/L]")
        self.legend = self.plot.addLegend(offset=(10, 10))
        uh.addWidget(self.plot, 1)
        split.addWidget(upper)

        lower = QWidget()
        lv = QVBoxLayout(lower)
        lv.setContentsMargins(0, 0, 0, 0)
        lh = QHBoxLayout()
        lh.addWidget(QLabel("Comparison (cohort medians; ranked by time in window, best options highlighted). "
                            "Double-click a row, or:"))
        self.basis_btn = QPushButton("Show &basis…")
        self.basis_btn.clicked.connect(self.show_basis)
        lh.addWidget(self.basis_btn)
        lh.addStretch(1)
        lv.addLayout(lh)
        self.table = QTableWidget()
        self.table.setObjectName("comparisonTable")
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.cellDoubleClicked.connect(lambda r, c: self.show_basis(r))
        lv.addWidget(self.table)
        split.addWidget(lower)
        split.setSizes([430, 230])
        root.addWidget(split, 1)
        self.basis_dialog: BasisDialog | None = None
        self.refresh()

    def refresh(self) -> None:
        res = self.model.result
        self.insecure.setVisible(bool(res is not None and res.extra.get("insecure")))
        has = res is not None and self.model.unlocked
        self.export_btn.setEnabled(has)
        self.basis_btn.setEnabled(has)
        self.scen_list.blockSignals(True)
        self.scen_list.clear()
        self.table.clear()
        self.table.setRowCount(0)
        if res is None:
            self.scen_list.blockSignals(False)
            self.info.setText("Run a study to see results.")
            self._draw()
            return
        top = top_ranked(res)
        for i, sc in enumerate(res.spec.scenarios):
            it = QListWidgetItem(sc.name)
            it.setToolTip(sc.regimen.describe())
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Checked)
            it.setForeground(colour(i))
            self.scen_list.addItem(it)
        self.scen_list.blockSignals(False)
        pk = res.spec.pk
        self.info.setText(f"{len(res.twin_ids)} twins, {pk.drug}, window {pk.window[0]:g}–{pk.window[1]:g} mg/L, "
                          f"{len(res.times)} time points; backend {res.backend}, {res.seconds_simulate:.1f} s simulated; "
                          f"error bound on concentration {res.bounds.get('conc', float('nan')):.2g} mg/L.")
        rows = comparison_rows(res)
        rank = {i: k + 1 for k, (i, _) in enumerate(ranking(res))}
        scores = dict(ranking(res))
        cols = ["rank"] + list(rows[0]) + ["score"]
        self.table.setColumnCount(len(cols))
        self.table.setHorizontalHeaderLabels([c.replace(" [", "\n[").replace(" median", "\nmedian")
                                              .replace(" in window", "\nin window") for c in cols])
        self.table.horizontalHeaderItem(len(cols) - 1).setToolTip(SCORE_DESCRIPTION)
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            vals = [str(rank[i])] + [str(r[c]) for c in rows[0]] + [f"{scores[i]:.3f}"]
            for j, v in enumerate(vals):
                it = QTableWidgetItem(v)
                if i in top:
                    it.setBackground(TOP_BG)
                    f = it.font()
                    f.setWeight(QFont.Weight.Bold)
                    it.setFont(f)
                    it.setToolTip("top-ranked: double-click for the basis")
                self.table.setItem(i, j, it)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)
        self._draw()

    def checked(self) -> list[int]:
        return [i for i in range(self.scen_list.count())
                if self.scen_list.item(i).checkState() == Qt.CheckState.Checked]

    def _draw(self, *_) -> None:
        self.plot.clear()
        self.legend.clear()
        res = self.model.result
        if res is None:
            return
        draw_trajectories(self.plot, self.legend, res.spec, res.times, res.conc, self.checked())

    def selected_row(self) -> int:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if rows:
            return rows[0].row()
        r = ranking(self.model.result)
        return r[0][0] if r else 0

    def show_basis(self, row: int | bool | None = None) -> BasisDialog | None:
        res = self.model.result
        if res is None:
            return None
        if not isinstance(row, int) or isinstance(row, bool):
            row = self.selected_row()
        rows = comparison_rows(res)
        self.basis_dialog = BasisDialog(self.model.basis(), res.spec.scenarios[row].name, rows[row], self.window())
        self.basis_dialog.open()
        return self.basis_dialog

    def _export_dialog(self) -> None:
        res = self.model.result
        if res is None:
            return
        dlg = ExportDialog([f"{s.name}: {s.regimen.describe()}" for s in res.spec.scenarios],
                           set(self.checked()), self.window())
        if dlg.exec() == QDialog.DialogCode.Accepted:
            self.export(**dlg.choices())

    def export(self, **choices) -> None:
        """Export in a worker; the written files end up in ``last_export``."""
        def ok(paths):
            self.last_export = list(paths)
            self.info.setText("Exported: " + ", ".join(str(p) for p in paths))

        self.runner.start(self, lambda: self.model.export(**choices), "Export", on_success=ok)


class DashboardScreen(QWidget):
    """Cohort dashboard: distributions of AUC, peak and time in window; target attainment."""

    def __init__(self, model: AppModel, parent=None):
        super().__init__(parent)
        self.model = model
        root = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(heading("Cohort dashboard"))
        top.addStretch(1)
        self.insecure = insecure_label()
        top.addWidget(self.insecure)
        top.addWidget(QLabel("Scenario:"))
        self.scenario = QComboBox()
        self.scenario.setAccessibleName("Dashboard scenario")
        self.scenario.currentIndexChanged.connect(self._draw)
        top.addWidget(self.scenario)
        root.addLayout(top)
        self.info = hint("")
        root.addWidget(self.info)
        grid = QGridLayout()
        self.p_auc, self.p_peak, self.p_tiw, self.p_att = _plot(), _plot(), _plot(), _plot()
        self.p_auc.setTitle("AUC over the horizon [mg·h/L]", color="#222")
        self.p_peak.setTitle("Peak and trough [mg/L]", color="#222")
        self.p_tiw.setTitle("Time in therapeutic window [fraction]", color="#222")
        self.p_att.setTitle("Target attainment by scenario [% of twins / % of horizon]", color="#222")
        self.p_att.addLegend(offset=(-10, 10))
        for p in (self.p_auc, self.p_peak, self.p_tiw):
            p.setLabel("left", "twins")
        self.p_peak.addLegend(offset=(-10, 10))
        grid.addWidget(self.p_auc, 0, 0)
        grid.addWidget(self.p_peak, 0, 1)
        grid.addWidget(self.p_tiw, 1, 0)
        grid.addWidget(self.p_att, 1, 1)
        root.addLayout(grid, 1)
        self.refresh()

    def refresh(self) -> None:
        res = self.model.result
        self.insecure.setVisible(bool(res is not None and res.extra.get("insecure")))
        self.scenario.blockSignals(True)
        self.scenario.clear()
        if res is not None:
            for s in res.spec.scenarios:
                self.scenario.addItem(s.name)
        self.scenario.blockSignals(False)
        self._draw()

    @staticmethod
    def _hist(plot, values, colour_: QColor, bins: int = 20, name: str | None = None, width_frac: float = 0.9,
              span: tuple[float, float] | None = None, offset: float = 0.0):
        values = np.asarray(values, dtype=float)
        lo, hi = span or (float(values.min()), float(values.max()))
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
        w = (edges[1] - edges[0]) * width_frac
        item = pg.BarGraphItem(x=(edges[:-1] + edges[1:]) / 2 + offset * w, height=counts, width=w,
                               brush=pg.mkBrush(colour_), pen=pg.mkPen(colour_.darker(130)), name=name)
        plot.addItem(item)
        return counts

    def _draw(self, *_) -> None:
        for p in (self.p_auc, self.p_peak, self.p_tiw, self.p_att):
            p.clear()
        res = self.model.result
        if res is None:
            self.info.setText("Run a study to see the cohort dashboard.")
            return
        s = max(0, self.scenario.currentIndex())
        lo, hi = res.spec.pk.window
        self._hist(self.p_auc, res.auc[:, s, -1], colour(s, 180))
        both = np.concatenate([res.peak[:, s], res.trough[:, s]])
        span = (min(float(both.min()), lo) - 0.5, max(float(both.max()), hi) + 0.5)
        self._hist(self.p_peak, res.trough[:, s], QColor(31, 119, 180, 170), bins=24, name="trough (pre-dose)",
                   span=span, width_frac=0.45, offset=-0.5)
        self._hist(self.p_peak, res.peak[:, s], QColor(214, 39, 40, 170), bins=24, name="peak", span=span,
                   width_frac=0.45, offset=0.5)
        for v in (lo, hi):
            self.p_peak.addItem(pg.InfiniteLine(v, angle=90, pen=pg.mkPen(46, 160, 67, 200, width=2,
                                                                          style=Qt.PenStyle.DashLine)))
        if res.tiw is not None:
            self._hist(self.p_tiw, np.clip(res.tiw[:, s], 0, 1), colour(s, 180))
        summ = res.summaries()
        x = np.arange(len(summ))
        att = np.array([100 * x_.attain for x_ in summ])
        tiw_pct = np.array([100 * x_.tiw_mean if np.isfinite(x_.tiw_mean) else 0.0 for x_ in summ])
        self.p_att.addItem(pg.BarGraphItem(x=x - 0.18, height=tiw_pct, width=0.34, brush=pg.mkBrush(46, 160, 67, 200),
                                           name="mean time in window"))
        self.p_att.addItem(pg.BarGraphItem(x=x + 0.18, height=att, width=0.34, brush=pg.mkBrush(120, 120, 120, 200),
                                           name="peak and trough in window"))
        short = lambda n: n if len(n) <= 14 else n[:13] + "…"
        self.p_att.getAxis("bottom").setTicks([[(i, short(summ[i].name)) for i in range(len(summ))]])
        self.p_att.setYRange(0, 100)
        self.p_att.setXRange(-0.6, len(summ) - 0.4)
        n = len(res.twin_ids)
        tiw = f", mean time in window {summ[s].tiw_mean:.2f}" if res.tiw is not None else ""
        self.info.setText(f"{n} twins in scenario {summ[s].name}: median AUC {summ[s].auc_median:.0f} mg·h/L, "
                          f"median peak {summ[s].peak_median:.1f} mg/L, median trough {summ[s].trough_median:.1f} mg/L"
                          f"{tiw}; {100 * summ[s].attain:.0f}% have peak and trough within {lo:g}–{hi:g} mg/L.")
