"""Treatment optimisation with uncertainty: a grid of candidate regimens per patient, evaluated in
one encrypted pass, returned as ranked options with their basis and prediction bands.

Uncertainty comes from inter-individual variability (IIV): the population model's random effect
on clearance, eta ~ N(0, omega^2), is sampled in plaintext (deterministic normal quantiles, so
the band is reproducible) and applied to every encrypted twin as a clearance factor exp(eta); each
(regimen, eta) pair is one scenario of the encrypted study. For theophylline omega_CL = 0.168 is
the between-subject standard deviation of log clearance in Pinheiro and Bates' mixed-effects fit
of the Boeckmann et al. data (Mixed-Effects Models in S and S-PLUS, 2000, sec. 8.2); random
effects on absorption are not modelled (ka is a plaintext population constant of the program).

Scoring, under encryption: per (patient, regimen, replicate) pair the program computes the
smooth fraction of the horizon inside the therapeutic window (``tiw``), the smooth fraction above
it (``above``, toxic exposure) and ``score = tiw - penalty * above``; the replicates of a regimen
sit in adjacent slot blocks of the patient, and when their number R is a power of two the program
adds them with log2(R) rotations and multiplies by 1/R, so the expected score over the IIV
replicates is one encrypted value per (patient, regimen). Only the key holder decrypts it; the
ranking (a comparison) is done by the key holder on the decrypted expected scores. The 5-95% bands
come from the decrypted per-replicate metrics. Options are ranked, never reduced to a single
directive: each carries the model and its citation, the covariates the model used, the 5-95% band
of every metric, the computed error bounds and where its score was computed (``score_source``).
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
    score_source: str = "after decryption"  # where ``score`` was computed (see rank_options)
    score_bound: float = float("nan")       # bound on |score - exact score| (nan: not stated)
    above: tuple[float, float, float] | None = None  # band of the time above the window
    # expected score minus the baseline regimen's (encrypted expected_score_diff), if any
    vs_baseline: float | None = None

    def line(self) -> str:
        enc = " enc" if self.score_source == "encrypted" else ""
        bound = f" ±{self.score_bound:.0e}" if np.isfinite(self.score_bound) else ""
        vs = f" ({self.vs_baseline:+.3f} vs baseline)" if self.vs_baseline is not None else ""
        return (f"#{self.rank} {self.regimen:24s} score {self.score:+.3f}{bound}{enc}{vs} | time in window {self.tiw[1]:.2f} "
                f"[{self.tiw[0]:.2f}-{self.tiw[2]:.2f}] | peak {self.peak[1]:.1f} [{self.peak[0]:.1f}-{self.peak[2]:.1f}] mg/L"
                f" | trough {self.trough[1]:.1f} [{self.trough[0]:.1f}-{self.trough[2]:.1f}] mg/L"
                f" | P(peak>{self.basis.get('window', ('', ''))[1]}) {self.p_toxic:.0%}")


SCORE_SOURCES = {
    "encrypted": "expected score over the IIV replicates computed under encryption (decrypted by the key holder)",
    "decrypted trajectory": "a replicate left the window polynomial's domain: mean of scores from the decrypted trajectories",
    "per-pair encrypted": "per-replicate scores computed under encryption, their mean after decryption",
    "after decryption": "computed after decryption from the decrypted per-replicate metrics",
}


def rank_options(result: StudyResult, *, toxicity_penalty: float | None = None) -> dict[str, list[Option]]:
    """Per twin: candidate regimens ranked by score, each with its IIV band and basis.

    The score of a regimen is its expected score over the IIV replicates,
    E[tiw - penalty * above], taken from the encrypted expected score when the result has it
    (``score_source`` "encrypted"). Results without it still rank: from the per-replicate
    encrypted scores ("per-pair encrypted"), or, for older studies without scores, after
    decryption as mean(tiw) - penalty * P(peak above the window) ("after decryption"). The
    ranking itself (a comparison) is always done by the key holder.

    ``toxicity_penalty``: None uses the study's own penalty (``spec.penalty``); another value
    cannot reuse the encrypted scores and is applied after decryption to the decrypted time in
    and above the window.
    """
    spec = result.spec
    model = spec.pk
    lo, hi = model.window
    groups: dict[str, list[int]] = {}
    for s, sc in enumerate(spec.scenarios):
        groups.setdefault(sc.tags.get("regimen", sc.name), []).append(s)
    spec_pen = float(getattr(spec, "penalty", 1.0))
    pen = spec_pen if toxicity_penalty is None else float(toxicity_penalty)
    same_pen = pen == spec_pen
    exp_cols: dict[str, int] = {}
    exp = getattr(result, "expected_score", None)
    if exp is not None and same_pen and hasattr(spec, "groups"):
        exp_cols = {name: g for g, (name, idx) in enumerate(spec.groups()) if groups.get(name) == idx}
    sources = result.extra.get("sources", {})
    peak, trough = result.peak, result.trough
    q = lambda a: tuple(float(x) for x in np.percentile(a, [5, 50, 95]))
    basis = {"model": model.name, "model_version": model.version, "citation": model.citation,
             "covariates": list(COVARIATES), "window": model.window,
             "iiv": f"omega_CL {OMEGA_CL.get(model.drug, 'n/a')} (log scale), {len(next(iter(groups.values())))} replicates",
             "bounds": dict(result.bounds), "program_digest": result.program_digest,
             "score": f"E[time in window - {pen:g} x time above window] over the IIV replicates"}
    above_all = getattr(result, "above", None)
    if above_all is None:  # an older result: no encrypted time above the window
        basis["score"] = f"mean time in window - {pen:g} x P(peak above window) over the IIV replicates"
    out: dict[str, list[Option]] = {}
    for p, tid in enumerate(result.twin_ids):
        opts = []
        for reg, idx in groups.items():
            tiw = result.tiw[p, idx] if result.tiw is not None else np.full(len(idx), np.nan)
            pk, tr = peak[p, idx], trough[p, idx]
            p_tox = float(np.mean(pk > hi))
            bound = float("nan")
            if reg in exp_cols:
                g = exp_cols[reg]
                score = float(exp[p, g])
                src = str(sources["expected_score"][p, g]) if "expected_score" in sources else "encrypted"
                bound = float(result.bounds.get("expected_score", float("nan")))
            elif getattr(result, "score", None) is not None and same_pen:
                score = float(np.mean(result.score[p, idx]))
                src = "per-pair encrypted"
                bound = float(result.bounds.get("score", float("nan")))
            elif above_all is not None:
                score = float(np.mean(tiw) - pen * np.mean(above_all[p, idx]))
                src = "after decryption"
            else:
                score = float(np.mean(tiw)) - pen * p_tox
                src = "after decryption"
            vs = None
            if reg in exp_cols and getattr(result, "expected_score_diff", None) is not None:
                vs = float(result.expected_score_diff[p, exp_cols[reg]])
            opts.append(Option(0, reg, score, q(tiw), q(pk), q(tr), q(result.auc[p, idx, -1]), p_tox,
                               float(np.mean(tr < lo)), dict(basis, score_source=SCORE_SOURCES[src]), src, bound,
                               q(above_all[p, idx]) if above_all is not None else None, vs))
        opts.sort(key=lambda o: -o.score)
        for i, o in enumerate(opts, 1):
            o.rank = i
        out[tid] = opts
    return out


def optimisation_spec(model: str, regimens: Sequence[Regimen], horizon_h: float, step_h: float, *,
                      replicates: int = 8, preset: str = "standard-128", penalty: float = 1.0,
                      baseline: Regimen | str | None = None, **factors) -> StudySpec:
    """The (regimen x IIV replicate) study of :func:`scenario_grid`, replicates adjacent.

    ``penalty``: weight of the time above the window in the encrypted score. ``baseline``: the
    patient's current regimen (a :class:`Regimen`, added to the candidates if absent, or the
    description of one of them); every replicate is then also compared under encryption with the
    baseline's replicate of the same index (``auc_diff``, ``tiw_diff``, ``score_diff``), at
    about twice the work. ``factors``: adherence, renal_factor, clearance_factor.

    Raises:
        ValidationError: an empty grid, or a baseline description that names no candidate.
    """
    regimens = list(regimens)
    base_name = None
    if baseline is not None:
        if isinstance(baseline, Regimen):
            if baseline not in regimens:
                regimens.append(baseline)
            baseline = baseline.describe()
        if baseline not in {r.describe() for r in regimens}:
            raise ValidationError("the baseline must be one of the candidate regimens")
        base_name = f"{baseline}#0"
    omega = OMEGA_CL.get(model, OMEGA_CL.get("theophylline"))
    scen = scenario_grid(regimens, replicates=replicates, omega_cl=omega, **factors)
    return StudySpec.grid(model, scen, horizon_h, step_h, preset=preset, penalty=penalty, baseline=base_name,
                          replicates=max(1, int(replicates)))
