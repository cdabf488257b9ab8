from __future__ import annotations

import json
import hashlib
import struct
import time

import pytest

from medtwin.custody import keystore as ks
from medtwin.custody.kdf import TEST_KDF, KdfParams, WeakParametersError
from medtwin.custody.keystore import (WeakPassphraseError, change_passphrase, create_keystore,
                                      export_public, load_public_bundle, passphrase_strength,
                                      read_public, unlock_keystore)
from medtwin.errors import (KeyMismatchError, KeystoreError, TamperedError, ValidationError,
                            WrongPassphraseError)
from medtwin.he.keys import KeyMaterial

from custody_helpers import fake_material, snapshot, tagged

PW = "violet tundra kettle 93 marching"
PW2 = "seventeen quiet lanterns over Oslo"


def make(tmp_path, material, name="ks"):
    p = tmp_path / name
    create_keystore(p, PW, material, kdf=TEST_KDF, allow_weak=True)
    return p


def rewrite_header(file, edit):
    """Edit the header JSON and re-seal the SHA-256 trailer (what a deliberate attacker would do)."""
    data = file.read_bytes()
    hlen = struct.unpack_from(">I", data, 16)[0]
    header = json.loads(data[20:20 + hlen])
    edit(header)
    from medtwin.custody._util import canonical
    hb = canonical(header)
    body = ks.MAGIC + struct.pack(">I", len(hb)) + hb + data[20 + hlen:-32]
    file.write_bytes(body + hashlib.sha256(body).digest())


def test_round_trip(tmp_path, material):
    p = make(tmp_path, material)
    got = unlock_keystore(p, PW)
    assert got == material
    assert read_public(p) == material.public
    assert "secret_key=<" in repr(got)


def test_file_modes_and_layout(tmp_path, material):
    p = make(tmp_path, material)
    assert sorted(x.name for x in (p / "public").iterdir()) == sorted(f"{n}.bin" for n in ks.PARTS)
    assert (p / ks.SECRET_FILE).stat().st_mode & 0o077 == 0
    # the secret key is not stored in the clear anywhere
    for f in p.rglob("*"):
        if f.is_file():
            assert material.secret_key[:64] not in f.read_bytes()


def test_refuses_overwrite(tmp_path, material):
    p = make(tmp_path, material)
    before = snapshot(p)
    with pytest.raises(KeystoreError, match="exists already"):
        create_keystore(p, PW, fake_material(), kdf=TEST_KDF, allow_weak=True)
    assert snapshot(p) == before
    other = tmp_path / "plainfile"
    other.write_bytes(b"keep me")
    with pytest.raises(KeystoreError, match="exists already"):
        create_keystore(other, PW, material, kdf=TEST_KDF, allow_weak=True)
    assert other.read_bytes() == b"keep me"


def test_wrong_passphrase(tmp_path, material):
    p = make(tmp_path, material)
    before = snapshot(p)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        unlock_keystore(p, "not the passphrase at all")
    with pytest.raises(WrongPassphraseError):
        change_passphrase(p, "not the passphrase at all", PW2, allow_weak=True)
    assert snapshot(p) == before


def test_missing_keystore(tmp_path):
    with pytest.raises(KeystoreError, match="no keystore"):
        unlock_keystore(tmp_path / "nope", PW)
    with pytest.raises(KeystoreError, match="no keystore"):
        read_public(tmp_path / "nope")


def _flip(file, offset):
    b = bytearray(file.read_bytes())
    b[offset] ^= 0x01
    file.write_bytes(bytes(b))


@pytest.mark.parametrize("where", ["magic", "header", "ciphertext", "trailer"])
def test_byte_flip_detected(tmp_path, material, where):
    p = make(tmp_path, material)
    f = p / ks.SECRET_FILE
    data = f.read_bytes()
    hlen = struct.unpack_from(">I", data, 16)[0]
    off = {"magic": 3, "header": 20 + hlen // 2, "ciphertext": 20 + hlen + 8 + 5,
           "trailer": len(data) - 3}[where]
    _flip(f, off)
    before = snapshot(p)
    for call in (lambda: unlock_keystore(p, PW), lambda: read_public(p)):
        with pytest.raises(TamperedError, match="keystore.mtks"):
            call()
    with pytest.raises(TamperedError):
        change_passphrase(p, PW, PW2, allow_weak=True)
    assert snapshot(p) == before


