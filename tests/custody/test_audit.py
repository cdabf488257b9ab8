from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from medtwin.custody.audit import GENESIS, AuditLog, Checkpoint
from medtwin.custody.identity import Identity
from medtwin.errors import TamperedError, ValidationError

DIG = hashlib.sha256(b"scenario").hexdigest()


@pytest.fixture
def alice():
    return Identity.generate("dr.alice", "clinician")


@pytest.fixture
def bob():
    return Identity.generate("bob", "researcher")


def fill(path, alice, bob, n=10, **kw):
    log = AuditLog(path, **kw)
    for i in range(n):
        who = alice if i % 2 == 0 else bob
        log.append(who, "simulation.run", twin_ids=[f"twin-{i:04d}"], model="pk-oral",
                   model_version="1.0", scenario_digests=[DIG], n_patients=i + 1,
                   details={"duration_s": 0.5 + i, "backend": "openfhe"})
    return log


def keys(*ids):
    return {i.name: i.public_key for i in ids}


def raw(path):
    """A direct sqlite connection with the append-only triggers dropped (an attacker with file access)."""
    con = sqlite3.connect(path, isolation_level=None)
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        con.execute(f"DROP TRIGGER {name}")
    return con


def row(con, seq):
    return con.execute("SELECT * FROM entries WHERE seq=?", (seq,)).fetchone()


def test_append_verify_and_read(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob)
    rep = log.verify(keys(alice, bob))
    assert rep.ok, str(rep)
    assert (rep.rows, rep.authentic, rep.head_seq) == (10, 10, 10)
    assert rep.head_hash == log.head()[1]
    es = log.entries()
    assert [e.seq for e in es] == list(range(1, 11))
    assert es[0].prev_hash == GENESIS and es[1].prev_hash == es[0].entry_hash
    assert es[3].objects["twin_ids"] == ["twin-0003"] and es[3].details["duration_s"] == 3.5
    assert es[1].actor == "bob" and es[1].role == "researcher"
    assert [e.seq for e in log.entries(actor="bob")] == [2, 4, 6, 8, 10]
    assert len(log.entries(action="simulation.*")) == 10
    assert log.entries(since_seq=9, limit=1)[0].seq == 9
    # the body is RFC 8785 canonical JSON and the hash covers prev_hash || body
    con = sqlite3.connect(tmp_path / "a.db")
    seq, body, prev, h = con.execute("SELECT seq, body, prev_hash, entry_hash FROM entries WHERE seq=5").fetchone()
    assert h == hashlib.sha256(bytes.fromhex(prev) + body).hexdigest()
    assert json.loads(body)["seq"] == 5 and b" " not in body.split(b'"ts"')[0]


