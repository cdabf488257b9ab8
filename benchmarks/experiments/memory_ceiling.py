"""How fast could the key switch be if its memory traffic cost nothing? (timing only, wrong results)

Run against an engine built with ``memory_ceiling.patch`` (see ``README.md`` in this folder). The
patched engine reads ``MEDTWIN_CEIL`` on every key switch; each bit sends one stream to memory
that stays in cache:

*  1  the key: every Q tower's inner product but the first reads the second Q tower's key, every P tower the
      first P tower's;
*  2  ModUp's converted digits: every digit tower is written to and read from one per-thread buffer;
*  4  ModDown's conversions: likewise;
*  8  the twiddle tables: every transform uses the first, the second Q modulus' or the first P modulus' tables;
* 16  ModUp's inverse transforms write, and the conversion reads, the first digit's towers only.

The ciphertexts themselves (inputs, output, the tensor product's third element) and the
arithmetic are unchanged. The modes alternate within each round in one process, so that the
machine's phases hit every mode alike. Prints the median, 10th percentile and minimum per mode.

    MEDTWIN_ALLOW_INSECURE=1 .venv/bin/python -m benchmarks.experiments.memory_ceiling --rounds 8 --modes 0,6,8,30,31

An unpatched engine ignores MEDTWIN_CEIL (every mode then times the engine as it is).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks.primitives import _time, make_context
from medtwin import _core
from medtwin.he import bridge


def run_ceiling(logn: int = 16, depth: int = 20, rounds: int = 8, reps: int = 11, modes: tuple[int, ...] = (0, 6, 8, 30, 31),
                threads: int = 2) -> dict[tuple[str, int], list[float]]:
    """Milliseconds per call of HMult+relin and a rotation by 1, per (op, mode); MEDTWIN_CEIL is unset afterwards."""
    _core.set_num_threads(threads)
    cc, kp, eng = make_context(1 << logn, depth)
    x = np.random.default_rng(0).uniform(-1, 1, 1 << (logn - 1))
    a = bridge.import_ciphertext(eng, cc.Encrypt(kp.publicKey, cc.MakeCKKSPackedPlaintext(x.tolist())))
    ops = {"hmult_relin": lambda: eng.mul(a, a), "rotate": lambda: eng.rotate(a, 1)}
    times: dict[tuple[str, int], list[float]] = {}
    try:
        for _ in range(rounds):
            for mode in modes:
                os.environ["MEDTWIN_CEIL"] = str(mode)
                for name, fn in ops.items():
                    times.setdefault((name, mode), []).extend(_time(fn, reps))
    finally:
        os.environ.pop("MEDTWIN_CEIL", None)
    return times


def table(times: dict[tuple[str, int], list[float]]) -> str:
    rows = ["| op | MEDTWIN_CEIL | median ms | p10 ms | min ms |", "|---|---:|---:|---:|---:|"]
    for (name, mode), ts in sorted(times.items()):
        rows.append(f"| {name} | {mode} | {np.median(ts):.2f} | {np.percentile(ts, 10):.2f} | {min(ts):.2f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--reps", type=int, default=11, help="timed calls per op, mode and round")
    ap.add_argument("--modes", default="0,6,8,30,31", help="comma-separated MEDTWIN_CEIL values")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--logn", type=int, default=16, help="ring dimension 2^logn (depth 20)")
    args = ap.parse_args()
    times = run_ceiling(args.logn, 20, args.rounds, args.reps, tuple(int(v) for v in args.modes.split(",")),
                        args.threads)
    print(table(times))


if __name__ == "__main__":
    main()
