"""The ``medtwin`` command line: key custody, import, encryption, simulation, decryption, cohort studies, demo.

Roles stay apart as in the desktop app: ``encrypt`` and ``decrypt`` run on the clinician's
workstation (they unlock the keystore); ``simulate`` needs only the public bundle and runs on the
compute node. Passphrases are asked for on the terminal, or read from the environment variable
named by ``--passphrase-env`` for scripted use; they are never accepted as plain arguments.

Every command that touches keys or patient data acts as an authenticated user (``--user``,
password from the terminal or ``--password-env``) from the user store in ``$MEDTWIN_HOME``
(default ``~/.medtwin``), is checked against the user's role, and is written to the signed audit
log there (``$MEDTWIN_HOME/audit.db``). ``medtwin init --admin NAME`` creates both.
"""
from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from medtwin.errors import MedTwinError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="PrivateMedTwin: encrypted patient digital twins (CKKS / OpenFHE).")
keys_app = typer.Typer(no_args_is_help=True, help="Key custody: create, unlock, re-key, export public material.")
app.add_typer(keys_app, name="keys")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _passphrase(env: Optional[str], prompt: str, confirm: bool = False) -> str:
    if env:
        val = os.environ.get(env)
        if val is None:
            _fail(MedTwinError(f"environment variable {env} is not set"))
        return val
    if not sys.stdin.isatty():
        _fail(MedTwinError("no terminal to ask for the passphrase; use --passphrase-env VAR"))
    p = getpass.getpass(f"{prompt}: ")
    if confirm and getpass.getpass("repeat: ") != p:
        _fail(MedTwinError("the two passphrases differ"))
    return p


def _home() -> Path:
    return Path(os.environ.get("MEDTWIN_HOME", Path.home() / ".medtwin"))


def _session(user: Optional[str], password_env: Optional[str]):
    """Authenticate ``user`` against $MEDTWIN_HOME/users.db; returns (session, audit log)."""
    from medtwin.custody.audit import AuditLog
    from medtwin.custody.users import authenticate

    home = _home()
    if not (home / "users.db").exists():
        _fail(MedTwinError(f"no user store in {home}; run 'medtwin init --admin NAME' first"))
    name = user or os.environ.get("MEDTWIN_USER") or getpass.getuser()
    pw = _passphrase(password_env, f"password for {name}")
    log = AuditLog(home / "audit.db")
    return authenticate(home / "users.db", name, pw, audit=log), log


class _Progress:
    """A rich progress bar driven by the core's (stage, fraction) callback."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self._bar = None
        self._tasks: dict[str, int] = {}

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description:>10}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TimeElapsedColumn(), transient=False)
            self._bar.__enter__()
        return self

    def __call__(self, stage: str, frac: float) -> None:
        if self._bar is None:  # not a terminal: a line per quarter, so logs show the work moving
            q = int(frac * 4 + 1e-9)
            if q > self._tasks.get(stage, 0):
                self._tasks[stage] = q
                typer.echo(f"  {stage}: {int(frac * 100)}%", err=True)
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(stage, total=1.0)
        self._bar.update(self._tasks[stage], completed=frac)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)


UserOpt = typer.Option(None, "--user", help="acting user (default $MEDTWIN_USER or the login name)")
PasswordEnvOpt = typer.Option(None, "--password-env", help="read the user's password from this variable")


@app.command("init")
def init(admin: str = typer.Option(..., help="name of the first (admin) account"),
         password_env: Optional[str] = PasswordEnvOpt):
    """Create the user store and the audit log in $MEDTWIN_HOME with a first admin account."""
    from medtwin.custody.audit import AuditLog
    from medtwin.custody.users import UserStore

    home = _home()
    if (home / "users.db").exists():
        _fail(MedTwinError(f"{home / 'users.db'} exists already"))
    try:
        pw = _passphrase(password_env, f"new password for {admin}", confirm=True)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        UserStore(home / "users.db").bootstrap_admin(admin, pw)
        AuditLog(home / "audit.db")
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"initialised {home}: admin {admin}; add users with 'medtwin users add'")


# ------------------------------------------------------------------------------------------ keys
@keys_app.command("create")
def keys_create(keystore: Path = typer.Argument(..., help="new keystore path"),
                preset: str = typer.Option("standard-128", help="CKKS preset"),
                model: str = typer.Option("theophylline", help="model whose programs the keys must serve"),
                passphrase_env: Optional[str] = typer.Option(None, help="read the passphrase from this variable"),
                user: Optional[str] = UserOpt, password_env: Optional[str] = PasswordEnvOpt):
    """Generate a key pair sized for the model's programs and store it encrypted at rest."""
    from medtwin.study import workflow

    try:
        session, log = _session(user, password_env)
        pw = _passphrase(passphrase_env, "new keystore passphrase", confirm=True)
        info = workflow.create_keys(keystore, pw, session=session, log=log, preset=preset, model=model)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"created {keystore}: {info}")


