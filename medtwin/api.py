"""The Python API for power users: one entry point per task, keyword options, a result object.

    from medtwin import api
    sim = api.simulate(records, scenarios, horizon_h=72, step_h=2)          # encrypted study
    opt = api.optimise(records, doses_mg=[200, 300, 400], intervals_h=[8, 12], horizon_h=72)
    print(sim.status, sim.message); print(opt.report())

Both run the full encrypted pipeline in this process (client and compute roles kept apart: the
compute side gets only a public context) and return a :class:`Simulation` whose ``status`` says
whether every result is inside the model's validity domain, with the computed error bounds.
For the separate-machine workflow use :mod:`medtwin.study.workflow` or the CLI.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from medtwin.errors import ValidationError
from medtwin.study import workflow
from medtwin.study.optimise import Option, optimisation_spec, rank_options, regimen_grid
from medtwin.study.scenario import Scenario
from medtwin.study.study import StudyResult, StudySpec, decrypt_outcome, encrypt_cohort, reference_outcome, simulate as _simulate

__all__ = ["Status", "Simulation", "simulate", "optimise"]


class Status(enum.Enum):
    OK = "ok"
    WINDOW_DOMAIN = "window_domain"  # some trajectories left the window polynomial's domain

    @property
    def message(self) -> str:
        return {
            Status.OK: "all results inside the model's validity domain; deviations within the stated bounds",
            Status.WINDOW_DOMAIN: ("some concentrations left the domain of the time-in-window approximation; "
                                   "those pairs' time in window is flagged invalid (see result.tiw_in_domain)"),
        }[self]


@dataclass
class Simulation:
    status: Status
    result: StudyResult
    options: dict[str, list[Option]] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return self.status.message

    @property
    def bounds(self) -> dict[str, float]:
        return self.result.bounds

    def report(self, top: int = 3) -> str:
        lines = [f"status: {self.status.value} ({self.message})"]
        for tid, opts in self.options.items():
            lines.append(f"{tid}:")
            lines += ["  " + o.line() for o in opts[:top]]
        return "\n".join(lines)


def _covariates(patients):
    if isinstance(patients, dict):
        return {k: np.asarray(v, dtype=float) for k, v in patients.items()}, [f"p{i}" for i in range(len(next(iter(patients.values()))))]
    ids = [getattr(r, "source_id", f"p{i}") for i, r in enumerate(patients)]
    return workflow.covariates_of(patients), ids


def _run(spec: StudySpec, patients, *, backend: str, keys, reference: bool, progress) -> StudyResult:
    from medtwin.he.openfhe_backend import HEContext

    cov, ids = _covariates(patients)
    if keys is None:
        client, km = workflow.make_keys(spec.preset, spec.model)
    else:
        client = keys if isinstance(keys, HEContext) else HEContext.from_keys(keys)
        km = None
    node = HEContext.from_public(client.public)
    enc = encrypt_cohort(spec, cov, ids, client, progress)
    out = _simulate(enc, node, backend=backend, progress=progress)
    res = decrypt_outcome(out, client, progress=progress)
    if reference:
        res.reference = reference_outcome(spec, cov)
    return res


def _status(res: StudyResult) -> Status:
    if res.tiw_in_domain is not None and not bool(np.all(res.tiw_in_domain)):
        return Status.WINDOW_DOMAIN
    return Status.OK


def simulate(patients, scenarios: Sequence[Scenario], *, model: str = "theophylline", horizon_h: float = 72.0,
             step_h: float = 2.0, backend: str = "openfhe", preset: str = "standard-128", keys=None,
             reference: bool = False, progress=None) -> Simulation:
    """Encrypted simulation of every (patient, scenario) pair.

    Args:
        patients: ``PatientRecord`` objects, or a dict of covariate arrays.
        keys: an ``HEContext`` with the secret key or unlocked ``KeyMaterial``; default: fresh keys.
        reference: also compute the plaintext reference (for validation; it sees the plaintext).
    Raises:
        RangeError: a patient outside the model's declared ranges (nothing is encrypted).
        ValidationError: malformed scenarios or time grid.
    """
    spec = StudySpec.grid(model, scenarios, horizon_h, step_h, preset=preset)
    res = _run(spec, patients, backend=backend, keys=keys, reference=reference, progress=progress)
    return Simulation(_status(res), res)


def optimise(patients, *, doses_mg: Sequence[float], intervals_h: Sequence[float], horizon_h: float = 72.0,
             step_h: float = 2.0, replicates: int = 8, model: str = "theophylline", backend: str = "openfhe",
             preset: str = "standard-128", keys=None, toxicity_penalty: float = 1.0, reference: bool = False,
             progress=None, **factors) -> Simulation:
    """Rank a grid of candidate regimens per patient, with IIV prediction bands (one encrypted pass).

    ``factors``: adherence, renal_factor, clearance_factor applied to every candidate.
    """
    if replicates < 1 or replicates > 64:
        raise ValidationError("replicates must be in [1, 64]")
    regs = regimen_grid(doses_mg, intervals_h, horizon_h)
    spec = optimisation_spec(model, regs, horizon_h, step_h, replicates=replicates, preset=preset, **factors)
    res = _run(spec, patients, backend=backend, keys=keys, reference=reference, progress=progress)
    return Simulation(_status(res), res, rank_options(res, toxicity_penalty=toxicity_penalty))
