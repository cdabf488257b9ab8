"""The primitives benchmark runs every op on both backends and reports what it timed (timings
themselves are never asserted)."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from benchmarks.experiments.memory_ceiling import run_ceiling, table
from benchmarks.primitives import default_threads, run_primitives
from medtwin import _core
from benchmarks.report import markdown_table

OPS = {"add", "ct_x_pt", "hmult_relin", "rescale", "hmult_rescale", "rotate", "rotate_hoisted_x4", "bridge_import",
       "bridge_export"}


def test_every_primitive_is_timed_on_both_backends():
    try:
        recs = [dataclasses.asdict(r) for r in run_primitives(1 << 12, 3, 1, 2)]
    finally:
        _core.set_num_threads(default_threads())  # the benchmark sets the engine's thread count
    seen = {(r["op"], r["backend"]) for r in recs}
    for op in OPS:
        assert (op, "native") in seen and (op, "openfhe") in seen, op
    assert ("ct_x_pt_with_encode", "native") in seen
    for op in ("ntt_forward_tower", "ntt_inverse_tower", "ntt_forward_p_tower", "ntt_inverse_p_tower"):
        assert (op, "native") in seen, op
    bits = {r["op"]: r["note"] for r in recs if r["op"].startswith("ntt_")}
    assert bits["ntt_forward_p_tower"].startswith("60-bit"), bits  # OpenFHE's P primes for HYBRID
    for r in recs:
        assert r["n"] == 1 << 12 and r["depth"] == 3 and r["median_ms"] > 0
    table = markdown_table(recs)
    for op in OPS:
        assert f"| {op} | 2^12 | 3 |" in table


def test_time_ntt_times_the_engines_transform(small):
    eng = small.engine
    moduli = list(eng.moduli_q) + list(eng.moduli_p)
    for idx in (0, len(moduli) - 1):
        for inverse in (False, True):
            ts = eng.time_ntt(idx, inverse, 3)
            assert len(ts) == 3 and all(t > 0 for t in ts)
    # the tables it times are the engine's: its transform round-trips with the engine's inverse
    q = moduli[-1]
    a = np.random.default_rng(5).integers(0, q, small.n, dtype=np.uint64)
    np.testing.assert_array_equal(eng.ntt_inverse(len(moduli) - 1, eng.ntt_forward(len(moduli) - 1, a)), a)
    with pytest.raises(ValueError, match="modulus index out of range"):
        eng.time_ntt(len(moduli), False, 1)
    with pytest.raises(ValueError, match="reps"):
        eng.time_ntt(0, False, 0)


def test_memory_ceiling_experiment_times_every_op_and_mode(monkeypatch):
    # The unpatched engine ignores MEDTWIN_CEIL: this checks the tool's loop and table, and that
    # it leaves the variable unset (a patched engine would otherwise keep giving wrong results).
    monkeypatch.delenv("MEDTWIN_CEIL", raising=False)
    try:
        times = run_ceiling(logn=12, depth=3, rounds=2, reps=2, modes=(0, 31), threads=2)
    finally:
        _core.set_num_threads(default_threads())
    assert "MEDTWIN_CEIL" not in os.environ
    assert set(times) == {(op, m) for op in ("hmult_relin", "rotate") for m in (0, 31)}
    assert all(len(ts) == 4 and min(ts) > 0 for ts in times.values())
    out = table(times)
    assert "| hmult_relin | 31 |" in out and "| rotate | 0 |" in out
