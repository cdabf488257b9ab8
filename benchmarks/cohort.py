"""Cohort-study benchmark: many patients x a regimen grid, encrypted, on both backends.

    python -m benchmarks.cohort --patients 10000         # vancomycin, 10,000 patients x 4x4 grid, cohort-128
    python -m benchmarks.cohort --patients 1000 --preset standard-128 --backends openfhe native
    python -m benchmarks.cohort --model theophylline     # 256 patients x 4x4 grid, 19 time points
    python -m benchmarks.cohort --preset test-insecure --patients 16 --backends openfhe native   # smoke

``--model vancomycin`` (default; the issue's example): :mod:`medtwin.study.cohort`, doses 750,
1000, 1250, 1500 mg x intervals 8, 12, 24, 48 h at steady state, one slot per (patient, regimen)
pair; per pair the trough and peak (two time points), AUC24, AUC24 difference, attainment,
trough penalty and score, and per regimen the cohort means summed under encryption (rotations).
Patients: the bundled synthetic cohort (weight and Cockcroft-Gault CrCl), repeated to the size.
Writes ``cohort_vancomycin.json`` / ``.md``. The vancomycin default preset is ``cohort-128``
(49-bit scaling primes, 60-bit first prime); both backends run it bit-identically (a preset
with primes wider than :data:`medtwin.he.params.NATIVE_MAX_MOD_BITS` would skip ``native`` with
a message). The flooding sigma of every released aggregate (30-bit default policy) is reported.

``--model theophylline``: one-compartment oral (:mod:`medtwin.study`), 4 doses x 4 intervals over
72 h, output every 4 h. Writes ``cohort.json`` and ``cohort.md``.

The vancomycin study runs each backend twice by default (``--modes``): the node gets live
OpenFHE objects in the benchmark's process, and it gets the ciphertexts' bytes and returns bytes,
as a compute node on another machine does (:func:`medtwin.study.cohort.simulate`).

Reports, per backend (and mode): simulation seconds, (patient, scenario, time point) results per second,
the slowdown against the plaintext reference on the same machine, and the largest deviation from
the reference against the stated bound. Timings are never asserted anywhere.
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


def run_vancomycin(patients: int, preset: str, backends: list[str], progress=None,
                   modes: tuple[str, ...] = ("objects", "wire")) -> dict:
    """The vancomycin cohort study on ``backends``; the key holder decrypts every per-pair output
    (validation only) to measure the deviations from the float64 reference."""
    from medtwin.data import cohort_csv_path
    from medtwin.errors import RangeError
    from medtwin.study import cohort as C
    from medtwin.study import workflow

    from medtwin.he.params import NATIVE_MAX_MOD_BITS, native_supported, preset as get_preset

    spec = C.CohortSpec(preset=preset)
    prm = get_preset(preset, allow_insecure=True)
    if "native" in backends and not native_supported(prm):
        print(f"native: skipped, preset {preset!r} has primes wider than the native engine's "
              f"{NATIVE_MAX_MOD_BITS} bits", file=sys.stderr, flush=True)
        backends = [b for b in backends if b != "native"]
    base = [r for r in workflow.load_records([cohort_csv_path()]) if _vanco_ok(C, r, RangeError)]
    cov0 = C.covariates_of_records(base)
    idx = np.arange(patients) % len(base)
    cov = {k: v[idx] for k, v in cov0.items()}
    ids = [f"tw-{i:06d}" for i in range(patients)]
    t = time.perf_counter()
    ref = C.reference(spec, cov)
    ref_agg = C.reference_aggregates(ref)
    t_plain = time.perf_counter() - t
    t = time.perf_counter()
    ctx, _ = C.cohort_keys(spec, allow_insecure=prm.insecure)
    t_keys = time.perf_counter() - t
    n_pairs = patients * spec.n_regimens
    n_results = 2 * n_pairs  # trough and peak per pair
    out = {"model": "vancomycin", "patients": patients, "scaling_mod_size": prm.scaling_mod_size,
           "first_mod_size": prm.first_mod_size, "scenarios": spec.n_regimens, "time_points": 2,
           "results": n_results, "pairs": n_pairs, "ring_dim": ctx.ring_dim, "preset": preset,
           "depth": ctx.depth, "rotation_keys": len(ctx.public.rotation_indices), "keygen_s": t_keys,
           "plaintext_s": t_plain, "plaintext_results_per_s": n_results / t_plain, "backends": {}}
    t = time.perf_counter()
    # one context for client and compute roles: a second deserialised copy of the ~200 MB rotation
    # keys would only cost memory here
    enc = C.encrypt(spec, cov, ids, ctx)
    out["encrypt_s"] = time.perf_counter() - t
    out["ciphertexts_per_covariate"] = enc.layout.n_ciphertexts
    t = time.perf_counter()
    wire = enc.to_wire(ctx) if "wire" in modes else None
    out["serialise_s"] = time.perf_counter() - t if wire is not None else None
    out["runs"] = []
    from medtwin.custody.policy import DEFAULT_POLICY

    for mode in modes:
        for be in backends:
            print(f"{be}, node gets {mode}: {enc.layout.n_ciphertexts} ciphertext chunk(s) ...", file=sys.stderr,
                  flush=True)
            o = C.simulate(wire if mode == "wire" else enc, ctx, backend=be, progress=progress)
            t = time.perf_counter()
            raw, abnd, anoise = C.decrypt_aggregates(o, ctx)
            t_agg = time.perf_counter() - t
            pairs = C.decrypt_pairs(o, ctx)
            bnd = C.pair_bounds(o)
            dev = {k: float(np.abs(pairs[k] - ref[k]).max()) for k in pairs}
            adev = {k: float(np.abs(raw[k] - ref_agg[k]).max()) for k in ref_agg}
            out["runs"].append({
                "mode": mode, "backend": be,
                "seconds": o.seconds, "results_per_s": n_results / o.seconds, "pairs_per_s": n_pairs / o.seconds,
                "slowdown_vs_plaintext": o.seconds / t_plain, "aggregate_decrypt_s": t_agg,
                "max_deviation": dev, "bound": bnd, "within_bound": all(dev[k] <= bnd[k] for k in dev),
                "aggregate_max_deviation": adev, "aggregate_bound": abnd,
                "aggregate_within_bound": all(adev[k] <= abnd[k] for k in adev),
                "aggregate_key_dependent_bound": anoise,
                "flooding_sigma": {k: DEFAULT_POLICY.sigma(max(v, 1e-300)) for k, v in anoise.items()},
                "pta_plaintext": [float(x) for x in ref_agg["pta"]],
                "pta_decrypted_unflooded": [float(x) for x in raw["pta"]]})
            del o, pairs
    out["native_speedup"] = {}
    for mode in modes:
        by = {r["backend"]: r for r in out["runs"] if r["mode"] == mode}
        if {"openfhe", "native"} <= set(by):
            out["native_speedup"][mode] = by["openfhe"]["seconds"] / by["native"]["seconds"]
    out["regimens"] = [r.describe() for r in spec.regimens]
    return out


def _vanco_ok(C, r, RangeError) -> bool:
    from medtwin.errors import ValidationError

    try:
        C.VANCOMYCIN.validate_covariates(C.covariates_of_records([r]))
        return True
    except (RangeError, ValidationError):
        return False


def vancomycin_table(r: dict) -> str:
    lines = [f"vancomycin: {r['patients']:,} patients x {r['scenarios']} regimens = {r['pairs']:,} pairs x 2 time points "
             f"(steady-state trough and peak) = {r['results']:,} results, {r['ciphertexts_per_covariate']} ciphertext(s) "
             f"per covariate, N = {r['ring_dim']}, depth {r['depth']}, {r['rotation_keys']} rotation keys, preset "
             f"{r['preset']} ({r.get('scaling_mod_size', 40)}-bit scale, {r.get('first_mod_size', 49)}-bit first "
             f"prime); key generation {r['keygen_s']:.0f} s, encryption {r['encrypt_s']:.1f} s, "
             f"plaintext reference {r['plaintext_s']:.3f} s",
             "", "| node gets | backend | seconds | results/s | pairs/s | slowdown vs plaintext | max dev. trough "
             "(mg/L) / bound | max dev. AUC24 (mg*h/L) / bound | max dev. attainment / bound | PTA max dev. / bound |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b in r["runs"]:
        d, bd = b["max_deviation"], b["bound"]
        lines.append(f"| {b['mode']} | {b['backend']} | {b['seconds']:.1f} | {b['results_per_s']:,.0f} | "
                     f"{b['pairs_per_s']:,.0f} | {b['slowdown_vs_plaintext']:,.0f}x | {d['trough']:.1e} / "
                     f"{bd['trough']:.1e} | {d['auc24']:.1e} / {bd['auc24']:.1e} | {d['attain']:.1e} / "
                     f"{bd['attain']:.1e} | {b['aggregate_max_deviation']['pta']:.1e} / "
                     f"{b['aggregate_bound']['pta']:.1e} |")
    if r.get("native_speedup"):
        lines.append("")
        for mode, x in r["native_speedup"].items():
            lines.append(f"native / OpenFHE throughput, node gets {mode}: {x:.2f}x")
    if r.get("serialise_s") is not None:
        lines.append(f"\n(wire: the client serialised the cohort in {r['serialise_s']:.1f} s, outside the timed "
                     "simulation; the node's deserialisation or import and its serialisation or export count in it)")
    for b in r["runs"]:
        lines.append(f"\n{b['backend']}, node gets {b['mode']}: every per-pair output within its bound: "
                     f"{b['within_bound']}; every aggregate within its bound: {b['aggregate_within_bound']}")
        lines.append("\n| released aggregate | max dev. (unflooded) | bound | key-dependent bound | flooding sigma "
                     "(30-bit) |\n|---|---:|---:|---:|---:|")
        kd = b.get("aggregate_key_dependent_bound", {})
        for k, sg in b["flooding_sigma"].items():
            lines.append(f"| {k} | {b['aggregate_max_deviation'][k]:.1e} | {b['aggregate_bound'][k]:.1e} | "
                         f"{kd.get(k, float('nan')):.1e} | {sg:.2g} |")
    return "\n".join(lines)


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
    ap.add_argument("--model", choices=["vancomycin", "theophylline"], default="vancomycin")
    ap.add_argument("--patients", type=int, default=None, help="default 10000 (vancomycin), 256 (theophylline)")
    ap.add_argument("--preset", default=None, help="default cohort-128 (vancomycin), standard-128 (theophylline)")
    ap.add_argument("--backends", nargs="+", default=["openfhe", "native"])
    ap.add_argument("--modes", nargs="+", choices=["objects", "wire"], default=["objects", "wire"],
                    help="vancomycin: how the node gets the cohort: live OpenFHE objects in this process, or "
                         "ciphertext bytes (as from another machine); default both")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    if args.model == "vancomycin":
        r = run_vancomycin(args.patients or 10000, args.preset or "cohort-128", args.backends,
                           modes=tuple(args.modes))
        stem, fmt = "cohort_vancomycin", vancomycin_table
    else:
        r = run(args.patients or 256, args.preset or "standard-128", args.backends)
        stem, fmt = "cohort", table
    r["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    r["load_average"] = os.getloadavg()
    r["command"] = "python -m benchmarks.cohort " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(r, indent=1))
    text = f"Command: `{r['command']}` ({r['date']}, load average {tuple(round(x, 1) for x in r['load_average'])})\n\n" + fmt(r)
    (args.out / f"{stem}.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
