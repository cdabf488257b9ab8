"""Cohort-study benchmark: many patients x a regimen grid, encrypted, on both backends.

    python -m benchmarks.cohort                          # 256 patients x 4x4 grid, standard-128, both backends
    python -m benchmarks.cohort --patients 10000         # the issue's full size (about 1 h per backend here)
    python -m benchmarks.cohort --preset test-insecure --patients 16 --backends openfhe native   # smoke

Model: theophylline (one-compartment oral, Cockcroft-Gault/Dettli covariates; the one model whose
studies run through :mod:`medtwin.study`), 4 doses x 4 intervals over 72 h, output every 4 h.
Reports, per backend: simulation seconds, (patient, scenario, time point) results per second,
the slowdown against the plaintext reference on the same machine, and the largest deviation from
the reference against the stated bound. Writes ``cohort.json`` and ``cohort.md`` to ``--out``.
Timings are never asserted anywhere.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def run(patients: int, preset: str, backends: list[str], horizon: float = 72.0, step: float = 4.0) -> dict:
    from medtwin.data import cohort_csv_path
    from medtwin.he.openfhe_backend import HEContext
    from medtwin.study import workflow
    from medtwin.study.optimise import regimen_grid
    from medtwin.study.scenario import Scenario
    from medtwin.study.study import StudySpec, decrypt_outcome, encrypt_cohort, reference_outcome, simulate

    regs = regimen_grid([150, 200, 300, 400], [6, 8, 12, 24], horizon)
    spec = StudySpec.grid("theophylline", [Scenario(r.describe(), r) for r in regs], horizon, step, preset=preset)
    base = workflow.load_records([cohort_csv_path()])
    cov0 = workflow.covariates_of(base)
    idx = np.arange(patients) % len(base)  # the bundled cohort, repeated to reach the size
    cov = {k: v[idx] for k, v in cov0.items()}
    ids = [f"tw-{i:06d}" for i in range(patients)]
    t = time.perf_counter()
    ref = reference_outcome(spec, cov)
    t_plain = time.perf_counter() - t
    client, _ = workflow.make_keys(preset, spec.model)
    node = HEContext.from_public(client.public)
    enc = encrypt_cohort(spec, cov, ids, client)
    n_results = enc.layout.n_results
    out = {"patients": patients, "scenarios": len(spec.scenarios), "time_points": len(spec.times),
           "results": n_results, "ciphertexts_per_covariate": enc.layout.n_ciphertexts,
           "ring_dim": client.ring_dim, "preset": preset, "plaintext_s": t_plain,
           "plaintext_results_per_s": n_results / t_plain, "backends": {}}
    for be in backends:
        print(f"{be}: {enc.layout.n_ciphertexts} ciphertext chunk(s) ...", file=sys.stderr, flush=True)
        o = simulate(enc, node, backend=be)
        res = decrypt_outcome(o, client)
        dev = float(np.abs(res.conc - ref["conc"]).max())
        out["backends"][be] = {"seconds": o.seconds, "results_per_s": n_results / o.seconds,
                               "slowdown_vs_plaintext": o.seconds / t_plain, "max_conc_deviation": dev,
                               "conc_bound": o.bounds["conc"]}
    if {"openfhe", "native"} <= set(out["backends"]):
        out["native_speedup"] = out["backends"]["openfhe"]["seconds"] / out["backends"]["native"]["seconds"]
    return out


def table(r: dict) -> str:
    lines = [f"{r['patients']} patients x {r['scenarios']} regimens x {r['time_points']} time points = "
             f"{r['results']:,} results, {r['ciphertexts_per_covariate']} ciphertext(s) per covariate, "
             f"N = {r['ring_dim']}, preset {r['preset']}; plaintext reference {r['plaintext_s']:.2f} s",
             "", "| backend | seconds | results/s | slowdown vs plaintext | max deviation (mg/L) | stated bound |",
             "|---|---:|---:|---:|---:|---:|"]
    for be, b in r["backends"].items():
        lines.append(f"| {be} | {b['seconds']:.1f} | {b['results_per_s']:,.0f} | {b['slowdown_vs_plaintext']:,.0f}x | "
                     f"{b['max_conc_deviation']:.2e} | {b['conc_bound']:.2e} |")
    if "native_speedup" in r:
        lines.append(f"\nnative / OpenFHE throughput: {r['native_speedup']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cohort", description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=256)
    ap.add_argument("--preset", default="standard-128")
    ap.add_argument("--backends", nargs="+", default=["openfhe", "native"])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    r = run(args.patients, args.preset, args.backends)
    r["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    r["load_average"] = os.getloadavg()
    r["command"] = "python -m benchmarks.cohort " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cohort.json").write_text(json.dumps(r, indent=1))
    text = f"Command: `{r['command']}` ({r['date']}, load average {tuple(round(x, 1) for x in r['load_average'])})\n\n" + table(r)
    (args.out / "cohort.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
