from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MEDTWIN_ALLOW_INSECURE", "1")

PASSPHRASE = "correct horse battery staple 42"
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "fhir", "valid")


def shallow_keys(preset_name: str, model: str):
    """Real OpenFHE keys on the test ring, but only depth 2: for key-custody tests that never simulate."""
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import preset

    assert preset_name == "test-insecure"
    return generate_keys(preset("test-insecure", depth=2), [1])


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
        made.append(w)
        return w

    yield make
    for w in made:
        w.runner.wait_all(60_000)
