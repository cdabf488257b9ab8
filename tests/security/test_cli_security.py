"""The security CLI (audit verify/show, verify-export, users) through typer's CliRunner."""
from __future__ import annotations

import json
import sqlite3

import pytest
import typer
from typer.testing import CliRunner

from medtwin.cli_security import ReadOnlyAuditLog, load_trusted_keys, mount
from medtwin.custody.audit import AuditLog
from medtwin.custody.kdf import TEST_KDF
from medtwin.custody.signing import sign_file
from medtwin.custody.users import UserStore, authenticate
from medtwin.errors import TamperedError, ValidationError

PW = "violet tundra kettle 93 marching"
PW2 = "copper meadow lantern 41 drifting"

app = typer.Typer()
mount(app)


@app.callback()
def _root():  # a group, as in medtwin.cli
    pass


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("MT_PW", PW)
    monkeypatch.setenv("MT_PW2", PW2)
    users = tmp_path / "users.db"
    store = UserStore(users, kdf=TEST_KDF, allow_weak=True)
    store.bootstrap_admin("root", PW)
    log = AuditLog(tmp_path / "audit.db", checkpoint_every=3)
    admin = authenticate(store, "root", PW, audit=log)
    store.add_user(admin, "dr.a", "clinician", PW)
    store.add_user(admin, "aud", "auditor", PW)
    clin = authenticate(store, "dr.a", PW, audit=log)
    for i in range(4):
        log.append(clin, "twin.encrypt", twin_id=f"tw-{i}", n_twins=i + 1)
    return tmp_path, users, log, store, clin


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _tamper(path, sql, *params):
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("DROP TRIGGER IF EXISTS entries_no_update")
    con.execute("DROP TRIGGER IF EXISTS entries_no_delete")
    con.execute(sql, params)
    con.close()


def test_audit_verify_intact_log(env):
    d, users, log, *_ = env
    r = run("audit", "verify", log.path, "--users", users)
    assert r.exit_code == 0, r.output
    assert "audit log OK" in r.output


@pytest.mark.parametrize("case,kind", [
    ("edit", "edited"), ("delete", "deleted"), ("truncate", "truncated")])
def test_audit_verify_names_the_tampering_and_changes_nothing(env, case, kind):
    d, users, log, *_ = env
    anchor = d / "anchor.json"
    seq, head = log.head()
    anchor.write_text(json.dumps({"seq": seq, "head_hash": head}))
    n = seq
    if case == "edit":
        s, body = sqlite3.connect(log.path).execute(
            "SELECT seq, body FROM entries WHERE action='twin.encrypt' ORDER BY seq LIMIT 1").fetchone()
        assert b"tw-0" in bytes(body)
        _tamper(log.path, "UPDATE entries SET body=? WHERE seq=?", bytes(body).replace(b"tw-0", b"tw-9"), s)
    elif case == "delete":
        _tamper(log.path, "DELETE FROM entries WHERE seq=4")
    else:
        _tamper(log.path, "DELETE FROM entries WHERE seq=?", n)
        con = sqlite3.connect(log.path, isolation_level=None)
        con.execute("DROP TRIGGER IF EXISTS checkpoints_no_delete")
        con.execute("DELETE FROM checkpoints")
        con.close()
    before = log.path.read_bytes()
    r = run("audit", "verify", log.path, "--users", users, "--anchor", anchor)
    assert r.exit_code == 1, r.output
    assert f"{kind}:" in r.output and "schema:" in r.output
    assert log.path.read_bytes() == before          # verifying repaired nothing
    assert not ReadOnlyAuditLog(log.path).triggers_intact()


def test_audit_verify_with_signed_checkpoint_anchor_and_keyfile(env):
    d, users, log, store, clin = env
    cp = log.checkpoint(clin)
    (d / "cp.json").write_text(cp.to_json())
    r = run("users", "export-keys", d / "keys.json", "--users-db", users)
    assert r.exit_code == 0, r.output
    r = run("audit", "verify", log.path, "--users", d / "keys.json", "--anchor", d / "cp.json")
    assert r.exit_code == 0, r.output
    # a key file that lacks a signer: that signer's entries are not authentic
    doc = json.loads((d / "keys.json").read_text())
    del doc["keys"]["dr.a"]
    (d / "keys2.json").write_text(json.dumps(doc))
    r = run("audit", "verify", log.path, "--users", d / "keys2.json")
    assert r.exit_code == 1 and "not trusted" in r.output


