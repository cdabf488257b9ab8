"""``medtwin-gui --audit-log --users --user``: the sign-in dialog of :func:`medtwin.gui.app.main`."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QInputDialog, QLineEdit

from medtwin.custody.audit import AuditLog
from medtwin.custody.kdf import TEST_KDF
from medtwin.custody.users import Session, UserStore, authenticate

pytestmark = pytest.mark.gui

ADMIN_PW = "root password that is long enough 1"
CARA_PW = "cara's clinical password is long 2"


@pytest.fixture
def users(tmp_path):
    store = UserStore(tmp_path / "users.db", kdf=TEST_KDF, allow_weak=True)
    store.bootstrap_admin("root", ADMIN_PW)
    store.add_user(authenticate(store, "root", ADMIN_PW), "cara", "clinician", CARA_PW)
    return tmp_path / "users.db"


def _answer_sign_in(qtbot, password: str | None, seen: list) -> None:
    """Type ``password`` into the sign-in dialog when it opens (None: press Cancel)."""

    def answer() -> None:
        dlg = QApplication.activeModalWidget()
        if not isinstance(dlg, QInputDialog):
            QTimer.singleShot(20, answer)
            return
        seen.append(dlg.labelText())
        if password is None:
            dlg.reject()
            return
        edit = dlg.findChild(QLineEdit)
        seen.append(edit.echoMode() == QLineEdit.EchoMode.Password)
        qtbot.keyClicks(edit, password)  # typed like a user
        dlg.accept()

    QTimer.singleShot(20, answer)


def _close_main_window(found: list) -> None:
    from medtwin.gui.app import MainWindow

    def close() -> None:
        wins = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if not wins:
            QTimer.singleShot(20, close)
            return
        found.append((wins[0].model.audit, wins[0].model.actor))
        wins[0].close()  # the last window: app.exec() in main() returns

    QTimer.singleShot(50, close)


def test_main_signs_in_and_logs_as_the_user(qtbot, users, tmp_path):
    from medtwin.gui.app import main

    # main() returns when its window, the last visible one, is closed
    assert not [x for x in QApplication.topLevelWidgets() if x.isVisible()]
    seen, found = [], []
    _answer_sign_in(qtbot, CARA_PW, seen)
    _close_main_window(found)
    rc = main(["--audit-log", str(tmp_path / "audit.sqlite"), "--users", str(users), "--user", "cara",
               "--idle-minutes", "5"])
    assert rc == 0
    assert seen == ["Password for cara:", True]
    audit, actor = found[0]
    assert isinstance(actor, Session) and actor.user == "cara" and actor.role == "clinician"
    assert isinstance(audit, AuditLog)
    entries = AuditLog(tmp_path / "audit.sqlite").entries()
    assert [(e.action, e.actor) for e in entries] == [("user.login", "cara")]


def test_main_wrong_password_refuses(qtbot, users, tmp_path, capsys):
    from medtwin.gui.app import main

    seen = []
    _answer_sign_in(qtbot, "not cara's password at all 3", seen)
    rc = main(["--audit-log", str(tmp_path / "audit.sqlite"), "--users", str(users), "--user", "cara"])
    assert rc == 2 and seen == ["Password for cara:", True]
    err = capsys.readouterr().err
    assert "cannot sign in" in err and "not cara's password" not in err


def test_main_sign_in_cancelled_exits(qtbot, users, tmp_path):
    from medtwin.gui.app import main

    seen = []
    _answer_sign_in(qtbot, None, seen)
    with pytest.raises(SystemExit) as exc:
        main(["--audit-log", str(tmp_path / "audit.sqlite"), "--users", str(users), "--user", "cara"])
    assert exc.value.code == 1 and seen == ["Password for cara:"]


def test_main_user_without_audit_log_is_refused(qtbot, users):
    from medtwin.gui.app import main

    with pytest.raises(SystemExit, match="need --audit-log"):
        main(["--users", str(users), "--user", "cara"])
