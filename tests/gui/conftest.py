from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MEDTWIN_ALLOW_INSECURE", "1")

from gui_helpers import shallow_keys  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _gc_back_to_python():
    """GUI workers switch Python's cyclic GC to a GUI-thread timer; give it back after each test."""
    yield
    from medtwin.gui.workers import MainThreadGC

    MainThreadGC.uninstall()


@pytest.fixture
def cheap_kdf():
    from medtwin.custody.kdf import TEST_KDF

    return TEST_KDF


@pytest.fixture
def make_window(qtbot, cheap_kdf):
    """Build a MainWindow with cheap Argon2 parameters; closes it (and joins workers) at the end."""
    from medtwin.gui.app import MainWindow, make_app
    from medtwin.gui.model import AppModel

    make_app()
    made = []

    def make(model: AppModel | None = None, **kw):
        kw.setdefault("kdf", cheap_kdf)
        kw.setdefault("allow_weak", True)
        kw.setdefault("allow_insecure", True)
        w = MainWindow(model or AppModel(), **kw)
        qtbot.addWidget(w)
        w.show()
        with qtbot.waitActive(w):  # window shortcuts (Ctrl+1 ... Ctrl+6, Ctrl+L) need the active window
            w.activateWindow()
        made.append(w)
        return w

    yield make
    for w in made:
        w.runner.wait_all(60_000)
