"""The CLI end to end: init, users, keys, encrypt, simulate, decrypt; errors leave files intact."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from medtwin.cli import app
from medtwin.custody.audit import AuditLog
from medtwin.custody.users import UserStore, authenticate
from medtwin.data import cohort_csv_path, sample_bundle_path

ADMIN_PW = "correct horse battery staple 1"
CLIN_PW = "violet otter marmalade 77"
KS_PW = "tundra lantern quasar 9041"


def _snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    e = {"MEDTWIN_HOME": str(home), "ADMIN_PW": ADMIN_PW, "CLIN_PW": CLIN_PW, "KS_PW": KS_PW,
         "MEDTWIN_ALLOW_INSECURE": "1", "BAD": "wrong wrong wrong"}
    r = CliRunner().invoke(app, ["init", "--admin", "alice", "--password-env", "ADMIN_PW"], env=e)
    assert r.exit_code == 0, r.output
    store = UserStore(home / "users.db")
    s = authenticate(store, "alice", ADMIN_PW, audit=AuditLog(home / "audit.db"))
    store.add_user(s, "bob", "clinician", CLIN_PW)
    store.add_user(s, "rita", "researcher", CLIN_PW)
    return e, home


def _run(args, e, ok=True):
    r = CliRunner().invoke(app, args, env=e)
    if ok:
        assert r.exit_code == 0, r.output + repr(r.exception)
    return r


def test_whole_workflow_on_the_cli(env, tmp_path):
    e, home = env
    bob = ["--user", "bob", "--password-env", "CLIN_PW"]
    ks = tmp_path / "ks"
    _run(["keys", "create", str(ks), "--preset", "test-insecure", "--passphrase-env", "KS_PW", *bob], e)
    _run(["keys", "unlock", str(ks), "--passphrase-env", "KS_PW", *bob], e)
    pub = _run(["keys", "export-public", str(ks), str(tmp_path), "--passphrase-env", "KS_PW", *bob], e)
    pub_file = next(tmp_path.glob("public-*.mtpub"))
    study = tmp_path / "study.json"
    _run(["study-template", str(study), "--horizon", "24", "--step", "4"], e)
    d = json.loads(study.read_text())
    d["preset"] = "test-insecure"
    study.write_text(json.dumps(d))
    r = _run(["import", str(sample_bundle_path()), *bob], e)
    assert "25 patient record(s) valid" in r.output
    cohort = tmp_path / "cohort"
    _run(["encrypt", str(sample_bundle_path()), "--keystore", str(ks), "--study", str(study), "--out", str(cohort),
          "--passphrase-env", "KS_PW", *bob], e)
    outcome = tmp_path / "outcome"
    r = _run(["simulate", "--cohort", str(cohort), "--public", str(pub_file), "--out", str(outcome),
              "--user", "rita", "--password-env", "CLIN_PW"], e)
    assert "results/s" in r.output
    rep = tmp_path / "report"
    r = _run(["decrypt", "--outcome", str(outcome), "--keystore", str(ks), "--report-dir", str(rep),
              "--passphrase-env", "KS_PW", *bob], e)
    assert "A 300 q12h" in r.output and (rep / "metrics.csv").exists() and (rep / "metrics.csv.sig.json").exists()
    # the researcher may not decrypt one patient's results
    r = _run(["decrypt", "--outcome", str(outcome), "--keystore", str(ks), "--report-dir", str(tmp_path / "r2"),
              "--passphrase-env", "KS_PW", "--user", "rita", "--password-env", "CLIN_PW"], e, ok=False)
    assert r.exit_code == 2 and "decrypt_patient" in r.output
    # wrong keystore passphrase: clear error, nothing changed
    before = _snapshot(ks)
    r = _run(["keys", "unlock", str(ks), "--passphrase-env", "BAD", *bob], e, ok=False)
    assert r.exit_code == 2 and "passphrase" in r.output.lower()
    assert _snapshot(ks) == before
    # outputs are never overwritten
    before = _snapshot(outcome)
    r = _run(["simulate", "--cohort", str(cohort), "--public", str(pub_file), "--out", str(outcome), *bob], e, ok=False)
    assert "exists already" in r.output and _snapshot(outcome) == before
    # a corrupted ciphertext file is refused by name
    blob = sorted((cohort / "blobs").iterdir())[0]
    blob.write_bytes(blob.read_bytes()[:-10])
    r = _run(["simulate", "--cohort", str(cohort), "--public", str(pub_file), "--out", str(tmp_path / "o2"), *bob],
             e, ok=False)
    assert blob.name in r.output and not (tmp_path / "o2").exists()
    # the audit log holds the whole story and verifies
    log = AuditLog(home / "audit.db")
    actions = {x.action for x in log.entries()}
    for a in ("key.create", "key.unlock", "key.export_public", "patient.import", "twin.encrypt", "simulation.run",
              "result.decrypt", "export.write", "access.denied"):
        assert a in actions, a
    rep = log.verify(UserStore(home / "users.db").public_keys())
    assert rep.ok, str(rep)


def test_wrong_user_password_is_refused(env):
    e, _ = env
    r = _run(["import", str(cohort_csv_path()), "--user", "bob", "--password-env", "BAD"], e, ok=False)
    assert r.exit_code == 2 and "error" in r.output
