"""Key custody screen: create with strength feedback, wrong passphrase, lock/unlock, idle lock,
change passphrase, export of the public bundle."""
from __future__ import annotations

import os

import pytest
from PySide6.QtCore import Qt

from medtwin.custody.keystore import load_public_bundle, read_public, unlock_keystore
from medtwin.errors import WrongPassphraseError
from medtwin.gui.model import AppModel

from gui_helpers import FIXTURES, PASSPHRASE, close_error, create_keystore, error_text, shallow_keys

pytestmark = pytest.mark.gui


def _model(**kw):
    return AppModel(keygen=shallow_keys, **kw)


def test_strength_feedback_and_weak_passphrase_refused(make_window, qtbot, tmp_path):
    w = make_window(_model())
    k = w.keys
    qtbot.keyClicks(k.new_pw, "password1")
    assert k.meter.score == 0 and "common" in k.meter.label.text()
    k.new_pw.clear()
    qtbot.keyClicks(k.new_pw, PASSPHRASE)
    assert k.meter.score >= 3 and "enough" in k.meter.label.text()
    # weak: refused before key generation, nothing written
    k.new_pw.clear()
    qtbot.keyClicks(k.new_pw, "short")
    qtbot.keyClicks(k.new_pw2, "short")
    k.path.setText(str(tmp_path / "ks"))
    qtbot.mouseClick(k.create_btn, Qt.MouseButton.LeftButton)
    assert "too weak" in error_text(w)
    assert not (tmp_path / "ks").exists() and not w.model.unlocked


def test_create_shows_insecure_label_and_exports_public_bundle(make_window, qtbot, tmp_path):
    w = make_window(_model())
    create_keystore(qtbot, w, tmp_path / "ks", PASSPHRASE)
    assert w.model.insecure
    assert w.keys.insecure.isVisibleTo(w.keys) and w.status_insecure.isVisible()
    assert "INSECURE" in w.keys.status.text()
    dest = tmp_path / "pub.mtpub"
    w.keys.export_to(dest)
    qtbot.waitUntil(lambda: dest.exists() and not w.runner.busy, timeout=30_000)
    pub = load_public_bundle(dest)
    assert pub.key_tag == w.model.key_tag
    data = dest.read_bytes()
    assert w.model.material.secret_key[-4096:] not in data  # the secret key is not in the bundle
    # exporting again to the same file is refused and shown
    w.keys.export_to(dest)
    qtbot.waitUntil(lambda: "refusing to overwrite" in error_text(w), timeout=30_000)


def test_wrong_passphrase_then_unlock_keeps_everything(make_window, qtbot, tmp_path):
    w = make_window(_model())
    create_keystore(qtbot, w, tmp_path / "ks", PASSPHRASE)
    w.twins.import_paths([os.path.join(FIXTURES, "basic_mgdl.json")])
    ids_before = w.model.pseudonyms()
    qtbot.keyClick(w, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)  # Ctrl+L locks
    assert w.locked and not w.model.unlocked and w.model.material is None and w.model.client_ctx is None
    assert w.outer.currentWidget() is w.lock_page
    qtbot.keyClicks(w.lock_page.pw, "not the passphrase at all")
    qtbot.keyClick(w.lock_page.pw, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: "WrongPassphraseError" in error_text(w), timeout=30_000)
    assert w.locked and not w.model.unlocked
    close_error(w)
    w.lock_page.pw.clear()
    qtbot.keyClicks(w.lock_page.pw, PASSPHRASE)
    qtbot.mouseClick(w.lock_page.btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.locked, timeout=30_000)
    assert w.model.unlocked and len(w.model.review) == 2
    assert w.model.pseudonyms() == ids_before


def test_unlock_screen_wrong_passphrase(make_window, qtbot, tmp_path):
    m = _model()
    w = make_window(m)
    create_keystore(qtbot, w, tmp_path / "ks", PASSPHRASE)
    w2 = make_window(_model())
    w2.keys.path.setText(str(tmp_path / "ks"))
    qtbot.keyClicks(w2.keys.unlock_pw, "wrong wrong wrong wrong")
    qtbot.mouseClick(w2.keys.unlock_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "WrongPassphraseError" in error_text(w2), timeout=30_000)
    assert not w2.model.unlocked
    close_error(w2)
    w2.keys.unlock_pw.clear()
    qtbot.keyClicks(w2.keys.unlock_pw, PASSPHRASE)
    qtbot.keyClick(w2.keys.unlock_pw, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: w2.model.unlocked and not w2.runner.busy, timeout=30_000)
    assert w2.model.key_tag == m.key_tag
    assert w2.nav.currentRow() == 1  # moves on to the Twins screen


def test_idle_lock_requires_reunlock_and_loses_nothing(make_window, qtbot, tmp_path):
    w = make_window(_model(), idle_minutes=10)
    create_keystore(qtbot, w, tmp_path / "ks", PASSPHRASE)
    w.twins.import_paths([os.path.join(FIXTURES, "basic_mgdl.json")])
    w.scenarios.set_cell(0, "dose_mg", "350")
    assert w.keys.idle.value() == 10
    w.keys.idle.setValue(3)
    assert w._idle.interval() == 3 * 60_000
    w.set_idle_timeout_ms(150)
    qtbot.waitUntil(lambda: w.locked, timeout=5_000)
    assert not w.model.unlocked and w.outer.currentWidget() is w.lock_page
    w.go(4)  # navigation is blocked while locked
    assert w.outer.currentWidget() is w.lock_page
    w.set_idle_timeout_ms(60_000)
    qtbot.keyClicks(w.lock_page.pw, PASSPHRASE)
    qtbot.keyClick(w.lock_page.pw, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.locked, timeout=30_000)
    assert len(w.model.review) == 2 and w.model.scenarios[0].dose_mg == 350.0


def test_change_passphrase(make_window, qtbot, tmp_path):
    w = make_window(_model())
    ks = tmp_path / "ks"
    create_keystore(qtbot, w, ks, PASSPHRASE)
    tag = read_public(ks).key_tag
    new = "another long passphrase with words 7"
    k = w.keys
    qtbot.keyClicks(k.old_pw, "wrong old passphrase here")
    qtbot.keyClicks(k.chg_pw, new)
    qtbot.keyClicks(k.chg_pw2, new)
    qtbot.mouseClick(k.change_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "WrongPassphraseError" in error_text(w), timeout=30_000)
    close_error(w)
    unlock_keystore(ks, PASSPHRASE)  # unchanged
    k.old_pw.clear()
    qtbot.keyClicks(k.old_pw, PASSPHRASE)
    qtbot.mouseClick(k.change_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Passphrase changed" in k.status.text(), timeout=30_000)
    with pytest.raises(WrongPassphraseError):
        unlock_keystore(ks, PASSPHRASE)
    assert unlock_keystore(ks, new).public.key_tag == tag


def test_keyboard_navigation(make_window, qtbot):
    w = make_window(_model())
    for i in range(6):
        qtbot.keyClick(w, getattr(Qt.Key, f"Key_{i + 1}"), Qt.KeyboardModifier.ControlModifier)
        assert w.pages.currentIndex() == i
    # every screen's first interactive widget can take keyboard focus
    assert w.keys.path.focusPolicy() & Qt.FocusPolicy.TabFocus
    assert w.scenarios.table.focusPolicy() & Qt.FocusPolicy.TabFocus
