from __future__ import annotations

import re

import pytest

from medtwin.errors import ValidationError
from medtwin.twin.pseudonym import new_pseudonym_key, pseudonym

KEY = bytes(range(32))


def test_known_answer():
    # openssl: printf 'medtwin/pseudonym/v1\0MRN-0001' | openssl dgst -sha256 -mac HMAC \
    #          -macopt hexkey:000102...1f  -> a805356ab642c0ea7e88...
    assert pseudonym("MRN-0001", KEY) == "tw-a805356ab642c0ea"


def test_format_and_stability():
    p = pseudonym("SYN-000001", KEY)
    assert re.fullmatch(r"tw-[0-9a-f]{16}", p)
    assert pseudonym("SYN-000001", KEY) == p
    assert pseudonym("SYN-000001", bytearray(KEY)) == p


def test_key_dependence():
    other = bytes(reversed(KEY))
    assert pseudonym("SYN-000001", KEY) != pseudonym("SYN-000001", other)
    k1, k2 = new_pseudonym_key(), new_pseudonym_key()
    assert len(k1) == 32 and k1 != k2
    assert pseudonym("x", k1) != pseudonym("x", k2)


def test_does_not_contain_or_depend_trivially_on_the_identifier():
    ids = [f"SYN-{i:06d}" for i in range(1, 1201)]
    ps = [pseudonym(s, KEY) for s in ids]
    assert len(set(ps)) == len(ps)  # no collision in a cohort
    assert all(s.lower() not in p for s, p in zip(ids, ps))
    assert pseudonym("a", KEY) != pseudonym("a ", KEY)


@pytest.mark.parametrize("sid, key", [("", KEY), (None, KEY), (5, KEY), ("x", b"short"), ("x", "k" * 32), ("x", None)])
def test_bad_arguments(sid, key):
    with pytest.raises(ValidationError):
        pseudonym(sid, key)  # type: ignore[arg-type]
