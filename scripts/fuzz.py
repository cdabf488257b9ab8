"""Bounded fuzzing campaign over every parser that reads outside input (issue 6).

Targets (each gets ``--examples N`` inputs or ``--seconds S`` of generation, whichever ends first):

=============  ================================================================================
fhir           ``medtwin.fhir.load_bundle`` on a FHIR R4 bundle file
csv            ``medtwin.twin.csv_io.load_csv`` on a CSV file
keystore       ``unlock_keystore`` and ``read_public`` on a keystore directory
public_bundle  ``load_public_bundle`` on a public bundle file
ct_bundle      ``medtwin.twin.store.read_bundle`` on a ciphertext bundle directory
ciphertext     ``HEContext.deserialize`` (then ``decrypt`` when it is accepted) on OpenFHE bytes
signature      ``verify_file`` on an exported file and its detached signature
audit          ``verify``, ``entries``, ``checkpoints`` on an audit database opened read-only
               (:class:`medtwin.cli_security.ReadOnlyAuditLog`, what ``medtwin audit verify`` uses)
native_bridge  the native engine's own OpenFHE parsers: ``bridge.load_engine`` on a relinearisation
               key and a rotation-key map, ``bridge.import_ciphertext`` on a ciphertext, then a
               product, a rotation and an export of what was accepted
native_program ``Engine.run_program`` on arbitrary instruction arrays, constants (NaN and
               infinities included), plaintexts and input batches over real ciphertexts (two
               elements at two levels, and three elements): the executor's static checks and
               every operation's own argument checks
=============  ================================================================================

Extra targets (``--targets``): ``ciphertext_guarded`` runs the ``ciphertext`` inputs behind the
*proposed* structural validator :func:`guard_ciphertext` and the proposed error mapping of
:func:`decrypt_guarded`, to show what they stop; ``selftest``
checks the harness itself (an abort, a hang, an undocumented exception, a changed input).

Inputs are drawn by hypothesis (generate phase only, no example database) from a valid seed of
each format: byte-level mutations (flip, truncate, insert, delete, overwrite, splice), raw random
bytes, and structure-aware mutations that keep the outer digests valid so that the inner checks
are reached (JSON fields of FHIR bundles, manifests and signature files replaced by arbitrary
JSON, with ``manifest_sha256`` recomputed; keystore and public-bundle headers edited with the
trailing SHA-256 recomputed; CSV cells replaced by random text; audit rows changed to values of
any sqlite type, deleted or swapped with the append-only triggers dropped).

Every input runs in a separate *worker process* (one per target, restarted after a crash), so
that a native crash (OpenFHE on corrupted bytes) or a hang is counted and the campaign goes on.
For each input the worker checks:

* no crash (the worker process died: a signal or abort), no hang (``--timeout`` per input),
* only documented exceptions: subclasses of :class:`medtwin.errors.MedTwinError`,
* nothing stored changed: SHA-256 of every file of the input before and after, and no file
  created or removed.

Usage::

    .venv/bin/python scripts/fuzz.py --examples 200            # 200 inputs per target
    .venv/bin/python scripts/fuzz.py --seconds 60 --targets ciphertext
    .venv/bin/python scripts/fuzz.py --examples 20 --json report.json --crash-dir crashes/

The native engine's parsers under AddressSanitizer and UBSan (the build of
``scripts/sanitize_tests.sh``)::

    MEDTWIN_CORE_OVERRIDE=$(ls build/sanitize/_core*.so) \
    LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    .venv/bin/python scripts/fuzz.py --targets native_bridge --seconds 300

Prints a table (target, inputs tried, accepted, refused with a documented error, failures,
crashes, hangs, seconds) and exits 1 when any failure, crash or hang was seen. Crash, hang and
failure inputs are written to ``--crash-dir`` (default: a temporary folder, printed) as files
that reproduce them (``--replay FILE``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import select
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

TARGETS = ("fhir", "csv", "keystore", "public_bundle", "ct_bundle", "ciphertext", "signature", "audit",
           "native_bridge", "native_program")
#: Not run by default: ``ciphertext`` behind the proposed validator, and the harness self-test.
EXTRA_TARGETS = ("ciphertext_guarded", "selftest")
PASSPHRASE = "violet tundra kettle 93 marching"

Files = dict  # relative path -> bytes


# =============================================================================== seeds (parent)
def make_seeds(work: Path) -> dict:
    """Build a valid input of every format in ``work``; returns per-target seed files and setup."""
    import numpy as np

    from medtwin.custody import keystore as ks
    from medtwin.custody.audit import AuditLog
    from medtwin.custody.identity import Identity, public_bytes
    from medtwin.custody.kdf import TEST_KDF
    from medtwin.custody.signing import sign_file
    from medtwin.he.keys import KeyMaterial, PublicMaterial
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import CKKSParams
    from medtwin.twin.store import Bundle, write_bundle

    data = Path(__file__).resolve().parents[1] / "medtwin" / "data"
    seeds: dict = {}

    # FHIR: the first patient of the bundled sample and that patient's resources
    doc = json.loads((data / "cohort_fhir_sample.json").read_text())
    first = doc["entry"][0]["fullUrl"]
    entries = [e for e in doc["entry"] if e.get("fullUrl") == first
               or (e.get("resource", {}).get("subject", {}).get("reference") == first)]
    seeds["fhir"] = {"bundle.json": json.dumps(dict(doc, entry=entries), indent=1).encode()}

    # CSV: header and five rows of the bundled synthetic cohort
    lines = (data / "cohort.csv").read_text().splitlines()[:6]
    seeds["csv"] = {"cohort.csv": ("\n".join(lines) + "\n").encode()}

    # keystore and public bundle with small stand-in key bytes (the keystore does not parse them)
    tag = os.urandom(16).hex()

    def tagged(n: int) -> bytes:
        return os.urandom(40) + (32).to_bytes(8, "little") + tag.encode() + os.urandom(n)

    pub = PublicMaterial(preset="test-insecure", context=os.urandom(200), public_key=tagged(100),
                         eval_mult_key=tagged(200), rotation_keys=tagged(150), rotation_indices=(1, 2),
                         key_tag=tag, params={"ring_dim": 1024, "depth": 2, "insecure": True})
    km = KeyMaterial(public=pub, secret_key=tagged(120))
    ks.create_keystore(work / "ks", PASSPHRASE, km, kdf=TEST_KDF, allow_weak=True)
    ks.export_public(work / "ks", work / "pub.mtpub")
    seeds["keystore"] = _read_tree(work / "ks")
    seeds["public_bundle"] = {"pub.mtpub": (work / "pub.mtpub").read_bytes()}

    # ciphertext bundle with stand-in blobs (the store does not parse them)
    write_bundle(work / "ctb", Bundle("encrypted-cohort", tag, {"twin_ids": ["tw-1", "tw-2"], "slots": 8},
                                      {"weight_kg": [os.urandom(64), os.urandom(64)], "age": [os.urandom(80)]}))
    seeds["ct_bundle"] = _read_tree(work / "ctb")

    # a real OpenFHE ciphertext under a small insecure ring (N = 2^10, depth 2)
    ctx, real = generate_keys(CKKSParams("fuzz-insecure", "HEStd_NotSet", depth=2, ring_dim=1 << 10,
                                         insecure=True), rotations=(1,))
    ct = ctx.encrypt(np.linspace(-1, 1, 16))
    seeds["ciphertext"] = {"ct.bin": ctx.serialize(ct)}
    (work / "material.pkl").write_bytes(pickle.dumps(real))
    # the native engine's inputs: the same context's evaluation keys and the ciphertext
    seeds["native_bridge"] = {"mult.key": real.public.eval_mult_key, "rot.keys": real.public.rotation_keys,
                              "ct.bin": seeds["ciphertext"]["ct.bin"]}

    # signed export
    me = Identity.generate("dr.a", "clinician")
    (work / "sig").mkdir()
    f = work / "sig" / "summary.csv"
    f.write_bytes(b"scenario,auc_median\nA,101.5\nB,98.25\n")
    sign_file(f, me)
    seeds["signature"] = _read_tree(work / "sig")

    # audit log: 6 entries and a checkpoint every 3
    log = AuditLog(work / "audit.db", checkpoint_every=3)
    for i in range(6):
        log.append(me, "twin.encrypt", twin_id=f"tw-{i}", n_twins=i + 1)
    seeds["audit"] = {"audit.db": (work / "audit.db").read_bytes()}

    setup = {"trusted": {"dr.a": public_bytes(me.public_key)}, "key_tag": tag,
             "material": str(work / "material.pkl"), "anchor": list(log.head()), "seeds": seeds,
             "audit_hashes": [e.entry_hash for e in log.entries()],
             "rot_steps": list(real.public.rotation_indices)}
    return {"seeds": seeds, "setup": setup}


def _read_tree(root: Path) -> Files:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


# ========================================================================== mutations (parent)
def mutate_bytes(data: bytes, ops) -> bytes:
    """Apply byte-level mutations ``(op, pos, val, n)``; positions wrap around the length."""
    b = bytearray(data)
    for op, pos, val, n in ops:
        p = pos % (len(b) + 1)
        if op == "flip" and b:
            b[p % len(b)] ^= (val % 255) + 1
        elif op == "truncate":
            del b[p:]
        elif op == "insert":
            b[p:p] = bytes([val % 256]) * (n % 64 + 1)
        elif op == "delete":
            del b[p:p + n % 64 + 1]
        elif op == "overwrite":
            chunk = struct.pack("<Q", (val * 0x9E3779B97F4A7C15 + n) % (1 << 64))[: n % 8 + 1]
            b[p:p + len(chunk)] = chunk
        elif op == "splice" and b:
            q = (val * 7919) % len(b)
            b[p:p] = b[q:q + n % 256 + 1]
    return bytes(b)


def edit_json(doc, path, action: str, value):
    """Replace / delete / insert at a position chosen by ``path`` (indices modulo the sizes)."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value if action != "delete" else None
    i, rest = path[0], path[1:]
    if isinstance(doc, dict):
        keys = sorted(doc)
        k = keys[i % len(keys)]
        if rest and isinstance(doc[k], (dict, list)) and doc[k]:
            doc[k] = edit_json(doc[k], rest, action, value)
        elif action == "delete":
            del doc[k]
        elif action == "insert":
            doc[f"x{i}"] = value
        else:
            doc[k] = value
    else:
        j = i % len(doc)
        if rest and isinstance(doc[j], (dict, list)) and doc[j]:
            doc[j] = edit_json(doc[j], rest, action, value)
        elif action == "delete":
            del doc[j]
        elif action == "insert":
            doc.insert(j, value)
        else:
            doc[j] = value
    return doc


