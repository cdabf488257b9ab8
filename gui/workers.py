"""Background work for the desktop app: one QThread per operation, reporting through signals.

A :class:`Worker` runs ``fn(progress=..., token=...)`` (or ``fn()``) in its own thread and emits
``progress(stage, fraction)``, then exactly one of ``succeeded(result)``, ``failed(title, message)``
or ``cancelled()``, and finally ``done()``. With ``wants_partial`` the callable also gets
``partial=cb`` and every ``cb(obj)`` is emitted as ``partial(obj)`` (partial results drawn while
the run goes on). Signals cross to the GUI thread through queued
connections, so the UI never blocks. Cancellation sets a :class:`~medtwin.gui.model.CancelToken`
that the operation checks between ciphertext chunks.
"""
from __future__ import annotations

import gc
import traceback
from typing import Callable

from PySide6.QtCore import QObject, QThread, QTimer, Signal

from medtwin.errors import MedTwinError
from medtwin.gui.model import CancelToken, Cancelled


class MainThreadGC(QObject):
    """Run Python's cyclic garbage collector only in the GUI thread.

    With automatic collection, a worker thread that allocates (the program builder does) can
    trigger a collection that finalises Qt objects left from closed windows *in the worker
    thread*; their destructors then wait for a Qt mutex held by the GUI thread, which waits for
    the GIL: a deadlock (seen in the test suite). So automatic collection is switched off while the
    app runs and a timer collects in the GUI thread instead (the pattern PyQt/PySide users follow
    for threaded apps).
    """

    _instance: "MainThreadGC | None" = None

    def __init__(self, interval_ms: int = 500):
        super().__init__()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.collect)
        self._timer.start(interval_ms)
        gc.disable()

    def collect(self) -> None:
        """Collect what Python's automatic collection would now: the oldest generation whose
        allocation count passed its threshold (a full collection only every few hundred thousand
        allocations). A full ``gc.collect()`` on every tick held the GIL for seconds in a large
        process (the whole test suite in one interpreter) and starved the worker thread it runs
        beside."""
        counts, limits = gc.get_count(), gc.get_threshold()
        gen = 2 if counts[2] >= limits[2] else 1 if counts[1] >= limits[1] else 0
        if gen > 0 or counts[0] >= limits[0]:
            gc.collect(gen)

    @classmethod
    def install(cls) -> "MainThreadGC":
        """Install once (idempotent); call from the GUI thread."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    @classmethod
    def uninstall(cls) -> None:
        """Stop the timer and give collection back to Python (tests, app shutdown)."""
        inst, cls._instance = cls._instance, None
        if inst is not None:
            inst._timer.stop()
            inst.deleteLater()
        gc.collect()
        gc.enable()


class _Thread(QThread):
    def __init__(self, worker: "Worker"):
        super().__init__()
        self._worker = worker

    def run(self) -> None:  # noqa: D401 - Qt override
        self._worker._run()


class Worker(QObject):
    """Run a callable in a worker thread and report through signals.

    Args:
        fn: the operation; called as ``fn(progress=cb, token=token)`` when ``wants_progress``
            (plus ``partial=cb`` when ``wants_partial``), else ``fn()``.
        title: the operation's name, used as the error dialog's title.
    """

    progress = Signal(str, float)
    partial = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    done = Signal()

    def __init__(self, fn: Callable, title: str, *, wants_progress: bool = False, wants_partial: bool = False,
                 parent=None):
        super().__init__(parent)
        self._fn = fn
        self.title = title
        self._wants_progress = wants_progress or wants_partial
        self._wants_partial = wants_partial
        self.token = CancelToken()
        self._thread = _Thread(self)
        self._thread.finished.connect(self.done)

    def start(self) -> None:
        MainThreadGC.install()  # no cyclic GC in worker threads (see MainThreadGC)
        gc.collect()  # leave no Qt garbage for a worker thread to finalise
        self._thread.start()

    def cancel(self) -> None:
        self.token.cancel()

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def wait(self, ms: int = 60_000) -> bool:
        return self._thread.wait(ms)

    def _run(self) -> None:
        try:
            if self._wants_partial:
                res = self._fn(progress=lambda s, f: self.progress.emit(s, float(f)), token=self.token,
                               partial=self.partial.emit)
            elif self._wants_progress:
                res = self._fn(progress=lambda s, f: self.progress.emit(s, float(f)), token=self.token)
            else:
                res = self._fn()
        except Cancelled:
            self.cancelled.emit()
        except MedTwinError as exc:
            self.failed.emit(self.title, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - shown to the user, never swallowed
            tb = traceback.format_exception_only(type(exc), exc)
            self.failed.emit(self.title, "Unexpected error: " + "".join(tb).strip())
        else:
            self.succeeded.emit(res)
