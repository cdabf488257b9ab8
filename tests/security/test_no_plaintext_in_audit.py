"""A whole encrypted study through medtwin.study.workflow leaves an audit trail with every step and
no patient value: every plaintext covariate of the patients is searched for in every entry."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import re

import pytest

from medtwin.custody.audit import AuditLog
from medtwin.custody.kdf import TEST_KDF
from medtwin.custody.users import UserStore, authenticate
from medtwin.data import cohort_csv_path
from medtwin.models.pk_oral import COVARIATES
from medtwin.study import workflow

PW = "violet tundra kettle 93 marching"
N_PATIENTS = 6


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    rows = list(csv.reader(open(cohort_csv_path(), newline="")))
    (d / "patients.csv").write_text("\n".join(",".join(r) for r in rows[: N_PATIENTS + 1]) + "\n")
    (d / "study.json").write_text(json.dumps(
        workflow.demo_spec(horizon=24.0, step=4.0, preset="test-insecure").to_dict()))
    log = AuditLog(d / "audit.db")
    store = UserStore(d / "users.db", kdf=TEST_KDF, allow_weak=True)
    store.bootstrap_admin("root", PW)
    store.add_user(authenticate(store, "root", PW), "dr.a", "clinician", PW)
    me = authenticate(store, "dr.a", PW, audit=log)
    workflow.create_keys(d / "ks", PW, preset="test-insecure", session=me, log=log, kdf=TEST_KDF,
                         allow_weak=True)
    n = workflow.encrypt_files([d / "patients.csv"], d / "ks", PW, d / "study.json", d / "cohort",
                               session=me, log=log)
    assert n == N_PATIENTS
    workflow.simulate_bundle(d / "cohort", d / "ks", d / "outcome", session=me, log=log)
    workflow.decrypt_bundle(d / "outcome", d / "ks", PW, d / "report", session=me, log=log)
    return d, log, me


def _plaintext_values(d):
    """Identifiers and every numeric value of the patients (fields and the encrypted covariates),
    without the 0/1 indicator encodings (sex, smoker, ...), which say nothing on their own."""
    records = workflow.load_records([d / "patients.csv"])
    assert len(records) == N_PATIENTS
    ids, numbers = [], set()
    for r in records:
        ids.append(r.source_id)                                     # the direct identifier
        numbers |= {float(v) for v in r.to_dict().values()          # every numeric field
                    if isinstance(v, (int, float)) and not isinstance(v, bool)}
        numbers |= {float(v) for v in r.minimise(list(COVARIATES)).values()}   # what was encrypted
    numbers -= {0.0, 1.0}
    return ids, sorted(numbers)


def _masked_copy(log: AuditLog, dest) -> AuditLog:
    """A copy of the log whose entry timestamps are replaced by a digit-free placeholder.

    ``scan_for_values`` matches a value's decimal text anywhere inside a string, so a value such
    as 5.1 is "found" in a timestamp like ``...T10:01:25.192867Z``. Timestamps are written by the
    log itself in a fixed ISO format (checked here before masking), so masking them hides nothing.
    """
    import re
    import shutil
    import sqlite3

    shutil.copy(log.path, dest)
    con = sqlite3.connect(dest, isolation_level=None)
    con.execute("DROP TRIGGER entries_no_update")
    for seq, body in con.execute("SELECT seq, body FROM entries").fetchall():
        b = json.loads(body)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", b["ts"]), b["ts"]
        b["ts"] = "TS"
        con.execute("UPDATE entries SET body=? WHERE seq=?", (json.dumps(b).encode(), seq))
    con.close()
    return AuditLog(dest)


#: keys under which the log stores counts and configuration integers (an integer-valued patient
#: value such as an age of 48 can equal a count such as n_results=48 without being one)
_COUNT_KEYS = re.compile(r"n_.*|.*_count|.*_bits|depth|ring_dim|slots|level|threads|batch_size|degree|"
                         r"exit_code|version|dnum|min_cohort|chunk|attempt|minutes|seq")


def _numeric_leaks(log: AuditLog, numbers) -> list:
    """Numeric leaves equal to a patient value, other than integers stored under count keys."""
    hits = []

    def walk(seq, key, x):
        if isinstance(x, dict):
            for k, y in x.items():
                walk(seq, k, y)
        elif isinstance(x, list):
            for y in x:
                walk(seq, key, y)
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            if isinstance(x, int) and _COUNT_KEYS.fullmatch(key):
                return
            hits.extend((seq, key, x) for n in numbers if math.isclose(float(x), n, rel_tol=1e-9))

    for e in log.entries():
        walk(e.seq, "objects", e.objects)
        walk(e.seq, "details", e.details)
    return hits


def test_every_step_is_logged(study):
    d, log, me = study
    actions = [e.action for e in log.entries()]
    for a in ("key.create", "key.unlock", "patient.import", "twin.encrypt", "simulation.run",
              "result.decrypt", "export.write"):
        assert a in actions, (a, actions)
    assert all(e.actor == "dr.a" for e in log.entries())
    assert log.verify(me.store.public_keys()).ok


def test_the_written_report_is_tied_to_its_log_entry(study):
    d, log, _ = study
    logged = {e.objects.get("file_sha256") for e in log.entries(action="export.write")}
    sha = hashlib.sha256((d / "report" / "metrics.csv").read_bytes()).hexdigest()
    assert sha in logged


def test_no_plaintext_covariate_in_any_entry(study, tmp_path):
    d, log, _ = study
    ids, numbers = _plaintext_values(d)
    assert len(numbers) > 5 * N_PATIENTS
    assert len(log.entries()) >= 7, "the study wrote too few audit entries"
    masked = _masked_copy(log, tmp_path / "masked.db")
    # identifiers anywhere, non-integer values as numbers or as text (72.5, 72,5) anywhere
    fractional = [n for n in numbers if n != int(n)]
    assert masked.scan_for_values(ids + fractional) == []
    # integer-valued patient values (ages, 4.0 g/dL) as numbers outside the count fields
    assert _numeric_leaks(log, numbers) == []


def test_the_scan_would_see_a_leak(study, tmp_path):
    """The checks are not vacuous: an identifier, a weight or an age in an entry is found."""
    d, log, me = study
    r = workflow.load_records([d / "patients.csv"])[0]
    leaky = AuditLog(tmp_path / "leak.db")
    leaky.append(me, "twin.encrypt", twin_id=r.source_id)
    leaky.append(me, "simulation.run", details={"duration_s": float(r.weight_kg)})
    leaky.append(me, "simulation.run", details={"elapsed_s": float(r.age_years)})
    masked = _masked_copy(leaky, tmp_path / "leak-masked.db")
    assert masked.scan_for_values([r.source_id])
    assert masked.scan_for_values([r.weight_kg]) or r.weight_kg == int(r.weight_kg)
    assert {k for _, k, _ in _numeric_leaks(leaky, [r.weight_kg, r.age_years])} == {"duration_s", "elapsed_s"}
