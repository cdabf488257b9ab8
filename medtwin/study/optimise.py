"""Treatment optimisation with uncertainty: a grid of candidate regimens per patient, evaluated in
one encrypted pass, returned as ranked options with their basis and prediction bands.

Uncertainty comes from inter-individual variability (IIV): the population model's random effect
on clearance, eta ~ N(0, omega^2), is sampled in plaintext (deterministic normal quantiles, so
the band is reproducible) and applied to every encrypted twin as a clearance factor exp(eta); each
(regimen, eta) pair is one scenario of the encrypted study. For theophylline omega_CL = 0.168 is
the between-subject standard deviation of log clearance in Pinheiro and Bates' mixed-effects fit
of the Boeckmann et al. data (Mixed-Effects Models in S and S-PLUS, 2000, sec. 8.2); random
effects on absorption are not modelled (ka is a plaintext population constant of the program).

Scoring (after decryption, by the key holder): the expected fraction of the horizon inside the
therapeutic window (computed under encryption per pair, smooth edges) minus a penalty for the
probability that the peak exceeds the window (toxicity), over the IIV replicates. Options are
ranked, never reduced to a single directive: each carries the model and its citation, the
covariates the model used, the 5-95% band of every metric and the computed error bounds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Sequence

import numpy as np

from medtwin.errors import ValidationError
from medtwin.models.pk_oral import COVARIATES
from medtwin.study.scenario import Regimen, Scenario
from medtwin.study.study import StudyResult, StudySpec

OMEGA_CL = {"theophylline": 0.168}


def eta_quantiles(n: int, omega: float) -> np.ndarray:
    """``n`` deterministic draws of N(0, omega^2): the normal quantiles at (i + 0.5) / n."""
    if n < 1:
        raise ValidationError("at least one IIV replicate is needed")
    nd = NormalDist(0.0, float(omega))
    return np.array([nd.inv_cdf((i + 0.5) / n) for i in range(n)])


def regimen_grid(doses_mg: Sequence[float], intervals_h: Sequence[float], horizon_h: float, *,
                 route: str = "oral") -> list[Regimen]:
    """Every (dose, interval) combination, dosed through the horizon."""
    regs = []
    for tau in intervals_h:
        n = max(1, int(horizon_h // tau))
        for d in doses_mg:
            regs.append(Regimen(dose_mg=float(d), interval_h=float(tau), count=n, route=route))
    if not regs:
        raise ValidationError("the regimen grid is empty")
    return regs


def scenario_grid(regimens: Sequence[Regimen], *, replicates: int = 8, omega_cl: float = 0.168,
                  adherence: float = 1.0, renal_factor: float = 1.0, clearance_factor: float = 1.0) -> list[Scenario]:
    """(regimen x IIV replicate) scenarios; names are '<regimen>#<replicate>'."""
    etas = eta_quantiles(replicates, omega_cl) if replicates > 1 else np.zeros(1)
    out = []
    for r in regimens:
        for i, eta in enumerate(etas):
            out.append(Scenario(name=f"{r.describe()}#{i}", regimen=r, adherence=adherence, renal_factor=renal_factor,
                                clearance_factor=float(clearance_factor * np.exp(eta)),
                                tags={"regimen": r.describe(), "replicate": i, "eta_cl": float(eta)}))
    return out


@dataclass
class Option:
    rank: int
    regimen: str
    score: float
    tiw: tuple[float, float, float]        # 5%, median, 95% over IIV
    peak: tuple[float, float, float]
    trough: tuple[float, float, float]
    auc: tuple[float, float, float]
    p_toxic: float                          # fraction of replicates with peak above the window
    p_subtherapeutic: float                 # fraction with trough below the window
    basis: dict = field(default_factory=dict)

    def line(self) -> str:
        return (f"#{self.rank} {self.regimen:24s} score {self.score:+.3f} | time in window {self.tiw[1]:.2f} "
                f"[{self.tiw[0]:.2f}-{self.tiw[2]:.2f}] | peak {self.peak[1]:.1f} [{self.peak[0]:.1f}-{self.peak[2]:.1f}] mg/L"
                f" | trough {self.trough[1]:.1f} [{self.trough[0]:.1f}-{self.trough[2]:.1f}] mg/L"
                f" | P(peak>{self.basis.get('window', ('', ''))[1]}) {self.p_toxic:.0%}")


def rank_options(result: StudyResult, *, toxicity_penalty: float = 1.0) -> dict[str, list[Option]]:
    """Per twin: candidate regimens ranked by score, each with its IIV band and basis."""
    spec = result.spec
    model = spec.pk
    lo, hi = model.window
    groups: dict[str, list[int]] = {}
    for s, sc in enumerate(spec.scenarios):
        groups.setdefault(sc.tags.get("regimen", sc.name), []).append(s)
    peak, trough = result.peak, result.trough
    q = lambda a: tuple(float(x) for x in np.percentile(a, [5, 50, 95]))
    basis = {"model": model.name, "model_version": model.version, "citation": model.citation,
             "covariates": list(COVARIATES), "window": model.window,
             "iiv": f"omega_CL {OMEGA_CL.get(model.drug, 'n/a')} (log scale), {len(next(iter(groups.values())))} replicates",
             "bounds": dict(result.bounds), "program_digest": result.program_digest}
    out: dict[str, list[Option]] = {}
    for p, tid in enumerate(result.twin_ids):
        opts = []
        for reg, idx in groups.items():
            tiw = result.tiw[p, idx] if result.tiw is not None else np.full(len(idx), np.nan)
            pk, tr = peak[p, idx], trough[p, idx]
            p_tox = float(np.mean(pk > hi))
            score = float(np.mean(tiw)) - toxicity_penalty * p_tox
            opts.append(Option(0, reg, score, q(tiw), q(pk), q(tr), q(result.auc[p, idx, -1]), p_tox,
                               float(np.mean(tr < lo)), basis))
        opts.sort(key=lambda o: -o.score)
        for i, o in enumerate(opts, 1):
            o.rank = i
        out[tid] = opts
    return out


def optimisation_spec(model: str, regimens: Sequence[Regimen], horizon_h: float, step_h: float, *,
                      replicates: int = 8, preset: str = "standard-128", **factors) -> StudySpec:
    omega = OMEGA_CL.get(model, OMEGA_CL.get("theophylline"))
    scen = scenario_grid(regimens, replicates=replicates, omega_cl=omega, **factors)
    return StudySpec.grid(model, scen, horizon_h, step_h, preset=preset)
