"""The Python API for power users: one entry point per task, keyword options, a result object.

    from medtwin import api
    sim = api.simulate(records, scenarios, horizon_h=72, step_h=2)          # encrypted study
    opt = api.optimise(records, doses_mg=[200, 300, 400], intervals_h=[8, 12], horizon_h=72)
    print(sim.status, sim.message); print(opt.report())
    coh = api.cohort_study(records, doses_mg=[750, 1000, 1250, 1500], intervals_h=[8, 12, 24, 48])
    print(coh.status, coh.table())                                          # vancomycin cohort

Both run the full encrypted pipeline in this process (client and compute roles kept apart: the
compute side gets only a public context) and return a :class:`Simulation` whose ``status`` says
whether every result is inside the model's validity domain, with the computed error bounds.
For the separate-machine workflow use :mod:`medtwin.study.workflow` or the CLI.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from medtwin.errors import ValidationError
from medtwin.study import workflow
from medtwin.study.optimise import Option, optimisation_spec, rank_options, regimen_grid
from medtwin.study.scenario import Scenario
from medtwin.study.study import StudyResult, StudySpec, decrypt_outcome, encrypt_cohort, reference_outcome, simulate as _simulate

if TYPE_CHECKING:
    from medtwin.study.cohort import CohortResult

__all__ = ["Status", "Simulation", "simulate", "optimise", "CohortStudy", "cohort_study"]


class Status(enum.Enum):
    OK = "ok"
    WINDOW_DOMAIN = "window_domain"  # some trajectories left the window polynomial's domain
    FLOODING_DOMINATES = "flooding_dominates"  # released cohort aggregates: flooding sigma above 0.01 (PTA)

    @property
    def message(self) -> str:
        return {
            Status.OK: "all results inside the model's validity domain; deviations within the stated bounds",
            Status.WINDOW_DOMAIN: ("some concentrations left the domain of the time-in-window approximation; "
                                   "those pairs' time in window is flagged invalid (see result.tiw_in_domain)"),
            Status.FLOODING_DOMINATES: ("per-pair results are within their bounds, but the noise flooding of the "
                                        "released aggregates (sized by the decryption policy from the stated "
                                        "key-dependent bound) exceeds 0.01 on the probability of target attainment; "
                                        "see result.aggregates.sigma (the cohort-128 preset keeps it far below)"),
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
        # the keys carry the rotations this study needs (e.g. the encrypted mean over IIV replicates)
        client, km = workflow.make_keys(spec.preset, spec.model, studies=[spec])
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
             reference: bool = False, progress=None, baseline: str | None = None,
             penalty: float = 1.0) -> Simulation:
    """Encrypted simulation of every (patient, scenario) pair.

    Per pair the program computes, under encryption, the concentration trajectory, cumulative
    AUC, time in and above the therapeutic window and the score ``tiw - penalty * above``; with
    ``baseline`` (a scenario name, e.g. the current regimen) also the differences of AUC, time
    in window and score from that scenario.

    Args:
        patients: ``PatientRecord`` objects, or a dict of covariate arrays.
        keys: an ``HEContext`` with the secret key or unlocked ``KeyMaterial``; default: fresh keys.
        reference: also compute the plaintext reference (for validation; it sees the plaintext).
    Raises:
        RangeError: a patient outside the model's declared ranges (nothing is encrypted).
        ValidationError: malformed scenarios or time grid.
    """
    spec = StudySpec.grid(model, scenarios, horizon_h, step_h, preset=preset, baseline=baseline, penalty=penalty)
    res = _run(spec, patients, backend=backend, keys=keys, reference=reference, progress=progress)
    return Simulation(_status(res), res)


def optimise(patients, *, doses_mg: Sequence[float], intervals_h: Sequence[float], horizon_h: float = 72.0,
             step_h: float = 2.0, replicates: int = 8, model: str = "theophylline", backend: str = "openfhe",
             preset: str = "standard-128", keys=None, toxicity_penalty: float = 1.0, reference: bool = False,
             progress=None, baseline=None, **factors) -> Simulation:
    """Rank a grid of candidate regimens per patient, with IIV prediction bands (one encrypted pass).

    The expected score over the IIV replicates (and, with ``baseline``, its difference from the
    patient's current regimen) is computed under encryption when ``replicates`` is a power of
    two and the keys carry its log2(replicates) rotations (fresh keys do); the key holder ranks.
    ``baseline``: a :class:`~medtwin.study.scenario.Regimen` or a candidate's description.
    ``factors``: adherence, renal_factor, clearance_factor applied to every candidate.
    """
    if replicates < 1 or replicates > 64:
        raise ValidationError("replicates must be in [1, 64]")
    regs = regimen_grid(doses_mg, intervals_h, horizon_h)
    spec = optimisation_spec(model, regs, horizon_h, step_h, replicates=replicates, preset=preset,
                             penalty=toxicity_penalty, baseline=baseline, **factors)
    res = _run(spec, patients, backend=backend, keys=keys, reference=reference, progress=progress)
    return Simulation(_status(res), res, rank_options(res, toxicity_penalty=toxicity_penalty))


# ------------------------------------------------------------------------------------ cohort study
@dataclass
class CohortStudy:
    """Result of :func:`cohort_study`: ``status``, the released per-regimen ``aggregates``
    (:class:`medtwin.study.cohort.CohortAggregates`, or None), per-patient tables when asked
    (``per_patient``: arrays (patients, regimens) of trough, peak, auc24, dauc24, attain, tox,
    score), and the stated per-pair ``bounds``."""

    status: Status
    result: "CohortResult"

    @property
    def message(self) -> str:
        return self.status.message

    @property
    def bounds(self) -> dict[str, float]:
        return self.result.bounds

    @property
    def aggregates(self):
        return self.result.aggregates

    @property
    def per_patient(self):
        return self.result.per_patient

    def table(self) -> str:
        """The per-regimen table (released aggregates), or the per-patient one without aggregates."""
        r = self.result
        if r.aggregates is not None:
            return r.aggregates.table()
        lines = ["| twin | regimen | trough | peak | AUC24 | dAUC24 | attainment | P(trough>limit) | score |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        pp = r.per_patient
        for i, tid in enumerate(r.twin_ids):
            for j, reg in enumerate(r.spec.regimens):
                lines.append(f"| {tid} | {reg.describe()} | {pp['trough'][i, j]:.2f} | {pp['peak'][i, j]:.2f} | "
                             f"{pp['auc24'][i, j]:.1f} | {pp['dauc24'][i, j]:+.1f} | {pp['attain'][i, j]:.3f} | "
                             f"{pp['tox'][i, j]:.3f} | {pp['score'][i, j]:+.3f} |")
        return "\n".join(lines)


def _cohort_covariates(patients):
    from medtwin.study.cohort import covariates_of_records

    if isinstance(patients, dict):
        cov = {k: np.asarray(v, dtype=float) for k, v in patients.items()}
        n = len(next(iter(cov.values())))
        return cov, [f"p{i}" for i in range(n)]
    recs = list(patients)
    return covariates_of_records(recs), [getattr(r, "source_id", f"p{i}") for i, r in enumerate(recs)]


#: largest flooding sigma on the released PTA for which a cohort study reports ``Status.OK``
FLOODING_PTA_LIMIT = 0.01


def cohort_study(patients, *, doses_mg: Sequence[float] = (750, 1000, 1250, 1500),
                 intervals_h: Sequence[float] = (8, 12, 24, 48), current: tuple[float, float] = (1000.0, 12.0),
                 mic: float = 1.0, backend: str = "openfhe", preset: str | None = None, keys=None,
                 per_patient: bool = False, aggregates: bool = True, min_cohort: int | None = None, policy=None,
                 twin_ids: Sequence[str] | None = None, reference: bool = False, log=None, session=None,
                 progress=None, allow_insecure: bool = False, wire: bool = False, **metrics) -> CohortStudy:
    """Vancomycin cohort study: every patient x a doses x intervals regimen grid at steady state,
    encrypted; per-regimen PTA, P(trough > 20 mg/L), mean score and mean/SD of AUC24 summed under
    encryption and released as aggregates through the decryption policy
    (:mod:`medtwin.study.cohort` describes outputs, bounds and the policy).

    Args:
        patients: ``PatientRecord`` objects (weight and CrCl by Cockcroft-Gault are taken from
            them, nothing else), or a dict with arrays ``weight_kg`` and ``crcl_ml_min``.
        current: (dose mg, interval h) of the current regimen, for the AUC24 differences.
        mic: MIC [mg/L] (plaintext).
        keys: an ``HEContext`` with the secret key or unlocked ``KeyMaterial`` made by
            :func:`medtwin.study.cohort.cohort_keys` (depth and rotations); default: fresh keys.
        per_patient: also decrypt the per-pair values (clinician mode, audited).
        aggregates: compute and release the per-regimen aggregates.
        min_cohort, policy: minimum cohort size and :class:`~medtwin.custody.policy.FloodingPolicy`.
        twin_ids: pseudonymous ids (default: the records' ids or p0, p1, ...).
        reference: also compute the plaintext reference (validation; it sees the plaintext).
        log, session: an :class:`~medtwin.custody.audit.AuditLog` and the acting session: every
            encryption, simulation and decryption is appended (never a value).
        metrics: ``window_edge``, ``trough_limit``, ``trough_edge``, ``tox_penalty``, ``target``.
        preset: CKKS preset of fresh keys (default ``cohort-128``: 49-bit scaling primes, which
            make the released aggregates' flooding noise about 500x smaller than ``standard-128``;
            see docs/studies.md). Both backends run every preset, bit for bit alike.
        wire: hand the compute node the cohort's ciphertext bytes and take bytes back, as
            between two machines (see :func:`medtwin.study.cohort.simulate`); default: objects
            within this process.

    Status ``FLOODING_DOMINATES`` when the flooding sigma of the released PTA exceeds
    :data:`FLOODING_PTA_LIMIT` (0.01).

    Raises:
        SecurityPolicyError: aggregates over fewer patients than the minimum cohort (nothing is
            encrypted), or an insecure preset without permission.
        RangeError: a patient outside the model's declared ranges (nothing is encrypted).
        ValidationError: a malformed grid or option.
        ProgramError: ``keys`` lack the study's depth or rotations.
    """
    from medtwin.he.openfhe_backend import HEContext
    from medtwin.study import cohort as C

    if preset is None:
        preset = getattr(getattr(keys, "public", None), "preset", None) or C.DEFAULT_PRESET
    spec = C.CohortSpec(doses_mg=tuple(doses_mg), intervals_h=tuple(intervals_h), current=tuple(current),
                        mic=float(mic), preset=preset, **metrics)
    cov, ids = _cohort_covariates(patients)
    if twin_ids is not None:
        ids = list(twin_ids)
    spec.pk.validate_covariates(cov)
    if aggregates:
        from medtwin.custody import policy as pol

        C._check_cohort(len(ids), pol.MIN_COHORT if min_cohort is None else int(min_cohort), log, session,
                        "cohort aggregate")
    if keys is None:
        client, _ = C.cohort_keys(spec, allow_insecure=allow_insecure)
    else:
        client = keys if isinstance(keys, HEContext) else HEContext.from_keys(keys)
    node = HEContext.from_public(client.public)
    res = C.run(spec, cov, ids, client, node, backend=backend, per_patient=per_patient, aggregates=aggregates,
                min_cohort=min_cohort, policy=policy, reference_check=reference, log=log, actor=session,
                progress=progress, wire=wire)
    status = Status.OK
    if res.aggregates is not None and float(res.aggregates.sigma["pta"]) > FLOODING_PTA_LIMIT:
        status = Status.FLOODING_DOMINATES
    return CohortStudy(status, res)