def test_audit_verify_errors_are_clear(env):
    d, users, log, *_ = env
    r = run("audit", "verify", d / "missing.db", "--users", users)
    assert r.exit_code == 2 and "no audit log" in r.output
    (d / "junk.db").write_bytes(b"not a database at all" * 100)
    r = run("audit", "verify", d / "junk.db", "--users", users)
    assert r.exit_code == 1 and "not a readable audit database" in r.output
    assert (d / "junk.db").read_bytes() == b"not a database at all" * 100
    (d / "bad.json").write_text("[1]")
    r = run("audit", "verify", log.path, "--users", users, "--anchor", d / "bad.json")
    assert r.exit_code == 2 and "not an anchor" in r.output


def test_audit_show_needs_read_audit_and_is_logged(env):
    d, users, log, *_ = env
    n = len(log.entries())
    r = run("audit", "show", log.path, "--users", users, "--user", "dr.a", "--password-env", "MT_PW")
    assert r.exit_code == 2 and "lacks permission 'read_audit'" in r.output
    assert log.entries()[-1].action == "access.denied"
    r = run("audit", "show", log.path, "--users", users, "--user", "aud", "--password-env", "MT_PW",
            "--action", "twin.encrypt")
    assert r.exit_code == 0, r.output
    assert r.output.count("twin.encrypt") == 4 and "tw-3" in r.output
    assert log.entries()[-1].action == "audit.read"
    assert len(log.entries()) == n + 4   # login + denied, login + read
    r = run("audit", "show", log.path, "--users", users, "--user", "aud", "--password-env", "MT_PW",
            "--json", "--limit", "2")
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [x["seq"] for x in lines] == [1, 2]


def test_verify_export_round_trip_and_forgery(env):
    d, users, log, store, clin = env
    f = d / "summary.csv"
    f.write_text("scenario,auc\nA,1\n")
    sign_file(f, clin)
    r = run("verify-export", f, "--trusted", users)
    assert r.exit_code == 0, r.output
    assert "signed by dr.a (clinician)" in r.output
    f.write_text("scenario,auc\nA,2\n")
    r = run("verify-export", f, "--trusted", users)
    assert r.exit_code == 1 and "altered after signing" in r.output
    r = run("verify-export", f, "--trusted", d / "nothing.json")
    assert r.exit_code == 2


def test_users_add_and_list_need_an_admin(env):
    d, users, log, *_ = env
    r = run("users", "add", "nurse.b", "--role", "clinician", "--users-db", users, "--admin", "dr.a",
            "--admin-password-env", "MT_PW", "--new-password-env", "MT_PW2", "--audit", log.path)
    assert r.exit_code == 2 and "lacks permission 'manage_users'" in r.output
    r = run("users", "add", "nurse.b", "--role", "clinician", "--users-db", users, "--admin", "root",
            "--admin-password-env", "MT_PW", "--new-password-env", "MT_PW2", "--audit", log.path)
    assert r.exit_code == 0, r.output
    assert log.entries(action="user.create")[-1].objects["target_user"] == "nurse.b"
    assert authenticate(UserStore(users), "nurse.b", PW2).role == "clinician"
    r = run("users", "list", "--users-db", users, "--admin", "root", "--password-env", "MT_PW")
    assert r.exit_code == 0, r.output
    names = [ln.split()[0] for ln in r.output.splitlines()]
    assert names == ["aud", "dr.a", "nurse.b", "root"]
    r = run("users", "list", "--users-db", users, "--admin", "aud", "--password-env", "MT_PW")
    assert r.exit_code == 2 and "manage_users" in r.output
    r = run("users", "add", "x.y", "--role", "king", "--users-db", users, "--admin", "root",
            "--admin-password-env", "MT_PW", "--new-password-env", "MT_PW2")
    assert r.exit_code == 2 and "unknown role" in r.output


def test_users_bootstrap_only_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MT_PW", PW)
    db = tmp_path / "u.db"
    assert run("users", "bootstrap", "root", "--users-db", db, "--password-env", "MT_PW").exit_code == 0
    r = run("users", "bootstrap", "other", "--users-db", db, "--password-env", "MT_PW")
    assert r.exit_code == 2 and "accounts already" in r.output
    r = run("users", "add", "a.b", "--role", "auditor", "--users-db", db, "--admin", "root",
            "--admin-password-env", "UNSET_VAR_XYZ")
    assert r.exit_code == 2 and "UNSET_VAR_XYZ is not set" in r.output


def test_load_trusted_keys_refuses_junk(tmp_path):
    for content in (b"{}", b"[]", b'{"format": "medtwin-trusted-keys", "version": 1, "keys": {"a": ["!!"]}}',
                    b"\xff\xfe"):
        p = tmp_path / "k.json"
        p.write_bytes(content)
        with pytest.raises(ValidationError):
            load_trusted_keys(p)
    with pytest.raises(ValidationError):
        load_trusted_keys(tmp_path / "none")
    p = tmp_path / "x.db"
    p.write_bytes(b"SQLite format 3\0" + b"\0" * 200)
    with pytest.raises(TamperedError):
        load_trusted_keys(p)
