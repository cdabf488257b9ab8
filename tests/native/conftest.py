from __future__ import annotations

import functools
import importlib.util
import os
import sys

# scripts/sanitize_tests.sh: run these tests against a sanitizer build of the engine.
_OVERRIDE = os.environ.get("MEDTWIN_CORE_OVERRIDE")
if _OVERRIDE:
    import medtwin

    _spec = importlib.util.spec_from_file_location("medtwin._core", _OVERRIDE)
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
    sys.modules["medtwin._core"] = _mod
    medtwin._core = _mod
from dataclasses import dataclass

import numpy as np
import openfhe
import pytest

from medtwin.he import bridge

B = openfhe.BINARY


@dataclass
class Setup:
    """An OpenFHE context with keys, and the native engine built from its evaluation keys."""

    cc: object
    kp: object
    engine: object
    n: int
    slots: int
    depth: int

    def encrypt(self, values, level: int = 0):
        return self.cc.Encrypt(self.kp.publicKey, self.cc.MakeCKKSPackedPlaintext(list(map(float, values)), 1, level))

    def decrypt(self, ct) -> np.ndarray:
        if isinstance(ct, (bytes, bytearray)):
            ct = openfhe.DeserializeCiphertextString(bytes(ct), B)
        pt = self.cc.Decrypt(self.kp.secretKey, ct)
        pt.SetLength(self.slots)
        return np.array(pt.GetRealPackedValue())

    def imp(self, ct):
        return bridge.import_ciphertext(self.engine, ct)

    def exp(self, ct) -> bytes:
        return bridge.export_ciphertext(self.engine, ct)


ROTATIONS = (1, -1, 2, 3, 5)


@functools.lru_cache(maxsize=None)
def make_setup(n: int, depth: int, dnum: int = 0, scaling: int = 40, first: int = 49,
               rotations: tuple[int, ...] = ROTATIONS) -> Setup:
    p = openfhe.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(depth)
    p.SetScalingModSize(scaling)
    p.SetFirstModSize(first)
    p.SetSecurityLevel(openfhe.SecurityLevel.HEStd_NotSet)
    p.SetRingDim(n)
    if dnum:
        p.SetNumLargeDigits(dnum)
    p.SetScalingTechnique(openfhe.ScalingTechnique.FIXEDMANUAL)
    p.SetKeySwitchTechnique(openfhe.KeySwitchTechnique.HYBRID)
    cc = openfhe.GenCryptoContext(p)
    for f in (openfhe.PKESchemeFeature.PKE, openfhe.PKESchemeFeature.KEYSWITCH, openfhe.PKESchemeFeature.LEVELEDSHE):
        cc.Enable(f)
    kp = cc.KeyGen()
    cc.EvalMultKeyGen(kp.secretKey)
    rots = [r for r in rotations if abs(r) < n // 2]
    if rots:
        cc.EvalRotateKeyGen(kp.secretKey, rots)
    tag = kp.publicKey.GetKeyTag()
    mk = openfhe.Serialize(cc.GetEvalMultKeyVector(tag)[0], B)
    rk = openfhe.Serialize(cc.GetEvalAutomorphismKeyMap(tag), B) if rots else b""
    eng = bridge.load_engine(mk, rk)
    return Setup(cc, kp, eng, n, n // 2, depth)


@pytest.fixture(scope="session")
def tiny() -> Setup:
    """N = 16 (the smallest ring OpenFHE accepts here), depth 3."""
    return make_setup(16, 3)


@pytest.fixture(scope="session")
def small() -> Setup:
    """N = 1024, depth 5, dnum 3."""
    return make_setup(1024, 5, 3)
