"""The primitives benchmark runs every op on both backends and reports what it timed (timings
themselves are never asserted)."""
from __future__ import annotations

import dataclasses

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
    assert ("ntt_forward_tower", "native") in seen and ("ct_x_pt_with_encode", "native") in seen
    for r in recs:
        assert r["n"] == 1 << 12 and r["depth"] == 3 and r["median_ms"] > 0
    table = markdown_table(recs)
    for op in OPS:
        assert f"| {op} | 2^12 | 3 |" in table
