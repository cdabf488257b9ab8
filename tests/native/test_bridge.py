"""The bridge refuses what it does not parse, with a Python exception and never a crash."""
from __future__ import annotations

import numpy as np
import openfhe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin import _core
from medtwin.errors import CiphertextFormatError, KeyMismatchError
from medtwin.he import bridge
from tests.native.conftest import make_setup

B = openfhe.BINARY


def test_round_trip_levels_and_three_elements(small):
    s = small
    x = np.linspace(-1, 1, s.slots)
    c = s.encrypt(x)
    for ct in (c, s.cc.Rescale(s.cc.EvalMult(c, c)), s.cc.EvalMultNoRelin(c, c), s.cc.LevelReduce(c, None, 2)):
        a = s.imp(ct)
        out = s.exp(a)
        assert openfhe.DeserializeCiphertextString(out, B).GetLevel() == ct.GetLevel() == a.level
        np.testing.assert_array_equal(s.imp(out).data, a.data)
    # OpenFHE keeps computing on the engine's output
    a = s.imp(c)
    back = bridge.to_openfhe(s.engine, s.engine.mul(a, a))
    np.testing.assert_allclose(s.decrypt(s.cc.Rescale(back)), x * x, atol=1e-5)


def test_metadata_fields(small):
    a = small.imp(small.encrypt([1.0]))
    assert (a.elements, a.towers, a.level, a.noise_degree, a.n) == (2, small.depth + 1, 0, 1, small.n)
    assert a.scale == 2.0 ** 40 and a.slots == small.slots and a.key_tag == small.engine.key_tag
    assert a.data.shape == (2, small.depth + 1, small.n) and a.data.dtype == np.uint64


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, 10_000))
def test_truncation_never_crashes(small, cut):
    b = openfhe.Serialize(small.encrypt([0.5]), B)
    cut = cut % len(b)
    with pytest.raises(CiphertextFormatError):
        small.imp(b[:cut])


@settings(max_examples=40, deadline=None)
@given(pos=st.integers(0, 3000), val=st.integers(0, 255))
def test_corrupted_header_never_crashes(tiny, pos, val):
    b = bytearray(openfhe.Serialize(tiny.encrypt([0.5]), B))
    pos = pos % 900  # the header and first tower's framing
    b[pos] = val
    try:
        tiny.imp(bytes(b))
    except (CiphertextFormatError, KeyMismatchError):
        pass


def test_wrong_object_types(small):
    s = small
    pk = openfhe.Serialize(s.kp.publicKey, B)
    with pytest.raises(CiphertextFormatError):
        s.imp(pk)
    mk = openfhe.Serialize(s.cc.GetEvalMultKeyVector(s.kp.publicKey.GetKeyTag())[0], B)
    with pytest.raises(CiphertextFormatError):
        s.imp(mk)
    ct = openfhe.Serialize(s.encrypt([1.0]), B)
    with pytest.raises(CiphertextFormatError, match="not a relinearisation"):
        bridge.load_engine(ct)
    with pytest.raises(CiphertextFormatError):
        bridge.load_engine(b"")
    with pytest.raises(CiphertextFormatError):
        s.imp(b"\x01" + b"\xff" * 64)
    with pytest.raises(CiphertextFormatError, match="trailing"):
        bridge.load_engine(mk + b"\0")
    with pytest.raises(CiphertextFormatError):
        bridge.export_ciphertext(s.engine, "not a ciphertext")


def test_other_key_pair_or_context():
    a = make_setup(1024, 5, 3)
    other = make_setup(1024, 5, 3, rotations=(1,))  # same parameters, another key pair
    with pytest.raises(KeyMismatchError, match="another key pair"):
        a.imp(other.encrypt([1.0]))
    ours = a.imp(a.encrypt([1.0]))
    theirs = other.imp(other.encrypt([1.0]))
    with pytest.raises(KeyMismatchError):
        a.engine.add(ours, theirs)
    with pytest.raises(KeyMismatchError):
        a.exp(theirs)
    deeper = make_setup(1024, 6, 3)
    with pytest.raises(KeyMismatchError):
        a.imp(deeper.encrypt([1.0]))
    tag = other.kp.publicKey.GetKeyTag()
    rk = openfhe.Serialize(other.cc.GetEvalAutomorphismKeyMap(tag), B)
    mk = openfhe.Serialize(a.cc.GetEvalMultKeyVector(a.kp.publicKey.GetKeyTag())[0], B)
    with pytest.raises(KeyMismatchError, match="rotation keys"):
        bridge.load_engine(mk, rk)


