from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from medtwin.custody import users as U
from medtwin.custody.audit import AuditLog
from medtwin.custody.kdf import TEST_KDF
from medtwin.custody.users import (PERMISSIONS, ROLE_PERMISSIONS, AccountLockedError,
                                   AuthenticationError, UserStore, authenticate, end_breakglass,
                                   require, start_breakglass)
from medtwin.errors import PermissionDenied, SecurityPolicyError, ValidationError

PW = {"root": "admin granite ladder 77 swift", "cara": "clinician maple orbit 12 lantern",
      "rob": "researcher cobalt heron 45 valley", "aud": "auditor quartz meadow 88 signal"}
ROLE = {"root": "admin", "cara": "clinician", "rob": "researcher", "aud": "auditor"}


@pytest.fixture
def store(tmp_path):
    s = UserStore(tmp_path / "users.db", kdf=TEST_KDF, allow_weak=True, max_failures=3)
    s.bootstrap_admin("root", PW["root"])
    admin = authenticate(s, "root", PW["root"])
    for n in ("cara", "rob", "aud"):
        s.add_user(admin, n, ROLE[n], PW[n])
    return s


@pytest.fixture
def log(tmp_path):
    return AuditLog(tmp_path / "audit.db")


def login(store, name, audit=None):
    return authenticate(store, name, PW[name], audit=audit)


def test_matrix_is_complete():
    assert set(ROLE_PERMISSIONS) == {"clinician", "researcher", "auditor", "admin"}
    assert all(p <= set(PERMISSIONS) for p in ROLE_PERMISSIONS.values())
    assert "decrypt_patient" not in ROLE_PERMISSIONS["researcher"]
    assert ROLE_PERMISSIONS["auditor"] == {"read_audit"}


@pytest.mark.parametrize("user", ["root", "cara", "rob", "aud"])
@pytest.mark.parametrize("permission", PERMISSIONS)
def test_each_permission_for_each_role(store, log, user, permission):
    s = login(store, user, log)
    allowed = permission in ROLE_PERMISSIONS[ROLE[user]]
    if allowed:
        require(s, permission)
        assert s.can(permission)
    else:
        with pytest.raises(PermissionDenied) as ei:
            require(s, permission)
        msg = str(ei.value)
        assert user in msg and ROLE[user] in msg and permission in msg
        assert log.entries(action="access.denied")[-1].objects == {"permission": permission}


def test_unknown_permission(store):
    with pytest.raises(ValidationError, match="unknown permission"):
        require(login(store, "cara"), "delete_everything")
    with pytest.raises(PermissionDenied):
        require(object(), "export")


def test_wrong_password_counted_and_lockout(store, tmp_path):
    with pytest.raises(AuthenticationError, match="wrong password for user 'cara' \\(2 attempts left"):
        authenticate(store, "cara", "nope nope nope")
    with pytest.raises(AuthenticationError, match="1 attempt left"):
        authenticate(store, "cara", "nope nope nope")
    with pytest.raises(AccountLockedError, match="locked until"):
        authenticate(store, "cara", "nope nope nope")
    assert store.user("cara").failed == 3
    with pytest.raises(AccountLockedError):     # even the right password, while locked
        login(store, "cara")
    # an admin unlocks; and a lock also lapses by itself
    store.unlock_account(login(store, "root"), "cara")
    s = login(store, "cara")
    assert s.role == "clinician" and store.user("cara").failed == 0
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            authenticate(store, "rob", "wrong wrong wrong")
    past = U.iso(U.utc_now() - timedelta(minutes=1))
    sqlite3.connect(tmp_path / "users.db").execute("UPDATE users SET locked_until=? WHERE name='rob'",
                                                   (past,)).connection.commit()
    assert login(store, "rob").user == "rob"


def test_failures_reported_in_next_login_entry(store, log):
    with pytest.raises(AuthenticationError):
        authenticate(store, "rob", "wrong wrong wrong", audit=log)
    login(store, "rob", log)
    e = log.entries(action="user.login")[-1]
    assert e.actor == "rob" and e.details == {"n_failed": 1}


def test_unknown_and_disabled_users(store):
    with pytest.raises(AuthenticationError, match="no such user 'eve'"):
        authenticate(store, "eve", "whatever whatever")
    admin = login(store, "root")
    cara = login(store, "cara")
    store.set_disabled(admin, "cara")
    with pytest.raises(AuthenticationError, match="disabled"):
        login(store, "cara")
    with pytest.raises(PermissionDenied, match="disabled"):
        require(cara, "create_twins")     # an open session stops working at once
    store.set_disabled(admin, "cara", False)
    require(login(store, "cara"), "create_twins")
    with pytest.raises(ValidationError):
        store.set_disabled(admin, "root")


def test_role_change_takes_effect(store):
    rob = login(store, "rob")
    store.set_role(login(store, "root"), "rob", "clinician")
    with pytest.raises(PermissionDenied, match="role of user 'rob' changed"):
        require(rob, "run_simulation")
    require(login(store, "rob"), "decrypt_patient")


def test_only_admins_manage_users(store):
    cara = login(store, "cara")
    with pytest.raises(PermissionDenied, match="manage_users"):
        store.add_user(cara, "zed", "admin", "zebra violin castle 31 drift")
    with pytest.raises(AuthenticationError):
        authenticate(store, "zed", "zebra violin castle 31 drift")
    with pytest.raises(PermissionDenied, match="accounts already"):
        store.bootstrap_admin("other", "zebra violin castle 31 drift")
    admin = login(store, "root")
    with pytest.raises(ValidationError, match="exists already"):
        store.add_user(admin, "cara", "clinician", "zebra violin castle 31 drift")
    with pytest.raises(ValidationError, match="unknown role"):
        store.add_user(admin, "zed", "superuser", "zebra violin castle 31 drift")
    with pytest.raises(ValidationError, match="user name"):
        store.add_user(admin, "Robert'); DROP TABLE users;--", "clinician", "zebra violin castle 31 drift")


