"""The desktop app's state and operations, in plain Python (no Qt here).

The Qt screens call these methods from worker threads and show what they return. Everything a
clinician does goes through the same public API that the CLI and power users call
(:mod:`medtwin.custody.keystore`, :mod:`medtwin.study.workflow`, :mod:`medtwin.study.study`,
:mod:`medtwin.reports`).

Where data lives:

* The secret key is held only while the session is unlocked (:attr:`AppModel.material` and the
  client context). :meth:`AppModel.lock` drops both; everything else (imported records, scenarios,
  the encrypted cohort, decrypted results) stays in memory so that nothing is lost, and the UI
  hides it until the same keystore is unlocked again.
* Patient plaintext (imported records) lives only in memory; nothing unencrypted about a patient
  is written to disk. Exports write only what the clinician selects, by pseudonymous twin id.
* Long operations take a ``progress(stage, fraction)`` callback and a :class:`CancelToken`; the
  token is checked at every progress call, i.e. between ciphertext chunks (OpenFHE calls
  themselves are not interruptible), and before each chunk is decrypted.
* :meth:`AppModel.run` decrypts every ciphertext chunk on the client as soon as the compute
  context has finished it and hands it to ``on_partial`` as a :class:`PartialResult`, so the app
  can draw the patients simulated so far while the run goes on.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from medtwin.errors import MedTwinError, RangeError, ValidationError

ProgressFn = Callable[[str, float], None]

#: Presets offered in the app; the first is the default.
PRESETS = ("standard-128", "standard-192", "test-insecure")
DEFAULT_PRESET = "standard-128"
INSECURE_PRESET = "test-insecure"


class Cancelled(MedTwinError):
    """The user cancelled a running operation (raised between ciphertext chunks)."""


class SessionLockedError(MedTwinError):
    """The operation needs the secret key, but the session is locked or no keystore is unlocked."""


class CancelToken:
    """A thread-safe cancel flag checked by :meth:`AppModel` operations at every progress step."""

    def __init__(self) -> None:
        self._ev = threading.Event()

    def cancel(self) -> None:
        self._ev.set()

    @property
    def cancelled(self) -> bool:
        return self._ev.is_set()

    def check(self) -> None:
        """Raises :class:`Cancelled` when :meth:`cancel` was called."""
        if self._ev.is_set():
            raise Cancelled("cancelled by the user")


def _progress(progress: ProgressFn | None, token: CancelToken | None) -> ProgressFn:
    def fn(stage: str, fraction: float) -> None:
        if token is not None:
            token.check()
        if progress is not None:
            progress(stage, float(fraction))
    return fn


@dataclass
class PartialResult:
    """The patients decrypted so far during a run (client side, memory only).

    ``conc`` is (patients so far, scenarios, times) in mg/L, ``auc`` the cumulative AUC in mg*h/L
    with the same shape, ``tiw`` (patients so far, scenarios) the fraction of the horizon in the
    therapeutic window (None when the study has no such output). ``patients`` are the rows of the
    cohort (and of the final :class:`~medtwin.study.study.StudyResult`) these arrays belong to.
    """

    spec: object          # StudySpec
    times: np.ndarray
    patients: np.ndarray  # cohort row indices, ascending
    conc: np.ndarray
    auc: np.ndarray
    tiw: np.ndarray | None
    chunks_done: int
    n_chunks: int
    n_patients: int

    def add(self, chunk: dict) -> "PartialResult":
        """A new PartialResult with one decrypted chunk (the dict of
        :func:`~medtwin.study.study.decrypt_chunk`) appended."""
        tiw = chunk["tiw_terms"].sum(axis=2) if "tiw_terms" in chunk else None
        return dataclasses.replace(
            self, patients=np.concatenate([self.patients, chunk["patients"]]),
            conc=np.concatenate([self.conc, chunk["conc"]]), auc=np.concatenate([self.auc, chunk["auc_h"]]),
            tiw=None if tiw is None or self.tiw is None else np.concatenate([self.tiw, tiw]),
            chunks_done=self.chunks_done + 1)

    @classmethod
    def empty(cls, spec, layout) -> "PartialResult":
        s, t = layout.n_scenarios, layout.n_times
        return cls(spec, np.asarray(spec.times, dtype=float), np.zeros(0, dtype=int), np.zeros((0, s, t)),
                   np.zeros((0, s, t)), np.zeros((0, s)), 0, layout.n_ciphertexts, layout.n_patients)


class _DecryptOnce:
    """A client context that decrypts each ciphertext object at most once and returns the same
    vector when asked again. CKKS decoding in OpenFHE adds fresh noise at every decryption, so
    decrypting a ciphertext twice gives slightly different values (and repeated decryptions of one
    ciphertext would leak more about its noise); with this wrapper the partial results and the
    final result are the same decryption. Everything else is delegated to the wrapped context."""

    def __init__(self, ctx) -> None:
        self._ctx = ctx
        self._cache: dict[int, tuple[object, int, np.ndarray]] = {}
        self.decryptions = 0

    def decrypt(self, ct, length: int | None = None) -> np.ndarray:
        """Decrypt ``ct`` (or return its earlier decryption); raises what the context's decrypt raises."""
        hit = self._cache.get(id(ct))
        if hit is not None and hit[0] is ct and hit[1] == length:
            return hit[2].copy()
        v = np.asarray(self._ctx.decrypt(ct, length))
        self.decryptions += 1
        self._cache[id(ct)] = (ct, length, v.copy())  # holds ct, so its id is not reused
        return v

    def __getattr__(self, name: str):
        return getattr(self._ctx, name)