def test_triggers_refuse_update_delete_and_out_of_order_insert(tmp_path, alice, bob):
    fill(tmp_path / "a.db", alice, bob, 3).checkpoint(alice)
    con = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    for sql in ("UPDATE entries SET actor='x' WHERE seq=2", "DELETE FROM entries WHERE seq=3",
                "DELETE FROM checkpoints",
                "INSERT INTO entries SELECT 9, ts, actor, role, action, breakglass, body, prev_hash, "
                "entry_hash, key_fp, signature FROM entries WHERE seq=1"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(sql)
    assert AuditLog(tmp_path / "a.db").verify(keys(alice, bob)).ok


def test_edited_entry(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob)
    con = raw(tmp_path / "a.db")
    body = row(con, 4)[6].replace(b'"n_patients":4', b'"n_patients":5')
    con.execute("UPDATE entries SET body=? WHERE seq=4", (body,))
    rep = log.verify(keys(alice, bob))
    assert not rep.ok
    assert [(p.kind, p.seq) for p in rep.problems if p.kind != "schema"] == [("edited", 4)]
    assert "entry 4 was edited" in str(rep)
    assert rep.head_seq == 3


def test_edited_and_rehashed_entry(tmp_path, alice, bob):
    """Recomputing the hash does not help: the signature (and the next link) no longer match."""
    log = fill(tmp_path / "a.db", alice, bob)
    con = raw(tmp_path / "a.db")
    r = row(con, 6)
    body = r[6].replace(b'"model":"pk-oral"', b'"model":"pk-ivvv"')
    h = hashlib.sha256(bytes.fromhex(r[7]) + body).hexdigest()
    con.execute("UPDATE entries SET body=?, entry_hash=? WHERE seq=6", (body, h))
    rep = log.verify(keys(alice, bob))
    kinds = [(p.kind, p.seq) for p in rep.problems if p.kind != "schema"]
    assert kinds == [("edited", 6)], str(rep)
    assert "signature is invalid" in str(rep)


def test_edited_column(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob)
    raw(tmp_path / "a.db").execute("UPDATE entries SET actor='dr.alice' WHERE seq=2")
    rep = log.verify(keys(alice, bob))
    assert [(p.kind, p.seq) for p in rep.problems if p.kind != "schema"] == [("edited", 2)]


def test_deleted_entry(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob)
    raw(tmp_path / "a.db").execute("DELETE FROM entries WHERE seq=5")
    rep = log.verify(keys(alice, bob))
    assert [(p.kind, p.seq) for p in rep.problems if p.kind != "schema"] == [("deleted", 5)]
    assert "entry 5 was deleted" in str(rep)


def test_deleted_and_renumbered(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob)
    con = raw(tmp_path / "a.db")
    con.execute("DELETE FROM entries WHERE seq=5")
    for s in range(6, 11):
        con.execute("UPDATE entries SET seq=? WHERE seq=?", (s - 1, s))
    rep = log.verify(keys(alice, bob))
    assert [(p.kind, p.seq) for p in rep.problems if p.kind != "schema"] == [("deleted", 5)]


def test_reordered_entries(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob)
    con = raw(tmp_path / "a.db")
    con.execute("UPDATE entries SET seq=100 WHERE seq=3")
    con.execute("UPDATE entries SET seq=3 WHERE seq=4")
    con.execute("UPDATE entries SET seq=4 WHERE seq=100")
    rep = log.verify(keys(alice, bob))
    probs = [p for p in rep.problems if p.kind != "schema"]
    assert [(p.kind, p.seq) for p in probs] == [("reordered", 3)]
    assert "entries stored out of order: 3, 4" in str(rep)


def test_inserted_forged_entry(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob)
    mallory = Identity("dr.alice", "clinician", Identity.generate("m", "admin").signing_key)
    # build a well-formed entry signed by mallory's own key, insert it at position 4
    other = AuditLog(tmp_path / "m.db")
    for _ in range(3):
        other.append(mallory, "result.decrypt", twin_id="twin-0099")
    m = sqlite3.connect(tmp_path / "m.db").execute("SELECT * FROM entries WHERE seq=3").fetchone()
    con = raw(tmp_path / "a.db")
    for s in range(10, 3, -1):
        con.execute("UPDATE entries SET seq=? WHERE seq=?", (s + 1, s))
    con.execute("INSERT INTO entries VALUES (4,?,?,?,?,?,?,?,?,?,?)", m[1:])
    rep = log.verify(keys(alice, bob))
    probs = [p for p in rep.problems if p.kind != "schema"]
    assert [(p.kind, p.seq) for p in probs] == [("inserted", 3)], str(rep)
    assert "position 4" in str(rep) and "not trusted" in str(rep)


def test_inserted_at_end_and_replayed(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob)
    con = raw(tmp_path / "a.db")
    r = row(con, 10)
    body = r[6].replace(b'"seq":10', b'"seq":11')
    h = hashlib.sha256(bytes.fromhex(r[8]) + body).hexdigest()
    con.execute("INSERT INTO entries VALUES (11,?,?,?,?,?,?,?,?,?,?)",
                (r[1], r[2], r[3], r[4], r[5], body, r[8], h, r[9], r[10]))
    con.execute("INSERT INTO entries SELECT 12, ts, actor, role, action, breakglass, body, prev_hash, "
                "entry_hash, key_fp, signature FROM entries WHERE seq=2")
    rep = log.verify(keys(alice, bob))
    probs = [(p.kind, p.seq) for p in rep.problems if p.kind != "schema"]
    assert probs == [("inserted", 2), ("inserted", 11)], str(rep)
    assert "replayed" in str(rep)


def test_truncated_against_checkpoint(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob, 12, checkpoint_every=5)
    assert [c.seq for c in log.checkpoints()] == [5, 10]
    log.checkpoint(alice)
    assert log.verify(keys(alice, bob)).ok
    raw(tmp_path / "a.db").execute("DELETE FROM entries WHERE seq >= 9")
    rep = log.verify(keys(alice, bob))
    probs = [(p.kind, p.seq) for p in rep.problems if p.kind != "schema"]
    assert probs == [("truncated", 9)], str(rep)
    assert "entries 9..12 are missing" in str(rep) and "(4 entries" in str(rep)


def test_truncated_against_external_anchor(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob, 8)
    anchor = Checkpoint.from_json(log.checkpoint(bob).to_json())   # kept elsewhere
    head = log.head()
    con = raw(tmp_path / "a.db")
    con.execute("DELETE FROM entries WHERE seq >= 7")
    con.execute("DELETE FROM checkpoints")
    # without the anchor a clean truncation (entries and checkpoints) looks like a shorter log
    assert [p.kind for p in log.verify(keys(alice, bob)).problems] == ["schema"]
    for a in (anchor, head):
        rep = log.verify(keys(alice, bob), anchor=a)
        assert [(p.kind, p.seq) for p in rep.problems if p.kind != "schema"] == [("truncated", 7)]


def test_forged_checkpoint_and_anchor(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob, 4)
    cp = log.checkpoint(alice)
    raw(tmp_path / "a.db").execute("UPDATE checkpoints SET seq=40")
    rep = log.verify(keys(alice, bob))
    assert [(p.kind, p.seq) for p in rep.problems if p.kind != "schema"] == [("checkpoint", 40)]
    fake = Checkpoint(**{**cp.__dict__, "head_hash": "1" * 64})
    rep = log.verify(keys(alice, bob), anchor=fake)
    assert "checkpoint" in rep.kinds()
    rep = log.verify(keys(alice, bob), anchor=(4, "2" * 64))
    assert ("forked", 4) in [(p.kind, p.seq) for p in rep.problems]


def test_missing_triggers_reported(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob, 2)
    raw(tmp_path / "a.db")
    rep = log.verify(keys(alice, bob))
    assert [p.kind for p in rep.problems] == ["schema"]
    with pytest.raises(TamperedError, match="triggers removed"):
        log.verify_or_raise(keys(alice, bob))


def test_untrusted_keys(tmp_path, alice, bob):
    log = fill(tmp_path / "a.db", alice, bob, 4)
    rep = log.verify(keys(alice))   # bob's key unknown to this verifier
    assert not rep.ok and all("not trusted for 'bob'" in p.message for p in rep.problems)


def test_not_an_audit_db(tmp_path):
    p = tmp_path / "x.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(TamperedError, match="x.db"):
        AuditLog(p)


def test_breakglass_identity_flagged(tmp_path, alice):
    log = AuditLog(tmp_path / "a.db")
    bg = Identity(alice.name, alice.role, alice.signing_key, breakglass=True)
    log.append(alice, "result.decrypt", twin_id="twin-1")
    log.append(bg, "result.decrypt", twin_id="twin-2")
    rep = log.verify(keys(alice))
    assert rep.ok and rep.flagged == [2]
    assert [e.seq for e in log.entries(flagged=True)] == [2]


@pytest.mark.parametrize("fields", [
    {"weight_kg": 72},                                   # not a whitelisted field
    {"details": {"weight": 72.5}},                       # float outside the metric whitelist
    {"details": {"age": 71}},                            # integer under a non-count key
    {"details": {"note": "creatinine 1.3"}},             # measurement in a string
    {"twin_id": "1950-03-02"},                           # a date
    {"twin_id": "John Smith"},                           # not an id
    {"reason": "emergency, contact jane.doe@example.org"},
    {"reason": "INR 4.5 on 02/03/2026"},
    {"scenario_digest": "abc"},                          # not a digest
    {"n_patients": -1},
    {"n_patients": True},
    {"details": {"duration_s": float("nan")}},
    {"details": {"nested": {"a": 1}}},
    {"details": {"Bad-Key": 1}},
    {"model_version": "72.5 kg"},
])
def test_guard_refuses_patient_like_values(tmp_path, alice, fields):
    log = AuditLog(tmp_path / "a.db")
    with pytest.raises(ValidationError):
        log.append(alice, "simulation.run", **fields)
    assert log.entries() == []


def test_guard_allows_metrics_and_vocabulary(tmp_path, alice):
    log = AuditLog(tmp_path / "a.db")
    e = log.append(alice, "result.decrypt", twin_ids=["t-1", "t-2"], ciphertext_digests=[DIG],
                   model_version="2.1", details={"duration_s": 1.25, "throughput_per_s": 3.5e4,
                                                 "n_values": 30, "depth": 12, "mode": "noise-flooding"})
    assert e.details["duration_s"] == 1.25
    for a in ("key.create", "patient.import", "twin.encrypt", "export.write", "user.create",
              "breakglass.start"):
        log.append(alice, a)
    for bad in ("key.delete", "hack", "user.", "simulation.run; DROP"):
        with pytest.raises(ValidationError, match="unknown audit action"):
            log.append(alice, bad)
    assert log.verify(keys(alice)).ok


def test_closed_session_cannot_append(tmp_path, alice):
    from datetime import timedelta

    from medtwin.custody._util import utc_now
    from medtwin.errors import PermissionDenied

    class FakeSession:
        identity = alice
        closed = False
        expires = utc_now() + timedelta(hours=1)
    log = AuditLog(tmp_path / "a.db")
    s = FakeSession()
    log.append(s, "twin.encrypt")
    s.closed = True
    with pytest.raises(PermissionDenied, match="closed"):
        log.append(s, "twin.encrypt")
    s.closed, s.expires = False, utc_now() - timedelta(seconds=1)
    with pytest.raises(PermissionDenied, match="expired"):
        log.append(s, "twin.encrypt")
    assert len(log.entries()) == 1


def test_scan_for_values(tmp_path, alice):
    log = AuditLog(tmp_path / "a.db")
    log.append(alice, "simulation.run", twin_ids=["twin-0001", "twin-0002"], model="pk-oral",
               n_patients=2, details={"duration_s": 1.75})
    covariates = [72.5, 1.3, 181.0, 65, "Smith", "1961-04-02"]
    assert log.scan_for_values(covariates) == []
    # the scanner does find what it looks for
    assert log.scan_for_values([1.75]) == [(1, "number 1.75")]
    assert log.scan_for_values([2]) == [(1, "number 2")]
    assert log.scan_for_values(["TWIN-0002"]) == [(1, "text 'twin-0002'")]


def test_scan_for_values_ignores_the_logs_own_timestamps(tmp_path, alice, monkeypatch):
    """A creatinine of 0.9 is no leak because an entry was written at 10:01:10.912345 (CI saw it)."""
    from datetime import datetime, timezone

    import medtwin.custody.audit as audit_mod

    at = datetime(2026, 11, 28, 10, 1, 10, 912345, tzinfo=timezone.utc)
    monkeypatch.setattr(audit_mod, "utc_now", lambda: at)
    log = AuditLog(tmp_path / "a.db")
    log.append(alice, "simulation.run", twin_ids=["twin-0001"], n_patients=1)
    assert "10.912345" in log.entries()[0].ts
    assert log.scan_for_values([0.9, 0.91, 10.9]) == []
    # the same digits anywhere else are still found
    log.append(alice, "simulation.run", twin_ids=["twin-0001"], details={"duration_s": 10.9})
    assert (2, "number 10.9") in log.scan_for_values([10.9])


def test_opening_a_log_with_dropped_triggers_keeps_the_evidence_and_refuses_appends(tmp_path):
    import sqlite3

    from medtwin.custody.audit import AuditLog
    from medtwin.custody.identity import Identity
    from medtwin.errors import TamperedError

    who = Identity.generate("ann", "clinician")
    log = AuditLog(tmp_path / "a.db")
    log.append(who, "key.unlock", key_tag="ab" * 16, outcome="ok")
    con = sqlite3.connect(tmp_path / "a.db")
    con.execute("DROP TRIGGER entries_no_update")
    con.commit()
    con.close()
    before = (tmp_path / "a.db").read_bytes()
    reopened = AuditLog(tmp_path / "a.db")  # must not silently re-create the trigger
    assert (tmp_path / "a.db").read_bytes() == before
    rep = reopened.verify({"ann": who.public_key})
    assert not rep.ok and "schema" in rep.kinds()
    with pytest.raises(TamperedError, match="triggers"):
        reopened.append(who, "key.unlock", key_tag="ab" * 16, outcome="ok")
