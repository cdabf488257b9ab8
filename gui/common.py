"""Small Qt helpers shared by the screens: error dialogs, labels, the worker runner."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QLabel, QMessageBox, QWidget

from medtwin.gui.workers import Worker

INSECURE_TEXT = "INSECURE test ring: not for clinical use"
OK_BG = QColor(220, 245, 220)
BAD_BG = QColor(255, 220, 220)
TOP_BG = QColor(200, 235, 200)


def show_error(parent: QWidget | None, title: str, message: str) -> QMessageBox:
    """Show an error to the user (non-blocking, so tests and workers never hang on it).

    Returns the dialog (also kept as ``parent._last_error`` for tests and screenshots).
    """
    box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("errorDialog")
    box.setWindowModality(Qt.WindowModality.WindowModal)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
    if parent is not None:
        parent._last_error = box  # type: ignore[attr-defined]
    box.open()
    return box


def heading(text: str) -> QLabel:
    lab = QLabel(text)
    f = lab.font()
    f.setPointSizeF(f.pointSizeF() * 1.35)
    f.setWeight(QFont.Weight.DemiBold)
    lab.setFont(f)
    return lab


def insecure_label() -> QLabel:
    lab = QLabel(INSECURE_TEXT)
    lab.setObjectName("insecureLabel")
    lab.setStyleSheet("QLabel { color: white; background: #c62828; padding: 2px 8px; font-weight: bold; "
                      "border-radius: 3px; }")
    lab.setVisible(False)
    return lab


def hint(text: str = "") -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    lab.setStyleSheet("QLabel { color: #4a4a4a; }")
    return lab


class Runner:
    """Keeps workers alive until they finish and tells the host when work starts and ends.

    ``on_busy(bool)`` is called when the first worker starts and when the last one ends (the main
    window pauses the idle lock meanwhile).
    """

    def __init__(self, on_busy: Callable[[bool], None] | None = None):
        self._workers: set[Worker] = set()
        self._on_busy = on_busy

    @property
    def busy(self) -> bool:
        return bool(self._workers)

    def start(self, parent: QWidget, fn: Callable, title: str, *, on_success: Callable | None = None,
              on_progress: Callable | None = None, on_cancel: Callable | None = None,
              on_fail: Callable | None = None, on_done: Callable | None = None,
              wants_progress: bool = False, on_partial: Callable | None = None) -> Worker:
        """Run ``fn`` in a worker thread; errors go to an error dialog (and ``on_fail``)."""
        w = Worker(fn, title, wants_progress=wants_progress, wants_partial=on_partial is not None)
        if on_partial:
            w.partial.connect(on_partial)
        if on_progress:
            w.progress.connect(on_progress)
        if on_success:
            w.succeeded.connect(on_success)
        if on_cancel:
            w.cancelled.connect(on_cancel)

        def failed(t: str, m: str) -> None:
            if on_fail:
                on_fail(t, m)
            show_error(parent.window(), t, m)

        w.failed.connect(failed)

        def finished() -> None:
            w.wait()  # the thread has left run(); join it before dropping the last reference
            self._workers.discard(w)
            if on_done:
                on_done()
            if not self._workers and self._on_busy:
                self._on_busy(False)

        w.done.connect(finished)
        if not self._workers and self._on_busy:
            self._on_busy(True)
        self._workers.add(w)
        w.start()
        return w

    def wait_all(self, ms: int = 60_000) -> None:
        for w in list(self._workers):
            w.cancel()
            w.wait(ms)
