"""Corrupted ciphertext bytes give a documented error, never a dead process (fuzz findings).

Each case runs in its own process: OpenFHE 1.6.1 kills the process (SIGABRT, SIGFPE) or never
returns on some of these inputs, which is exactly what must not happen to a compute node or a client reading a
bundle. The cases are the minimal reproducers of what ``scripts/fuzz.py`` found; offsets are in a
ciphertext of a N = 2^10, depth-2, FIXEDMANUAL context (the embedded crypto context, i.e. the
bytes before the key tag, spans offsets 0..~730 and is identical for every ciphertext of one key
pair).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import os, sys
    os.environ["MEDTWIN_ALLOW_INSECURE"] = "1"
    import numpy as np
    from medtwin.errors import MedTwinError
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import CKKSParams
    ctx, km = generate_keys(CKKSParams("t", "HEStd_NotSet", depth=2, ring_dim=1 << 10, insecure=True))
    data = bytearray(ctx.serialize(ctx.encrypt(np.linspace(-1, 1, 16))))
    for pos, val in {edits}:
        if isinstance(val, bytes):
            data[pos:pos + len(val) if pos + len(val) else None] = val
        else:
            data[pos] = val if val >= 0 else data[pos] ^ 0xFF
    try:
        ct = ctx.deserialize(bytes(data))
        ctx.decrypt(ct, 16)
        print("RESULT accepted")
    except MedTwinError as e:
        print("RESULT refused", type(e).__name__)
    except Exception as e:
        print("RESULT undocumented", type(e).__name__)
""")


def _run(edits, timeout=30):
    try:
        p = subprocess.run([sys.executable, "-c", CHILD.format(edits=edits)], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", []
    return p.returncode, p.stdout.strip().splitlines()[-1:] if p.stdout.strip() else []


@pytest.mark.parametrize("name,edits", [
    # OpenFHE aborts (SIGABRT) inside DeserializeCiphertextString
    ("context byte 114", [(114, 0x91)]),
    ("context bytes 405-406", [(405, 234), (406, 78)]),
    # accepted by the deserialiser, then SIGFPE inside Decrypt
    ("context bytes 246, 442, 459", [(246, 26), (442, 73), (459, 184)]),
    # tower data: Decrypt raises a bare RuntimeError ("approximation error is too high")
    ("tower data byte 20000", [(20000, -1)]),
    # slot count in the 48-byte tail: Decrypt never returns (686) or throws std::bad_alloc
    ("tail slots 686", [(-48, (686).to_bytes(4, "little"))]),
    ("tail slots 3925869056", [(-48, (3925869056).to_bytes(4, "little"))]),
])
def test_corrupted_ciphertext_is_refused_with_a_documented_error(name, edits):
    rc, last = _run(edits)
    assert rc != "timeout", f"{name}: no answer within 30 s (a hang); a structural check must refuse the bytes"
    assert rc == 0, f"{name}: the process died (exit status {rc}); a structural check must refuse the bytes"
    assert last and last[0].startswith("RESULT refused"), f"{name}: {last}"


def test_the_unaltered_ciphertext_decrypts():
    rc, last = _run([])
    assert (rc, last) == (0, ["RESULT accepted"])