@keys_app.command("unlock")
def keys_unlock(keystore: Path, passphrase_env: Optional[str] = typer.Option(None),
                user: Optional[str] = UserOpt, password_env: Optional[str] = PasswordEnvOpt):
    """Check that the passphrase opens the keystore and the keys belong together."""
    from medtwin.custody.keystore import unlock_keystore
    from medtwin.he.openfhe_backend import HEContext

    try:
        session, log = _session(user, password_env)
        km = unlock_keystore(keystore, _passphrase(passphrase_env, "keystore passphrase"), log=log, actor=session)
        ctx = HEContext.from_keys(km)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"unlocked: preset {km.public.preset}, key tag {km.public.key_tag}, ring {ctx.ring_dim}, "
               f"depth {ctx.depth}")


@keys_app.command("rekey")
def keys_rekey(keystore: Path, passphrase_env: Optional[str] = typer.Option(None),
               new_passphrase_env: Optional[str] = typer.Option(None),
               user: Optional[str] = UserOpt, password_env: Optional[str] = PasswordEnvOpt):
    """Re-encrypt the secret key under a new passphrase (the keys themselves are unchanged)."""
    from medtwin.custody.keystore import change_passphrase

    try:
        session, log = _session(user, password_env)
        old = _passphrase(passphrase_env, "current passphrase")
        new = _passphrase(new_passphrase_env, "new passphrase", confirm=True)
        change_passphrase(keystore, old, new, log=log, actor=session)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo("passphrase changed")


@keys_app.command("export-public")
def keys_export_public(keystore: Path, dest: Path, passphrase_env: Optional[str] = typer.Option(None),
                       user: Optional[str] = UserOpt, password_env: Optional[str] = PasswordEnvOpt):
    """Write the public bundle (context, public and evaluation keys) for a compute node.

    The keystore passphrase authenticates the keystore header before anything is exported."""
    from medtwin.custody.keystore import export_public
    from medtwin.custody.users import require

    try:
        session, log = _session(user, password_env)
        require(session, "export")
        out = export_public(keystore, dest, passphrase=_passphrase(passphrase_env, "keystore passphrase"),
                            log=log, actor=session)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"public bundle written to {out} (no secret key inside)")


# -------------------------------------------------------------------------------------- patients
@app.command("import")
def import_patients(sources: List[Path] = typer.Argument(..., help="FHIR R4 bundles (.json) or CSV files"),
                    user: Optional[str] = UserOpt, password_env: Optional[str] = PasswordEnvOpt):
    """Validate patient files and summarise them (nothing is written; values are not printed)."""
    from medtwin.custody.users import require
    from medtwin.study import workflow

    try:
        session, log = _session(user, password_env)
        require(session, "create_twins")
        records = workflow.load_records(sources)
        workflow._log_import(log, session, sources, len(records))
    except MedTwinError as exc:
        _fail(exc)
    fields = {}
    for r in records:
        for k, v in r.to_dict().items():
            if v is not None and k != "source_id":
                fields[k] = fields.get(k, 0) + 1
    typer.echo(f"{len(records)} patient record(s) valid")
    for k, n in sorted(fields.items()):
        typer.echo(f"  {k:28s} present in {n}")


@app.command("study-template")
def study_template(out: Path, horizon: float = 72.0, step: float = 2.0):
    """Write an editable study definition (model, scenarios, output times) as JSON."""
    from medtwin.study import workflow

    if out.exists():
        _fail(MedTwinError(f"{out} exists already; refusing to overwrite it"))
    spec = workflow.demo_spec(horizon=horizon, step=step)
    out.write_text(json.dumps(spec.to_dict(), indent=1))
    typer.echo(f"wrote {out}")


@app.command("encrypt")
def encrypt(sources: List[Path] = typer.Argument(..., help="FHIR bundles or CSV files"),
            keystore: Path = typer.Option(..., help="keystore (unlocked to derive pseudonyms)"),
            study: Path = typer.Option(..., help="study definition JSON (see study-template)"),
            out: Path = typer.Option(..., help="new encrypted-cohort bundle directory"),
            passphrase_env: Optional[str] = typer.Option(None),
            user: Optional[str] = UserOpt, password_env: Optional[str] = PasswordEnvOpt):
    """Client: import, minimise, validate against the model's ranges, pack and encrypt."""
    from medtwin.study import workflow

    try:
        session, log = _session(user, password_env)
        pw = _passphrase(passphrase_env, "keystore passphrase")
        with _Progress() as prog:
            n = workflow.encrypt_files(sources, keystore, pw, study, out, session=session, log=log, progress=prog)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"encrypted {n} twin(s) into {out}")