def test_ciphertext_edit_with_resealed_trailer(tmp_path, material):
    """An attacker who recomputes the SHA-256 trailer is still caught by AES-GCM."""
    p = make(tmp_path, material)
    f = p / ks.SECRET_FILE
    data = bytearray(f.read_bytes())
    data[-40] ^= 0x80  # inside the GCM tag / ciphertext
    body = bytes(data[:-32])
    f.write_bytes(body + hashlib.sha256(body).digest())
    read_public(p)  # the public part is still consistent
    with pytest.raises(TamperedError, match="failed authentication"):
        unlock_keystore(p, PW)


def test_header_edit_with_resealed_trailer_fails_gcm(tmp_path, material):
    p = make(tmp_path, material)
    rewrite_header(p / ks.SECRET_FILE, lambda h: h.update(preset="standard-128"))
    with pytest.raises(TamperedError, match="failed authentication"):
        unlock_keystore(p, PW)


def test_kdf_downgrade_in_header_is_refused(tmp_path, material):
    p = make(tmp_path, material)
    rewrite_header(p / ks.SECRET_FILE, lambda h: h["kdf"].update(memory_cost=32))
    with pytest.raises((WrongPassphraseError, TamperedError)):
        unlock_keystore(p, PW)


def test_header_dos_parameters_refused(tmp_path, material):
    p = make(tmp_path, material)
    rewrite_header(p / ks.SECRET_FILE, lambda h: h["kdf"].update(memory_cost=1 << 30))
    with pytest.raises(TamperedError, match="malformed header"):
        unlock_keystore(p, PW)


@pytest.mark.parametrize("cut", [1, 33, 100, 10_000])
def test_truncation(tmp_path, material, cut):
    p = make(tmp_path, material)
    f = p / ks.SECRET_FILE
    data = f.read_bytes()
    f.write_bytes(data[:max(0, len(data) - cut)])
    with pytest.raises(TamperedError, match="keystore.mtks"):
        unlock_keystore(p, PW)


def test_manifest_edit(tmp_path, material):
    """Changing a digest in the manifest (and resealing) fails: unlock by GCM, read_public by digests."""
    p = make(tmp_path, material)
    new = tagged(material.public.key_tag, 901)
    (p / "public" / "eval_mult_key.bin").write_bytes(new)

    def edit(h):
        h["public"]["eval_mult_key"].update(sha256=hashlib.sha256(new).hexdigest(), size=len(new))
    rewrite_header(p / ks.SECRET_FILE, edit)
    with pytest.raises(TamperedError, match="failed authentication"):
        unlock_keystore(p, PW)
    with pytest.raises(TamperedError, match="public material digest"):
        read_public(p)


@pytest.mark.parametrize("part", ks.PARTS)
def test_public_file_edit(tmp_path, material, part):
    p = make(tmp_path, material)
    f = p / "public" / f"{part}.bin"
    _flip(f, 10)
    for call in (lambda: unlock_keystore(p, PW), lambda: read_public(p),
                 lambda: export_public(p, tmp_path / "out.mtpub")):
        with pytest.raises(TamperedError, match=f"{part}.bin"):
            call()
    assert not (tmp_path / "out.mtpub").exists()


def test_public_file_missing(tmp_path, material):
    p = make(tmp_path, material)
    (p / "public" / "context.bin").unlink()
    with pytest.raises(TamperedError, match="context.bin is missing"):
        read_public(p)


def test_public_key_from_another_key_pair(tmp_path, material):
    p = make(tmp_path, material)
    q = make(tmp_path, fake_material(), "other")
    (p / "public" / "public_key.bin").write_bytes((q / "public" / "public_key.bin").read_bytes())
    with pytest.raises(KeyMismatchError, match="public_key.bin belongs to another key pair"):
        unlock_keystore(p, PW)
    with pytest.raises(KeyMismatchError):
        read_public(p)


def test_secret_from_another_key_pair_refused_at_create(tmp_path):
    m = fake_material(secret_tag="0" * 32)
    with pytest.raises(KeyMismatchError, match="secret key belongs to another key pair"):
        create_keystore(tmp_path / "ks", PW, m, kdf=TEST_KDF, allow_weak=True)
    assert not (tmp_path / "ks").exists()
    assert list(tmp_path.iterdir()) == []