def _reseal_container(data: bytes, magic: bytes, edit) -> bytes:
    """Keystore / public bundle: edit the JSON header, fix its length and the trailing SHA-256."""
    if len(data) < len(magic) + 4 + 32:
        return data
    (h,) = struct.unpack(">I", data[len(magic):len(magic) + 4])
    hdr = data[len(magic) + 4:len(magic) + 4 + h]
    rest = data[len(magic) + 4 + h:-32]
    try:
        new = json.dumps(edit(json.loads(hdr)), separators=(",", ":"), sort_keys=True).encode()
    except (ValueError, TypeError):
        return data
    out = magic + struct.pack(">I", len(new)) + new + rest
    return out + hashlib.sha256(out).digest()


def _reseal_manifest(raw: bytes, edit) -> bytes:
    m = json.loads(raw)
    m.pop("manifest_sha256", None)
    m = edit(m)
    if isinstance(m, dict):
        body = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
        m = dict(m, manifest_sha256=hashlib.sha256(body).hexdigest())
    try:
        return json.dumps(m, indent=1, sort_keys=True).encode()
    except (TypeError, ValueError):
        return raw


def _audit_rows(db: bytes, changes) -> bytes:
    """Change rows of an audit database (triggers dropped) and return the new file's bytes."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.db"
        p.write_bytes(db)
        con = sqlite3.connect(p, isolation_level=None)
        try:
            for t in ("entries_no_update", "entries_no_delete", "checkpoints_no_update",
                      "checkpoints_no_delete", "entries_in_order"):
                con.execute(f"DROP TRIGGER IF EXISTS {t}")
            for kind, seq, col, value in changes:
                try:
                    if kind == "set":
                        con.execute(f"UPDATE entries SET {col}=? WHERE seq=?", (value, seq))
                    elif kind == "checkpoint":
                        con.execute(f"UPDATE checkpoints SET {col if col in _CP_COLS else 'signature'}=? "
                                    "WHERE id=?", (value, seq % 3 + 1))
                    elif kind == "delete":
                        con.execute("DELETE FROM entries WHERE seq=?", (seq,))
                    elif kind == "swap":
                        other = seq % 6 + 1
                        con.execute("UPDATE entries SET seq=-1 WHERE seq=?", (seq,))
                        con.execute("UPDATE entries SET seq=? WHERE seq=?", (seq, other))
                        con.execute("UPDATE entries SET seq=? WHERE seq=-1", (other,))
                    elif kind == "drop":
                        con.execute(f"DROP TABLE IF EXISTS {col if col in ('meta', 'checkpoints') else 'meta'}")
                except sqlite3.Error:
                    pass
        finally:
            con.close()
        return p.read_bytes()


_SIGNALS = {6: "SIGABRT", 8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV", 7: "SIGBUS", 4: "SIGILL"}
_CP_COLS = ("seq", "head_hash", "ts", "signer", "role", "key_fp", "signature")
_ROW_COLS = ("seq", "ts", "actor", "role", "action", "breakglass", "body", "prev_hash", "entry_hash",
             "key_fp", "signature")


def strategies(seeds: dict):
    """target -> hypothesis strategy producing the input files (dict relative path -> bytes)."""
    from hypothesis import strategies as st

    byte_ops = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite",
                                                   "splice"]),
                                  st.integers(0, 1 << 22), st.integers(0, 1 << 16), st.integers(0, 1 << 10)),
                        min_size=1, max_size=4)
    json_val = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
                            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=24),
                            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                            max_leaves=6)
    json_edit = st.tuples(st.lists(st.integers(0, 1 << 16), min_size=1, max_size=6),
                          st.sampled_from(["replace", "delete", "insert"]), json_val)
    json_edits = st.lists(json_edit, min_size=1, max_size=3)

    def apply_edits(edits):
        def edit(doc):
            for path, action, value in edits:
                doc = edit_json(doc, path, action, value)
            return doc
        return edit

    def json_text(doc_bytes: bytes, edits) -> bytes:
        doc = apply_edits(edits)(json.loads(doc_bytes))
        try:
            return json.dumps(doc, allow_nan=True).encode()
        except (TypeError, ValueError):
            return doc_bytes

    def one_file(target: str, name: str, structured):
        seed = seeds[target][name]
        choices = [byte_ops.map(lambda ops: {name: mutate_bytes(seed, ops)}),
                   st.binary(max_size=2048).map(lambda b: {name: b})]
        if structured is not None:
            choices.append(structured)
        return st.one_of(*choices)

    def tree(target: str, structured=None):
        files = seeds[target]
        names = sorted(files)

        def mut(args):
            name, ops = args
            out = dict(files)
            out[name] = mutate_bytes(files[name], ops)
            return out

        def remove(name):
            out = dict(files)
            out.pop(name)
            return out

        choices = [st.tuples(st.sampled_from(names), byte_ops).map(mut), st.sampled_from(names).map(remove)]
        if structured is not None:
            choices.append(structured)
        return st.one_of(*choices)

    fhir = one_file("fhir", "bundle.json",
                    json_edits.map(lambda e: {"bundle.json": json_text(seeds["fhir"]["bundle.json"], e)}))

    csv_seed = seeds["csv"]["cohort.csv"].decode()
    csv_rows = [r.split(",") for r in csv_seed.splitlines()]

    def csv_edit(cells):
        rows = [list(r) for r in csv_rows]
        for (ri, ci, text) in cells:
            r = rows[ri % len(rows)]
            r[ci % len(r)] = text
        return {"cohort.csv": ("\n".join(",".join(r) for r in rows) + "\n").encode("utf-8", "surrogatepass")}

    csv = one_file("csv", "cohort.csv", st.lists(st.tuples(st.integers(0, 99), st.integers(0, 99),
                                                           st.text(max_size=16)), min_size=1, max_size=4)
                   .map(csv_edit))

    from medtwin.custody import keystore as ks

    ks_struct = json_edits.map(lambda e: dict(seeds["keystore"], **{
        ks.SECRET_FILE: _reseal_container(seeds["keystore"][ks.SECRET_FILE], ks.MAGIC, apply_edits(e))}))
    keystore = tree("keystore", ks_struct)
    pb_struct = json_edits.map(lambda e: {"pub.mtpub": _reseal_container(
        seeds["public_bundle"]["pub.mtpub"], ks.BUNDLE_MAGIC, apply_edits(e))})
    public_bundle = one_file("public_bundle", "pub.mtpub", pb_struct)

    ctb_struct = json_edits.map(lambda e: dict(seeds["ct_bundle"], **{
        "manifest.json": _reseal_manifest(seeds["ct_bundle"]["manifest.json"], apply_edits(e))}))
    ct_bundle = tree("ct_bundle", ctb_struct)

    ct_seed = seeds["ciphertext"]["ct.bin"]
    # most of a ciphertext is tower data; aim half of the mutations at the header and the tail
    head_ops = st.lists(st.tuples(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate"]),
                                  st.integers(0, 1200), st.integers(0, 1 << 16), st.integers(0, 1 << 10)),
                        min_size=1, max_size=3)
    tail_ops = st.lists(st.tuples(st.sampled_from(["flip", "overwrite", "truncate"]),
                                  st.integers(len(ct_seed) - 64, len(ct_seed)), st.integers(0, 1 << 16),
                                  st.integers(0, 1 << 10)), min_size=1, max_size=2)
    ciphertext = st.one_of(byte_ops.map(lambda o: {"ct.bin": mutate_bytes(ct_seed, o)}),
                           head_ops.map(lambda o: {"ct.bin": mutate_bytes(ct_seed, o)}),
                           tail_ops.map(lambda o: {"ct.bin": mutate_bytes(ct_seed, o)}),
                           st.binary(min_size=64, max_size=4096).map(lambda b: {"ct.bin": b}))

    sig_name = next(n for n in seeds["signature"] if n.endswith(".sig.json"))
    sig_struct = json_edits.map(lambda e: dict(seeds["signature"], **{
        sig_name: json_text(seeds["signature"][sig_name], e)}))
    signature = tree("signature", sig_struct)

    row_change = st.tuples(st.sampled_from(["set", "set", "checkpoint", "delete", "swap", "drop"]),
                           st.integers(1, 6), st.sampled_from(_ROW_COLS + ("meta", "checkpoints")),
                           st.one_of(st.none(), st.integers(-2 ** 63, 2 ** 63 - 1), st.text(max_size=40),
                                     st.binary(max_size=40), st.floats(allow_nan=False)))
    audit = st.one_of(
        st.lists(row_change, min_size=1, max_size=3).map(lambda ch: {"audit.db": _audit_rows(seeds["audit"]["audit.db"], ch)}),
        byte_ops.map(lambda o: {"audit.db": mutate_bytes(seeds["audit"]["audit.db"], o)}))

    # native bridge: one of the three files mutated (half of the mutations in the first 1,200 bytes,
    # the context header and the first towers' framing), or dropped
    nb = seeds["native_bridge"]
    nb_names = sorted(nb)
    native_bridge = st.one_of(
        st.tuples(st.sampled_from(nb_names), byte_ops).map(lambda a: dict(nb, **{a[0]: mutate_bytes(nb[a[0]], a[1])})),
        st.tuples(st.sampled_from(nb_names), head_ops).map(lambda a: dict(nb, **{a[0]: mutate_bytes(nb[a[0]], a[1])})),
        st.sampled_from(nb_names).map(lambda name: {k: v for k, v in nb.items() if k != name}))

    # native programs: opcodes, registers and arguments mostly near the valid ranges, sometimes any
    # int64; the file is only the harness's transport (JSON, NaN and infinities allowed)
    word = st.one_of(st.integers(-2, 12), st.integers(-2 ** 63, 2 ** 63 - 1),
                     st.tuples(st.integers(0, 9), st.integers(0, 9)).map(lambda p: (p[0] << 32) | p[1]))
    instr = st.tuples(st.one_of(st.integers(0, 22), st.integers(-3, 40)), st.integers(-1, 9), word, word)
    wild = st.fixed_dictionaries({
        "code": st.lists(instr, max_size=14).map(lambda ins: [w for i in ins for w in i]),
        "cut": st.booleans(),  # drop the last word (an array length not a multiple of 4)
        "consts": st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
        "plains": st.lists(st.lists(st.floats(-1, 1), max_size=40), max_size=3),
        "n_regs": st.integers(0, 10),
        "outputs": st.lists(st.integers(-1, 10), max_size=3),
        "inputs": st.lists(st.lists(st.integers(0, 2), max_size=4), max_size=3)})
    # mostly well-formed: inputs loaded first, registers and indices in range, so that the
    # operations themselves run (and meet extreme constants, bad levels, missing keys)
    small = st.integers(0, 2)
    arg = st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3), small).map(lambda p: (p[0] << 32) | p[1]),
                    st.sampled_from([1, -1, 2, 3, 64, -64, 2 ** 40]))
    body = st.lists(st.tuples(st.integers(0, 22), small, small, arg), min_size=1, max_size=8)
    formed = st.fixed_dictionaries({
        "code": st.tuples(st.integers(1, 3), body).map(
            lambda t: [w for i in range(3) for w in (0, i, i % t[0], 0)] + [w for i in t[1] for w in i]),
        "cut": st.just(False),
        "consts": st.lists(st.one_of(st.floats(-8, 8), st.sampled_from([1e300, -1e300, float("nan"), float("inf"), 2.0 ** 90])),
                           min_size=4, max_size=4),
        "plains": st.lists(st.lists(st.floats(-1, 1), min_size=0, max_size=40), min_size=3, max_size=3),
        "n_regs": st.integers(3, 8),
        "outputs": st.lists(small, min_size=1, max_size=2),
        "inputs": st.lists(st.lists(st.integers(0, 2), min_size=3, max_size=3), min_size=1, max_size=2)})
    native_program = st.one_of(wild, formed, formed).map(lambda d: {"program.json": json.dumps(d).encode()})

    selftest = st.sampled_from([b"abort", b"sleep", b"raise", b"write", b"fine"]).map(lambda b: {"in.bin": b})
    return {"native_bridge": native_bridge, "native_program": native_program, "fhir": fhir, "csv": csv, "keystore": keystore, "public_bundle": public_bundle,
            "ct_bundle": ct_bundle, "ciphertext": ciphertext, "ciphertext_guarded": ciphertext,
            "signature": signature, "audit": audit, "selftest": selftest}


# ============================================================================== worker (child)
def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


def _worker_call(target: str, root: Path, setup: dict, state: dict):
    """Run the target's parsers on the input at ``root``."""
    if target == "fhir":
        from medtwin.fhir import load_bundle
        load_bundle(root / "bundle.json")
    elif target == "csv":
        from medtwin.twin.csv_io import load_csv
        load_csv(root / "cohort.csv")
    elif target == "keystore":
        from medtwin.custody.keystore import read_public, unlock_keystore
        try:
            unlock_keystore(root, PASSPHRASE)
            # oracle: the secret key is released only from the unaltered keystore
            if _read_tree(root) != setup["seeds"]["keystore"]:
                raise _WrongSuccess("unlock_keystore accepted an altered keystore")
        except _documented():
            state["refused"] = True
        try:
            read_public(root)
        except _documented():
            state["refused"] = True
    elif target == "public_bundle":
        from medtwin.custody.keystore import load_public_bundle
        load_public_bundle(root / "pub.mtpub")
    elif target == "ct_bundle":
        from medtwin.twin.store import read_bundle
        read_bundle(root, kind="encrypted-cohort", key_tag=setup["key_tag"])
    elif target in ("ciphertext", "ciphertext_guarded"):
        ctx = state.get("ctx")
        if ctx is None:
            from medtwin.he.openfhe_backend import HEContext
            ctx = state["ctx"] = HEContext.from_keys(pickle.loads(Path(setup["material"]).read_bytes()))
        data = (root / "ct.bin").read_bytes()
        if target == "ciphertext_guarded":
            _stage(state, "guard")
            guard_ciphertext(ctx, data, state)
        _stage(state, "deserialize")
        ct = ctx.deserialize(data)
        _stage(state, "decrypt")
        if target == "ciphertext_guarded":
            decrypt_guarded(ctx, ct)
        else:
            ctx.decrypt(ct, 16)
    elif target == "native_bridge":
        from medtwin.he import bridge

        def read(name):  # a dropped file is empty bytes (no rotation keys; an empty key or ciphertext)
            return (root / name).read_bytes() if (root / name).exists() else b""
        _stage(state, "load_engine")
        eng = bridge.load_engine(read("mult.key"), read("rot.keys"))
        _stage(state, "import_ciphertext")
        c = bridge.import_ciphertext(eng, read("ct.bin"))
        _stage(state, "evaluate")
        c = eng.mul(c, c)
        for steps in setup["rot_steps"][:1]:  # (asking for a rotation without its key is a ValueError by design)
            if eng.rotation_index(steps) in eng.automorphism_indices:
                c = eng.rotate(c, steps)
        bridge.export_ciphertext(eng, c)
    elif target == "native_program":
        import numpy as np
        eng, cts = state["program_engine"]
        d = json.loads((root / "program.json").read_text())
        code = d["code"][:-1] if d["cut"] and d["code"] else d["code"]
        _stage(state, "run_program")
        eng.run_program(np.array(code, dtype=np.int64), np.array(d["consts"], dtype=np.float64),
                        [np.array(p, dtype=np.float64) for p in d["plains"]],
                        [[cts[i] for i in row] for row in d["inputs"]], d["n_regs"], d["outputs"])
    elif target == "selftest":       # checks the harness: a crash, a hang, an undocumented error
        data = (root / "in.bin").read_bytes()
        if data.startswith(b"abort"):
            os.abort()
        if data.startswith(b"sleep"):
            time.sleep(3600)
        if data.startswith(b"raise"):
            raise KeyError("selftest")
        if data.startswith(b"write"):
            (root / "in.bin").write_bytes(b"changed")
    elif target == "signature":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        from medtwin.custody.signing import verify_file
        trusted = {k: Ed25519PublicKey.from_public_bytes(v) for k, v in setup["trusted"].items()}
        verify_file(root / "summary.csv", root / "summary.csv.sig.json", trusted)
        if (root / "summary.csv").read_bytes() != setup["seeds"]["signature"]["summary.csv"]:
            raise _WrongSuccess("verify_file accepted an altered file")
    elif target == "audit":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        from medtwin.cli_security import ReadOnlyAuditLog
        trusted = {k: Ed25519PublicKey.from_public_bytes(v) for k, v in setup["trusted"].items()}
        log = ReadOnlyAuditLog(root / "audit.db")   # what `medtwin audit verify` opens
        rep = log.verify(trusted, anchor=tuple(setup["anchor"]))
        if not rep.ok:
            state["refused"] = True       # tampering reported: the documented outcome
        elif (root / "audit.db").read_bytes() != setup["seeds"]["audit"]["audit.db"]:
            # a changed file may still verify (free pages, unused bytes); its entries must not differ
            if [e.entry_hash for e in log.entries()] != setup["audit_hashes"]:
                raise _WrongSuccess("verify passed an audit log whose entries differ")
        for read in (log.entries, log.checkpoints):
            try:
                read()
            except _documented():
                pass
    else:
        raise SystemExit(f"unknown target {target}")


