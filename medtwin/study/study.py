"""Encrypted studies: many patients x many scenarios x many time points in one encrypted pass.

The three roles are separate functions so that each can run where it belongs:

* :func:`encrypt_cohort` (client): validate covariates against the model's ranges, pack them into
  the study's slot layout (data minimisation: only the model's covariates) and encrypt.
* :func:`simulate` (compute node): compile the model's FHE program and run it on ciphertexts with
  a backend (``openfhe`` reference or ``native``); needs only public material.
* :func:`decrypt_outcome` (client): decrypt, unpack per (patient, scenario, time point) and derive
  the metrics.

:func:`run_study` chains them in one process, and also computes the plaintext reference when
asked, to report the largest deviation of the encrypted result from it.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from medtwin.errors import ValidationError
from medtwin.models import pk_oral
from medtwin.models.pk_oral import COVARIATES, OralPKModel
from medtwin.study.layout import SlotLayout
from medtwin.study.scenario import Scenario

ProgressFn = Callable[[str, float], None]  # (stage, fraction done in [0, 1])


@dataclass(frozen=True)
class StudySpec:
    """What to simulate: the model, the scenarios and the output time points [h].

    Attributes:
        time_in_window: compute the window metrics (time in window, time above it, score).
        penalty: weight of the time above the window in the per-pair score
            ``score = tiw - penalty * above`` (computed under encryption; a plaintext parameter).
        baseline: optional scenario name (e.g. the patient's current regimen); the program also
            evaluates the baseline in every scenario's block and outputs the differences
            ``auc_diff``, ``tiw_diff`` and ``score_diff`` under encryption (about twice the
            work). In an IIV grid (scenarios tagged ``regimen`` and ``replicate``) each
            replicate is compared with the baseline regimen's replicate of the same index.
        replicates: the scenarios come in groups of this many adjacent replicates of one
            regimen (:func:`medtwin.study.optimise.scenario_grid`); when it is a power of two
            above 1, the expected score per group is computed under encryption.
    """

    model: str
    scenarios: tuple[Scenario, ...]
    times: tuple[float, ...]
    preset: str = "standard-128"
    time_in_window: bool = True
    baseline: str | None = None
    penalty: float = 1.0
    replicates: int = 1

    def __post_init__(self) -> None:
        pk_oral.get_model(self.model)
        if not self.scenarios:
            raise ValidationError("a study needs at least one scenario")
        if len({s.name for s in self.scenarios}) != len(self.scenarios):
            raise ValidationError("scenario names must be unique")
        t = np.asarray(self.times, dtype=float)
        if t.ndim != 1 or t.size < 1 or np.any(np.diff(t) <= 0) or t[0] < 0 or t[-1] > 24 * 60:
            raise ValidationError("output times must be increasing, within [0, 1440] h")
        if self.baseline is not None and self.baseline not in {s.name for s in self.scenarios}:
            raise ValidationError("the baseline must name one of the study's scenarios")
        if not (isinstance(self.penalty, (int, float)) and 0.0 <= float(self.penalty) <= 10.0):
            raise ValidationError("the score's penalty must be a number in [0, 10]")
        r = self.replicates
        if not isinstance(r, (int, np.integer)) or r < 1 or len(self.scenarios) % r:
            raise ValidationError("replicates must be a positive whole number dividing the number of scenarios")
        for g in range(0, len(self.scenarios), r):
            grp = self.scenarios[g:g + r]
            if len({sc.regimen for sc in grp}) != 1 or len({sc.tags.get("regimen", "") for sc in grp}) != 1:
                raise ValidationError(f"replicate group starting at scenario {g} mixes regimens")

    @property
    def pk(self) -> OralPKModel:
        return pk_oral.get_model(self.model)

    @property
    def encrypted_mean(self) -> bool:
        """Whether the expected score over replicates is computed under encryption (R a power of two > 1)."""
        r = int(self.replicates)
        return self.time_in_window and r > 1 and not (r & (r - 1))

    def groups(self) -> list[tuple[str, list[int]]]:
        """(regimen label, scenario indices) of every replicate group, in scenario order."""
        r = int(self.replicates)
        out = []
        for g in range(0, len(self.scenarios), r):
            sc = self.scenarios[g]
            out.append((sc.tags.get("regimen", sc.regimen.describe() if r > 1 else sc.name), list(range(g, g + r))))
        return out

    def base_index(self) -> list[int] | None:
        """Per scenario, the scenario serving as its baseline (None without a baseline)."""
        if self.baseline is None:
            return None
        names = [s.name for s in self.scenarios]
        b = names.index(self.baseline)
        bt = self.scenarios[b].tags
        out = []
        for sc in self.scenarios:
            j = b
            if "replicate" in bt and "replicate" in sc.tags:
                for i, other in enumerate(self.scenarios):
                    if (other.tags.get("regimen") == bt.get("regimen")
                            and other.tags.get("replicate") == sc.tags["replicate"]):
                        j = i
                        break
            out.append(j)
        return out

    @classmethod
    def grid(cls, model: str, scenarios: Sequence[Scenario], horizon_h: float, step_h: float, **kw) -> StudySpec:
        if not (0 < step_h <= horizon_h):
            raise ValidationError("step must be positive and at most the horizon")
        n = int(round(horizon_h / step_h))
        return cls(model=model, scenarios=tuple(scenarios), times=tuple(np.linspace(0.0, n * step_h, n + 1)), **kw)

    def to_dict(self) -> dict:
        d = {"model": self.model, "scenarios": [s.to_dict() for s in self.scenarios],
             "times": list(self.times), "preset": self.preset, "time_in_window": self.time_in_window}
        # only when set, so that the digests of earlier studies do not change
        if self.baseline is not None:
            d["baseline"] = self.baseline
        if float(self.penalty) != 1.0:
            d["penalty"] = float(self.penalty)
        if int(self.replicates) != 1:
            d["replicates"] = int(self.replicates)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StudySpec:
        try:
            return cls(model=d["model"], scenarios=tuple(Scenario.from_dict(s) for s in d["scenarios"]),
                       times=tuple(float(x) for x in d["times"]), preset=d.get("preset", "standard-128"),
                       time_in_window=bool(d.get("time_in_window", True)), baseline=d.get("baseline"),
                       penalty=float(d.get("penalty", 1.0)), replicates=int(d.get("replicates", 1)))
        except (KeyError, TypeError) as exc:
            raise ValidationError(f"malformed study definition: missing or invalid {exc}") from None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def covariate_matrix(records: Sequence, model: OralPKModel) -> dict[str, np.ndarray]:
    """Data minimisation: only the covariates the model needs, one array per covariate."""
    rows = [r.minimise(list(COVARIATES)) if hasattr(r, "minimise") else {k: r[k] for k in COVARIATES} for r in records]
    return {k: np.array([row[k] for row in rows], dtype=np.float64) for k in COVARIATES}


# ------------------------------------------------------------------------------------------------
@dataclass
class CompiledStudy:
    """The programs of a study for one slot count (no patient data)."""

    spec: StudySpec
    layout: SlotLayout
    plain: dict[str, np.ndarray]
    programs: list  # one per ciphertext chunk (shared objects where the plaintexts agree)

    @property
    def depth(self) -> int:
        return max(p.depth for p in self.programs)

    def rotation_indices(self) -> list[int]:
        idx: set[int] = set()
        for p in self.programs:
            idx.update(p.rotation_indices())
        return sorted(idx)


def compile_study(spec: StudySpec, n_patients: int, slots: int, taken=None, *, noise=None,
                  replicate_mean: bool = True) -> CompiledStudy:
    """Plan the study's slot layout and compile its FHE programs (one per distinct chunk).

    ``noise``: the CKKS noise model of the live context (``NoiseModel.from_context``) so that the
    stated error bounds use its actual primes; default: an estimate for N = 2^16.
    ``replicate_mean``: include the encrypted expected score over replicates when the spec asks
    for it (it needs the rotations of :func:`replicate_rotations`).
    """
    model = spec.pk
    times = np.asarray(spec.times)
    layout = SlotLayout(n_patients, len(spec.scenarios), len(times), slots)
    plain = pk_oral.encode_plaintexts(model, list(spec.scenarios), layout, times, taken, spec.base_index())
    reps = int(spec.replicates) if (replicate_mean and spec.encrypted_mean) else 1
    cache: dict[str, object] = {}
    programs = []
    for c in range(layout.n_ciphertexts):
        key = pk_oral.plaintext_digest(plain, c)
        if key not in cache:
            cache[key] = pk_oral.build_program(model, plain, c, slots, layout.block,
                                               time_in_window=spec.time_in_window, noise=noise,
                                               penalty=float(spec.penalty), replicates=reps)
        programs.append(cache[key])
    return CompiledStudy(spec, layout, plain, programs)


def replicate_rotations(spec: StudySpec) -> list[int]:
    """Rotation amounts of the encrypted expected score: block, 2 block, ..., (R/2) block
    (log2(R) keys; empty when the spec does not ask for it). At N = 2^16 each key is ~200 MB."""
    from medtwin.study.layout import next_pow2

    if not spec.encrypted_mean:
        return []
    block = next_pow2(len(spec.times))
    return [block << j for j in range(int(spec.replicates).bit_length() - 1)]


def required_depth(spec: StudySpec, n_patients: int = 1) -> tuple[int, list[int]]:
    """Depth and rotations the study's programs need (decided before keys are generated)."""
    from medtwin.study.layout import next_pow2

    slots = max(1 << 12, next_pow2(next_pow2(len(spec.times)) * len(spec.scenarios)))
    cs = compile_study(spec, min(n_patients, 4), slots)
    return cs.depth, cs.rotation_indices()


# ------------------------------------------------------------------------------------------------
class WireInputs:
    """Encrypted inputs (``self.inputs``: name -> one ciphertext per chunk) that are either
    OpenFHE objects or their BINARY bytes, the form in which they travel to a compute node."""

    inputs: dict[str, list]

    def is_wire(self) -> bool:
        """Whether the inputs are BINARY bytes (as sent to a compute node) rather than objects.

        Raises:
            ValidationError: a mixture of both.
        """
        kinds = {isinstance(x, (bytes, bytearray, memoryview)) for v in self.inputs.values() for x in v}
        if len(kinds) > 1:
            raise ValidationError("the cohort mixes ciphertext objects and ciphertext bytes")
        return kinds == {True}

    def to_wire(self, ctx):
        """Client side: the same cohort with every input serialised (what goes to the compute node)."""
        if self.is_wire():
            return self
        from dataclasses import replace

        return replace(self, twin_ids=list(self.twin_ids),
                       inputs={k: [ctx.serialize(c) for c in v] for k, v in self.inputs.items()})


@dataclass
class EncryptedCohort(WireInputs):
    spec: StudySpec
    twin_ids: list[str]
    layout: SlotLayout
    key_tag: str
    inputs: dict[str, list]  # covariate -> ciphertext per chunk (OpenFHE objects, or their bytes)


def encrypt_cohort(spec: StudySpec, covariates: dict[str, np.ndarray], twin_ids: Sequence[str], ctx,
                   progress: ProgressFn | None = None) -> EncryptedCohort:
    """Client side: validate, pack and encrypt the cohort for this study's layout.

    Raises:
        RangeError: a covariate (or the derived CrCl) lies outside the model's declared range.
    """
    model = spec.pk
    model.validate_covariates(covariates)
    n = len(next(iter(covariates.values())))
    if len(twin_ids) != n:
        raise ValidationError("one twin id per patient is needed")
    layout = SlotLayout(n, len(spec.scenarios), len(spec.times), ctx.slots)
    inputs = encrypt_rows(ctx, {k: layout.spread_patients(covariates[k]) for k in COVARIATES}, progress)
    return EncryptedCohort(spec, list(twin_ids), layout, ctx.key_tag, inputs)


def encrypt_rows(ctx, rows: dict[str, Sequence[np.ndarray]], progress: ProgressFn | None = None) -> dict[str, list]:
    """Encrypt each covariate's packed slot rows (one ciphertext per row), reporting progress."""
    total = sum(len(r) for r in rows.values()) or 1
    inputs: dict[str, list] = {}
    done = 0
    for k, packed in rows.items():
        inputs[k] = []
        for row in packed:
            inputs[k].append(ctx.encrypt(row))
            done += 1
            if progress:
                progress("encrypt", done / total)
    return inputs


@dataclass
class EncryptedOutcome:
    spec: StudySpec
    twin_ids: list[str]
    layout: SlotLayout
    key_tag: str
    outputs: dict[str, list]
    program_digest: str
    bounds: dict[str, float]
    depth: int
    seconds: float
    backend: str
    noise_bounds: dict[str, float] = field(default_factory=dict)  # key-dependent part of ``bounds``
    notes: dict[str, str] = field(default_factory=dict)  # e.g. why an output was not computed


def simulate(cohort: EncryptedCohort, ctx, *, backend: str = "openfhe", threads: int | None = None,
             progress: ProgressFn | None = None,
             on_chunk: Callable[[int, dict], None] | None = None) -> EncryptedOutcome:
    """Compute node: run the study's FHE program on the encrypted cohort (public keys only).

    ``on_chunk(index, {output: ciphertext})`` is called after each ciphertext chunk (whole
    patients, see :class:`SlotLayout`); :func:`decrypt_chunk` turns it into partial results.

    A cohort whose inputs are bytes (:meth:`EncryptedCohort.to_wire`, or a bundle read by a
    compute node) is simulated bytes in, bytes out, as a node that receives and returns
    ciphertexts over the wire: the OpenFHE backend deserialises the inputs (validated, see
    :meth:`HEContext.deserialize`) and serialises the outputs; the native engine imports and
    exports the bytes itself after the cheap header and metadata checks of
    :meth:`HEContext.check_wire` and never builds OpenFHE ciphertext objects. Either way the
    conversions count in ``seconds``, and the outputs are bytes that the client's
    :meth:`HEContext.decrypt` accepts.

    Raises:
        KeyMismatchError, CiphertextFormatError: inputs of another key pair, or bytes that are
            not ciphertexts of this context.
        ProgramError: the keys lack the depth or rotations the study needs.
    """
    from medtwin.program import get_executor
    from medtwin.program.executors import run_chunked

    if cohort.key_tag != ctx.key_tag:
        from medtwin.errors import KeyMismatchError
        raise KeyMismatchError("the cohort was encrypted under another key pair than the evaluation keys")
    from medtwin.program.bounds import NoiseModel

    spec = cohort.spec
    nm = NoiseModel.from_context(ctx.cc)
    notes: dict[str, str] = {}
    have = set(ctx.public.rotation_indices)
    mean_ok = not (set(replicate_rotations(spec)) - have)
    if spec.encrypted_mean and not mean_ok:
        # Keys made without the replicate rotations (older keystores, make_keys without the
        # study): the per-pair scores stay encrypted, their mean over replicates is left to the
        # key holder, and the result says so.
        notes["expected_score"] = ("not computed under encryption: the evaluation keys lack rotations "
                                   f"{sorted(set(replicate_rotations(spec)) - have)}")
    cs = compile_study(spec, cohort.layout.n_patients, ctx.slots, noise=nm, replicate_mean=mean_ok)
    if cs.depth > ctx.depth:
        from medtwin.errors import ProgramError
        raise ProgramError(f"the study needs multiplicative depth {cs.depth} but the keys were made for {ctx.depth}")
    missing = set(cs.rotation_indices()) - have
    if missing:
        from medtwin.errors import ProgramError
        raise ProgramError(f"the evaluation keys lack rotations {sorted(missing)}")
    # Scale correction: OpenFHE's FIXEDMANUAL rescale divides by the prime q but keeps the nominal
    # scale 2^p; the executors fold the exact drift into the program's constants and plaintexts,
    # and the bounds are computed with the matching (corrected) noise model.
    kw = {"correct_scale": True} if backend in ("openfhe", "native") else {}
    ex = get_executor(backend, ctx=ctx, threads=threads, **kw)
    noise = ex.noise_model() if hasattr(ex, "noise_model") else None
    outputs: dict[str, list] = {}
    t0 = time.perf_counter()
    wire = cohort.is_wire()
    inputs = cohort.inputs
    if wire:
        convert = ctx.check_wire if backend == "native" else ctx.deserialize
        inputs = {k: [convert(x) for x in cohort.inputs[k]] for k in COVARIATES}
    n = cs.layout.n_ciphertexts
    # Chunks one at a time, or side by side on the native engine (a group per call): progress
    # (and a cancel raised from the progress callback) per chunk, and ``on_chunk`` lets a client
    # decrypt and draw partial results as they arrive.
    def done(c: int, res: dict) -> None:
        if wire and backend != "native":
            res = {name: ctx.serialize(ct) for name, ct in res.items()}
        for name, ct in res.items():
            outputs.setdefault(name, [None] * n)[c] = ct
        if on_chunk is not None:
            on_chunk(c, dict(res))
        if progress:
            progress("simulate", (c + 1) / n)

    run_chunked(ex, [(prog, {k: inputs[k][c] for k in COVARIATES}) for c, prog in enumerate(cs.programs)], done)
    seconds = time.perf_counter() - t0
    prog0 = cs.programs[0]
    bounds = {name: max(float(p.error_bound(name, noise=noise)) for p in cs.programs) for name in outputs}
    noise_bounds = _key_dependent_bounds(cs.programs, noise, outputs) if noise is not None else dict(bounds)
    return EncryptedOutcome(cohort.spec, cohort.twin_ids, cs.layout, cohort.key_tag, outputs,
                            prog0.digest(), bounds, cs.depth, seconds, backend, noise_bounds, notes)


def _key_dependent_bounds(programs, noise, outputs) -> dict[str, float]:
    """The part of each output's error bound that depends on the secret key: the random CKKS
    noise (encryption, rescale rounding, key switching, encoding, decryption, the rotation term).
    Approximation error and the (corrected) scale drift are functions of the data alone. This
    is the error that noise flooding must hide before a decryption leaves the key holder."""
    from dataclasses import replace

    quiet = replace(noise, fresh=0.0, rescale_round=0.0, keyswitch=0.0, encode=0.0, decrypt=0.0, rotate_bias=0.0)
    out = {}
    for name in outputs:
        out[name] = max(max(float(p.error_bound(name, noise=noise)) - float(p.error_bound(name, noise=quiet)), 0.0)
                        for p in programs)
    return out


# ------------------------------------------------------------------------------------------------
@dataclass
class ScenarioSummary:
    name: str
    regimen: str
    n: int
    auc_median: float
    auc_iqr: tuple[float, float]
    peak_median: float
    trough_median: float
    tiw_mean: float
    attain: float  # fraction of patients whose peak and trough both lie in the window


@dataclass
class StudyResult:
    """Decrypted outcome of a study (client side), with bounds and (optionally) the reference.

    Arrays: ``conc`` and ``auc`` (patients, scenarios, times) in mg/L and mg*h/L; ``tiw``
    (patients, scenarios) fraction of the horizon in the therapeutic window (smooth edges);
    ``peak`` / ``trough`` (patients, scenarios) from the decrypted trajectory on the output grid.
    """

    spec: StudySpec
    twin_ids: list[str]
    times: np.ndarray
    conc: np.ndarray
    auc: np.ndarray
    tiw: np.ndarray | None
    bounds: dict[str, float]
    program_digest: str
    depth: int
    backend: str
    seconds_simulate: float
    seconds_total: float = 0.0
    reference: dict[str, np.ndarray] | None = None
    tiw_in_domain: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    # Window metrics and comparisons, each decrypted from its own encrypted output (None when
    # the study did not compute it): ``above`` and ``score`` (patients, scenarios); with a
    # baseline ``auc_diff`` (AUC at the horizon minus the baseline's), ``tiw_diff`` and
    # ``score_diff`` (patients, scenarios); with replicates ``expected_score`` (patients,
    # replicate groups, see ``spec.groups()``), the mean score over the group's IIV replicates,
    # and with both ``expected_score_diff``, that mean minus the baseline regimen's.
    above: np.ndarray | None = None
    score: np.ndarray | None = None
    auc_diff: np.ndarray | None = None
    tiw_diff: np.ndarray | None = None
    score_diff: np.ndarray | None = None
    expected_score: np.ndarray | None = None
    expected_score_diff: np.ndarray | None = None

    @property
    def n_results(self) -> int:
        return int(self.conc.size)

    @property
    def peak(self) -> np.ndarray:
        return self.conc.max(axis=2)

    @property
    def trough(self) -> np.ndarray:
        """Pre-dose level: concentration at the last output time at or before each scenario's final dose."""
        out = np.empty(self.conc.shape[:2])
        for s, sc in enumerate(self.spec.scenarios):
            t_last = sc.regimen.dose_times()[-1]
            k = int(np.searchsorted(self.times, t_last, side="right") - 1)
            out[:, s] = self.conc[:, s, max(k, 0)]
        return out

    def throughput(self) -> float:
        """(patient, scenario, time point) results per second of encrypted simulation."""
        return self.n_results / self.seconds_simulate if self.seconds_simulate > 0 else float("inf")

    def deviations(self) -> dict[str, float]:
        """Largest deviation of each encrypted output from the plaintext reference.

        ``*_abs``: the largest absolute difference over every (patient, scenario, time point).
        ``*_rel``: the largest, over (patient, scenario) pairs, of the pair's largest absolute
        difference divided by the pair's largest reference value (its peak concentration or its
        AUC over the horizon), so near-zero values before the first dose do not inflate it.
        """
        if self.reference is None:
            return {}
        out = {}
        for key in ("conc", "auc"):
            enc, ref = getattr(self, key), self.reference[key]
            err = np.abs(enc - ref)
            out[f"{key}_abs"] = float(err.max())
            peak = np.maximum(np.abs(ref).max(axis=2), 1e-12)
            out[f"{key}_rel"] = float((err.max(axis=2) / peak).max())
        for key in ("tiw",) + PAIR_METRICS:
            enc = getattr(self, key)
            if enc is not None and key in self.reference:
                out[f"{key}_abs"] = float(np.abs(enc - self.reference[key]).max())
        return out

    def summaries(self) -> list[ScenarioSummary]:
        lo, hi = self.spec.pk.window
        res = []
        for s, sc in enumerate(self.spec.scenarios):
            auc_h = self.auc[:, s, -1]
            pk_, tr = self.peak[:, s], self.trough[:, s]
            q1, q3 = np.percentile(auc_h, [25, 75])
            res.append(ScenarioSummary(
                name=sc.name, regimen=sc.regimen.describe(), n=len(auc_h),
                auc_median=float(np.median(auc_h)), auc_iqr=(float(q1), float(q3)),
                peak_median=float(np.median(pk_)), trough_median=float(np.median(tr)),
                tiw_mean=float(np.mean(self.tiw[:, s])) if self.tiw is not None else float("nan"),
                attain=float(np.mean((pk_ <= hi) & (tr >= lo)))))
        return res


def decrypt_chunk(layout: SlotLayout, chunk: int, outputs: dict, ctx) -> dict[str, np.ndarray]:
    """Client: decrypt one chunk's outputs; returns patient indices and their (scenarios, times) arrays."""
    first = chunk * layout.patients_per_ct
    n = min(layout.patients_per_ct, layout.n_patients - first)
    res: dict[str, np.ndarray] = {"patients": np.arange(first, first + n)}
    for name, ct in outputs.items():
        v = ctx.decrypt(ct, layout.slots).reshape(layout.slots // layout.block, layout.block)
        v = v[: layout.pairs_per_ct, : layout.n_times].reshape(layout.patients_per_ct, layout.n_scenarios, layout.n_times)
        res[name] = v[:n] * (100.0 if name in ("auc_h", "auc_diff_h") else 1.0)
    return res


#: Encrypted per-time-point term outputs -> the metric their sum over a pair's block gives.
WINDOW_TERMS = {"tiw_terms": "tiw", "above_terms": "above", "score_terms": "score",
                "tiw_diff_terms": "tiw_diff", "score_diff_terms": "score_diff", "score_mean_terms": "expected_score",
                "score_diff_mean_terms": "expected_score_diff"}
#: Per-pair metrics beside the trajectory (StudyResult attributes of the same names).
PAIR_METRICS = ("above", "score", "auc_diff", "tiw_diff", "score_diff", "expected_score", "expected_score_diff")


def _metric_bounds(raw: dict[str, float], n_times: int) -> dict[str, float]:
    """Per-slot output bounds -> bounds of the decrypted metrics (a sum of T terms is within T
    times the per-slot bound; AUC outputs are in units of 100 mg*h/L)."""
    out = dict(raw)
    for name, metric in WINDOW_TERMS.items():
        if name in out:
            out[metric] = out.pop(name) * n_times
    for name, metric in (("auc_h", "auc"), ("auc_diff_h", "auc_diff")):
        if name in out:
            out[metric] = out.pop(name) * 100.0
    return out


def decrypt_outcome(out: EncryptedOutcome, ctx, *, progress: ProgressFn | None = None) -> StudyResult:
    """Client side: decrypt and unpack an encrypted outcome.

    Every metric is decrypted from its own encrypted output: the trajectory, AUC, time in
    window, time above the window, score, the differences from the baseline and the expected
    score over IIV replicates (see :func:`medtwin.models.pk_oral.build_program`); the client only
    adds each pair's per-time-point terms.

    The window polynomials are valid only on the model's declared concentration domain.
    A pair whose trajectory leaves it gets its window metrics from the decrypted trajectory
    instead (the same smooth window, exact, on the client), flagged in ``tiw_in_domain`` and
    ``extra["tiw_source"]`` / ``extra["sources"][metric]`` (a difference falls back when the pair
    or its baseline left the domain, an expected score when any replicate did). When an
    out-of-domain slot blew up a window polynomial so far that a whole ciphertext no longer
    decodes, that chunk's window terms are dropped the same way (concentrations and AUC come from
    their own ciphertexts and are unaffected).

    Raises:
        TamperedError: a concentration or AUC ciphertext cannot be decoded.
    """
    from medtwin.errors import TamperedError

    lay = out.layout
    spec = out.spec
    dec = {}
    names = list(out.outputs)
    total = sum(len(out.outputs[n]) for n in names)
    done = 0
    lost_chunks: list[int] = []
    for name in names:
        rows = []
        for c, ct in enumerate(out.outputs[name]):
            try:
                rows.append(ctx.decrypt(ct, lay.slots))
            except TamperedError:
                if name != "tiw" and name not in WINDOW_TERMS:
                    raise
                rows.append(np.full(lay.slots, np.nan))
                lost_chunks.append(c)
            done += 1
            if progress:
                progress("decrypt", done / total)
        dec[name] = np.stack(rows)
    conc = lay.gather(dec["conc"])
    auc = lay.gather(dec["auc_h"]) * 100.0
    sums = {metric: lay.gather(dec[name]).sum(axis=2) for name, metric in WINDOW_TERMS.items() if name in dec}
    if "tiw" in dec:
        sums["tiw"] = lay.gather(dec["tiw"])[:, :, 0]
    tiw = sums.get("tiw")
    res = StudyResult(spec, out.twin_ids, np.asarray(spec.times), conc, auc, tiw,
                      _metric_bounds(out.bounds, lay.n_times), out.program_digest, out.depth, out.backend,
                      out.seconds)
    res.extra["noise_bounds"] = _metric_bounds(out.noise_bounds, lay.n_times)
    res.extra["notes"] = dict(getattr(out, "notes", {}) or {})
    if "auc_diff_h" in dec:
        res.auc_diff = lay.gather(dec["auc_diff_h"])[:, :, -1] * 100.0
    if tiw is None:
        return res
    model = spec.pk
    lo, hi = model.conc_domain
    ok = (conc.min(axis=2) >= lo) & (conc.max(axis=2) <= hi) & np.isfinite(tiw)
    res.tiw_in_domain = ok
    client = model.time_metrics(conc, res.times, spec.penalty)
    src = lambda good: np.where(good, "encrypted", "decrypted trajectory")
    sources = {}
    res.tiw = np.where(ok, tiw, client["tiw"]) if not ok.all() else tiw
    sources["tiw"] = src(ok)
    for m in ("above", "score"):
        if m in sums:
            good = ok & np.isfinite(sums[m])
            setattr(res, m, np.where(good, sums[m], client[m]))
            sources[m] = src(good)
    bi = spec.base_index()
    if bi is not None:
        for m, base in (("tiw_diff", "tiw"), ("score_diff", "score")):
            if m in sums:
                good = ok & ok[:, bi] & np.isfinite(sums[m])
                setattr(res, m, np.where(good, sums[m], client[base] - client[base][:, bi]))
                sources[m] = src(good)
    groups = spec.groups()
    first = [idx[0] for _, idx in groups]
    for m in ("expected_score", "expected_score_diff"):
        if m not in sums:
            continue
        enc = sums[m][:, first]
        pair_ok, pair_score = ok, client["score"]
        if m == "expected_score_diff":
            pair_ok, pair_score = ok & ok[:, bi], client["score"] - client["score"][:, bi]
        good = np.stack([pair_ok[:, idx].all(axis=1) for _, idx in groups], axis=1) & np.isfinite(enc)
        mean = np.stack([pair_score[:, idx].mean(axis=1) for _, idx in groups], axis=1)
        setattr(res, m, np.where(good, enc, mean))
        sources[m] = src(good)
    res.extra["tiw_source"] = sources["tiw"]
    res.extra["sources"] = sources
    res.extra["tiw_lost_chunks"] = sorted(set(lost_chunks))
    return res


def reference_outcome(spec: StudySpec, covariates: dict[str, np.ndarray], taken=None) -> dict[str, np.ndarray]:
    """Plaintext reference of every output (float64, exact functions).

    Keys: ``conc``, ``auc`` (patients, scenarios, times); ``tiw``, ``above``, ``score`` (patients,
    scenarios); with a baseline ``auc_diff``, ``tiw_diff``, ``score_diff``; with replicates
    ``expected_score`` (patients, groups, see ``spec.groups()``), and with both
    ``expected_score_diff``.
    """
    model = spec.pk
    times = np.asarray(spec.times)
    P = len(next(iter(covariates.values())))
    conc = np.zeros((P, len(spec.scenarios), len(times)))
    auc = np.zeros_like(conc)
    for s, sc in enumerate(spec.scenarios):
        tk = np.stack([taken[p][s] if taken is not None else sc.taken_fraction(p) for p in range(P)])
        r = model.reference(covariates, sc, times, tk)
        conc[:, s], auc[:, s] = r["conc"], r["auc"]
    out = {"conc": conc, "auc": auc, **model.time_metrics(conc, times, spec.penalty)}
    bi = spec.base_index()
    if bi is not None:
        out["auc_diff"] = auc[:, :, -1] - auc[:, bi, -1]
        out["tiw_diff"] = out["tiw"] - out["tiw"][:, bi]
        out["score_diff"] = out["score"] - out["score"][:, bi]
    if int(spec.replicates) > 1:
        out["expected_score"] = np.stack([out["score"][:, idx].mean(axis=1) for _, idx in spec.groups()], axis=1)
        if bi is not None:
            out["expected_score_diff"] = np.stack([out["score_diff"][:, idx].mean(axis=1) for _, idx in spec.groups()],
                                                  axis=1)
    return out


def run_study(spec: StudySpec, covariates: dict[str, np.ndarray], twin_ids: Sequence[str], client_ctx,
              compute_ctx=None, *, backend: str = "openfhe", reference: bool = True,
              progress: ProgressFn | None = None, audit: Callable[..., None] | None = None,
              wire: bool = False) -> StudyResult:
    """Encrypt, simulate and decrypt in one process (client and compute roles kept apart).

    ``wire=True``: the client serialises the encrypted cohort and the compute node works bytes in,
    bytes out (see :func:`simulate`), as when the two are different machines.
    """
    t0 = time.perf_counter()
    enc = encrypt_cohort(spec, covariates, twin_ids, client_ctx, progress)
    if wire:
        enc = enc.to_wire(client_ctx)
    node = compute_ctx if compute_ctx is not None else client_ctx
    out = simulate(enc, node, backend=backend, progress=progress)
    if audit:
        audit("simulation.run", model=spec.model, study=spec.digest(), program=out.program_digest,
              twins=len(twin_ids), backend=backend)
    res = decrypt_outcome(out, client_ctx, progress=progress)
    if audit:
        audit("result.decrypt", model=spec.model, study=spec.digest(), program=out.program_digest,
              twins=len(twin_ids))
    res.seconds_total = time.perf_counter() - t0
    if reference:
        res.reference = reference_outcome(spec, covariates)
    return res
