"""Kernels against a Python big-integer reference (hypothesis): modular arithmetic, the NTT in
OpenFHE's evaluation order (portable and IFMA paths), the CKKS encoder."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin import _core


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def ntt_prime(bits: int, n: int, skip: int = 0) -> int:
    q = ((1 << bits) // (2 * n)) * 2 * n + 1
    while True:
        q -= 2 * n
        if _is_prime(q):
            if skip == 0:
                return q
            skip -= 1


def primitive_root_2n(q: int, n: int) -> int:
    for g in range(2, 1000):
        psi = pow(g, (q - 1) // (2 * n), q)
        if pow(psi, n, q) == q - 1:
            return psi
    raise AssertionError("no root")


def bitrev(j: int, bits: int) -> int:
    return int(format(j, f"0{bits}b")[::-1], 2) if bits else 0


def ntt_reference(a: list[int], q: int, psi: int) -> list[int]:
    n = len(a)
    bits = n.bit_length() - 1
    return [sum(a[k] * pow(psi, (2 * bitrev(j, bits) + 1) * k, q) for k in range(n)) % q for j in range(n)]


PRIMES = [(b, n, ntt_prime(b, n)) for b in (30, 49, 50, 55, 60) for n in (16, 64)]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), idx=st.integers(0, len(PRIMES) - 1), ifma=st.booleans())
def test_ntt_matches_definition(data, idx, ifma):
    bits, n, q = PRIMES[idx]
    psi = primitive_root_2n(q, n)
    a = data.draw(st.lists(st.integers(0, q - 1), min_size=n, max_size=n))
    _core.set_ifma_enabled(ifma)
    try:
        f = _core.ntt_forward(np.array(a, dtype=np.uint64), q, psi)
        assert [int(v) for v in f] == ntt_reference(a, q, psi)
        back = _core.ntt_inverse(f, q, psi)
        assert [int(v) for v in back] == a
    finally:
        _core.set_ifma_enabled(True)


# sizes cover every split of the vector NTT: all stages in one L1 block (<= 2048), one to five
# whole-array stages (radix-2 and radix-4 passes, the folded n^-1 pass), and the merged last stages
@pytest.mark.parametrize("n", [16, 32, 64, 1024, 2048, 4096, 8192, 16384, 32768, 65536])
@pytest.mark.parametrize("bits", [40, 46, 50, 59, 60, 61])  # 40, 46: the lazy forward (q < 2^46)
@pytest.mark.parametrize("fill", ["random", "max"])
def test_ifma_and_portable_agree(n, bits, fill):
    q = ntt_prime(bits, n)
    psi = primitive_root_2n(q, n)
    if fill == "max":  # every input q - 1: the lazy bounds at their widest
        a = np.full(n, q - 1, dtype=np.uint64)
    else:
        a = np.random.default_rng(n + bits).integers(0, q, n, dtype=np.uint64)
    _core.set_ifma_enabled(True)
    f1, i1 = _core.ntt_forward(a, q, psi), _core.ntt_inverse(a, q, psi)
    _core.set_ifma_enabled(False)
    try:
        f2, i2 = _core.ntt_forward(a, q, psi), _core.ntt_inverse(a, q, psi)
    finally:
        _core.set_ifma_enabled(True)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(_core.ntt_inverse(f1, q, psi), a)


@settings(max_examples=300, deadline=None)
@given(q=st.integers(2, (1 << 62) - 1), a=st.integers(0, (1 << 64) - 1), b=st.integers(0, (1 << 64) - 1))
def test_mulmod_barrett(q, a, b):
    assert _core.mulmod(a, b, q) == (a * b) % q


@settings(max_examples=300, deadline=None)
@given(q=st.integers(2, (1 << 62) - 1), a=st.integers(0, (1 << 64) - 1), w=st.integers(0, (1 << 62) - 1))
def test_mulmod_shoup(q, a, w):
    w %= q
    assert _core.mulmod_shoup(a, w, q) == (a * w) % q


def test_bad_roots_and_sizes_are_refused():
    q = ntt_prime(40, 16)
    with pytest.raises(ValueError):
        _core.ntt_forward(np.zeros(16, dtype=np.uint64), q, 2)  # not a primitive 2N-th root
    with pytest.raises(ValueError):
        _core.ntt_forward(np.zeros(12, dtype=np.uint64), q, primitive_root_2n(q, 16))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), logn=st.integers(3, 7), sparse=st.integers(0, 2))
def test_encoder_inverts_canonical_embedding(seed, logn, sparse):
    """The coefficients m (with X -> X^gap packing) evaluated at the slots' roots zeta^(5^j)
    give back the values (Cheon et al. 2017's canonical embedding in OpenFHE's slot order)."""
    n = 1 << logn
    slots = max(1, (n // 2) >> sparse)
    rng = np.random.default_rng(seed)
    v = rng.uniform(-10, 10, slots)
    c = _core.encode_coeffs(n, v, slots)
    m = 2 * n
    zeta = np.exp(2j * np.pi / m)
    roots = np.array([zeta ** pow(5, j, m) for j in range(slots)])
    vals = np.array([np.polyval(c[::-1], r) for r in roots])
    np.testing.assert_allclose(vals.real, v, atol=1e-8)
    np.testing.assert_allclose(vals.imag, 0, atol=1e-8)
