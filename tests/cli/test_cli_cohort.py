"""``medtwin cohort``: a vancomycin cohort study from CSV on the CLI, released as aggregates only,
refused for small cohorts and for roles without the permissions; every step audited."""
from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from medtwin.cli import app
from medtwin.custody.audit import AuditLog
from medtwin.custody.users import UserStore, authenticate
from medtwin.data import cohort_csv_path

ADMIN_PW = "correct horse battery staple 1"
CLIN_PW = "violet otter marmalade 77"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    e = {"MEDTWIN_HOME": str(home), "ADMIN_PW": ADMIN_PW, "CLIN_PW": CLIN_PW, "MEDTWIN_ALLOW_INSECURE": "1"}
    r = CliRunner().invoke(app, ["init", "--admin", "alice", "--password-env", "ADMIN_PW"], env=e)
    assert r.exit_code == 0, r.output
    store = UserStore(home / "users.db")
    s = authenticate(store, "alice", ADMIN_PW, audit=AuditLog(home / "audit.db"))
    store.add_user(s, "bob", "clinician", CLIN_PW)
    store.add_user(s, "rita", "researcher", CLIN_PW)
    rows = list(csv.reader(open(cohort_csv_path(), newline="")))
    for n in (5, 30):
        (home / f"p{n}.csv").write_text("\n".join(",".join(r) for r in rows[: n + 1]) + "\n")
    return e, home, rows


def _run(args, e):
    return CliRunner().invoke(app, args, env=e)


def test_cohort_command_prints_the_regimen_table(env):
    e, home, rows = env
    r = _run(["cohort", str(home / "p30.csv"), "--preset", "test-insecure", "--doses", "1000,1500",
              "--intervals", "12,24", "--backend", "native", "--user", "bob", "--password-env", "CLIN_PW"], e)
    assert r.exit_code == 0, r.output + repr(r.exception)
    for reg in ("1000 mg q12h", "1000 mg q24h", "1500 mg q12h", "1500 mg q24h"):
        assert f"| {reg} |" in r.output
    assert "PTA" in r.output and "INSECURE" in r.output
    log = AuditLog(home / "audit.db")
    acts = [(x.action, x.objects.get("mode"), x.objects.get("outcome")) for x in log.entries()]
    assert ("simulation.run", None, None) in acts and ("result.decrypt", "aggregate", "released") in acts
    assert ("result.decrypt", "per_patient", None) not in acts  # cohort mode: aggregates only
    ids = [row[0] for row in rows[1:31]]
    assert log.scan_for_values(ids) == []
    assert log.verify(UserStore(home / "users.db").public_keys()).ok


def test_cohort_command_refuses_small_cohorts_and_roles(env):
    e, home, _ = env
    r = _run(["cohort", str(home / "p5.csv"), "--preset", "test-insecure", "--doses", "1000",
              "--intervals", "12", "--user", "bob", "--password-env", "CLIN_PW"], e)
    assert r.exit_code == 2 and "below the minimum cohort size" in r.output
    r = _run(["cohort", str(home / "p30.csv"), "--preset", "test-insecure", "--user", "rita",
              "--password-env", "CLIN_PW"], e)
    assert r.exit_code == 2 and "create_twins" in r.output
    r = _run(["cohort", str(home / "p30.csv"), "--doses", "750,abc", "--user", "bob", "--password-env", "CLIN_PW"], e)
    assert r.exit_code == 2 and "--doses" in r.output