@app.command("simulate")
def simulate(cohort: Path = typer.Option(..., help="encrypted-cohort bundle"),
             public: Path = typer.Option(..., help="public bundle or keystore (public part only is read)"),
             out: Path = typer.Option(..., help="new encrypted-outcome bundle directory"),
             backend: str = typer.Option("openfhe", help="openfhe | native"),
             user: Optional[str] = UserOpt, password_env: Optional[str] = PasswordEnvOpt):
    """Compute node: run the study's FHE program on ciphertexts (no secret key is read)."""
    from medtwin.study import workflow

    try:
        session, log = _session(user, password_env)
        with _Progress() as prog:
            info = workflow.simulate_bundle(cohort, public, out, session=session, log=log, backend=backend,
                                            progress=prog)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(info)


@app.command("decrypt")
def decrypt(outcome: Path = typer.Option(..., help="encrypted-outcome bundle"),
            keystore: Path = typer.Option(...),
            report_dir: Path = typer.Option(..., help="new folder for the CSV and PNG"),
            passphrase_env: Optional[str] = typer.Option(None),
            user: Optional[str] = UserOpt, password_env: Optional[str] = PasswordEnvOpt):
    """Client: decrypt an outcome, print the comparison, write CSV and PNG (signed)."""
    from medtwin.study import workflow

    try:
        session, log = _session(user, password_env)
        pw = _passphrase(passphrase_env, "keystore passphrase")
        text = workflow.decrypt_bundle(outcome, keystore, pw, report_dir, session=session, log=log)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(text)


@app.command("demo")
def demo(patients: int = typer.Option(1200, help="patients from the bundled synthetic cohort"),
         preset: str = typer.Option("standard-128", help="CKKS preset"),
         out: Path = typer.Option(Path("medtwin-demo-out"), help="folder for CSV, PNG and the audit log"),
         backend: str = typer.Option("native", help="native (the engine, default) | openfhe"),
         horizon: float = typer.Option(72.0, help="hours"), step: float = typer.Option(2.0, help="hours")):
    """The main job: a headless end-to-end encrypted study on the bundled synthetic cohort."""
    from medtwin.study import workflow

    try:
        with _Progress() as prog:
            workflow.demo(patients=patients, preset=preset, out=out, backend=backend, horizon=horizon,
                          step=step, progress=prog, echo=typer.echo)
    except MedTwinError as exc:
        _fail(exc)


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        _fail(MedTwinError(f"{what}: expected comma-separated numbers, e.g. 750,1000,1250"))
    if not vals:
        _fail(MedTwinError(f"{what}: no values"))
    return vals