def _warm(target: str, setup: dict, state: dict) -> None:
    """Import what the target needs and build its crypto context before the first input, so
    that the per-input timeout does not include start-up."""
    import medtwin.custody.keystore  # noqa: F401
    import medtwin.fhir  # noqa: F401
    import medtwin.twin.csv_io  # noqa: F401
    import medtwin.twin.store  # noqa: F401
    if target == "native_bridge":
        import medtwin.he.bridge  # noqa: F401
    if target == "native_program":  # the engine and its input ciphertexts, built once
        from medtwin.he import bridge
        nb = setup["seeds"]["native_bridge"]
        eng = bridge.load_engine(nb["mult.key"], nb["rot.keys"])
        c = bridge.import_ciphertext(eng, nb["ct.bin"])
        state["program_engine"] = (eng, [c, eng.mul_rescale(c, c), eng.tensor(c, c)])
    if target.startswith("ciphertext"):
        from medtwin.he.openfhe_backend import HEContext
        state["ctx"] = HEContext.from_keys(pickle.loads(Path(setup["material"]).read_bytes()))


def _stage(state: dict, name: str) -> None:
    """Record the step under way, in a file the parent reads when the worker dies."""
    state["stage"] = name
    Path(state["stage_file"]).write_text(name)


def guard_ciphertext(ctx, data: bytes, state: dict) -> None:
    """PROPOSED structural validator run before OpenFHE sees ciphertext bytes (a prototype here;
    the real one belongs in ``HEContext.deserialize``).

    1. The bytes up to and including the key tag (the embedded crypto context) must equal those
       of a fresh ciphertext of this context: they are identical for every ciphertext under one
       key pair at every level (DESIGN section 8), and every crash found lies in this region.
    2. The element section and the 48-byte tail must parse with the native bridge's C++ parser
       (tower count and size, N, moduli, format, exact consumption), when ``medtwin._core`` is
       built.
    3. The tail's metadata must be plausible: slots a power of two up to N/2, level at most the
       depth, noise degree 1 or 2, a finite scale above 1, CKKS scheme and packed encoding, no
       metadata map.

    Raises:
        CiphertextFormatError: either check fails.
    """
    from medtwin.errors import CiphertextFormatError

    head = state.get("ct_header")
    if head is None:
        fresh = ctx.serialize(ctx.encrypt([0.0]))
        end = fresh.find(ctx.key_tag.encode())
        head = state["ct_header"] = fresh[: end + len(ctx.key_tag)]
    if len(data) <= len(head) or data[: len(head)] != head:
        raise CiphertextFormatError("ciphertext header differs from this crypto context's")
    eng = state.get("engine", False)
    if eng is False:
        try:
            from medtwin.he.bridge import engine_from_public
            eng = engine_from_public(ctx.public)
        except ImportError:
            eng = None
        state["engine"] = eng
    if eng is not None:
        from medtwin.he.bridge import import_ciphertext
        import_ciphertext(eng, data)
    # 3. The 48-byte tail (the bridge carries it without judging it): a slot count that is not a
    #    power of two up to N/2 makes Decrypt hang or throw std::bad_alloc.
    slots, level, _hops, degree, scale, scheme, encoding = struct.unpack("<IIIIdQi", data[-48:-12])
    n = ctx.ring_dim
    if not (0 < slots <= n // 2 and slots & (slots - 1) == 0):
        raise CiphertextFormatError("ciphertext slot count is not a power of two up to N/2")
    if (level > ctx.depth or not 1 <= degree <= 2 or not (scale > 1.0 and scale < 2.0 ** 1000)
            or scheme != 1 or encoding != 4 or data[-8:] != bytes(8)):
        raise CiphertextFormatError("ciphertext metadata (level, noise degree, scale, scheme, "
                                    "encoding) is implausible for this context")


def decrypt_guarded(ctx, ct):
    """PROPOSED: ``HEContext.decrypt`` mapping OpenFHE's own errors on structurally valid but
    corrupted ciphertexts ("approximation error is too high", std::bad_alloc) to a MedTwinError.

    Raises:
        TamperedError: OpenFHE could not decode the ciphertext.
    """
    from medtwin.errors import MedTwinError, TamperedError

    try:
        return ctx.decrypt(ct, 16)
    except MedTwinError:
        raise
    except (RuntimeError, MemoryError) as exc:
        raise TamperedError(f"decryption failed, the ciphertext is corrupted ({type(exc).__name__})") from None


class _WrongSuccess(Exception):
    """A parser accepted altered input that it must refuse."""


def _documented():
    from medtwin.errors import MedTwinError
    return MedTwinError


def _recv(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(n))


def _send(stream, obj) -> None:
    b = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(b)) + b)
    stream.flush()


