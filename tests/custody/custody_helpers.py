"""Helpers shared by the custody tests (fake key material, file snapshots)."""
from __future__ import annotations

import os
import secrets

from medtwin.he.keys import KeyMaterial, PublicMaterial


def tagged(tag: str, n: int = 300) -> bytes:
    """Random bytes carrying an OpenFHE-style key tag (u64 32 + 32 hex chars), like real keys."""
    return os.urandom(40) + (32).to_bytes(8, "little") + tag.encode() + os.urandom(n)


def fake_material(tag: str | None = None, secret_tag: str | None = None) -> KeyMaterial:
    tag = tag or secrets.token_hex(16)
    pub = PublicMaterial(preset="test-insecure", context=os.urandom(500), public_key=tagged(tag),
                         eval_mult_key=tagged(tag, 900), rotation_keys=tagged(tag, 700),
                         rotation_indices=(1, 2, 4), key_tag=tag,
                         params={"ring_dim": 1024, "depth": 2, "insecure": True})
    return KeyMaterial(public=pub, secret_key=tagged(secret_tag or tag, 400))


def snapshot(root) -> dict:
    """Bytes and mtimes of every file under ``root`` (to prove nothing changed)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            with open(p, "rb") as fh:
                out[p] = (fh.read(), st.st_mtime_ns)
    return out