def test_secret_swapped_from_another_keystore(tmp_path, material):
    """Another keystore's file (same passphrase) dropped in: the key tags disagree."""
    p = make(tmp_path, material)
    q = make(tmp_path, fake_material(), "other")
    (p / ks.SECRET_FILE).write_bytes((q / ks.SECRET_FILE).read_bytes())
    with pytest.raises((KeyMismatchError, TamperedError)) as ei:
        unlock_keystore(p, PW)
    assert "another key pair" in str(ei.value) or "public_key.bin" in str(ei.value)


def test_public_key_of_another_pair_in_material(tmp_path, material):
    bad = KeyMaterial(public=fake_material(tag=material.public.key_tag).public.__class__(
        **{**material.public.__dict__, "public_key": tagged("1" * 32)}), secret_key=material.secret_key)
    with pytest.raises(KeyMismatchError, match="public_key"):
        create_keystore(tmp_path / "ks", PW, bad, kdf=TEST_KDF, allow_weak=True)


def test_secret_without_tag_refused(tmp_path, material):
    m = KeyMaterial(public=material.public, secret_key=b"\x01" * 100)
    with pytest.raises(ValidationError, match="no OpenFHE key tag"):
        create_keystore(tmp_path / "ks", PW, m, kdf=TEST_KDF, allow_weak=True)


def test_rekey(tmp_path, material):
    p = make(tmp_path, material)
    public_before = {k: v for k, v in snapshot(p).items() if "/public/" in k}
    old_file = (p / ks.SECRET_FILE).read_bytes()
    change_passphrase(p, PW, PW2, allow_weak=True)
    assert (p / ks.SECRET_FILE).read_bytes() != old_file
    assert unlock_keystore(p, PW2) == material
    with pytest.raises(WrongPassphraseError):
        unlock_keystore(p, PW)
    assert {k: v for k, v in snapshot(p).items() if "/public/" in k} == public_before
    assert not [x for x in p.iterdir() if x.name.endswith(".tmp")]


def test_rekey_failure_leaves_old_keystore(tmp_path, material, monkeypatch):
    p = make(tmp_path, material)
    before = snapshot(p)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ks.os, "replace", boom)
    with pytest.raises(KeystoreError, match="old keystore is intact"):
        change_passphrase(p, PW, PW2, allow_weak=True)
    monkeypatch.undo()
    assert snapshot(p) == before
    assert unlock_keystore(p, PW) == material
    with pytest.raises(WeakPassphraseError):
        change_passphrase(p, PW, "password1", allow_weak=True)
    with pytest.raises(WeakParametersError):
        change_passphrase(p, PW, PW2)  # stored test parameters are below the floor
    assert snapshot(p) == before


def test_export_public(tmp_path, material):
    p = make(tmp_path, material)
    out = export_public(p, tmp_path / "node.mtpub")
    blob = out.read_bytes()
    sk = material.secret_key
    tag_at = sk.index(material.public.key_tag.encode())
    windows = [sk[i:i + 24] for i in range(0, len(sk) - 24, 8) if not (tag_at - 24 < i < tag_at + 32)]
    assert len(windows) > 40
    for w in windows:  # no piece of the secret key (other than its public key tag) is in the bundle
        assert w not in blob
    assert (p / ks.SECRET_FILE).read_bytes()[-200:] not in blob
    pub = load_public_bundle(out, expected_digest=material.public.digest(),
                             expected_key_tag=material.public.key_tag)
    assert pub == material.public
    with pytest.raises(KeystoreError, match="exists already"):
        export_public(p, out)
    assert out.read_bytes() == blob
    d = tmp_path / "dir"
    d.mkdir()
    out2 = export_public(p, d, passphrase=PW)
    assert out2.parent == d and load_public_bundle(out2) == material.public
    with pytest.raises(WrongPassphraseError):
        export_public(p, tmp_path / "x.mtpub", passphrase="wrong wrong wrong wrong")
    assert not (tmp_path / "x.mtpub").exists()