def _core_override() -> None:
    """MEDTWIN_CORE_OVERRIDE names another build of medtwin._core (scripts/sanitize_tests.sh's
    ASan + UBSan build: run the campaign with it and LD_PRELOAD set as that script does)."""
    so = os.environ.get("MEDTWIN_CORE_OVERRIDE")
    if not so:
        return
    import importlib.util

    import medtwin
    spec = importlib.util.spec_from_file_location("medtwin._core", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["medtwin._core"] = mod
    medtwin._core = mod


def worker(target: str, setup_file: str) -> None:
    """Child: read inputs from stdin, run the target, write one result per input to stdout."""
    _core_override()
    setup = pickle.loads(Path(setup_file).read_bytes())
    state: dict = {"stage_file": str(Path(setup_file).parent / f"stage-{target}")}
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                       # stray prints go to stderr, not into the protocol
    inp = sys.stdin.buffer
    Documented = _documented()
    _warm(target, setup, state)
    _send(out, ("ready", "", None))
    while True:
        files = _recv(inp)
        if files is None:
            return
        with tempfile.TemporaryDirectory(prefix="fuzz-") as d:
            root = Path(d) / "in"
            root.mkdir()
            for name, data in files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
            before = _snapshot(root)
            _stage(state, "parse")
            state.pop("refused", None)
            try:
                _worker_call(target, root, setup, state)
                status, detail = ("refused", "") if state.get("refused") else ("accepted", "")
            except Documented as exc:
                status, detail = "refused", type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - an undocumented exception is the finding
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                status = "failure"
                if isinstance(exc, _WrongSuccess):
                    tb = traceback.extract_tb(exc.__traceback__)[0]
                detail = (f"undocumented {type(exc).__name__} at {Path(tb.filename).name}:{tb.lineno} "
                          f"in {tb.name} ({state['stage']}): {str(exc)[:160]}")
            after = _snapshot(root)
            if after != before:
                changed = sorted(set(before.items()) ^ set(after.items()))
                status, detail = "failure", f"stored input changed: {[c[0] for c in changed][:4]} ({detail})"
        _send(out, (status, detail, state.get("stage")))


# ============================================================================ campaign (parent)
@dataclass
class TargetReport:
    target: str
    tried: int = 0
    accepted: int = 0
    refused: int = 0
    failures: int = 0
    crashes: int = 0
    hangs: int = 0
    seconds: float = 0.0
    findings: list = field(default_factory=list)


class Worker:
    """A worker process for one target; restarted after a crash or a hang."""

    def __init__(self, target: str, setup_file: Path, timeout: float):
        self.target, self.setup_file, self.timeout = target, setup_file, timeout
        self.proc = None

    def _start(self):
        env = dict(os.environ, MEDTWIN_ALLOW_INSECURE="1", PYTHONFAULTHANDLER="1")
        # stderr to a file: a pipe nobody reads could fill up and stall the worker
        self.log = self.setup_file.parent / f"worker-{self.target}.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", self.target,
                                          "--setup", str(self.setup_file)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)

    def run(self, files: Files, first_timeout: float) -> tuple[str, str, str | None]:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
            ready, _, _ = select.select([self.proc.stdout], [], [], first_timeout)
            if not ready or _recv(self.proc.stdout) is None:
                err = self.log.read_bytes()[-2000:].decode(errors="replace")
                raise RuntimeError(f"the {self.target} worker did not start: {err}")
        timeout = self.timeout
        try:
            _send(self.proc.stdin, files)
        except BrokenPipeError:
            return self._died()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            stage = self._stage()
            return "hang", f"no answer within {timeout:.0f} s (in {stage})", stage
        res = _recv(self.proc.stdout)
        if res is None:
            return self._died()
        return res

    def _stage(self) -> str:
        try:
            return (self.setup_file.parent / f"stage-{self.target}").read_text() or "start"
        except OSError:
            return "start"

    def _died(self):
        stage = self._stage()
        rc = self.proc.wait()
        err = self.log.read_bytes()[-8000:].decode(errors="replace")
        self.proc = None
        sig = f"signal {-rc} ({_SIGNALS.get(-rc, '?')})" if rc < 0 else f"exit code {rc}"
        # faulthandler prints the Python stack, innermost first: keep the medtwin frame
        frames = [ln.strip() for ln in err.splitlines() if 'File "' in ln and "fuzz.py" not in ln]
        where = frames[0] if frames else "no Python frame"
        return "crash", f"worker died with {sig} in {stage}: {where}", stage

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _TimeUp(Exception):
    pass