@dataclass
class ReviewRow:
    """One imported patient as shown for review before encryption (plaintext, memory only)."""

    record: object  # PatientRecord
    source: str     # file name the record came from
    values: dict[str, float | None]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class ScenarioRow:
    """One editable row of the scenario table, as text or numbers; validated by :func:`build_scenario`."""

    name: str = "A"
    dose_mg: float = 300.0
    interval_h: float = 12.0
    count: int = 6
    route: str = "oral"
    loading_dose_mg: float | None = None
    adherence: float = 1.0
    renal_factor: float = 1.0
    clearance_factor: float = 1.0


SCENARIO_COLUMNS = (
    ("name", "Scenario", str),
    ("dose_mg", "Dose [mg]", float),
    ("interval_h", "Interval [h]", float),
    ("count", "Doses", int),
    ("route", "Route", str),
    ("loading_dose_mg", "Loading dose [mg]", float),
    ("adherence", "Adherence [0-1]", float),
    ("renal_factor", "Renal factor", float),
    ("clearance_factor", "Clearance factor", float),
)


def parse_cell(column: str, text: str):
    """Parse one scenario-table cell from text.

    Raises:
        ValidationError: the text is not a value of the column's type (names the column).
    """
    kinds = {c: t for c, _, t in SCENARIO_COLUMNS}
    labels = {c: lab for c, lab, _ in SCENARIO_COLUMNS}
    if column not in kinds:
        raise ValidationError(f"unknown scenario column {column!r}")
    text = (text or "").strip()
    kind = kinds[column]
    if column == "loading_dose_mg" and text == "":
        return None
    if kind is str:
        return text
    try:
        if kind is int:
            f = float(text)
            if f != int(f):
                raise ValueError
            return int(f)
        return float(text)
    except ValueError:
        raise ValidationError(f"{labels[column]}: expected {'a whole number' if kind is int else 'a number'}") from None


def build_scenario(row: ScenarioRow):
    """A validated :class:`~medtwin.study.scenario.Scenario` from a table row.

    Raises:
        ValidationError: the message names the field at fault (from Regimen/Scenario validation).
    """
    from medtwin.study.scenario import Regimen, Scenario

    reg = Regimen(dose_mg=float(row.dose_mg), interval_h=float(row.interval_h), count=int(row.count),
                  route=row.route, loading_dose_mg=row.loading_dose_mg)
    return Scenario(row.name, reg, adherence=float(row.adherence), renal_factor=float(row.renal_factor),
                    clearance_factor=float(row.clearance_factor))


