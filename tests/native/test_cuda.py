"""CUDA kernels against the CPU engine (skipped unless built with MEDTWIN_CUDA=ON and a GPU is visible)."""
from __future__ import annotations

import numpy as np
import pytest

from medtwin import _core
from tests.native.test_kernels import ntt_prime, primitive_root_2n

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not getattr(_core, "built_with_cuda", False) or _core.cuda_device_count() == 0,
                       reason="needs a CUDA build (scripts/build_cuda.sh) and a GPU"),
]


@pytest.mark.parametrize("n,bits", [(16, 40), (1024, 49), (1 << 16, 59)])
def test_cuda_ntt_matches_cpu(n, bits):
    q = ntt_prime(bits, n)
    psi = primitive_root_2n(q, n)
    a = np.random.default_rng(n).integers(0, q, n, dtype=np.uint64)
    np.testing.assert_array_equal(_core.cuda_ntt(a, q, psi), _core.ntt_forward(a, q, psi))
    np.testing.assert_array_equal(_core.cuda_ntt(a, q, psi, inverse=True), _core.ntt_inverse(a, q, psi))


def test_cuda_modmul_matches_cpu():
    q = ntt_prime(59, 1024)
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, q, 4096, dtype=np.uint64), rng.integers(0, q, 4096, dtype=np.uint64)
    want = [(int(x) * int(y)) % q for x, y in zip(a, b)]
    assert [int(v) for v in _core.cuda_modmul(a, b, q)] == want
