"""Runs: backend choice, progress with cancel, a log of stages, and the trajectories of the patients
decrypted so far (median and 5-95% band per scenario), redrawn after every ciphertext chunk and
replaced by the final result; work in a worker thread."""
from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar,
                               QPushButton, QSplitter, QVBoxLayout, QWidget)

from medtwin.gui.common import Runner, heading, hint, insecure_label, show_error
from medtwin.gui.model import AppModel, PartialResult, available_backends
from medtwin.gui.results_screen import _plot, draw_trajectories

STAGES = {"encrypt": "Encrypting twins (client, public key)", "simulate": "Simulating on encrypted data (compute context)",
          "decrypt": "Decrypting results (client, secret key)"}


class RunScreen(QWidget):
    """Start, follow and cancel an encrypted study. Emits ``finished(result)`` on success and
    ``partial_drawn(PartialResult)`` after each chunk's partial result is drawn."""

    finished = Signal(object)
    partial_drawn = Signal(object)
    state_changed = Signal(str)  # "running", "done", "cancelled", "failed"

    def __init__(self, model: AppModel, runner: Runner, parent=None):
        super().__init__(parent)
        self.model, self.runner = model, runner
        self.worker = None
        self.state = "idle"
        self._t0 = 0.0
        root = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(heading("Run the encrypted study"))
        top.addStretch(1)
        self.insecure = insecure_label()
        top.addWidget(self.insecure)
        root.addLayout(top)
        root.addWidget(hint("Twins are encrypted with the public key, the study runs on ciphertexts only (the compute "
                            "context holds no secret key), and only the results are decrypted here. Cancel takes "
                            "effect after the ciphertext chunk being simulated; each finished chunk is decrypted here and "
                            "drawn at once."))
        g = QGroupBox("Set-up")
        f = QFormLayout(g)
        self.backend = QComboBox()
        self.backend.setAccessibleName("Backend")
        for b in available_backends():
            self.backend.addItem(b, b)
        self.backend.currentIndexChanged.connect(lambda: setattr(self.model, "backend", self.backend.currentData()))
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        f.addRow("Backend:", self.backend)
        f.addRow("Study:", self.summary)
        root.addWidget(g)
        h = QHBoxLayout()
        self.run_btn = QPushButton("&Run study")
        self.run_btn.setObjectName("runButton")
        self.run_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("&Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        h.addWidget(self.run_btn)
        h.addWidget(self.cancel_btn)
        h.addStretch(1)
        root.addLayout(h)
        self.stage = QLabel("Idle.")
        self.stage.setObjectName("runStage")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        root.addWidget(self.stage)
        root.addWidget(self.bar)
        self.partial: PartialResult | None = None
        self.plot_info = QLabel("Trajectories appear here as the chunks of patients are decrypted.")
        self.plot_info.setObjectName("partialInfo")
        self.plot = _plot()
        self.plot.setObjectName("partialPlot")
        self.plot.setLabel("bottom", "time [h]")
        self.plot.setLabel("left", "concentration [mg/L]")
        self.plot.setMinimumHeight(200)
        self.legend = self.plot.addLegend(offset=(10, 10))
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setObjectName("runLog")
        upper = QWidget()
        uv = QVBoxLayout(upper)
        uv.setContentsMargins(0, 0, 0, 0)
        uv.addWidget(self.plot_info)
        uv.addWidget(self.plot, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(upper)
        split.addWidget(self.log)
        split.setSizes([380, 150])
        root.addWidget(split, 1)
        self.refresh()

    def refresh(self) -> None:
        m = self.model
        self.insecure.setVisible(m.insecure)
        try:
            spec = m.spec()
            n = sum(r.ok for r in m.review)
            self.summary.setText(f"{spec.pk.drug} ({spec.model}), {n} eligible twin(s) × {len(spec.scenarios)} scenario(s) "
                                 f"× {len(spec.times)} time points, preset {m.preset or '—'}"
                                 f"{' (INSECURE)' if m.insecure else ''}")
            ok = n > 0
        except Exception as exc:  # noqa: BLE001
            self.summary.setText(f"Scenario set-up is invalid: {exc}")
            ok = False
        running = self.worker is not None
        self.run_btn.setEnabled(ok and m.unlocked and not running)
        self.cancel_btn.setEnabled(running)
        self.backend.setEnabled(not running)

    def _append(self, text: str) -> None:
        self.log.appendPlainText(f"[{time.strftime('%H:%M:%S')}] {text}")

    def start(self) -> None:
        if self.worker is not None:
            return
        if not self.model.unlocked:
            show_error(self.window(), "Run", "Unlock the keystore first.")
            return
        self._t0 = time.perf_counter()
        self._last_stage = None
        self.partial = None
        self.bar.setValue(0)
        self._clear_plot()
        self.plot_info.setText("Trajectories appear here as the chunks of patients are decrypted.")
        backend = self.backend.currentData()
        self._append(f"started on backend {backend}")
        self._set_state("running")
        self.worker = self.runner.start(
            self, lambda progress, token, partial: self.model.run(backend=backend, progress=progress, token=token,
                                                                  on_partial=partial),
            "Run study", wants_progress=True, on_partial=self._partial, on_progress=self._progress, on_success=self._ok,
            on_cancel=self._cancelled, on_fail=self._failed, on_done=self._done)
        self.refresh()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.stage.setText("Cancelling after the current ciphertext chunk…")
            self._append("cancel requested")

    def _progress(self, stage: str, frac: float) -> None:
        if stage != self._last_stage:
            self._append(STAGES.get(stage, stage))
            self._last_stage = stage
        base = {"encrypt": 0.0, "simulate": 0.15, "decrypt": 0.9}.get(stage, 0.0)
        span = {"encrypt": 0.15, "simulate": 0.75, "decrypt": 0.1}.get(stage, 1.0)
        self.bar.setValue(int(1000 * (base + span * frac)))
        self.stage.setText(f"{STAGES.get(stage, stage)}: {100 * frac:.0f}%")

    def _clear_plot(self) -> None:
        self.plot.clear()
        self.legend.clear()

    def _partial(self, part: PartialResult) -> None:
        """Draw the patients decrypted so far (replaces the previous partial drawing)."""
        if self.state != "running":
            return  # a late signal after the run ended: the final drawing stays
        self.partial = part
        self._clear_plot()
        draw_trajectories(self.plot, self.legend, part.spec, part.times, part.conc, range(len(part.spec.scenarios)))
        self.plot_info.setText(f"Partial result: {len(part.patients)} of {part.n_patients} twin(s) decrypted "
                               f"(chunk {part.chunks_done} of {part.n_chunks}); the run continues.")
        self._append(f"chunk {part.chunks_done} of {part.n_chunks} decrypted and drawn")
        self.partial_drawn.emit(part)

    def _ok(self, res) -> None:
        self.bar.setValue(1000)
        self._clear_plot()
        draw_trajectories(self.plot, self.legend, res.spec, res.times, res.conc, range(len(res.spec.scenarios)))
        self.plot_info.setText(f"Final result: all {len(res.twin_ids)} twin(s).")
        dt = time.perf_counter() - self._t0
        self.stage.setText(f"Done in {dt:.1f} s ({res.n_results:,} results, {res.throughput():,.0f} results/s simulated).")
        dev = res.deviations()
        if dev:
            self._append(f"largest deviation from the plaintext reference: concentration {dev['conc_abs']:.2e} mg/L "
                         f"(bound {res.bounds.get('conc', float('nan')):.2e})")
        self._append("done")
        self._set_state("done")
        self.finished.emit(res)

    def _cancelled(self) -> None:
        n = 0 if self.partial is None else len(self.partial.patients)
        self.stage.setText("Cancelled. No further chunk was simulated or decrypted; your set-up is unchanged.")
        self.plot_info.setText(f"Cancelled: the plot shows the {n} twin(s) decrypted before the cancel; "
                               "no result was kept.")
        self._append("cancelled")
        self.bar.setValue(0)
        self._set_state("cancelled")

    def _failed(self, title: str, msg: str) -> None:
        self.stage.setText("Failed (see the message).")
        self._append(f"failed: {msg}")
        self._set_state("failed")

    def _done(self) -> None:
        self.worker = None
        self.refresh()

    def _set_state(self, s: str) -> None:
        self.state = s
        self.state_changed.emit(s)
