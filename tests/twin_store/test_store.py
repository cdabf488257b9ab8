from __future__ import annotations

import json

import pytest

from medtwin.errors import KeyMismatchError, TamperedError
from medtwin.twin.store import Bundle, StoreError, read_bundle, write_bundle


def _bundle():
    return Bundle(kind="cohort", key_tag="ab" * 16, meta={"twins": ["tw-1", "tw-2"]},
                  blobs={"age": [b"x" * 100, b"y" * 100], "wt": [b"z" * 50]})


def _snapshot(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_round_trip(tmp_path):
    p = write_bundle(tmp_path / "b", _bundle())
    b = read_bundle(p, kind="cohort", key_tag="ab" * 16)
    assert b.blobs == _bundle().blobs and b.meta == _bundle().meta


def test_never_overwrites(tmp_path):
    p = write_bundle(tmp_path / "b", _bundle())
    before = _snapshot(p)
    with pytest.raises(StoreError, match="exists already"):
        write_bundle(p, Bundle("cohort", "cd" * 16, {}, {"a": [b"1"]}))
    assert _snapshot(p) == before


def test_corrupted_blob_is_named(tmp_path):
    p = write_bundle(tmp_path / "b", _bundle())
    f = sorted((p / "blobs").iterdir())[0]
    f.write_bytes(f.read_bytes()[:-1] + b"!")
    with pytest.raises(TamperedError, match=f.name):
        read_bundle(p)


def test_edited_manifest_and_missing_blob(tmp_path):
    p = write_bundle(tmp_path / "b", _bundle())
    m = json.loads((p / "manifest.json").read_text())
    m["meta"]["twins"].append("tw-3")
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(TamperedError, match="manifest"):
        read_bundle(p)
    q = write_bundle(tmp_path / "c", _bundle())
    next((q / "blobs").iterdir()).unlink()
    with pytest.raises(TamperedError, match="missing"):
        read_bundle(q)


def test_other_key_pair_and_kind(tmp_path):
    p = write_bundle(tmp_path / "b", _bundle())
    with pytest.raises(KeyMismatchError):
        read_bundle(p, key_tag="cd" * 16)
    with pytest.raises(StoreError, match="expected"):
        read_bundle(p, kind="outcome")