def run_target(target: str, strategy, setup_file: Path, *, examples: int, seconds: float, timeout: float,
               crash_dir: Path, seed: int | None) -> TargetReport:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    rep = TargetReport(target)
    w = Worker(target, setup_file, timeout)
    t0 = time.perf_counter()

    def one(files):
        if rep.tried >= examples or time.perf_counter() - t0 > seconds:
            raise _TimeUp
        rep.tried += 1
        status, detail, stage = w.run(files, first_timeout=timeout + 60)
        if status == "accepted":
            rep.accepted += 1
        elif status == "refused":
            rep.refused += 1
        else:
            setattr(rep, {"failure": "failures", "crash": "crashes", "hang": "hangs"}[status],
                    getattr(rep, {"failure": "failures", "crash": "crashes", "hang": "hangs"}[status]) + 1)
            crash_dir.mkdir(parents=True, exist_ok=True)
            f = crash_dir / f"{target}-{status}-{rep.tried:06d}.pkl"
            f.write_bytes(pickle.dumps({"target": target, "files": files}))
            rep.findings.append({"status": status, "detail": detail, "stage": stage, "input": str(f)})

    test = settings(max_examples=10 ** 9, deadline=None, database=None, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck), report_multiple_bugs=False)(given(strategy)(one))
    if seed is not None:
        test = hseed(seed)(test)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # hypothesis: "overly large repr" of the stop signal
            test()
    except _TimeUp:
        pass
    finally:
        w.close()
    rep.seconds = time.perf_counter() - t0
    return rep


