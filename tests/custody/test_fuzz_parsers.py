"""Property tests: mutated keystore files, public bundles, signature files and audit rows give a
clear medtwin error (never a crash or a wrong success) and change nothing stored."""
from __future__ import annotations

import json
import sqlite3

import pytest
from custody_helpers import fake_material, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtwin.custody import keystore as ks
from medtwin.custody.audit import AuditLog
from medtwin.custody.identity import Identity
from medtwin.custody.kdf import TEST_KDF
from medtwin.custody.signing import sign_file, verify_file
from medtwin.errors import MedTwinError

PW = "violet tundra kettle 93 marching"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def mutate(data: bytes, op: str, pos: int, val: int, n: int) -> bytes:
    pos = pos % max(1, len(data))
    if op == "flip":
        b = bytearray(data)
        b[pos] ^= (val % 255) + 1
        return bytes(b)
    if op == "truncate":
        return data[:pos]
    if op == "insert":
        return data[:pos] + bytes([val % 256]) * (n % 64 + 1) + data[pos:]
    return data[:pos] + data[pos + n % 64 + 1:]   # delete


MUT = dict(op=st.sampled_from(["flip", "truncate", "insert", "delete"]), pos=st.integers(0, 1 << 20),
           val=st.integers(0, 1 << 16), n=st.integers(0, 1 << 10))


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    m = fake_material()
    ks.create_keystore(d / "ks", PW, m, kdf=TEST_KDF, allow_weak=True)
    ks.export_public(d / "ks", d / "pub.mtpub")
    return d, m


@SETTINGS
@given(**MUT)
def test_mutated_keystore_file(store_dir, op, pos, val, n):
    d, m = store_dir
    f = d / "ks" / ks.SECRET_FILE
    good = f.read_bytes()
    bad = mutate(good, op, pos, val, n)
    try:
        f.write_bytes(bad)
        before = snapshot(d / "ks")
        for call in (lambda: ks.unlock_keystore(d / "ks", PW), lambda: ks.read_public(d / "ks")):
            try:
                got = call()
            except MedTwinError:
                continue
            assert bad == good or got in (m, m.public)   # success only on unchanged content
        assert snapshot(d / "ks") == before
    finally:
        f.write_bytes(good)


@SETTINGS
@given(**MUT)
def test_mutated_public_bundle(store_dir, op, pos, val, n):
    d, m = store_dir
    good = (d / "pub.mtpub").read_bytes()
    bad = mutate(good, op, pos, val, n)
    f = d / "mutated.mtpub"
    f.write_bytes(bad)
    try:
        assert ks.load_public_bundle(f) == m.public and bad == good
    except MedTwinError:
        assert bad != good


@SETTINGS
@given(st.dictionaries(st.sampled_from(["format", "version", "file", "size", "file_sha256", "signer",
                                        "role", "key_fp", "public_key", "signed_at", "signature"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=20), st.booleans(),
                                 st.lists(st.integers(), max_size=3))))
def test_garbage_signature_fields(tmp_path_factory, fields):
    d = tmp_path_factory.mktemp("sig")
    me = Identity.generate("dr.a", "clinician")
    f = d / "x.csv"
    f.write_text("a\n")
    sig = sign_file(f, me)
    doc = json.loads(sig.read_text())
    doc.update(fields)
    sig.write_text(json.dumps(doc))
    try:
        verify_file(f, sig, {"dr.a": me.public_key})
        assert all(json.loads(sig.read_text())[k] == v for k, v in fields.items())
    except MedTwinError:
        pass


@SETTINGS
@given(seq=st.integers(1, 6), col=st.sampled_from(["body", "prev_hash", "entry_hash", "signature", "key_fp"]),
       **MUT)
def test_mutated_audit_rows(tmp_path_factory, seq, col, op, pos, val, n):
    d = tmp_path_factory.mktemp("audit")
    me = Identity.generate("dr.a", "clinician")
    log = AuditLog(d / "a.db")
    for i in range(6):
        log.append(me, "twin.encrypt", twin_id=f"t-{i}", n_twins=i)
    con = sqlite3.connect(d / "a.db", isolation_level=None)
    con.execute("DROP TRIGGER entries_no_update")
    old = con.execute(f"SELECT {col} FROM entries WHERE seq=?", (seq,)).fetchone()[0]
    raw = old.encode() if isinstance(old, str) else bytes(old)
    new = mutate(raw, op, pos, val, n)
    con.execute(f"UPDATE entries SET {col}=? WHERE seq=?",
                (new.decode("latin-1") if isinstance(old, str) else new, seq))
    rep = log.verify({"dr.a": me.public_key})
    changed = new != raw
    if not changed:
        assert rep.kinds() == {"schema"}   # only the dropped trigger
    else:
        assert any(p.seq == seq for p in rep.problems), str(rep)


@SETTINGS
@given(col=st.sampled_from(["seq", "ts", "actor", "body", "prev_hash", "entry_hash", "key_fp", "signature"]),
       value=st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.text(max_size=30), st.binary(max_size=30),
                       st.floats(allow_nan=False)))
def test_audit_columns_of_any_type(tmp_path_factory, col, value):
    """sqlite is dynamically typed: whatever an attacker stores, verify reports and never crashes."""
    d = tmp_path_factory.mktemp("audit")
    me = Identity.generate("dr.a", "clinician")
    log = AuditLog(d / "a.db", checkpoint_every=2)
    for i in range(4):
        log.append(me, "twin.encrypt", twin_id=f"t-{i}")
    anchor = log.head()
    con = sqlite3.connect(d / "a.db", isolation_level=None)
    con.execute("DROP TRIGGER entries_no_update")
    con.execute("DROP TRIGGER checkpoints_no_update")
    if col == "seq" and value is None:
        value = 99
    try:
        con.execute(f"UPDATE entries SET {col}=? WHERE seq=3", (value,))
    except sqlite3.IntegrityError:
        return  # NOT NULL or a duplicate primary key: nothing changed
    con.execute("UPDATE checkpoints SET signature=? WHERE seq=2", (value,))
    rep = log.verify({"dr.a": me.public_key}, anchor=anchor)
    assert not rep.ok
    assert rep.kinds() - {"schema"}, str(rep)
    for read in (log.entries, log.checkpoints):
        try:
            read()
        except MedTwinError:
            pass


@SETTINGS
@given(col=st.sampled_from(["role", "pw", "sk_nonce", "sk_ct", "key_fp", "failed", "locked_until", "disabled"]),
       value=st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=30), st.binary(max_size=30)))
def test_user_records_of_any_type(tmp_path_factory, col, value):
    from medtwin.custody.users import UserStore, authenticate

    d = tmp_path_factory.mktemp("users")
    s = UserStore(d / "u.db", kdf=TEST_KDF, allow_weak=True)
    s.bootstrap_admin("root", PW)
    con = sqlite3.connect(d / "u.db", isolation_level=None)
    try:
        con.execute(f"UPDATE users SET {col}=?", (value,))
    except sqlite3.IntegrityError:
        return
    try:
        authenticate(s, "root", PW)
    except MedTwinError:
        pass
