"""The PrivateMedTwin desktop app: main window, navigation, idle lock, and the ``medtwin-gui`` entry point.

Screens (Ctrl+1 … Ctrl+6, or the list on the left): Keys, Twins, Scenarios, Run, Results,
Dashboard. After the configured idle time (default 10 minutes) the session locks: the secret key
is dropped from memory and the window shows only the unlock page until the same keystore's
passphrase is given again; imported patients, scenarios, encrypted twins and results are kept.
The idle lock waits while an operation runs (a run needs the key to decrypt its results).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QApplication, QHBoxLayout, QLabel, QLineEdit, QListWidget, QMainWindow, QPushButton,
                               QStackedWidget, QVBoxLayout, QWidget)

from medtwin.gui.common import Runner, heading, hint, insecure_label, show_error
from medtwin.gui.keys_screen import KeysScreen
from medtwin.gui.model import AppModel
from medtwin.gui.results_screen import DashboardScreen, ResultsScreen
from medtwin.gui.run_screen import RunScreen
from medtwin.gui.scenario_screen import ScenarioScreen
from medtwin.gui.twins_screen import TwinsScreen

SCREENS = ("Keys", "Twins", "Scenarios", "Run", "Results", "Dashboard")
_ACTIVITY = {QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.MouseMove, QEvent.Type.Wheel,
             QEvent.Type.TouchBegin}


class _ActivityFilter(QObject):
    def __init__(self, on_activity):
        super().__init__()
        self._on = on_activity

    def eventFilter(self, obj, ev) -> bool:  # noqa: N802 - Qt override
        if ev.type() in _ACTIVITY:
            self._on()
        return False


class LockPage(QWidget):
    """Shown instead of everything else while the session is locked."""

    def __init__(self, window: "MainWindow"):
        super().__init__()
        self.win = window
        v = QVBoxLayout(self)
        v.addStretch(1)
        box = QWidget()
        box.setMinimumWidth(460)
        box.setMaximumWidth(560)
        b = QVBoxLayout(box)
        b.addWidget(heading("Session locked"))
        self.info = hint("")
        b.addWidget(self.info)
        self.pw = QLineEdit()
        self.pw.setEchoMode(QLineEdit.EchoMode.Password)
        self.pw.setPlaceholderText("passphrase")
        self.pw.setAccessibleName("Passphrase to unlock")
        self.pw.returnPressed.connect(self.unlock)
        b.addWidget(self.pw)
        self.btn = QPushButton("&Unlock")
        self.btn.clicked.connect(self.unlock)
        b.addWidget(self.btn)
        h = QHBoxLayout()
        h.addStretch(1)
        h.addWidget(box)
        h.addStretch(1)
        v.addLayout(h)
        v.addStretch(2)

    def show_for(self, path) -> None:
        self.info.setText(f"The secret key was removed from memory. Enter the passphrase of {path} to continue; "
                          "your patients, scenarios and results are kept.")
        self.pw.clear()
        self.pw.setFocus()

    def unlock(self) -> None:
        m = self.win.model
        pw = self.pw.text()
        self.btn.setEnabled(False)

        def ok(_):
            self.pw.clear()
            self.win.set_locked(False)

        self.win.runner.start(self, lambda: m.unlock(m.keystore_path, pw), "Unlock", on_success=ok,
                              on_done=lambda: self.btn.setEnabled(True))


class MainWindow(QMainWindow):
    """The app window.

    Args:
        model: the session (default: a fresh :class:`AppModel`).
        kdf, allow_weak: Argon2id parameters for new keystores and passphrase changes (tests use
            cheap ones with ``allow_weak=True``; the app uses the default).
        idle_minutes: lock after this many idle minutes (changeable on the Keys screen).
        allow_insecure: offer the insecure test preset (default: when ``MEDTWIN_ALLOW_INSECURE=1``).
    """

    def __init__(self, model: AppModel | None = None, *, kdf=None, allow_weak: bool = False, idle_minutes: int = 10,
                 allow_insecure: bool | None = None, keystore: str | os.PathLike | None = None):
        super().__init__()
        from medtwin.he.params import insecure_allowed

        self.model = model or AppModel()
        self.runner = Runner(on_busy=self._busy)
        self.locked = False
        self.setWindowTitle("PrivateMedTwin")
        self.resize(1280, 820)
        self.setMinimumSize(960, 640)
        allow_insecure = insecure_allowed() if allow_insecure is None else allow_insecure

        self.keys = KeysScreen(self.model, self.runner, kdf=kdf, allow_weak=allow_weak, allow_insecure=allow_insecure,
                               idle_minutes=idle_minutes)
        self.twins = TwinsScreen(self.model, self.runner)
        self.scenarios = ScenarioScreen(self.model)
        self.run = RunScreen(self.model, self.runner)
        self.results = ResultsScreen(self.model, self.runner)
        self.dashboard = DashboardScreen(self.model)
        if keystore:
            self.keys.path.setText(str(keystore))

        self.nav = QListWidget()
        self.nav.setObjectName("navigation")
        self.nav.setAccessibleName("Screens")
        for i, name in enumerate(SCREENS):
            self.nav.addItem(f"{name}    Ctrl+{i + 1}")
        self.nav.setMaximumWidth(200)
        self.nav.setStyleSheet("QListWidget#navigation { font-size: 11pt; } "
                               "QListWidget#navigation::item { padding: 9px 8px; }")
        self.pages = QStackedWidget()
        for w in (self.keys, self.twins, self.scenarios, self.run, self.results, self.dashboard):
            self.pages.addWidget(w)
        self.nav.currentRowChanged.connect(self._show_page)
        body = QWidget()
        h = QHBoxLayout(body)
        h.addWidget(self.nav)
        h.addWidget(self.pages, 1)
        self.lock_page = LockPage(self)
        self.outer = QStackedWidget()
        self.outer.addWidget(body)
        self.outer.addWidget(self.lock_page)
        self.setCentralWidget(self.outer)

        self.status_label = QLabel("")
        self.status_insecure = insecure_label()
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.status_insecure)

        for i in range(len(SCREENS)):
            sc = QShortcut(QKeySequence(f"Ctrl+{i + 1}"), self)
            sc.activated.connect(lambda i=i: self.go(i))
        QShortcut(QKeySequence("Ctrl+L"), self).activated.connect(self.lock_now)

        # wiring
        self.keys.unlocked.connect(self._after_unlock)
        self.keys.lock_requested.connect(self.lock_now)
        self.keys.idle_minutes_changed.connect(self.set_idle_minutes)
        self.twins.changed.connect(self._refresh_all)
        self.twins.encrypted.connect(self._refresh_all)
        self.scenarios.validity_changed.connect(lambda _: self._refresh_all())
        self.scenarios.model_changed.connect(self._refresh_all)
        self.run.finished.connect(self._after_run)
        self.run.state_changed.connect(lambda _: self._refresh_status())

        self._idle = QTimer(self)
        self._idle.setSingleShot(True)
        self._idle.timeout.connect(self._idle_timeout)
        self._filter = _ActivityFilter(self._activity)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self._filter)
        self.set_idle_minutes(idle_minutes)
        self.nav.setCurrentRow(0)
        self._refresh_all()

    # ------------------------------------------------------------------ navigation
    def go(self, index: int) -> None:
        if not self.locked:
            self.nav.setCurrentRow(index)

    def _show_page(self, i: int) -> None:
        self.pages.setCurrentIndex(i)
        w = self.pages.currentWidget()
        if hasattr(w, "refresh"):
            w.refresh()

    # ------------------------------------------------------------------ idle lock
    def set_idle_minutes(self, minutes: int) -> None:
        self.set_idle_timeout_ms(int(minutes) * 60_000)

    def set_idle_timeout_ms(self, ms: int) -> None:
        self._idle.setInterval(int(ms))
        self._activity()

    def _activity(self) -> None:
        if not self.locked and self.model.unlocked and not self.runner.busy:
            self._idle.start()

    def _busy(self, on: bool) -> None:
        if on:
            self._idle.stop()
        else:
            self._activity()

    def _idle_timeout(self) -> None:
        if self.runner.busy:
            return  # restarted when the operation ends
        if self.model.unlocked:
            self.lock_now()

    def lock_now(self) -> None:
        if self.model.keystore_path is None or not self.model.unlocked:
            return
        if self.runner.busy:
            show_error(self, "Lock", "An operation is running; lock after it finishes or cancel it.")
            return
        self.model.lock()
        self.set_locked(True)

    def set_locked(self, locked: bool) -> None:
        self.locked = locked
        self._idle.stop()
        if locked:
            self.outer.setCurrentIndex(1)
            self.lock_page.show_for(self.model.keystore_path)
        else:
            self.outer.setCurrentIndex(0)
            self._activity()
        self._refresh_all()

    # ------------------------------------------------------------------ updates
    def _after_unlock(self) -> None:
        self._activity()
        self._refresh_all()
        self.go(1)

    def _after_run(self, _res) -> None:
        self.results.refresh()
        self.dashboard.refresh()
        self._refresh_status()
        self.go(4)

    def _refresh_all(self) -> None:
        for w in (self.keys, self.twins, self.run, self.results, self.dashboard):
            w.refresh()
        self._refresh_status()

    def _refresh_status(self) -> None:
        m = self.model
        if m.keystore_path is None:
            s = "No keystore open"
        else:
            s = f"Keystore {m.keystore_path.name}: {'locked' if not m.unlocked else 'unlocked'}, preset {m.preset}"
        n = len(m.review)
        s += f" · {n} patient(s) imported · {len(m.scenarios)} scenario(s)"
        if m.result is not None:
            s += f" · results for {len(m.result.twin_ids)} twins"
        self.status_label.setText(s)
        self.status_insecure.setVisible(m.insecure)

    def closeEvent(self, ev) -> None:  # noqa: N802 - Qt override
        self.runner.wait_all(30_000)
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self._filter)
        self.model.lock()
        super().closeEvent(ev)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medtwin-gui", description="PrivateMedTwin desktop app for clinicians.")
    p.add_argument("--keystore", type=Path, help="keystore folder to open (or create)")
    p.add_argument("--idle-minutes", type=int, default=10, help="lock the session after this many idle minutes")
    p.add_argument("--audit-log", type=Path, help="audit log (sqlite) to append key, simulation and export entries to")
    p.add_argument("--users", type=Path, help="user store (sqlite) to sign in against (with --user)")
    p.add_argument("--user", help="user name to sign in as; entries are signed with this user's key")
    return p


def make_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication with high-DPI settings (created once)."""
    from PySide6.QtGui import QGuiApplication

    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(list(argv) if argv else [sys.argv[0] if sys.argv else "medtwin-gui"])
        app.setApplicationName("PrivateMedTwin")
        app.setOrganizationName("PrivateMedTwin")
        import pyqtgraph as pg
        pg.setConfigOptions(antialias=True, background="w", foreground="#222")
    return app