def field_of_error(message: str) -> str | None:
    """Which scenario-table column a Regimen/Scenario validation message names (or None)."""
    names = {"dose_mg": "dose_mg", "loading_dose_mg": "loading_dose_mg", "interval_h": "interval_h",
             "count": "count", "route": "route", "adherence": "adherence", "renal_factor": "renal_factor",
             "clearance_factor": "clearance_factor", "name": "name"}
    # longest names first so that "loading_dose_mg" wins over "dose_mg"
    for key in sorted(names, key=len, reverse=True):
        if key in message:
            return names[key]
    return None


def model_names() -> list[str]:
    """Registered models, by their canonical name."""
    from medtwin.models import pk_oral

    seen, out = set(), []
    for m in pk_oral.MODELS.values():
        if m.name not in seen:
            seen.add(m.name)
            out.append(m.name)
    return out


def available_backends() -> list[str]:
    """Encrypted backends offered in the app: ``openfhe`` always, ``native`` when
    :mod:`medtwin.program` has it registered or the native engine is installed (it registers itself
    when first imported; the app imports it only when a run uses it). Plaintext executors
    (``numpy``) are never offered."""
    import importlib.util

    out = ["openfhe"]
    try:
        from medtwin.program import available_executors
    except ImportError:
        return out
    try:
        installed = (importlib.util.find_spec("medtwin.he.native") is not None
                     and importlib.util.find_spec("medtwin._core") is not None)
    except (ImportError, ValueError):
        installed = False
    if "native" in available_executors() or installed:
        out.append("native")
    return out


def score(summary) -> float:
    """Ranking score of a scenario in [0, 1], higher is better: the cohort's mean fraction of the
    horizon spent inside the therapeutic window (the encrypted time-in-window output). Without
    that output, the fraction of patients whose peak and trough both lie in the window."""
    if np.isfinite(summary.tiw_mean):
        return float(summary.tiw_mean)
    return float(summary.attain)


SCORE_DESCRIPTION = ("mean fraction of the horizon inside the therapeutic window (time in window), "
                     "averaged over the cohort; higher is better")


def ranking(result) -> list[tuple[int, float]]:
    """(scenario index, score) best first (ties keep the table order)."""
    s = [(i, score(x)) for i, x in enumerate(result.summaries())]
    return sorted(s, key=lambda t: -t[1])


def top_ranked(result, tolerance: float = 0.02) -> set[int]:
    """The best scenario and any whose score is within ``tolerance`` of it (none when every
    score is zero: nothing is recommended then)."""
    r = ranking(result)
    if not r or r[0][1] <= 0:
        return set()
    best = r[0][1]
    return {i for i, s in r if s >= best - tolerance}


