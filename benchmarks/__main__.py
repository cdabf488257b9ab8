"""``python -m benchmarks [--quick] [--sizes 14 15 16] [--depths 10 20] [--reps 5] [--out DIR]``

Times the native engine's primitives and the OpenFHE bridge beside the openfhe wheel on the same
ciphertexts; writes ``results.json``, ``results.md`` (table with native/OpenFHE ratios) and PNG
plots into ``--out`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

from benchmarks.primitives import default_threads, run_primitives
from benchmarks.report import markdown_table, plot, study_table, write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N=2^12 and 2^13, depth 10, 3 repetitions (a smoke run)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[14, 15, 16], help="log2 of the ring dimensions")
    ap.add_argument("--depths", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--no-study", action="store_true", help="skip the end-to-end encrypted study")
    ap.add_argument("--study-patients", type=int, default=25)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.depths, args.reps = [12, 13], [10], 3
    args.out.mkdir(parents=True, exist_ok=True)
    from medtwin import _core
    from medtwin.he import bridge

    records = []
    for lg in args.sizes:
        for depth in args.depths:
            print(f"N=2^{lg} depth {depth} ...", file=sys.stderr, flush=True)
            records += [r.to_dict() for r in run_primitives(1 << lg, depth, args.reps, args.threads)]
    study = []
    if not args.no_study:
        from benchmarks.study import run_study_benchmark

        print("end-to-end study ...", file=sys.stderr, flush=True)
        study = run_study_benchmark(n_patients=5 if args.quick else args.study_patients)
    meta = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "openfhe": bridge.openfhe_version(), "ifma": _core.cpu_has_ifma(), "threads": args.threads,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
    }
    write_json(records + study, args.out / "results.json", meta)
    table = markdown_table(records)
    if study:
        table += "\n\n" + study_table(study)
    (args.out / "results.md").write_text(f"Command: `{meta['command']}` ({meta['when']}, {meta['cores']} cores, "
                                         f"IFMA {meta['ifma']}, load average {meta['loadavg_at_end']})\n\n{table}\n")
    files = plot(records, args.out)
    print(table)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'}, " + ", ".join(str(f) for f in files),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