@app.command("cohort")
def cohort(sources: List[Path] = typer.Argument(..., help="FHIR R4 bundles (.json) or CSV files"),
           doses: str = typer.Option("750,1000,1250,1500", help="doses [mg], comma-separated"),
           intervals: str = typer.Option("8,12,24,48", help="dosing intervals [h], comma-separated"),
           current: str = typer.Option("1000,12", help="current regimen 'dose,interval' for the AUC24 differences"),
           mic: float = typer.Option(1.0, help="MIC [mg/L]"),
           backend: str = typer.Option("openfhe", help="openfhe | native"),
           preset: str = typer.Option("cohort-128", help="CKKS preset of fresh keys (cohort-128: 49-bit scale, "
                                      "~500x less flooding noise on the released aggregates; OpenFHE backend "
                                      "only; standard-128 also runs on native)"),
           keystore: Optional[Path] = typer.Option(None, help="use this keystore's keys (made for cohort studies "
                                                   "with --save-keystore) instead of fresh ones"),
           save_keystore: Optional[Path] = typer.Option(None, help="store the fresh keys in this new keystore"),
           passphrase_env: Optional[str] = typer.Option(None, help="keystore passphrase variable"),
           per_patient: bool = typer.Option(False, "--per-patient", help="also decrypt per-patient values "
                                            "(clinician mode, needs decrypt_patient)"),
           min_cohort: Optional[int] = typer.Option(None, help="minimum cohort size (default the policy's)"),
           flooding_bits: int = typer.Option(30, help="statistical security of the released aggregates' noise "
                                             "flooding (16-64 bits; see docs/studies.md)"),
           user: Optional[str] = UserOpt, password_env: Optional[str] = PasswordEnvOpt):
    """Vancomycin cohort study: every patient x the regimen grid, encrypted; prints the per-regimen
    table (PTA, P(trough > 20 mg/L), mean score, mean and SD of AUC24), released as aggregates."""
    from medtwin.custody.users import require
    from medtwin.errors import RangeError, ValidationError
    from medtwin.he.openfhe_backend import HEContext
    from medtwin.study import cohort as C
    from medtwin.study import workflow
    from medtwin.twin.pseudonym import pseudonym
    from medtwin import api

    d, t, cur = _floats(doses, "--doses"), _floats(intervals, "--intervals"), _floats(current, "--current")
    if len(cur) != 2:
        _fail(MedTwinError("--current: expected 'dose,interval', e.g. 1000,12"))
    try:
        session, log = _session(user, password_env)
        for perm in ("create_twins", "run_simulation", "decrypt_aggregate") + (("decrypt_patient",) if per_patient else ()):
            require(session, perm)
        from medtwin.custody.policy import FloodingPolicy

        fpol = FloodingPolicy(stat_bits=flooding_bits)
        spec = C.CohortSpec(doses_mg=tuple(d), intervals_h=tuple(t), current=(cur[0], cur[1]), mic=mic, preset=preset)
        records = workflow.load_records(sources)
        workflow._log_import(log, session, sources, len(records))
        keep, excluded = [], 0
        for r in records:
            try:
                spec.pk.validate_covariates(C.covariates_of_records([r]))
            except (RangeError, ValidationError):
                excluded += 1
                continue
            keep.append(r)
        typer.echo(f"{len(keep)} patient(s) eligible for {spec.pk.name}; {excluded} excluded (missing weight or "
                   "creatinine clearance inputs, or outside the declared ranges), nothing about them encrypted")
        if keystore is not None:
            from medtwin.custody.keystore import unlock_keystore

            km = unlock_keystore(keystore, _passphrase(passphrase_env, "keystore passphrase"), log=log, actor=session)
        else:
            _, km = C.cohort_keys(spec)
            if save_keystore is not None:
                from medtwin.custody.keystore import create_keystore

                if save_keystore.exists():
                    raise MedTwinError(f"{save_keystore} exists already; refusing to overwrite it")
                create_keystore(save_keystore, _passphrase(passphrase_env, "new keystore passphrase", confirm=True),
                                km, log=log, actor=session)
        ctx = HEContext.from_keys(km)
        key = workflow.pseudonym_key(km)
        ids = [pseudonym(r.source_id, key) for r in keep]
        with _Progress() as prog:
            res = api.cohort_study(keep, doses_mg=d, intervals_h=t, current=(cur[0], cur[1]), mic=mic,
                                   backend=backend, preset=km.public.preset, keys=ctx, per_patient=per_patient,
                                   min_cohort=min_cohort, policy=fpol, twin_ids=ids, log=log, session=session,
                                   progress=prog)
    except MedTwinError as exc:
        _fail(exc)
    r = res.result
    label = " [INSECURE test ring]" if ctx.insecure else ""
    typer.echo(f"{len(ids)} twins x {spec.n_regimens} regimens on {backend}, ring {r.ring_dim}{label}, depth {r.depth}: "
               f"{r.seconds_simulate:.1f} s encrypted ({r.n_results / max(r.seconds_simulate, 1e-9):,.0f} results/s)")
    typer.echo(res.table())
    typer.echo(f"per-pair bounds: trough {r.bounds['trough']:.2g} mg/L, AUC24 {r.bounds['auc24']:.2g} mg*h/L, "
               f"attainment {r.bounds['attain']:.2g}; status: {res.status.value} ({res.message})")
    if per_patient:
        typer.echo("")
        typer.echo(api.CohortStudy(res.status, _without_aggregates(r)).table())


def _without_aggregates(r):
    from dataclasses import replace

    return replace(r, aggregates=None)


@app.command("gui")
def gui(keystore: Optional[Path] = typer.Option(None, help="keystore folder to open"),
        idle_minutes: int = typer.Option(10, help="lock after this many idle minutes")):
    """Start the desktop app (needs the 'gui' extra: PySide6, pyqtgraph)."""
    try:
        from medtwin.gui.app import main as gui_main
    except ImportError as exc:
        _fail(MedTwinError(f"the desktop app needs the gui extra (pip install 'medtwin[gui]'): {exc}"))
    raise typer.Exit(gui_main((["--keystore", str(keystore)] if keystore else []) + ["--idle-minutes", str(idle_minutes)]))


from medtwin.cli_security import mount as _mount_security  # noqa: E402  (audit, users, verify-export)

_mount_security(app)


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
