"""Key custody: create or unlock a keystore, change the passphrase, export public material, idle lock."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from medtwin.custody.keystore import MIN_STRENGTH
from medtwin.custody.strength import passphrase_strength
from medtwin.gui.common import Runner, heading, hint, insecure_label, show_error
from medtwin.gui.model import DEFAULT_PRESET, INSECURE_PRESET, PRESETS, AppModel

_STRENGTH_COLOURS = ("#c62828", "#e65100", "#f9a825", "#2e7d32", "#1b5e20")


class StrengthMeter(QWidget):
    """A bar (0-4) and the reason from :func:`passphrase_strength`, updated as the user types."""

    def __init__(self, edit: QLineEdit, parent=None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 4)
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(10)
        self.label = QLabel("")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.bar)
        lay.addWidget(self.label)
        self.score = 0
        edit.textChanged.connect(self.update_for)
        self.update_for("")

    def update_for(self, text: str) -> None:
        if not text:
            self.score, msg = 0, f"enter a passphrase (a few words; strength {MIN_STRENGTH} of 4 needed)"
        else:
            self.score, msg = passphrase_strength(text)
        self.bar.setValue(self.score)
        self.bar.setStyleSheet(f"QProgressBar::chunk {{ background: {_STRENGTH_COLOURS[self.score]}; }}")
        ok = "enough" if self.score >= MIN_STRENGTH else "too weak"
        self.label.setText(f"strength {self.score}/4 ({ok}): {msg}" if text else msg)

    @property
    def strong_enough(self) -> bool:
        return self.score >= MIN_STRENGTH


def _pw() -> QLineEdit:
    e = QLineEdit()
    e.setEchoMode(QLineEdit.EchoMode.Password)
    return e


class KeysScreen(QWidget):
    """The key custody screen. Emits ``unlocked`` after a create or unlock, ``idle_minutes_changed``."""

    unlocked = Signal()
    idle_minutes_changed = Signal(int)
    lock_requested = Signal()

    def __init__(self, model: AppModel, runner: Runner, *, kdf=None, allow_weak: bool = False,
                 allow_insecure: bool = False, idle_minutes: int = 10, parent=None):
        super().__init__(parent)
        self.model, self.runner = model, runner
        self.kdf, self.allow_weak = kdf, allow_weak
        root = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(heading("Key custody"))
        top.addStretch(1)
        self.insecure = insecure_label()
        top.addWidget(self.insecure)
        root.addLayout(top)
        root.addWidget(hint("The secret key never leaves this workstation. It is stored encrypted with your "
                            "passphrase (Argon2id + AES-256-GCM); compute nodes get only the public bundle."))

        # keystore location
        loc = QHBoxLayout()
        self.path = QLineEdit()
        self.path.setPlaceholderText("folder of the keystore (a new folder to create one)")
        self.path.setAccessibleName("Keystore folder")
        browse = QPushButton("&Browse…")
        browse.clicked.connect(self._browse)
        loc.addWidget(QLabel("Keystore:"))
        loc.addWidget(self.path, 1)
        loc.addWidget(browse)
        root.addLayout(loc)

        row = QHBoxLayout()
        # unlock
        g_unlock = QGroupBox("Unlock an existing keystore")
        f = QFormLayout(g_unlock)
        self.unlock_pw = _pw()
        self.unlock_pw.setAccessibleName("Passphrase to unlock")
        self.unlock_btn = QPushButton("&Unlock")
        self.unlock_btn.setDefault(True)
        self.unlock_btn.clicked.connect(self._unlock)
        self.unlock_pw.returnPressed.connect(self._unlock)
        f.addRow("Passphrase:", self.unlock_pw)
        f.addRow("", self.unlock_btn)
        row.addWidget(g_unlock, 1)

        # create
        g_create = QGroupBox("Create a new keystore")
        f = QFormLayout(g_create)
        self.new_pw, self.new_pw2 = _pw(), _pw()
        self.new_pw.setAccessibleName("New passphrase")
        self.new_pw2.setAccessibleName("Repeat new passphrase")
        self.meter = StrengthMeter(self.new_pw)
        self.preset = QComboBox()
        for p in PRESETS:
            if p == INSECURE_PRESET and not allow_insecure:
                continue
            self.preset.addItem(p + (" (INSECURE, tests only)" if p == INSECURE_PRESET else ""), p)
        self.preset.setCurrentIndex(max(0, self.preset.findData(DEFAULT_PRESET)))
        self.create_btn = QPushButton("&Create keys")
        self.create_btn.clicked.connect(self._create)
        f.addRow("Passphrase:", self.new_pw)
        f.addRow("", self.meter)
        f.addRow("Repeat:", self.new_pw2)
        f.addRow("Security preset:", self.preset)
        f.addRow("", self.create_btn)
        row.addWidget(g_create, 1)
        root.addLayout(row)

        # status
        g_status = QGroupBox("Session")
        v = QVBoxLayout(g_status)
        self.status = QLabel("No keystore open.")
        self.status.setWordWrap(True)
        self.status.setObjectName("keyStatus")
        v.addWidget(self.status)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setVisible(False)
        v.addWidget(self.busy)
        h = QHBoxLayout()
        self.export_btn = QPushButton("&Export public bundle…")
        self.export_btn.clicked.connect(self._export)
        self.lock_btn = QPushButton("&Lock now")
        self.lock_btn.clicked.connect(self.lock_requested)
        self.idle = QSpinBox()
        self.idle.setRange(1, 240)
        self.idle.setValue(int(idle_minutes))
        self.idle.setSuffix(" min")
        self.idle.setAccessibleName("Lock after idle minutes")
        self.idle.valueChanged.connect(self.idle_minutes_changed)
        h.addWidget(self.export_btn)
        h.addWidget(self.lock_btn)
        h.addStretch(1)
        h.addWidget(QLabel("Lock when idle for"))
        h.addWidget(self.idle)
        v.addLayout(h)
        root.addWidget(g_status)

        # change passphrase
        g_change = QGroupBox("Change passphrase")
        f = QFormLayout(g_change)
        self.old_pw, self.chg_pw, self.chg_pw2 = _pw(), _pw(), _pw()
        self.chg_meter = StrengthMeter(self.chg_pw)
        self.change_btn = QPushButton("C&hange passphrase")
        self.change_btn.clicked.connect(self._change)
        f.addRow("Current passphrase:", self.old_pw)
        f.addRow("New passphrase:", self.chg_pw)
        f.addRow("", self.chg_meter)
        f.addRow("Repeat:", self.chg_pw2)
        f.addRow("", self.change_btn)
        root.addWidget(g_change)
        root.addStretch(1)
        self.refresh()

    # ------------------------------------------------------------------ actions
    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Keystore folder", str(Path.home()))
        if d:
            self.path.setText(d)

    def _keystore_path(self) -> Path | None:
        t = self.path.text().strip()
        if not t:
            show_error(self.window(), "Keystore", "Enter the keystore folder first.")
            return None
        return Path(t).expanduser()

    def _set_busy(self, on: bool, text: str = "") -> None:
        self.busy.setVisible(on)
        for b in (self.unlock_btn, self.create_btn, self.change_btn, self.export_btn):
            b.setEnabled(not on)
        if text:
            self.status.setText(text)

    def _unlock(self) -> None:
        path = self._keystore_path()
        if path is None:
            return
        pw = self.unlock_pw.text()
        self._set_busy(True, "Unlocking…")

        def ok(_):
            self.unlock_pw.clear()
            self._set_busy(False)
            self.refresh()
            self.unlocked.emit()

        self.runner.start(self, lambda: self.model.unlock(path, pw), "Unlock keystore", on_success=ok,
                          on_fail=lambda *_: (self._set_busy(False), self.refresh()))

    def _create(self) -> None:
        path = self._keystore_path()
        if path is None:
            return
        if self.new_pw.text() != self.new_pw2.text():
            show_error(self.window(), "Create keystore", "The two passphrases differ.")
            return
        if not self.meter.strong_enough:
            show_error(self.window(), "Create keystore",
                       f"The passphrase is too weak: {self.meter.label.text()}")
            return
        pw, preset = self.new_pw.text(), self.preset.currentData()
        self._set_busy(True, f"Generating {preset} keys for {self.model.model_name}… (this can take a while)")

        def ok(msg):
            self.new_pw.clear()
            self.new_pw2.clear()
            self._set_busy(False)
            self.refresh(extra=f"Created: {msg}")
            self.unlocked.emit()

        self.runner.start(self, lambda: self.model.create_keystore(path, pw, preset=preset, kdf=self.kdf,
                                                                   allow_weak=self.allow_weak),
                          "Create keystore", on_success=ok,
                          on_fail=lambda *_: (self._set_busy(False), self.refresh()))

    def _change(self) -> None:
        if self.chg_pw.text() != self.chg_pw2.text():
            show_error(self.window(), "Change passphrase", "The two new passphrases differ.")
            return
        if not self.chg_meter.strong_enough:
            show_error(self.window(), "Change passphrase", f"The new passphrase is too weak: {self.chg_meter.label.text()}")
            return
        old, new = self.old_pw.text(), self.chg_pw.text()
        self._set_busy(True, "Re-encrypting the secret key…")

        def ok(_):
            for e in (self.old_pw, self.chg_pw, self.chg_pw2):
                e.clear()
            self._set_busy(False)
            self.refresh(extra="Passphrase changed; the keys are unchanged.")

        self.runner.start(self, lambda: self.model.change_passphrase(old, new, kdf=self.kdf, allow_weak=self.allow_weak),
                          "Change passphrase", on_success=ok, on_fail=lambda *_: (self._set_busy(False), self.refresh()))

    def _export(self) -> None:
        if self.model.keystore_path is None:
            show_error(self.window(), "Export public bundle", "Open a keystore first.")
            return
        dest, _ = QFileDialog.getSaveFileName(self, "Export public bundle",
                                              str(Path.home() / f"public-{self.model.key_tag[:12]}.mtpub"),
                                              "Public bundle (*.mtpub)")
        if dest:
            self.export_to(dest)

    def export_to(self, dest) -> None:
        """Export the public bundle to ``dest`` in a worker (the dialog-free path used by tests)."""
        self.runner.start(self, lambda: self.model.export_public(dest), "Export public bundle",
                          on_success=lambda p: self.refresh(extra=f"Public bundle written to {p} (no secret key)."))

    # ------------------------------------------------------------------ view
    def refresh(self, extra: str = "") -> None:
        m = self.model
        self.insecure.setVisible(m.insecure)
        if m.keystore_path is None:
            text = "No keystore open. Unlock one or create a new one."
        else:
            p = m.public.params
            state = "unlocked" if m.unlocked else "LOCKED"
            text = (f"Keystore {m.keystore_path} — {state}. Preset {m.preset}"
                    f"{' (INSECURE test ring)' if m.insecure else ''}, ring dimension {p.get('ring_dim')}, "
                    f"depth {p.get('depth')}, key tag {m.key_tag[:12]}…")
            if self.path.text().strip() == "":
                self.path.setText(str(m.keystore_path))
        if extra:
            text += "\n" + extra
        self.status.setText(text)
        has = m.keystore_path is not None
        self.export_btn.setEnabled(has)
        self.lock_btn.setEnabled(m.unlocked)
        self.change_btn.setEnabled(has)