def format_table(reports) -> str:
    head = ("target", "inputs tried", "accepted", "refused", "failures", "crashes", "hangs", "seconds")
    rows = [head] + [(r.target, str(r.tried), str(r.accepted), str(r.refused), str(r.failures), str(r.crashes),
                      str(r.hangs), f"{r.seconds:.1f}") for r in reports]
    tot = ("total", *(str(sum(getattr(r, k) for r in reports)) for k in
                      ("tried", "accepted", "refused", "failures", "crashes", "hangs")),
           f"{sum(r.seconds for r in reports):.1f}")
    rows.append(tot)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(rows[0]), sep] + [fmt(r) for r in rows[1:]])


def replay(path: Path, setup_file: Path, timeout: float) -> tuple:
    d = pickle.loads(path.read_bytes())
    w = Worker(d["target"], setup_file, timeout)
    try:
        return w.run(d["files"], first_timeout=timeout + 60)
    finally:
        w.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=100, help="inputs per target (default 100)")
    ap.add_argument("--seconds", type=float, default=None, help="time budget per target (default: none)")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per input before it counts as a hang")
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed (reproducible campaign)")
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    ap.add_argument("--crash-dir", type=Path, default=None, help="where failing inputs are saved")
    ap.add_argument("--replay", type=Path, default=None, help="run one saved input again (needs --workdir)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep seeds here (default: a temp folder)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--setup", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker, a.setup)
        return 0
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    unknown = set(targets) - set(TARGETS) - set(EXTRA_TARGETS)
    if unknown:
        ap.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS + EXTRA_TARGETS)}")
    os.environ.setdefault("MEDTWIN_ALLOW_INSECURE", "1")
    tmp = None
    work = a.workdir
    if work is None:
        tmp = tempfile.mkdtemp(prefix="medtwin-fuzz-")
        work = Path(tmp)
    work.mkdir(parents=True, exist_ok=True)
    try:
        setup_file = work / "setup.pkl"
        if a.replay:
            print(replay(a.replay, setup_file, a.timeout))
            return 0
        t = time.perf_counter()
        made = make_seeds(work / f"seeds-{os.getpid()}")
        setup_file.write_bytes(pickle.dumps(made["setup"]))
        strats = strategies(made["seeds"])
        print(f"seeds ready in {time.perf_counter() - t:.1f} s; budget per target: {a.examples} inputs"
              + (f" or {a.seconds:g} s" if a.seconds else "") + f", {a.timeout:g} s per input", flush=True)
        crash_dir = a.crash_dir or work / "findings"
        reports = []
        for target in targets:
            r = run_target(target, strats[target], setup_file, examples=a.examples,
                           seconds=a.seconds if a.seconds else float("inf"), timeout=a.timeout,
                           crash_dir=crash_dir, seed=a.seed)
            reports.append(r)
            print(f"  {target}: {r.tried} inputs, {r.failures} failures, {r.crashes} crashes, {r.hangs} hangs "
                  f"({r.seconds:.1f} s)", flush=True)
        print()
        print(format_table(reports))
        bad = [f | {"target": r.target} for r in reports for f in r.findings]
        if bad:
            print(f"\nfindings (inputs saved under {crash_dir}; replay with --replay FILE --workdir {work}):")
            seen = set()
            for f in bad:
                key = (f["target"], f["status"], f["detail"][:120])
                if key in seen:
                    continue
                seen.add(key)
                print(f"  [{f['target']}] {f['status']}: {f['detail']}")
        if a.json:
            a.json.write_text(json.dumps({"reports": [r.__dict__ for r in reports]}, indent=1))
        return 1 if bad else 0
    finally:
        if tmp is not None and not a.crash_dir and not any(Path(tmp, "findings").glob("*")):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