def test_weak_password_refused(tmp_path):
    s = UserStore(tmp_path / "u.db", kdf=TEST_KDF, allow_weak=True)
    with pytest.raises(ValidationError, match="too weak"):
        s.bootstrap_admin("root", "password1")
    assert s.users() == []


def test_signing_keys_encrypted_and_stable(store, log, tmp_path):
    cara = login(store, "cara", log)
    raw = cara._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    assert raw not in (tmp_path / "users.db").read_bytes()
    log.append(cara, "twin.encrypt", n_twins=3)
    new = "clinician walnut prism 63 harbour"
    store.change_password(cara, PW["cara"], new)
    again = authenticate(store, "cara", new, audit=log)
    assert again.identity.fingerprint == cara.identity.fingerprint
    with pytest.raises(AuthenticationError):
        store.change_password(again, "wrong old password", "another fine long passphrase 9")
    # an admin reset gives a new key; old entries still verify with the retired key
    store.reset_password(login(store, "root", log), "cara", PW["cara"])
    c3 = login(store, "cara", log)
    assert c3.identity.fingerprint != cara.identity.fingerprint
    log.append(c3, "twin.encrypt", n_twins=1)
    keys = store.public_keys()
    assert len(keys["cara"]) == 2
    assert log.verify(keys).ok


def test_session_close_and_expiry(store):
    s = login(store, "cara")
    s.close()
    with pytest.raises(PermissionDenied, match="closed"):
        require(s, "create_twins")
    s = login(store, "cara")
    s.expires = U.utc_now() - timedelta(seconds=1)
    with pytest.raises(PermissionDenied, match="expired"):
        require(s, "create_twins")


def test_breakglass_logged_flagged_and_time_limited(store, log):
    rob = login(store, "rob", log)
    with pytest.raises(PermissionDenied):
        require(rob, "decrypt_patient")
    bg = start_breakglass(rob, "ICU emergency, attending clinician unreachable", minutes=30)
    assert rob.breakglass_active and (bg.expires - bg.started) == timedelta(minutes=30)
    require(rob, "decrypt_patient")           # allowed now ...
    require(rob, "run_simulation")            # (own permission: no break-glass use logged)
    log.append(rob, "result.decrypt", twin_id="twin-0007")
    end_breakglass(rob)
    with pytest.raises(PermissionDenied):
        require(rob, "decrypt_patient")
    acts = [(e.action, e.breakglass) for e in log.entries(actor="rob")]
    assert acts == [("user.login", False), ("access.denied", False), ("breakglass.start", True),
                    ("breakglass.use", True), ("result.decrypt", True), ("breakglass.end", True),
                    ("access.denied", False)]
    start = log.entries(action="breakglass.start")[0]
    assert start.objects["reason"].startswith("ICU emergency") and start.details == {"minutes": 30}
    rep = log.verify(store.public_keys())
    assert rep.ok and len(rep.flagged) == 4


def test_breakglass_expires(store, log):
    adm = login(store, "root", log)
    start_breakglass(adm, "mass casualty incident, all hands")
    require(adm, "create_twins")
    adm.breakglass.expires = U.utc_now() - timedelta(seconds=1)
    with pytest.raises(PermissionDenied, match="lacks permission 'create_twins'"):
        require(adm, "create_twins")
    assert [e.action for e in log.entries(action="breakglass.*")] == [
        "breakglass.start", "breakglass.use", "breakglass.expire"]


def test_breakglass_refusals(store, log):
    with pytest.raises(SecurityPolicyError, match="audit log"):
        start_breakglass(login(store, "rob"), "emergency access needed now")
    rob = login(store, "rob", log)
    with pytest.raises(ValidationError, match="reason"):
        start_breakglass(rob, "because")
    with pytest.raises(ValidationError, match="patient data"):
        start_breakglass(rob, "patient INR 4.5 is dangerously high")
    with pytest.raises(ValidationError, match="minutes"):
        start_breakglass(rob, "emergency access needed now", minutes=600)
    with pytest.raises(PermissionDenied, match="may not break glass"):
        start_breakglass(login(store, "aud", log), "emergency access needed now")
    with pytest.raises(PermissionDenied, match="may not break glass"):
        start_breakglass(login(store, "cara", log), "emergency access needed now")
    assert not rob.breakglass_active
    assert log.entries(action="breakglass.*") == []


def test_not_a_user_db(tmp_path):
    p = tmp_path / "x.db"
    p.write_bytes(b"garbage" * 200)
    with pytest.raises(U.TamperedError):
        UserStore(p, kdf=TEST_KDF, allow_weak=True)


def test_altered_key_record_detected(store, tmp_path):
    con = sqlite3.connect(tmp_path / "users.db")
    ct = bytearray(con.execute("SELECT sk_ct FROM users WHERE name='cara'").fetchone()[0])
    ct[3] ^= 1
    con.execute("UPDATE users SET sk_ct=? WHERE name='cara'", (bytes(ct),))
    con.commit()
    with pytest.raises(U.TamperedError, match="signing key record of user 'cara'"):
        login(store, "cara")