def _sign_in(app, args):
    """Return (audit, actor) from the command-line options, asking for the password in a dialog."""
    from PySide6.QtWidgets import QInputDialog

    if args.audit_log is None:
        if args.users or args.user:
            raise SystemExit("--users/--user need --audit-log")
        return None, None
    from medtwin.custody.audit import AuditLog
    from medtwin.custody.users import authenticate

    if not (args.users and args.user):
        raise SystemExit("--audit-log needs --users and --user (entries are signed by the signed-in user)")
    audit = AuditLog(args.audit_log)
    pw, ok = QInputDialog.getText(None, "Sign in", f"Password for {args.user}:", QLineEdit.EchoMode.Password)
    if not ok:
        raise SystemExit(1)
    return audit, authenticate(args.users, args.user, pw, audit=audit)


def main(argv: list[str] | None = None) -> int:
    """Start the desktop app (entry point ``medtwin-gui``). Returns the exit status."""
    args = _parser().parse_args(argv)
    app = make_app()
    try:
        audit, actor = _sign_in(app, args)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        if isinstance(exc, SystemExit):
            raise
        print(f"medtwin-gui: cannot sign in: {exc}", file=sys.stderr)
        return 2
    win = MainWindow(AppModel(audit=audit, actor=actor), idle_minutes=args.idle_minutes, keystore=args.keystore)
    win.show()
    return int(app.exec())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