def test_missing_rotation_key(small):
    a = small.imp(small.encrypt([1.0]))
    with pytest.raises(ValueError, match="no rotation key"):
        small.engine.rotate(a, 7)


def test_engine_parameters(small):
    e = small.engine
    assert e.n == small.n and len(e.moduli_q) == small.depth + 1 and e.dnum == 3
    assert e.alpha == -(-len(e.moduli_q) // e.dnum)
    assert all(q % (2 * e.n) == 1 for q in e.moduli_q + e.moduli_p)
    assert e.rotation_index(1) == 5 and e.rotation_index(-1) == pow(5, e.n // 2 - 1, 2 * e.n)
    assert isinstance(_core.cpu_has_ifma(), bool)


def test_engine_from_public_keeps_the_last_key_sets_engine():
    """A compute node reuses the engine of the same key material (same bytes objects); other
    material, or clear_engine_cache, builds a new one."""
    from medtwin.he import bridge
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import preset

    prm = preset("test-insecure", allow_insecure=True)
    ctx1, _ = generate_keys(prm, rotations=[1])
    ctx2, _ = generate_keys(prm, rotations=[1])
    bridge.clear_engine_cache()
    e1 = bridge.engine_from_public(ctx1.public)
    assert bridge.engine_from_public(ctx1.public) is e1
    e2 = bridge.engine_from_public(ctx2.public)
    assert e2 is not e1 and e2.key_tag == ctx2.public.key_tag != e1.key_tag
    assert bridge.engine_from_public(ctx2.public) is e2
    bridge.clear_engine_cache()
    assert bridge.engine_from_public(ctx2.public) is not e2
    bridge.clear_engine_cache()


def _oversized_fields(b: bytes, end: int):
    """b with a field at each offset below end set to a size no buffer holds: a 4- or 8-byte count,
    or a (cyclotomic order, ring dimension) pair that agrees with itself (2r, r)."""
    pairs = [(2 * r).to_bytes(4, "little") + r.to_bytes(4, "little") for r in (1 << 30, (1 << 24) + 16, 1 << 21)]
    fields = [v.to_bytes(w, "little") for v, w in ((1 << 31, 4), (0xFFFFFFFF, 4), (1 << 40, 8), (1 << 62, 8))]
    for i in range(min(end, len(b) - 8)):
        for f in fields + pairs:
            m = bytearray(b)
            m[i:i + len(f)] = f
            yield bytes(m)


def test_oversized_sizes_are_refused_before_allocating(tiny):
    """A corrupted count or ring dimension is a format error, never a MemoryError or a crash:
    the parser checks what the remaining bytes can hold before it allocates (found by fuzzing
    the sanitizer build, which aborted on a 200 GB request from a corrupted evaluation key)."""
    ct = openfhe.Serialize(tiny.encrypt([0.5]), B)
    for m in _oversized_fields(ct, 1200):  # the header and the first towers' framing
        try:
            tiny.imp(m)
        except (CiphertextFormatError, KeyMismatchError):
            pass
    tag = tiny.kp.publicKey.GetKeyTag()
    mk = openfhe.Serialize(tiny.cc.GetEvalMultKeyVector(tag)[0], B)
    for m in _oversized_fields(mk, 1200):
        try:
            bridge.load_engine(m, b"")
        except (CiphertextFormatError, KeyMismatchError):
            pass


def test_tower_values_at_or_above_the_modulus_are_refused(tiny):
    ct = tiny.encrypt([0.5])
    b = openfhe.Serialize(ct, B)
    value = int(tiny.imp(ct).data[1, 2, 5])
    at = b.find(value.to_bytes(8, "little"))
    assert at > 0
    q = int(tiny.engine.moduli_q[2])
    for bad in (q, q + 1, (1 << 64) - 1):
        m = b[:at] + bad.to_bytes(8, "little") + b[at + 8:]
        with pytest.raises(CiphertextFormatError, match="not below its modulus"):
            tiny.imp(m)
    assert tiny.imp(b[:at] + (q - 1).to_bytes(8, "little") + b[at + 8:]).data[1, 2, 5] == q - 1