def test_public_bundle_tamper(tmp_path, material):
    p = make(tmp_path, material)
    out = export_public(p, tmp_path / "node.mtpub")
    good = out.read_bytes()
    for off in (2, 30, len(good) // 2, len(good) - 40, len(good) - 1):
        b = bytearray(good)
        b[off] ^= 4
        out.write_bytes(bytes(b))
        with pytest.raises(TamperedError, match="node.mtpub"):
            load_public_bundle(out)
    out.write_bytes(good[:-100])
    with pytest.raises(TamperedError):
        load_public_bundle(out)
    out.write_bytes(good)
    with pytest.raises(KeyMismatchError):
        load_public_bundle(out, expected_key_tag="f" * 32)
    with pytest.raises(TamperedError, match="pinned"):
        load_public_bundle(out, expected_digest="0" * 64)


def test_weak_kdf_refused_without_flag(tmp_path, material):
    with pytest.raises(WeakParametersError, match="below the floor"):
        create_keystore(tmp_path / "ks", PW, material, kdf=TEST_KDF)
    with pytest.raises(ValidationError):
        create_keystore(tmp_path / "ks", PW, material, kdf=KdfParams(memory_cost=4, iterations=1),
                        allow_weak=True)
    assert not (tmp_path / "ks").exists()


def test_weak_passphrase_refused(tmp_path, material):
    for bad in ("password", "P@ssw0rd123!", "aaaaaaaaaaaa", "short", "abcdefgh12345678"):
        with pytest.raises(WeakPassphraseError, match="too weak"):
            create_keystore(tmp_path / "ks", bad, material, kdf=TEST_KDF, allow_weak=True)
    assert not (tmp_path / "ks").exists()
    create_keystore(tmp_path / "ks", "password", material, kdf=TEST_KDF, allow_weak=True, min_strength=0)
    assert unlock_keystore(tmp_path / "ks", "password") == material


def test_passphrase_strength_scores():
    assert passphrase_strength("password")[0] == 0
    assert passphrase_strength("Tr0ub4dor&3")[0] <= 3
    assert passphrase_strength("correct horse battery staple")[0] == 4
    assert passphrase_strength(PW)[0] >= 3
    assert passphrase_strength("qwertyuiop1234")[0] <= 1
    s, msg = passphrase_strength("ab")
    assert s == 0 and "short" in msg
    scores = [passphrase_strength(x)[0] for x in ("abcdefgh", "kq7Lm2pX", "kq7Lm2pX9$vR", "kq7Lm2pX9$vRw#4TzQ1")]
    assert scores == sorted(scores) and scores[-1] == 4


def test_default_kdf_parameters(tmp_path, material):
    """The one test with the real default cost: 64 MiB, 3 passes, 1 lane."""
    assert KdfParams() == KdfParams(memory_cost=65536, iterations=3, lanes=1)
    p = tmp_path / "ks"
    t = time.perf_counter()
    create_keystore(p, PW, material)
    created = time.perf_counter() - t
    h = json.loads((p / ks.SECRET_FILE).read_bytes()[20:20 + struct.unpack_from(
        ">I", (p / ks.SECRET_FILE).read_bytes(), 16)[0]])
    assert h["kdf"] == {"alg": "argon2id", "memory_cost": 65536, "iterations": 3, "lanes": 1,
                        "salt": h["kdf"]["salt"]}
    assert unlock_keystore(p, PW) == material
    print(f"default Argon2id create {created * 1e3:.0f} ms")



def test_audit_hooks(tmp_path, material):
    from medtwin.custody.audit import AuditLog
    from medtwin.custody.identity import Identity
    log = AuditLog(tmp_path / "audit.db")
    me = Identity.generate("dr.a", "clinician")
    p = tmp_path / "ks"
    create_keystore(p, PW, material, kdf=TEST_KDF, allow_weak=True, log=log, actor=me)
    unlock_keystore(p, PW, log=log, actor=me)
    with pytest.raises(WrongPassphraseError):
        unlock_keystore(p, "nope nope nope nope", log=log, actor=me)
    change_passphrase(p, PW, PW2, allow_weak=True, log=log, actor=me)
    export_public(p, tmp_path / "n.mtpub", log=log, actor=me)
    acts = [(e.action, e.objects.get("key_tag"), e.objects.get("outcome")) for e in log.entries()]
    tag = material.public.key_tag
    assert acts == [("key.create", tag, None), ("key.unlock", tag, "ok"),
                    ("key.unlock", None, "WrongPassphraseError"), ("key.rekey", tag, None),
                    ("key.export_public", tag, None)]
    assert log.verify({"dr.a": me.public_key}).ok
