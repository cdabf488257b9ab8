"""End-to-end encrypted study (theophylline, three scenarios) on both backends: throughput in
(patient, scenario, time point) results per second of encrypted simulation, and agreement of the
decrypted outcomes with the plaintext reference.

Two ways of handing the cohort to the compute node, each timed on both backends:

* ``objects``: client and node share one process, the node gets live OpenFHE ciphertext objects
  (the desktop app's path); the native backend pays its bridge through OpenFHE's serialiser.
* ``wire``: the node gets the ciphertexts' bytes and returns bytes, as a node on another machine
  (and the CLI's ``simulate`` on a bundle) does; the OpenFHE backend deserialises and serialises,
  the native engine imports and exports the bytes itself.
"""
from __future__ import annotations

import os


os.environ.setdefault("MEDTWIN_ALLOW_INSECURE", "1")


def run_study_benchmark(n_patients: int = 25, preset: str = "test-insecure", horizon_h: float = 48.0,
                        step_h: float = 3.0) -> list[dict]:
    """Records {op: "study", backend, seconds, results_per_s, max_conc_abs_dev, bound, ...}."""
    from medtwin.data import cohort_csv_path
    from medtwin.study import workflow
    from medtwin.study.scenario import Regimen, Scenario
    from medtwin.study.study import StudySpec, run_study

    scen = [
        Scenario("q12 oral", Regimen(dose_mg=300, interval_h=12, count=4)),
        Scenario("q8 oral", Regimen(dose_mg=200, interval_h=8, count=6)),
        Scenario("iv bolus", Regimen(dose_mg=350, interval_h=12, count=3, route="iv_bolus", loading_dose_mg=500)),
    ]
    spec = StudySpec.grid("theophylline", scen, horizon_h=horizon_h, step_h=step_h, preset=preset)
    recs = workflow.load_records([cohort_csv_path()])[:n_patients]
    cov = workflow.covariates_of(recs)
    ids = [f"tw-{i:03d}" for i in range(len(recs))]
    ctx, _ = workflow.make_keys(preset)
    out = []
    jobs = [(mode, backend) for mode in ("objects", "wire") for backend in ("openfhe", "native")]
    for mode, backend in jobs:
        res = run_study(spec, cov, ids, ctx, backend=backend, wire=mode == "wire")
        dev = res.deviations()
        n_results = len(ids) * len(scen) * len(spec.times)
        sim = float(res.seconds_simulate)
        out.append({"op": "study", "mode": mode, "backend": backend, "n": int(ctx.ring_dim), "depth": int(ctx.depth),
                    "patients": len(ids), "scenarios": len(scen), "time_points": len(spec.times),
                    "seconds_total": float(res.seconds_total), "seconds_simulate": sim,
                    "results_per_s": n_results / sim,
                    "conc_abs_dev": float(dev["conc_abs"]), "conc_bound": float(res.bounds["conc"])})
    return out


if __name__ == "__main__":  # pragma: no cover
    for r in run_study_benchmark():
        print(r)
