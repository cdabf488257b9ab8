"""The ``medtwin`` command line: key custody, import, encryption, simulation, decryption, demo.

Roles stay apart as in the desktop app: ``encrypt`` and ``decrypt`` run on the clinician's
workstation (they unlock the keystore); ``simulate`` needs only the public bundle and runs on the
compute node. Passphrases are asked for on the terminal, or read from the environment variable
named by ``--passphrase-env`` for scripted use; they are never accepted as plain arguments.
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
        if self._bar is None:
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(stage, total=1.0)
        self._bar.update(self._tasks[stage], completed=frac)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)


# ------------------------------------------------------------------------------------------ keys
@keys_app.command("create")
def keys_create(keystore: Path = typer.Argument(..., help="new keystore path"),
                preset: str = typer.Option("standard-128", help="CKKS preset"),
                model: str = typer.Option("theophylline", help="model whose programs the keys must serve"),
                passphrase_env: Optional[str] = typer.Option(None, help="read the passphrase from this variable")):
    """Generate a key pair sized for the model's programs and store it encrypted at rest."""
    from medtwin.custody.keystore import create_keystore
    from medtwin.study import workflow

    try:
        pw = _passphrase(passphrase_env, "new keystore passphrase", confirm=True)
        info = workflow.create_keys(keystore, pw, preset=preset, model=model)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"created {keystore}: {info}")


@keys_app.command("unlock")
def keys_unlock(keystore: Path, passphrase_env: Optional[str] = typer.Option(None)):
    """Check that the passphrase opens the keystore and the keys belong together."""
    from medtwin.custody.keystore import unlock_keystore
    from medtwin.he.openfhe_backend import HEContext

    try:
        km = unlock_keystore(keystore, _passphrase(passphrase_env, "keystore passphrase"))
        ctx = HEContext.from_keys(km)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"unlocked: preset {km.public.preset}, key tag {km.public.key_tag}, ring {ctx.ring_dim}, "
               f"depth {ctx.depth}")


@keys_app.command("rekey")
def keys_rekey(keystore: Path, passphrase_env: Optional[str] = typer.Option(None),
               new_passphrase_env: Optional[str] = typer.Option(None)):
    """Re-encrypt the secret key under a new passphrase (the keys themselves are unchanged)."""
    from medtwin.custody.keystore import change_passphrase

    try:
        old = _passphrase(passphrase_env, "current passphrase")
        new = _passphrase(new_passphrase_env, "new passphrase", confirm=True)
        change_passphrase(keystore, old, new)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo("passphrase changed")


@keys_app.command("export-public")
def keys_export_public(keystore: Path, dest: Path):
    """Write the public bundle (context, public and evaluation keys) for a compute node."""
    from medtwin.custody.keystore import export_public

    try:
        out = export_public(keystore, dest)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"public bundle written to {out} (no secret key inside)")


# -------------------------------------------------------------------------------------- patients
@app.command("import")
def import_patients(sources: List[Path] = typer.Argument(..., help="FHIR R4 bundles (.json) or CSV files")):
    """Validate patient files and summarise them (nothing is written; values are not printed)."""
    from medtwin.study import workflow

    try:
        records = workflow.load_records(sources)
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
            passphrase_env: Optional[str] = typer.Option(None)):
    """Client: import, minimise, validate against the model's ranges, pack and encrypt."""
    from medtwin.study import workflow

    try:
        pw = _passphrase(passphrase_env, "keystore passphrase")
        with _Progress() as prog:
            n = workflow.encrypt_files(sources, keystore, pw, study, out, progress=prog)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"encrypted {n} twin(s) into {out}")


@app.command("simulate")
def simulate(cohort: Path = typer.Option(..., help="encrypted-cohort bundle"),
             public: Path = typer.Option(..., help="public bundle or keystore (public part only is read)"),
             out: Path = typer.Option(..., help="new encrypted-outcome bundle directory"),
             backend: str = typer.Option("openfhe", help="openfhe | native")):
    """Compute node: run the study's FHE program on ciphertexts (no secret key is read)."""
    from medtwin.study import workflow

    try:
        with _Progress() as prog:
            info = workflow.simulate_bundle(cohort, public, out, backend=backend, progress=prog)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(info)


@app.command("decrypt")
def decrypt(outcome: Path = typer.Option(..., help="encrypted-outcome bundle"),
            keystore: Path = typer.Option(...),
            report_dir: Path = typer.Option(..., help="new folder for the CSV and PNG"),
            passphrase_env: Optional[str] = typer.Option(None)):
    """Client: decrypt an outcome, print the comparison, write CSV and PNG."""
    from medtwin.study import workflow

    try:
        pw = _passphrase(passphrase_env, "keystore passphrase")
        text = workflow.decrypt_bundle(outcome, keystore, pw, report_dir)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(text)


@app.command("demo")
def demo(patients: int = typer.Option(1200, help="patients from the bundled synthetic cohort"),
         preset: str = typer.Option("standard-128", help="CKKS preset"),
         out: Path = typer.Option(Path("medtwin-demo-out"), help="folder for CSV, PNG and the audit log"),
         backend: str = typer.Option("openfhe", help="openfhe | native"),
         horizon: float = typer.Option(72.0, help="hours"), step: float = typer.Option(2.0, help="hours")):
    """The main job: a headless end-to-end encrypted study on the bundled synthetic cohort."""
    from medtwin.study import workflow

    try:
        with _Progress() as prog:
            workflow.demo(patients=patients, preset=preset, out=out, backend=backend, horizon=horizon,
                          step=step, progress=prog, echo=typer.echo)
    except MedTwinError as exc:
        _fail(exc)


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
