from __future__ import annotations

import base64
import json

import pytest

from medtwin.custody.audit import AuditLog
from medtwin.custody.identity import Identity
from medtwin.custody.signing import sign_file, verify_file
from medtwin.errors import TamperedError, ValidationError


@pytest.fixture
def alice():
    return Identity.generate("dr.alice", "clinician")


@pytest.fixture
def export(tmp_path):
    p = tmp_path / "summary.csv"
    p.write_text("scenario,auc_mean\nA,1\nB,2\n")
    return p


def test_round_trip(export, alice, tmp_path):
    log = AuditLog(tmp_path / "a.db")
    sig = sign_file(export, alice, log=log)
    assert sig.name == "summary.csv.sig.json"
    d = json.loads(sig.read_text())
    assert {"signer", "role", "key_fp", "file_sha256", "signed_at", "signature"} <= set(d)
    info = verify_file(export, sig, {"dr.alice": alice.public_key})
    assert (info.signer, info.role, info.key_fp, info.breakglass) == ("dr.alice", "clinician",
                                                                       alice.fingerprint, False)
    assert verify_file(export, None, {"dr.alice": [alice.public_key]}) == info
    e = log.entries()[0]
    assert e.action == "export.write" and e.objects == {"file_sha256": info.file_sha256, "format": "csv"}


def test_edited_file(export, alice):
    sig = sign_file(export, alice)
    export.write_text("scenario,auc_mean\nA,1\nB,3\n")
    with pytest.raises(TamperedError, match="altered after signing"):
        verify_file(export, sig, {"dr.alice": alice.public_key})
    export.write_text("")
    with pytest.raises(TamperedError):
        verify_file(export, sig, {"dr.alice": alice.public_key})


@pytest.mark.parametrize("field,value", [("file_sha256", "0" * 64), ("signer", "dr.bob"),
                                         ("role", "admin"), ("signed_at", "2020-01-01T00:00:00.000000Z"),
                                         ("size", 1), ("breakglass", True)])
def test_edited_signature_fields(export, alice, field, value):
    sig = sign_file(export, alice)
    d = json.loads(sig.read_text())
    d[field] = value
    sig.write_text(json.dumps(d))
    trusted = {"dr.alice": alice.public_key, "dr.bob": alice.public_key}
    with pytest.raises(TamperedError):
        verify_file(export, sig, trusted)


def test_forged_by_untrusted_key(export, alice):
    mallory = Identity("dr.alice", "clinician", Identity.generate("m", "admin").signing_key)
    sig = sign_file(export, mallory)
    with pytest.raises(TamperedError, match="not among the trusted keys"):
        verify_file(export, sig, {"dr.alice": alice.public_key})
    # pretending to be alice's key fingerprint does not help: the signature fails
    d = json.loads(sig.read_text())
    d["key_fp"] = alice.fingerprint
    d["public_key"] = base64.b64encode(alice.public_key.public_bytes_raw()).decode()
    sig.write_text(json.dumps(d))
    with pytest.raises(TamperedError, match="signature is invalid"):
        verify_file(export, sig, {"dr.alice": alice.public_key})


def test_unknown_signer_and_bad_files(export, alice, tmp_path):
    sig = sign_file(export, alice)
    with pytest.raises(TamperedError, match="not among the trusted keys"):
        verify_file(export, sig, {})
    with pytest.raises(TamperedError, match="missing"):
        verify_file(export, tmp_path / "nope.sig.json", {"dr.alice": alice.public_key})
    for junk in (b"", b"[]", b"{}", b"\xff\xfe", b'{"format":"medtwin-signature","version":1}'):
        sig.write_bytes(junk)
        with pytest.raises(TamperedError, match="not a valid signature file"):
            verify_file(export, sig, {"dr.alice": alice.public_key})


def test_signature_of_another_file(export, alice, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("x\n")
    sig = sign_file(other, alice)
    with pytest.raises(TamperedError):
        verify_file(export, sig, {"dr.alice": alice.public_key})


def test_no_overwrite(export, alice):
    sig = sign_file(export, alice)
    before = sig.read_bytes()
    with pytest.raises(ValidationError, match="exists already"):
        sign_file(export, alice)
    assert sig.read_bytes() == before
    sign_file(export, alice, overwrite=True)
    with pytest.raises(ValidationError, match="not a file"):
        sign_file(export.parent / "missing.csv", alice)
