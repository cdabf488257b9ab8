"""Primitive timings, native engine and OpenFHE side by side on the same ciphertexts.

Every record: op, N, depth, backend, threads, median and spread (min, max, IQR) in ms over
``reps`` runs after one warm-up. Timings are measurements, never test assertions.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import openfhe

from medtwin import _core
from medtwin.he import bridge

B = openfhe.BINARY


@dataclass
class Record:
    op: str
    n: int
    depth: int
    backend: str
    threads: int
    median_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    reps: int
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _time(fn: Callable[[], object], reps: int) -> list[float]:
    fn()  # warm-up (tables, pools)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _record(op, n, depth, backend, threads, ts, note="") -> Record:
    q = np.percentile(ts, [25, 75]) if len(ts) > 1 else (ts[0], ts[0])
    return Record(op, n, depth, backend, threads, float(statistics.median(ts)), float(min(ts)), float(max(ts)),
                  float(q[1] - q[0]), len(ts), note)


HOISTED = (1, 2, 3, 4)  # the rotations of the hoisted row (one input, one shared ModUp)


def make_context(n: int, depth: int, scaling: int = 40, first: int = 49):
    """OpenFHE CKKS context at ring dimension ``n`` (FIXEDMANUAL, HYBRID, OpenFHE's default dnum).

    The ring dimension is forced with HEStd_NotSet so that every (N, depth) pair can be timed;
    the timings are those of a secure context with the same N and moduli."""
    p = openfhe.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(depth)
    p.SetScalingModSize(scaling)
    p.SetFirstModSize(first)
    p.SetSecurityLevel(openfhe.SecurityLevel.HEStd_NotSet)
    p.SetRingDim(n)
    p.SetScalingTechnique(openfhe.ScalingTechnique.FIXEDMANUAL)
    p.SetKeySwitchTechnique(openfhe.KeySwitchTechnique.HYBRID)
    cc = openfhe.GenCryptoContext(p)
    for f in (openfhe.PKESchemeFeature.PKE, openfhe.PKESchemeFeature.KEYSWITCH, openfhe.PKESchemeFeature.LEVELEDSHE):
        cc.Enable(f)
    kp = cc.KeyGen()
    cc.EvalMultKeyGen(kp.secretKey)
    cc.EvalRotateKeyGen(kp.secretKey, list(HOISTED))
    tag = kp.publicKey.GetKeyTag()
    eng = bridge.load_engine(openfhe.Serialize(cc.GetEvalMultKeyVector(tag)[0], B),
                             openfhe.Serialize(cc.GetEvalAutomorphismKeyMap(tag), B))
    return cc, kp, eng


def run_primitives(n: int, depth: int, reps: int, threads: int) -> list[Record]:
    """Time every primitive at (n, depth) for both backends; returns the records."""
    _core.set_num_threads(threads)
    cc, kp, eng = make_context(n, depth)
    slots = n // 2
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, slots), rng.uniform(-1, 1, slots)
    cx = cc.Encrypt(kp.publicKey, cc.MakeCKKSPackedPlaintext(x.tolist()))
    cy = cc.Encrypt(kp.publicKey, cc.MakeCKKSPackedPlaintext(y.tolist()))
    pty = cc.MakeCKKSPackedPlaintext(y.tolist())
    a, b = bridge.import_ciphertext(eng, cx), bridge.import_ciphertext(eng, cy)
    cm = cc.EvalMult(cx, cy)
    m = eng.mul(a, b)
    enc = eng.encode(y, a.towers, 2.0 ** eng.scaling_mod_size, a.slots)
    bx = openfhe.Serialize(cx, B)
    recs: list[Record] = []

    def both(op, native, ofhe, note=""):
        recs.append(_record(op, n, depth, "native", threads, _time(native, reps), note))
        if ofhe is not None:
            recs.append(_record(op, n, depth, "openfhe", threads, _time(ofhe, reps), note))

    # One tower's NTT, timed in C++ on a tower that stays in cache with its tables (through
    # eng.ntt_forward, numpy's fresh output pages would cost as much as the transform at 2^16):
    # a scaling prime (IFMA, 52-bit products) and OpenFHE's first P prime (60 bits: 64-bit products).
    ntt_reps = max(reps, 25)
    moduli = list(eng.moduli_q) + list(eng.moduli_p)
    for name, idx in [("tower", 1)] + ([("p_tower", len(eng.moduli_q))] if eng.moduli_p else []):
        for inverse in (False, True):
            recs.append(_record(f"ntt_{'inverse' if inverse else 'forward'}_{name}", n, depth, "native", threads,
                                eng.time_ntt(idx, inverse, ntt_reps),
                                f"{moduli[idx].bit_length()}-bit modulus, in cache, timed in C++"))
    both("add", lambda: eng.add(a, b), lambda: cc.EvalAdd(cx, cy))
    both("ct_x_pt", lambda: eng.mul_encoded(a, enc, 2.0 ** eng.scaling_mod_size),
         lambda: cc.EvalMult(cx, pty), "plaintext encoded beforehand")
    both("ct_x_pt_with_encode", lambda: eng.mul_plain(a, y), None, "native encodes the vector in the call")
    both("hmult_relin", lambda: eng.mul(a, b), lambda: cc.EvalMult(cx, cy))
    both("rescale", lambda: eng.rescale(m), lambda: cc.Rescale(cm))
    both("hmult_rescale", lambda: eng.mul_rescale(a, b), lambda: cc.Rescale(cc.EvalMult(cx, cy)),
         "what a planned program runs for each product: native fuses ModDown with the rescale")
    both("rotate", lambda: eng.rotate(a, 1), lambda: cc.EvalRotate(cx, 1))

    def ofhe_hoisted():
        pre = cc.EvalFastRotationPrecompute(cx)
        return [cc.EvalFastRotation(cx, r, 2 * n, pre) for r in HOISTED]

    both("rotate_hoisted_x4", lambda: eng.rotate_many(a, list(HOISTED)), ofhe_hoisted,
         "rotations by 1..4 of one input sharing one ModUp (OpenFHE: EvalFastRotationPrecompute + EvalFastRotation)")
    # bridge: native import/export vs OpenFHE's own deserialise/serialise
    both("bridge_import", lambda: eng.import_ciphertext(bx), lambda: openfhe.DeserializeCiphertextString(bx, B),
         "bytes -> ciphertext")
    both("bridge_export", lambda: eng.export_ciphertext(a), lambda: openfhe.Serialize(cx, B), "ciphertext -> bytes")
    return recs


def default_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