def subset_result(result, scenario_indices: Sequence[int]):
    """A :class:`StudyResult` restricted to some scenarios (for exporting only what was chosen).

    Raises:
        ValidationError: no scenario chosen or an index out of range.
    """
    idx = sorted(set(int(i) for i in scenario_indices))
    n = len(result.spec.scenarios)
    if not idx:
        raise ValidationError("choose at least one scenario to export")
    if idx[0] < 0 or idx[-1] >= n:
        raise ValidationError("scenario index out of range")
    spec = dataclasses.replace(result.spec, scenarios=tuple(result.spec.scenarios[i] for i in idx))
    take = lambda a: None if a is None else np.asarray(a)[:, idx]
    ref = None
    if result.reference is not None:
        ref = {k: np.asarray(v)[:, idx] for k, v in result.reference.items()}
    return dataclasses.replace(result, spec=spec, conc=take(result.conc), auc=take(result.auc),
                               tiw=take(result.tiw), tiw_in_domain=take(result.tiw_in_domain),
                               reference=ref, extra=dict(result.extra))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class AppModel:
    """Session state of the desktop app (one clinician, one keystore at a time).

    Args:
        audit: optional :class:`~medtwin.custody.audit.AuditLog`; with ``actor`` (an Identity or a
            user Session) every key operation, encryption, simulation, decryption and export is
            logged. Entries carry pseudonymous ids, digests and counts, never a patient value.
        keygen: ``fn(preset_name, model) -> (HEContext, KeyMaterial)``; default
            :func:`medtwin.study.workflow.make_keys`.
    """

    def __init__(self, *, audit=None, actor=None, keygen: Callable | None = None) -> None:
        if (audit is None) != (actor is None):
            raise ValidationError("an audit log needs the acting identity, and vice versa")
        self.audit = audit
        self.actor = actor
        self._keygen = keygen
        self._lock = threading.RLock()
        self.keystore_path: Path | None = None
        self.key_tag: str | None = None
        self.public = None          # PublicMaterial of the open keystore
        self.material = None        # KeyMaterial (secret) while unlocked
        self.client_ctx = None      # HEContext with the secret key while unlocked
        self.compute_ctx = None     # HEContext from public material only (kept while locked)
        self.review: list[ReviewRow] = []
        self.model_name: str = model_names()[0]
        self.scenarios: list[ScenarioRow] = [
            ScenarioRow("A 300 q12h", 300.0, 12.0, 6), ScenarioRow("B 200 q8h", 200.0, 8.0, 9),
            ScenarioRow("C 450 q12h", 450.0, 12.0, 6)]
        #: messages of the scenario editor while its table is invalid (then :meth:`spec` refuses)
        self.scenario_errors: list[str] = []
        self.horizon_h: float = 72.0
        self.step_h: float = 2.0
        self.backend: str = "openfhe"
        self.cohort = None           # EncryptedCohort
        self.cohort_records: list = []  # the records (in memory) behind self.cohort, same order
        self.twin_ids: list[str] = []
        self.result = None           # StudyResult (decrypted)
        self.excluded: int = 0
        self.last_run: dict = {}

    # ------------------------------------------------------------------ audit
    def _log(self, action: str, **fields) -> None:
        if self.audit is not None:
            self.audit.append(self.actor, action, **fields)

    def _audit_kw(self) -> dict:
        return {"log": self.audit, "actor": self.actor} if self.audit is not None else {}

    # ------------------------------------------------------------------ keys
    @property
    def unlocked(self) -> bool:
        return self.material is not None

    @property
    def insecure(self) -> bool:
        return bool(self.public is not None and self.public.insecure)

    @property
    def preset(self) -> str | None:
        return None if self.public is None else self.public.preset

    def create_keystore(self, path, passphrase: str, *, preset: str = DEFAULT_PRESET, kdf=None,
                        allow_weak: bool = False, progress: ProgressFn | None = None) -> str:
        """Generate keys for the current model and write a new keystore; leaves it unlocked.

        Raises:
            MedTwinError: ``path`` exists (never overwritten).
            WeakPassphraseError, WeakParametersError, KeystoreError: from the keystore.
            SecurityPolicyError: the insecure test preset outside tests.
        """
        from medtwin.custody.keystore import KdfParams, create_keystore, passphrase_strength
        from medtwin.custody.keystore import MIN_STRENGTH, WeakPassphraseError
        from medtwin.study.workflow import make_keys

        path = Path(path)
        if path.exists():
            raise MedTwinError(f"{path} exists already; refusing to overwrite it")
        score_, msg = passphrase_strength(passphrase) if isinstance(passphrase, str) else (0, "")
        if score_ < MIN_STRENGTH:  # refuse before spending minutes on key generation
            raise WeakPassphraseError(f"passphrase too weak (score {score_} of 4, need {MIN_STRENGTH}): {msg}")
        if progress:
            progress("keygen", 0.0)
        t0 = time.perf_counter()
        keygen = self._keygen or make_keys
        ctx, km = keygen(preset, self.model_name)
        if progress:
            progress("keygen", 0.9)
        create_keystore(path, passphrase, km, kdf=kdf or KdfParams(), allow_weak=allow_weak,
                        **self._audit_kw())
        with self._lock:
            self._set_unlocked(path, km)
        if progress:
            progress("keygen", 1.0)
        return (f"preset {km.public.preset}, ring dimension {ctx.ring_dim}, depth {ctx.depth}, "
                f"key tag {km.public.key_tag[:12]}, generated in {time.perf_counter() - t0:.1f} s")

    def unlock(self, path, passphrase: str) -> None:
        """Unlock a keystore. After a lock, only the same keystore (same key tag) is accepted,
        so that the encrypted cohort and the results stay valid.

        Raises:
            WrongPassphraseError, TamperedError, KeystoreError, KeyMismatchError: from the keystore;
            KeyMismatchError also when another keystore is unlocked while data of this one is loaded.
        """
        from medtwin.custody.keystore import unlock_keystore
        from medtwin.errors import KeyMismatchError

        path = Path(path)
        km = unlock_keystore(path, passphrase, **self._audit_kw())
        with self._lock:
            if self.key_tag is not None and km.public.key_tag != self.key_tag and self._has_key_data():
                raise KeyMismatchError("this keystore holds other keys than the session's encrypted twins and "
                                       "results; unlock the keystore they were made with, or start a new session")
            self._set_unlocked(path, km)

    def _has_key_data(self) -> bool:
        return self.cohort is not None or self.result is not None

    def _set_unlocked(self, path: Path, km) -> None:
        from medtwin.he.openfhe_backend import HEContext

        same = self.key_tag == km.public.key_tag and self.compute_ctx is not None
        client = HEContext.from_keys(km)
        if not same:
            self.compute_ctx = HEContext.from_public(km.public)
            self.cohort = None
            self.result = None
            self.twin_ids = []
        self.keystore_path = path
        self.public = km.public
        self.key_tag = km.public.key_tag
        self.material = km
        self.client_ctx = client

    def lock(self) -> None:
        """Drop the secret key and the client context; keep everything else."""
        with self._lock:
            self.material = None
            self.client_ctx = None

    def change_passphrase(self, old: str, new: str, *, kdf=None, allow_weak: bool = False) -> None:
        """Re-encrypt the open keystore's secret key under a new passphrase.

        Raises:
            SessionLockedError: no keystore is open; and the errors of ``change_passphrase``.
        """
        from medtwin.custody.keystore import change_passphrase

        if self.keystore_path is None:
            raise SessionLockedError("open a keystore first")
        change_passphrase(self.keystore_path, old, new, kdf=kdf, allow_weak=allow_weak, **self._audit_kw())

    def export_public(self, dest) -> Path:
        """Write the public bundle for a compute node (never the secret key).

        Raises:
            SessionLockedError: no keystore is open; KeystoreError: ``dest`` exists or cannot be written.
        """
        from medtwin.custody.keystore import export_public

        if self.keystore_path is None:
            raise SessionLockedError("open a keystore first")
        return export_public(self.keystore_path, dest, **self._audit_kw())

    def _require_unlocked(self):
        if self.material is None or self.client_ctx is None:
            raise SessionLockedError("the session is locked: unlock the keystore first")
        return self.material, self.client_ctx

    # ------------------------------------------------------------------ patients
    @property
    def model(self):
        from medtwin.models import pk_oral

        return pk_oral.get_model(self.model_name)

    def covariate_names(self) -> tuple[str, ...]:
        from medtwin.models.pk_oral import COVARIATES

        return tuple(COVARIATES)

    def import_files(self, paths: Sequence[os.PathLike | str]) -> int:
        """Read FHIR bundles (.json) and CSV files and add them to the review list.

        Every file is read completely before anything is added, so a bad file adds nothing.
        Returns the number of records added.

        Raises:
            ImportFormatError, ImportRangeError, ValidationError: a file is malformed (the message
                names the file, resource or row and field, never a value); a patient identifier is
                repeated (within the files or with records already imported).
        """
        from medtwin.fhir.importer import load_bundle
        from medtwin.twin.csv_io import load_csv

        new: list[ReviewRow] = []
        for src in paths:
            p = Path(src)
            suf = p.suffix.lower()
            if suf == ".csv":
                recs = load_csv(p)
            elif suf == ".json":
                recs = load_bundle(p)
            else:
                raise ValidationError(f"{p.name}: unknown file type (expected a .json FHIR bundle or a .csv file)")
            new.extend(self._review(r, p.name) for r in recs)
        with self._lock:
            ids = [r.record.source_id for r in self.review] + [r.record.source_id for r in new]
            if len(set(ids)) != len(ids):
                raise ValidationError("the same patient identifier appears more than once; nothing was imported")
            self.review.extend(new)
        return len(new)

    def _review(self, record, source: str) -> ReviewRow:
        model = self.model
        names = self.covariate_names()
        values: dict[str, float | None] = {}
        problems: list[str] = []
        for k in names:
            try:
                values[k] = record.minimise([k])[k]
            except ValidationError as exc:
                values[k] = None
                problems.append(str(exc))
        if not problems:
            try:
                model.validate_covariates({k: np.array([v]) for k, v in values.items()})
            except (RangeError, ValidationError) as exc:
                problems.append(str(exc).replace(" (first at index 0)", "").replace("of 1 patient(s) ", ""))
        try:
            values["crcl_ml_min"] = record.minimise(["crcl_ml_min"])["crcl_ml_min"]
        except ValidationError:
            values["crcl_ml_min"] = None
        return ReviewRow(record, source, values, problems)

    def revalidate(self) -> None:
        """Re-check every imported record against the current model (after a model change)."""
        with self._lock:
            self.review = [self._review(r.record, r.source) for r in self.review]

    def clear_patients(self) -> None:
        with self._lock:
            self.review = []
            self.cohort = None
            self.cohort_records = []
            self.twin_ids = []

    def eligible_records(self) -> list:
        return [r.record for r in self.review if r.ok]

    def pseudonyms(self) -> list[str]:
        """Twin ids of the eligible records under the unlocked keystore.

        Raises:
            SessionLockedError: locked (the pseudonym key derives from the secret key).
        """
        from medtwin.study.workflow import pseudonym_key
        from medtwin.twin.pseudonym import pseudonym

        km, _ = self._require_unlocked()
        key = pseudonym_key(km)
        return [pseudonym(r.source_id, key) for r in self.eligible_records()]

    # ------------------------------------------------------------------ study
    def spec(self):
        """The :class:`StudySpec` of the scenario table, horizon and step.

        Raises:
            ValidationError: a scenario row or the time grid is invalid (message names the field).
        """
        from medtwin.study.study import StudySpec

        if self.scenario_errors:
            raise ValidationError("the scenario table is invalid: " + "; ".join(self.scenario_errors))
        scen = [build_scenario(r) for r in self.scenarios]
        preset = self.preset or DEFAULT_PRESET
        return StudySpec.grid(self.model_name, scen, float(self.horizon_h), float(self.step_h), preset=preset)

    def encrypt(self, *, progress: ProgressFn | None = None, token: CancelToken | None = None):
        """Encrypt the eligible twins for the current study (client side, public key).

        Raises:
            SessionLockedError, ValidationError (no eligible patients, bad scenarios), RangeError,
            Cancelled.
        """
        from medtwin.study.study import encrypt_cohort
        from medtwin.study.workflow import covariates_of

        self._require_unlocked()
        spec = self.spec()
        records = self.eligible_records()
        if not records:
            raise ValidationError("no eligible patients to encrypt: import patients whose covariates pass review")
        ids = self.pseudonyms()
        cov = covariates_of(records)
        enc = encrypt_cohort(spec, cov, ids, self.compute_ctx, _progress(progress, token))
        with self._lock:
            self.cohort = enc
            self.cohort_records = list(records)
            self.twin_ids = list(ids)
            self.excluded = len(self.review) - len(records)
        self._log("twin.encrypt", model=spec.model, n_twins=len(ids), n_scenarios=len(spec.scenarios),
                  n_ciphertexts=enc.layout.n_ciphertexts * len(enc.inputs), preset=spec.preset)
        return enc

    def cohort_matches_spec(self) -> bool:
        if self.cohort is None:
            return False
        try:
            return self.cohort.spec == self.spec() and len(self.cohort.twin_ids) == len(self.eligible_records())
        except ValidationError:
            return False

    def run(self, *, backend: str | None = None, progress: ProgressFn | None = None,
            token: CancelToken | None = None, reference: bool = True,
            on_partial: Callable[[PartialResult], None] | None = None):
        """Encrypt (if the cohort does not match the study), simulate on the compute context,
        decrypt on the client. Returns the :class:`StudyResult` and keeps it.

        With ``on_partial``, every ciphertext chunk is decrypted on the client as soon as it is
        simulated and ``on_partial(PartialResult)`` receives all patients decrypted so far (called
        from the thread that runs this method). A cancel takes effect after the chunk being
        simulated: that chunk is not decrypted, and nothing after it is simulated or decrypted.
        Each partial decryption is audit-logged as one ``result.decrypt`` entry (``n_twins`` of
        the chunk, ``details.chunk`` and ``details.mode = "partial"``), and the final result as
        one more entry for the whole cohort whose ``n_ciphertexts`` counts the ciphertexts
        decrypted at that step. Each ciphertext is decrypted once: the final result reuses the
        chunks' decryptions, so the partial results equal its rows exactly.

        Raises:
            SessionLockedError, ValidationError, ProgramError, Cancelled, and the errors of
            :func:`~medtwin.study.study.simulate`.
        """
        from medtwin.study.study import decrypt_chunk, decrypt_outcome, reference_outcome, simulate
        from medtwin.study.workflow import covariates_of

        backend = backend or self.backend
        self._require_unlocked()
        cb = _progress(progress, token)
        t0 = time.perf_counter()
        if not self.cohort_matches_spec():
            self.encrypt(progress=progress, token=token)
        cohort = self.cohort
        _, client0 = self._require_unlocked()
        once = _DecryptOnce(client0)
        on_chunk = None
        if on_partial is not None:
            partial = [PartialResult.empty(cohort.spec, cohort.layout)]

            def on_chunk(index: int, outputs: dict) -> None:
                if token is not None:
                    token.check()  # cancelled while this chunk ran: do not decrypt it
                self._require_unlocked()
                dec = decrypt_chunk(cohort.layout, index, outputs, once)
                self._log("result.decrypt", model=cohort.spec.model, n_twins=int(len(dec["patients"])),
                          n_scenarios=len(cohort.spec.scenarios), key_tag=cohort.key_tag,
                          details={"chunk": int(index), "mode": "partial"})
                partial[0] = partial[0].add(dec)
                on_partial(partial[0])

        cb("simulate", 0.0)
        out = simulate(cohort, self.compute_ctx, backend=backend, progress=cb, on_chunk=on_chunk)
        self._log("simulation.run", model=cohort.spec.model, n_twins=len(cohort.twin_ids),
                  n_scenarios=len(cohort.spec.scenarios), n_time_points=len(cohort.spec.times),
                  backend=backend, program_digest=out.program_digest,
                  details={"duration_s": float(out.seconds), "depth": int(out.depth)})
        self._require_unlocked()
        before = once.decryptions
        res = decrypt_outcome(out, once, progress=cb)
        self._log("result.decrypt", model=cohort.spec.model, n_twins=len(cohort.twin_ids),
                  program_digest=out.program_digest, n_results=int(res.n_results),
                  n_ciphertexts=int(once.decryptions - before), details={"mode": "final"})
        res.seconds_total = time.perf_counter() - t0
        if reference:
            res.reference = reference_outcome(cohort.spec, covariates_of(self.cohort_records))
        res.extra["excluded"] = self.excluded
        res.extra["preset"] = self.preset
        res.extra["insecure"] = self.insecure
        with self._lock:
            self.result = res
            self.last_run = {"backend": backend, "seconds": res.seconds_total, "simulate_s": out.seconds}
        return res

    # ------------------------------------------------------------------ results
    def basis(self, result=None) -> dict:
        """What a ranking rests on: model, citation, covariates used, ranges, error bounds, run facts."""
        from medtwin.twin.record import RANGES

        res = result or self.result
        if res is None:
            raise ValidationError("no results yet")
        m = res.spec.pk
        units = {k: (RANGES[k].unit if k in RANGES else ("1 = female, 0 = male" if k == "female" else ""))
                 for k in self.covariate_names()}
        return {
            "model": f"{m.name} (version {m.version}), drug {m.drug}",
            "citation": m.citation,
            "therapeutic window": f"{m.window[0]:g}-{m.window[1]:g} mg/L",
            "covariates used": ", ".join(f"{k} [{u}]" if u else k for k, u in units.items()),
            "valid ranges": "; ".join(f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in m.ranges.items()),
            "error bounds": "; ".join(f"{k} {v:.3g}" for k, v in sorted(res.bounds.items())),
            "patients": f"{len(res.twin_ids)} encrypted twins ({res.extra.get('excluded', 0)} excluded before encryption)",
            "time grid": f"{len(res.times)} points, 0-{res.times[-1]:g} h",
            "CKKS preset": (f"{res.extra.get('preset')} (INSECURE test ring)" if res.extra.get("insecure")
                            else str(res.extra.get("preset"))),
            "backend": res.backend,
            "program digest": res.program_digest,
            "ranking score": SCORE_DESCRIPTION,
        }

    def export(self, dest_dir, *, scenarios: Sequence[int], csv_metrics: bool = True, csv_summary: bool = True,
               pdf: bool = True, pdf_plots: bool = True, pdf_twins: bool = False) -> list[Path]:
        """Write the chosen parts of the chosen scenarios into ``dest_dir`` (new files only).

        Returns the files written. Raises ValidationError when nothing is chosen, MedTwinError when
        a file exists already (never overwritten; nothing is written then).
        """
        from medtwin.reports.pdf import write_pdf
        from medtwin.reports.study_report import comparison_rows, write_metrics_csv

        if self.result is None:
            raise ValidationError("no results to export yet")
        self._require_unlocked()
        if not (csv_metrics or csv_summary or pdf):
            raise ValidationError("choose at least one thing to export")
        sub = subset_result(self.result, scenarios)
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        targets = {"metrics": dest / "twin-metrics.csv", "summary": dest / "scenario-summary.csv",
                   "pdf": dest / "study-summary.pdf"}
        want = {"metrics": csv_metrics, "summary": csv_summary, "pdf": pdf}
        for k, p in targets.items():
            if want[k] and p.exists():
                raise MedTwinError(f"{p} exists already; refusing to overwrite it (choose another folder)")
        written: list[Path] = []
        if csv_metrics:
            written.append(write_metrics_csv(sub, targets["metrics"]))
        if csv_summary:
            written.append(_write_rows_csv(comparison_rows(sub), targets["summary"]))
        if pdf:
            written.append(write_pdf(sub, targets["pdf"], basis=self.basis(sub), include_plot=pdf_plots,
                                     include_twins=pdf_twins))
        for p in written:
            self._log("export.write", format=p.suffix.lstrip("."), file_sha256=file_sha256(p),
                      n_scenarios=len(sub.spec.scenarios), n_twins=len(sub.twin_ids))
        return written


def _write_rows_csv(rows: list[dict], path: Path) -> Path:
    import csv

    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
    return path
