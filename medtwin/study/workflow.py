"""End-to-end workflows used by the CLI and the desktop app (no Qt, no terminal I/O here).

Every workflow takes the acting ``session`` (:func:`medtwin.custody.users.authenticate`) and the
``log`` (:class:`medtwin.custody.audit.AuditLog`): the session's role is checked with
:func:`medtwin.custody.users.require` before anything happens, and every key operation,
encryption, simulation, decryption and export is appended to the audit log, signed by the actor.
Entries name pseudonymous ids, digests, counts and model names only, never a patient value.

Patient plaintext exists only in memory on the client: records are read, minimised to the model's
covariates and encrypted; nothing unencrypted about a patient is written to disk. Twin ids are
HMAC pseudonyms keyed by a secret derived from the keystore's secret key, so they are stable for
one keystore and meaningless without it.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from medtwin.errors import MedTwinError, ValidationError
from medtwin.he.keys import KeyMaterial
from medtwin.models.pk_oral import COVARIATES, MAX_POWER
from medtwin.study.scenario import Regimen, Scenario
from medtwin.study.study import (EncryptedCohort, EncryptedOutcome, StudySpec, compile_study, decrypt_outcome,
                                 encrypt_cohort, reference_outcome, required_depth, simulate)

Echo = Callable[[str], None]


# ------------------------------------------------------------------------------------ specs
def demo_spec(horizon: float = 72.0, step: float = 2.0, preset: str = "standard-128") -> StudySpec:
    """Three theophylline maintenance regimens for adults (sustained release, 72 h)."""
    n = lambda tau: max(1, int(horizon // tau))
    scen = [
        Scenario("A 300 q12h", Regimen(dose_mg=300, interval_h=12, count=n(12))),
        Scenario("B 200 q8h", Regimen(dose_mg=200, interval_h=8, count=n(8))),
        Scenario("C 450 q12h", Regimen(dose_mg=450, interval_h=12, count=n(12))),
    ]
    return StudySpec.grid("theophylline", scen, horizon, step, preset=preset)


def key_spec(model: str = "theophylline", preset: str = "standard-128") -> StudySpec:
    """The most demanding study the keys must serve: MAX_POWER dosing intervals, 256 time points."""
    scen = [Scenario("worst case", Regimen(dose_mg=100, interval_h=1.0, count=MAX_POWER + 1))]
    return StudySpec(model=model, scenarios=tuple(scen), times=tuple(np.linspace(0, MAX_POWER, 256)), preset=preset)


# ------------------------------------------------------------------------------------ keys
def make_keys(preset_name: str, model: str = "theophylline", *, studies: Sequence[StudySpec] = ()):
    """Generate OpenFHE keys with the depth and rotations the model's studies need.

    ``studies``: specs whose programs the keys must also serve; their rotations are added (an
    optimisation study with R IIV replicates needs log2(R) rotation keys for its encrypted
    expected score, see :func:`medtwin.study.study.replicate_rotations`). Without them the keys
    carry no rotation key and such a study leaves the mean over replicates to the key holder.

    Raises:
        ValidationError: a study of another model than ``model``.
    """
    from medtwin.he.openfhe_backend import generate_keys
    from medtwin.he.params import preset

    depth, rots = required_depth(key_spec(model, preset_name))
    rots = set(rots)
    for st in studies:
        if st.pk is not key_spec(model, preset_name).pk:
            raise ValidationError("make_keys: every study must use the keys' model")
        d, r = required_depth(st)
        depth = max(depth, d)
        rots.update(r)
    # Only the rotations the programs use: at N = 2^16 and 6 digits one rotation key is ~233 MB,
    # and the model's programs sum time-in-window terms on the client, so they need none unless
    # a study averages IIV replicates under encryption (log2(R) keys).
    return generate_keys(preset(preset_name, depth=depth), sorted(rots))


def create_keys(path, passphrase: str, *, session, log, preset: str = "standard-128", model: str = "theophylline",
                studies: Sequence[StudySpec] = (), **kw) -> str:
    """Generate keys sized for the model's programs into a new passphrase-encrypted keystore.

    ``studies``: as :func:`make_keys` (adds the rotation keys those studies' programs use).
    """
    from medtwin.custody.keystore import create_keystore

    _authorise(session, log, "create_twins")
    if Path(path).exists():
        raise MedTwinError(f"{path} exists already; refusing to overwrite it")
    ctx, km = make_keys(preset, model, studies=studies)
    create_keystore(path, passphrase, km, log=log, actor=session, **kw)
    return f"preset {km.public.preset}, ring {ctx.ring_dim}, depth {ctx.depth}, key tag {km.public.key_tag}"


def pseudonym_key(material: KeyMaterial) -> bytes:
    """A secret for twin pseudonyms, derived from (never equal to) the secret key bytes."""
    return hmac.new(hashlib.sha256(material.secret_key).digest(), b"medtwin/pseudonym-key/v1", hashlib.sha256).digest()


# ------------------------------------------------------------------------------------ records
def load_records(sources: Sequence[os.PathLike | str]):
    """Read FHIR bundles (.json) and CSV files into validated :class:`PatientRecord` objects."""
    from medtwin.fhir.importer import load_bundle
    from medtwin.twin.csv_io import load_csv

    out = []
    for src in sources:
        p = Path(src)
        if p.suffix.lower() == ".csv":
            out.extend(load_csv(p))
        elif p.suffix.lower() == ".json":
            out.extend(load_bundle(p))
        else:
            raise ValidationError(f"{p}: unknown file type (expected .json FHIR bundle or .csv)")
    ids = [r.source_id for r in out]
    if len(set(ids)) != len(ids):
        raise ValidationError("the same patient identifier appears more than once across the inputs")
    return out


def _log_import(log, session, sources, n_records: int) -> None:
    from medtwin.twin.store import sha256

    for src in sources:
        p = Path(src)
        log.append(session, "patient.import", format="csv" if p.suffix.lower() == ".csv" else "fhir",
                   file_sha256=sha256(p.read_bytes()), n_patients=n_records if len(sources) == 1 else None)


def eligible(records, spec: StudySpec):
    """Split records into those inside the model's declared ranges and the excluded count."""
    from medtwin.errors import RangeError

    model = spec.pk
    keep, excluded = [], 0
    for r in records:
        try:
            cov = {k: np.array([v]) for k, v in r.minimise(list(COVARIATES)).items()}
            model.validate_covariates(cov)
        except (RangeError, ValidationError):
            excluded += 1
            continue
        keep.append(r)
    return keep, excluded


def covariates_of(records) -> dict[str, np.ndarray]:
    rows = [r.minimise(list(COVARIATES)) for r in records]
    return {k: np.array([row[k] for row in rows], dtype=np.float64) for k in COVARIATES}


# ------------------------------------------------------------------------------------ bundles
def _cohort_bundle(enc: EncryptedCohort, ctx):
    from medtwin.twin.store import Bundle

    meta = {"spec": enc.spec.to_dict(), "twin_ids": enc.twin_ids, "slots": enc.layout.slots}
    return Bundle("encrypted-cohort", enc.key_tag, meta, enc.to_wire(ctx).inputs)


def _as_bytes(ctx, c) -> bytes:
    return bytes(c) if isinstance(c, (bytes, bytearray, memoryview)) else ctx.serialize(c)


def _load_cohort(path, ctx) -> EncryptedCohort:
    """The encrypted cohort of a bundle, its ciphertexts left as bytes: the compute node's
    :func:`simulate` validates and converts them (the native engine without OpenFHE objects)."""
    from medtwin.study.layout import SlotLayout
    from medtwin.twin.store import read_bundle

    b = read_bundle(path, kind="encrypted-cohort", key_tag=ctx.key_tag)
    spec = StudySpec.from_dict(b.meta["spec"])
    ids = list(b.meta["twin_ids"])
    lay = SlotLayout(len(ids), len(spec.scenarios), len(spec.times), int(b.meta["slots"]))
    if lay.slots != ctx.slots:
        raise ValidationError(f"{path}: packed for {lay.slots} slots, the keys have {ctx.slots}")
    inputs = {k: [bytes(x) for x in b.blobs.get(k, [])] for k in COVARIATES}
    for k, v in inputs.items():
        if len(v) != lay.n_ciphertexts:
            raise ValidationError(f"{path}: covariate {k} has {len(v)} ciphertexts, the layout needs {lay.n_ciphertexts}")
    return EncryptedCohort(spec, ids, lay, b.key_tag, inputs)


def _outcome_bundle(out: EncryptedOutcome, ctx):
    from medtwin.twin.store import Bundle

    meta = {"spec": out.spec.to_dict(), "twin_ids": out.twin_ids, "slots": out.layout.slots,
            "program_digest": out.program_digest, "bounds": out.bounds, "depth": out.depth,
            "seconds": out.seconds, "backend": out.backend, "notes": dict(out.notes)}
    return Bundle("encrypted-outcome", out.key_tag, meta,
                  {k: [_as_bytes(ctx, c) for c in v] for k, v in out.outputs.items()})


def _load_outcome(path, ctx) -> EncryptedOutcome:
    from medtwin.study.layout import SlotLayout
    from medtwin.twin.store import read_bundle

    b = read_bundle(path, kind="encrypted-outcome", key_tag=ctx.key_tag)
    m = b.meta
    spec = StudySpec.from_dict(m["spec"])
    lay = SlotLayout(len(m["twin_ids"]), len(spec.scenarios), len(spec.times), int(m["slots"]))
    outputs = {k: [ctx.deserialize(x) for x in v] for k, v in b.blobs.items()}
    return EncryptedOutcome(spec, list(m["twin_ids"]), lay, b.key_tag, outputs, m["program_digest"],
                            {k: float(v) for k, v in m["bounds"].items()}, int(m["depth"]), float(m["seconds"]),
                            m["backend"], notes={str(k): str(v) for k, v in (m.get("notes") or {}).items()})


def _public_material(path):
    from medtwin.custody.keystore import load_public_bundle, read_public

    p = Path(path)
    return read_public(p) if p.is_dir() else load_public_bundle(p)


def _authorise(session, log, permission: str) -> None:
    from medtwin.custody.users import require
    from medtwin.errors import PermissionDenied

    if session is None or log is None:
        raise PermissionDenied(f"{permission}: an authenticated session and an audit log are required")
    require(session, permission)


def encrypt_files(sources, keystore, passphrase: str, study_path, out, *, session, log, progress=None) -> int:
    """Client: import, minimise, validate, pack and encrypt patients into a cohort bundle.

    Raises: PermissionDenied (role lacks ``create_twins``), the import and keystore errors,
    RangeError for patients outside the model's ranges, MedTwinError if ``out`` exists.
    """
    from medtwin.custody.keystore import unlock_keystore
    from medtwin.he.openfhe_backend import HEContext
    from medtwin.twin.pseudonym import pseudonym
    from medtwin.twin.store import write_bundle

    import json

    _authorise(session, log, "create_twins")
    if Path(out).exists():
        raise MedTwinError(f"{out} exists already; refusing to overwrite it")
    try:
        spec = StudySpec.from_dict(json.loads(Path(study_path).read_text()))
    except (OSError, ValueError) as exc:
        raise ValidationError(f"{study_path}: cannot read the study definition ({exc})") from None
    records = load_records(sources)
    _log_import(log, session, sources, len(records))
    km = unlock_keystore(keystore, passphrase, log=log, actor=session)
    ctx = HEContext.from_keys(km)
    key = pseudonym_key(km)
    ids = [pseudonym(r.source_id, key) for r in records]
    t0 = time.perf_counter()
    enc = encrypt_cohort(spec, covariates_of(records), ids, ctx, progress)
    write_bundle(out, _cohort_bundle(enc, ctx))
    log.append(session, "twin.encrypt", model=spec.model, key_tag=km.public.key_tag, n_twins=len(ids),
               n_ciphertexts=enc.layout.n_ciphertexts * len(COVARIATES),
               scenario_digests=[sc.digest() for sc in spec.scenarios],
               details={"duration_s": time.perf_counter() - t0})
    return len(ids)


def simulate_bundle(cohort, public, out, *, session, log, backend: str = "openfhe", progress=None) -> str:
    """Compute node: run the study's program on an encrypted cohort with public material only.

    Raises: PermissionDenied (role lacks ``run_simulation``), TamperedError / KeyMismatchError for
    bad bundles, ProgramError when the keys lack depth or rotations.
    """
    from medtwin.he.openfhe_backend import HEContext
    from medtwin.twin.store import write_bundle

    _authorise(session, log, "run_simulation")
    if Path(out).exists():
        raise MedTwinError(f"{out} exists already; refusing to overwrite it")
    ctx = HEContext.from_public(_public_material(public))
    enc = _load_cohort(cohort, ctx)
    res = simulate(enc, ctx, backend=backend, progress=progress)
    write_bundle(out, _outcome_bundle(res, ctx))
    _log_simulation(log, session, enc, res)
    n = enc.layout.n_results
    return (f"simulated {len(enc.twin_ids)} twin(s) x {len(enc.spec.scenarios)} scenario(s) x "
            f"{len(enc.spec.times)} time points on {backend} in {res.seconds:.1f} s "
            f"({n / res.seconds:.0f} results/s); program {res.program_digest[:16]}, depth {res.depth}")


def _log_simulation(log, session, enc: EncryptedCohort, res: EncryptedOutcome) -> None:
    log.append(session, "simulation.run", model=enc.spec.model, key_tag=enc.key_tag, backend=res.backend,
               n_twins=len(enc.twin_ids), n_scenarios=len(enc.spec.scenarios),
               n_time_points=len(enc.spec.times), n_results=enc.layout.n_results,
               scenario_digests=[sc.digest() for sc in enc.spec.scenarios], program_digest=res.program_digest,
               details={"duration_s": res.seconds, "depth": res.depth,
                        "max_error_bound": max(res.bounds.values()) if res.bounds else 0.0})


def _log_decrypt(log, session, out: EncryptedOutcome) -> None:
    log.append(session, "result.decrypt", model=out.spec.model, key_tag=out.key_tag, n_twins=len(out.twin_ids),
               n_scenarios=len(out.spec.scenarios), program_digest=out.program_digest,
               n_ciphertexts=sum(len(v) for v in out.outputs.values()))


def decrypt_bundle(outcome, keystore, passphrase: str, report_dir, *, session, log) -> str:
    """Client: decrypt an outcome bundle, write the CSV and PNG report (signed), return the table.

    Raises: PermissionDenied (role lacks ``decrypt_patient``/``export``), keystore and bundle errors.
    """
    from medtwin.custody.keystore import unlock_keystore
    from medtwin.custody.signing import sign_file
    from medtwin.he.openfhe_backend import HEContext
    from medtwin.reports.study_report import comparison_rows, format_table, plot_png, write_metrics_csv

    _authorise(session, log, "decrypt_patient")
    _authorise(session, log, "export")
    report_dir = Path(report_dir)
    if report_dir.exists():
        raise MedTwinError(f"{report_dir} exists already; refusing to overwrite it")
    km = unlock_keystore(keystore, passphrase, log=log, actor=session)
    ctx = HEContext.from_keys(km)
    out = _load_outcome(outcome, ctx)
    res = decrypt_outcome(out, ctx)
    _log_decrypt(log, session, out)
    report_dir.mkdir(parents=True)
    files = [write_metrics_csv(res, report_dir / "metrics.csv"), plot_png(res, report_dir / "concentrations.png")]
    _sign_exports(files, session, log)
    return format_table(comparison_rows(res)) + f"\nwrote {report_dir}/metrics.csv and concentrations.png (signed)"


def _sign_exports(files, session, log) -> None:
    """Detached Ed25519 signatures by the exporting user, and an export.write entry per file."""
    from medtwin.custody.signing import sign_file
    from medtwin.twin.store import sha256

    for f in files:
        sign_file(f, session.identity)
        log.append(session, "export.write", format=Path(f).suffix.lstrip(".") or "file",
                   file_sha256=sha256(Path(f).read_bytes()))


# ------------------------------------------------------------------------------------ demo
def demo(*, patients: int = 1200, preset: str = "standard-128", out="medtwin-demo-out", backend: str = "native",
         horizon: float = 72.0, step: float = 2.0, optimise_patients: int = 3, progress=None,
         echo: Echo = print) -> dict:
    """The main job: an end-to-end encrypted study on the bundled synthetic cohort.

    Keys are generated into a temporary keystore (random passphrase, never printed); the compute
    side is a separate context built from the exported public bundle only. Prints the comparison
    table, throughput and the largest deviation from the plaintext reference; writes CSV and PNG
    into ``out`` (a new folder, or a new numbered subfolder if ``out`` exists).
    Returns a dict of the headline numbers.
    """
    from medtwin.custody.keystore import create_keystore, export_public, load_public_bundle, unlock_keystore
    from medtwin.data import cohort_csv_path
    from medtwin.he.openfhe_backend import HEContext
    from medtwin.reports.study_report import comparison_rows, format_table, plot_png, write_metrics_csv
    from medtwin.twin.pseudonym import pseudonym

    from medtwin.custody.audit import AuditLog
    from medtwin.custody.users import UserStore, authenticate

    out = _fresh_dir(Path(out))
    t_start = time.perf_counter()
    # A throwaway clinician account and an audit log for this run (in the output folder).
    users = UserStore(out / "users.db")
    pw_admin, pw_clin = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    users.bootstrap_admin("demo-admin", pw_admin)
    log = AuditLog(out / "audit.db")
    admin = authenticate(users, "demo-admin", pw_admin, audit=log)
    users.add_user(admin, "demo-clinician", "clinician", pw_clin)
    admin.close()
    session = authenticate(users, "demo-clinician", pw_clin, audit=log)
    _authorise(session, log, "create_twins")

    spec = demo_spec(horizon, step, preset)
    records = load_records([cohort_csv_path()])[: max(1, int(patients))]
    records, excluded = eligible(records, spec)
    echo(f"cohort: {len(records)} synthetic patients eligible for {spec.pk.name} "
         f"({excluded} outside the model's declared ranges, refused before encryption)")

    ospec = None
    if optimise_patients > 0:
        from medtwin.study.optimise import optimisation_spec, regimen_grid

        # 6 candidate regimens x 8 IIV replicates; the keys carry its log2(8) = 3 rotations, so
        # the expected score over the replicates is computed under encryption.
        ospec = optimisation_spec(spec.model, regimen_grid([200, 300, 400], [8, 12], horizon), horizon, step,
                                  replicates=8, preset=preset)
    t = time.perf_counter()
    ctx_client, km = make_keys(preset, spec.model, studies=[ospec] if ospec is not None else [])
    t_keys = time.perf_counter() - t
    label = "INSECURE test ring" if km.public.insecure else km.public.params.get("security")
    echo(f"keys: preset {km.public.preset} ({label}), ring dimension {ctx_client.ring_dim}, "
         f"{ctx_client.slots} slots, depth {ctx_client.depth}, key generation {t_keys:.1f} s")

    with tempfile.TemporaryDirectory(prefix="medtwin-demo-") as tmp:
        ks = Path(tmp) / "keystore"
        passphrase = secrets.token_urlsafe(24)
        create_keystore(ks, passphrase, km, log=log, actor=session)
        km2 = unlock_keystore(ks, passphrase, log=log, actor=session)
        client = HEContext.from_keys(km2)
        pub = load_public_bundle(export_public(ks, Path(tmp) / "public.mtpub", passphrase=passphrase,
                                               log=log, actor=session))
    node = HEContext.from_public(pub)  # the compute side never sees the secret key
    del km, km2, ctx_client

    key = secrets.token_bytes(32)  # demo pseudonyms: a throwaway key
    ids = [pseudonym(r.source_id, key) for r in records]
    cov = covariates_of(records)
    t = time.perf_counter()
    # The client sends the node bytes (as it would over the wire): the node works bytes in, bytes out.
    enc = encrypt_cohort(spec, cov, ids, client, progress).to_wire(client)
    t_enc = time.perf_counter() - t
    log.append(session, "twin.encrypt", model=spec.model, key_tag=enc.key_tag, n_twins=len(ids),
               n_ciphertexts=enc.layout.n_ciphertexts * len(COVARIATES),
               scenario_digests=[sc.digest() for sc in spec.scenarios], details={"duration_s": t_enc})
    echo(f"encrypted {len(ids)} twins x {len(spec.scenarios)} scenarios x {len(spec.times)} time points "
         f"into {enc.layout.n_ciphertexts} ciphertext(s) per covariate in {t_enc:.1f} s")
    _authorise(session, log, "run_simulation")
    res_enc = simulate(enc, node, backend=backend, progress=progress)
    _log_simulation(log, session, enc, res_enc)
    _authorise(session, log, "decrypt_patient")
    t = time.perf_counter()
    res = decrypt_outcome(res_enc, client, progress=progress)
    t_dec = time.perf_counter() - t
    _log_decrypt(log, session, res_enc)
    res.reference = reference_outcome(spec, cov)
    res.seconds_total = time.perf_counter() - t_start

    table = format_table(comparison_rows(res))
    dev = res.deviations()
    echo("")
    echo(f"Per-scenario comparison (decrypted; {spec.pk.drug}, window {spec.pk.window[0]:g}-{spec.pk.window[1]:g} mg/L, "
         f"horizon {horizon:g} h):")
    echo(table)
    echo("")
    echo(f"simulation on {backend} (compute node, ciphertext bytes in and out): {res_enc.seconds:.1f} s for {res.n_results:,} (patient, scenario, time point) "
         f"results -> throughput {res.throughput():,.0f} results/s (decryption {t_dec:.1f} s)")
    echo(f"max deviation from the plaintext reference: concentration {dev['conc_abs']:.2e} mg/L "
         f"(stated bound {res.bounds.get('conc', float('nan')):.2e}), AUC {dev['auc_abs']:.2e} mg*h/L "
         f"(bound {res.bounds.get('auc', float('nan')):.2e}); relative to each trajectory's peak/AUC "
         f"{max(dev['conc_rel'], dev['auc_rel']):.1e}"
         + (f"; time in window {dev['tiw_abs']:.1e} (bound {res.bounds.get('tiw', float('nan')):.1e})" if 'tiw_abs' in dev else ""))
    _authorise(session, log, "export")
    csv_path = write_metrics_csv(res, out / "metrics.csv")
    png_path = plot_png(res, out / "concentrations.png")
    _sign_exports([csv_path, png_path], session, log)
    # Treatment optimisation for three patients: 6 candidate regimens x 8 IIV replicates, one
    # encrypted pass with the same keys, ranked options with 5-95% bands.
    if ospec is not None:
        from medtwin.study.optimise import rank_options

        n_regs = len(ospec.groups())
        sel = list(range(min(optimise_patients, len(ids))))
        ocov = {k: v[sel] for k, v in cov.items()}
        oenc = encrypt_cohort(ospec, ocov, [ids[i] for i in sel], client, progress).to_wire(client)
        log.append(session, "twin.encrypt", model=spec.model, key_tag=oenc.key_tag, n_twins=len(sel),
                   n_ciphertexts=oenc.layout.n_ciphertexts * len(COVARIATES),
                   scenario_digests=[sc.digest() for sc in ospec.scenarios])
        oout = simulate(oenc, node, backend=backend, progress=progress)
        _log_simulation(log, session, oenc, oout)
        ores = decrypt_outcome(oout, client, progress=progress)
        _log_decrypt(log, session, oout)
        echo("")
        ranked = rank_options(ores)
        where = ("computed under encryption, decrypted by the key holder" if ores.expected_score is not None
                 else "averaged after decryption: " + ores.extra.get("notes", {}).get("expected_score", ""))
        echo(f"Treatment optimisation ({n_regs} candidate regimens x {ospec.replicates} IIV replicates, omega_CL 0.168; "
             f"{oout.seconds:.1f} s encrypted): ranked options, median [5-95%] over inter-individual variability")
        echo(f"  score = expected (time in window - {ospec.penalty:g} x time above window) over the replicates, "
             f"{where}; 'enc' marks it, '±' is its stated bound")
        for tid, opts in ranked.items():
            echo(f"  twin {tid}:")
            for o in opts[:3]:
                echo("    " + o.line())
        echo(f"  basis: {spec.pk.name} ({spec.pk.citation.split(';')[0]}); covariates {', '.join(COVARIATES)}; "
             f"concentration bound {ores.bounds.get('conc', float('nan')):.2g} mg/L")
    rep = log.verify(users.public_keys())
    n_entries = rep.head_seq if hasattr(rep, "head_seq") else len(list(log.entries()))
    echo(f"wrote {csv_path} and {png_path} (Ed25519-signed); audit log {out / 'audit.db'}: {n_entries} entries, "
         f"chain and signatures {'verified' if rep.ok else 'FAILED: ' + str(rep)}; total {res.seconds_total:.1f} s")
    session.close()
    return {"throughput": res.throughput(), "deviations": dev, "bounds": res.bounds, "n_results": res.n_results,
            "out": str(out), "result": res, "audit_ok": rep.ok}


def _fresh_dir(path: Path) -> Path:
    if not path.exists():
        path.mkdir(parents=True)
        return path
    for i in range(1, 10000):
        p = path / f"run-{i:03d}"
        if not p.exists():
            p.mkdir()
            return p
    raise MedTwinError(f"{path}: too many earlier runs")
