"""Security commands of the ``medtwin`` CLI: audit log, signed exports, user accounts.

Mounted by :mod:`medtwin.cli`::

    medtwin audit verify LOG --users USERS_DB [--anchor FILE]
    medtwin audit show LOG --users USERS_DB --user NAME [--action A] [--actor U] [--flagged] [--limit N]
    medtwin verify-export FILE [--sig SIG] --trusted USERS_DB_or_KEYFILE
    medtwin users bootstrap NAME --users-db DB           (first admin of an empty store)
    medtwin users add NAME --role ROLE --users-db DB --admin ADMIN [--audit LOG]
    medtwin users list --users-db DB --admin ADMIN
    medtwin users export-keys OUT --users-db DB           (trusted-key file for outside verifiers)

``audit verify`` opens the log **read-only** (:class:`ReadOnlyAuditLog`) and needs no login: the
signatures make the log checkable by anyone who holds the trusted public keys, and verifying must
not change the evidence (opening it with :class:`~medtwin.custody.audit.AuditLog` re-creates
dropped append-only triggers). Exit status: 0 intact, 1 tampering found, 2 an error (bad
arguments, unreadable files).

``audit show`` needs an account with the ``read_audit`` permission (auditor, admin) and records
an ``audit.read`` entry; ``users add`` and ``users list`` need ``manage_users`` (admin). Passwords
are asked for on the terminal or read from the environment variable named by ``--password-env``
(``--admin-password-env`` / ``--new-password-env`` for ``users add``), never taken as arguments.

A *trusted-key file* (``users export-keys``) is JSON ``{"format": "medtwin-trusted-keys",
"version": 1, "keys": {user: [base64 raw Ed25519 public key, ...]}}``; it holds public keys only.
"""
from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from medtwin.custody.audit import _TRIGGERS, AuditLog, Checkpoint, _Closing
from medtwin.custody.identity import TrustedKeys, public_bytes
from medtwin.errors import MedTwinError, TamperedError, ValidationError

__all__ = ["mount", "audit_app", "users_app", "verify_export", "ReadOnlyAuditLog", "load_trusted_keys",
           "KEYFILE_FORMAT"]

KEYFILE_FORMAT = "medtwin-trusted-keys"
_SQLITE_MAGIC = b"SQLite format 3\0"

audit_app = typer.Typer(no_args_is_help=True, help="Audit log: verify integrity, show entries.")
users_app = typer.Typer(no_args_is_help=True, help="User accounts and roles (admin).")


# ------------------------------------------------------------------------------------- helpers
class ReadOnlyAuditLog(AuditLog):
    """An :class:`AuditLog` opened read-only: ``verify``, ``entries``, ``checkpoints``, ``head``.

    Nothing is created or repaired (no schema statements, no chmod); sqlite is opened with
    ``mode=ro``, so any attempt to write fails.

    Raises:
        ValidationError: ``path`` does not exist.
        TamperedError: ``path`` is not a readable medtwin audit log.
    """

    def __init__(self, path: str | os.PathLike):  # noqa: D107 - no super().__init__: it writes
        self.path = Path(path)
        self.checkpoint_every = 0
        if not self.path.is_file():
            raise ValidationError(f"no audit log at {self.path}")
        try:
            with self._connect() as con:
                row = con.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise TamperedError(f"{self.path} is not a readable audit database: {exc}") from None
        if row is None or row[0] != "medtwin-audit":
            raise TamperedError(f"{self.path} is not a medtwin audit log")

    def _connect(self) -> _Closing:
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        return _Closing(sqlite3.connect(uri, uri=True, timeout=30))

    def triggers_intact(self) -> bool:
        """True when every append-only trigger is present."""
        try:
            with self._connect() as con:
                names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        except sqlite3.DatabaseError:
            return False
        return _TRIGGERS <= names

    def append(self, *a, **kw):
        raise ValidationError("this audit log was opened read-only")

    def checkpoint(self, *a, **kw):
        raise ValidationError("this audit log was opened read-only")


def load_trusted_keys(path: str | os.PathLike) -> TrustedKeys:
    """Trusted signer keys from a user database or a trusted-key file.

    Raises:
        ValidationError: the path does not exist or is neither a user database nor a key file.
        TamperedError: the user database is corrupt.
    """
    from medtwin.custody.users import UserStore

    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"no user database or trusted-key file at {p}")
    with open(p, "rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if head == _SQLITE_MAGIC:
        return UserStore(p).public_keys()
    try:
        doc = json.loads(p.read_bytes()[: 1 << 20])
        if not isinstance(doc, dict) or doc.get("format") != KEYFILE_FORMAT or doc.get("version") != 1:
            raise ValueError(f"not a {KEYFILE_FORMAT} version 1 file")
        keys = {}
        for name, items in doc["keys"].items():
            if not isinstance(name, str) or not isinstance(items, list):
                raise ValueError("keys must map user names to lists")
            keys[name] = [Ed25519PublicKey.from_public_bytes(base64.b64decode(k, validate=True))
                          for k in items]
        return keys
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, binascii.Error) as exc:
        raise ValidationError(f"{p} is neither a user database nor a trusted-key file: {exc}") from None


def _load_anchor(path: Path):
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValidationError(f"cannot read the anchor {path}: {exc}") from None
    if isinstance(doc, dict) and "signature" in doc:
        return Checkpoint.from_json(json.dumps(doc))
    if isinstance(doc, dict) and isinstance(doc.get("seq"), int) and isinstance(doc.get("head_hash"), str):
        return (doc["seq"], doc["head_hash"])
    if isinstance(doc, list) and len(doc) == 2 and isinstance(doc[0], int) and isinstance(doc[1], str):
        return (doc[0], doc[1])
    raise ValidationError(f"{path} is not an anchor: expected a checkpoint or {{\"seq\", \"head_hash\"}}")


def _fail(exc: Exception, code: int = 2) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _secret(env: Optional[str], prompt: str, confirm: bool = False) -> str:
    if env:
        val = os.environ.get(env)
        if val is None:
            raise ValidationError(f"environment variable {env} is not set")
        return val
    if not sys.stdin.isatty():
        raise ValidationError("no terminal to ask for the password; use --password-env VAR")
    p = getpass.getpass(f"{prompt}: ")
    if confirm and getpass.getpass("repeat: ") != p:
        raise ValidationError("the two passwords differ")
    return p


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ValidationError(f"no {what} at {path}")
    return path


def _login(users_db: Path, user: str, password_env: Optional[str], permission: str, audit=None):
    from medtwin.custody.users import UserStore, authenticate, require

    store = UserStore(_existing(users_db, "user database"))
    session = authenticate(store, user, _secret(password_env, f"password for {user}"), audit=audit)
    require(session, permission)
    return session


# ------------------------------------------------------------------------------------- audit
@audit_app.command("verify")
def audit_verify(log: Path = typer.Argument(..., help="audit log (sqlite)"),
                 users: Path = typer.Option(..., "--users", help="user database or trusted-key file"),
                 anchor: Optional[Path] = typer.Option(None, help="checkpoint or {seq, head_hash} kept "
                                                                  "outside the log")):
    """Check hashes, signatures, order, checkpoints and triggers; name every problem found."""
    try:
        trusted = load_trusted_keys(users)
        a = _load_anchor(anchor) if anchor is not None else None
        rep = ReadOnlyAuditLog(log).verify(trusted, anchor=a)
    except TamperedError as exc:
        _fail(exc, 1)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(str(rep))
    if rep.flagged:
        typer.echo(f"break-glass entries to review: {', '.join(map(str, rep.flagged))}")
    if not rep.ok:
        raise typer.Exit(1)


@audit_app.command("show")
def audit_show(log: Path = typer.Argument(..., help="audit log (sqlite)"),
               users: Path = typer.Option(..., "--users", help="user database"),
               user: str = typer.Option(..., help="your user name (needs read_audit)"),
               password_env: Optional[str] = typer.Option(None, help="read the password from this variable"),
               action: Optional[str] = typer.Option(None, help="only this action (or prefix like user.*)"),
               actor: Optional[str] = typer.Option(None, help="only entries of this user"),
               flagged: bool = typer.Option(False, "--flagged", help="only break-glass entries"),
               limit: Optional[int] = typer.Option(None, min=1, help="at most this many entries"),
               as_json: bool = typer.Option(False, "--json", help="one JSON object per line")):
    """List entries (auditor or admin). The reading is itself logged (``audit.read``)."""
    try:
        ro = ReadOnlyAuditLog(log)
        intact = ro.triggers_intact()
        # log the read only into a log whose append-only triggers are intact: opening a tampered
        # log for writing would repair it and erase the evidence `audit verify` reports
        writer = AuditLog(log) if intact else None
        session = _login(users, user, password_env, "read_audit", audit=writer)
        entries = ro.entries(actor=actor, action=action, flagged=True if flagged else None, limit=limit)
        if writer is not None:
            writer.append(session, "audit.read", n_results=len(entries))
    except MedTwinError as exc:
        _fail(exc)
    if not intact:
        typer.secho("warning: the log's append-only triggers are missing; run `medtwin audit verify` "
                    "(this read was not logged)", fg=typer.colors.YELLOW, err=True)
    for e in entries:
        if as_json:
            typer.echo(json.dumps({"seq": e.seq, "ts": e.ts, "actor": e.actor, "role": e.role,
                                   "action": e.action, "breakglass": e.breakglass, "objects": e.objects,
                                   "details": e.details, "key_fp": e.key_fp}, sort_keys=True))
        else:
            flag = " BREAK-GLASS" if e.breakglass else ""
            objs = " ".join(f"{k}={v}" for k, v in sorted(e.objects.items()))
            typer.echo(f"{e.seq:>6} {e.ts} {e.actor} ({e.role}){flag} {e.action} {objs}".rstrip())
    typer.echo(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} (reading does not verify; "
               "use `medtwin audit verify`)", err=True)


# ------------------------------------------------------------------------------------- exports
def verify_export(file: Path = typer.Argument(..., help="exported file"),
                  sig: Optional[Path] = typer.Option(None, help="signature (default FILE.sig.json)"),
                  trusted: Path = typer.Option(..., help="user database or trusted-key file")):
    """Check an export's detached Ed25519 signature against trusted keys; print who signed it."""
    from medtwin.custody.signing import verify_file

    try:
        keys = load_trusted_keys(trusted)
        info = verify_file(file, sig, keys)
    except TamperedError as exc:
        _fail(exc, 1)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"OK: {file.name} signed by {info.signer} ({info.role}) at {info.signed_at}, key "
               f"{info.key_fp[:16]}, SHA-256 {info.file_sha256}, {info.size} bytes")
    if info.breakglass:
        typer.secho("note: signed during a break-glass session (review it)", fg=typer.colors.YELLOW)


# ------------------------------------------------------------------------------------- users
@users_app.command("bootstrap")
def users_bootstrap(name: str = typer.Argument(..., help="the first admin's user name"),
                    users_db: Path = typer.Option(..., help="user database (created when missing)"),
                    password_env: Optional[str] = typer.Option(None)):
    """Create the first account (role admin) in an empty user database."""
    from medtwin.custody.users import UserStore

    try:
        pw = _secret(password_env, f"new password for {name}", confirm=True)
        UserStore(users_db).bootstrap_admin(name, pw)
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"created admin {name} in {users_db}")


@users_app.command("add")
def users_add(name: str = typer.Argument(..., help="new user name"),
              role: str = typer.Option(..., help="clinician | researcher | auditor | admin"),
              users_db: Path = typer.Option(..., help="user database"),
              admin: str = typer.Option(..., help="your (admin) user name"),
              admin_password_env: Optional[str] = typer.Option(None),
              new_password_env: Optional[str] = typer.Option(None),
              audit: Optional[Path] = typer.Option(None, help="audit log to record user.create in")):
    """Create an account (admin only); the change is logged when --audit is given."""
    try:
        log = AuditLog(audit) if audit is not None else None
        session = _login(users_db, admin, admin_password_env, "manage_users", audit=log)
        pw = _secret(new_password_env, f"new password for {name}", confirm=True)
        session.store.add_user(session, name, role, pw)
        session.close()
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"created user {name} (role {role})")


@users_app.command("list")
def users_list(users_db: Path = typer.Option(..., help="user database"),
               admin: str = typer.Option(..., help="your (admin) user name"),
               password_env: Optional[str] = typer.Option(None)):
    """List accounts: name, role, state, key fingerprint, last login (admin only)."""
    try:
        session = _login(users_db, admin, password_env, "manage_users")
        infos = session.store.users()
        session.close()
    except MedTwinError as exc:
        _fail(exc)
    for u in infos:
        state = "disabled" if u.disabled else ("locked" if u.locked_until else "active")
        typer.echo(f"{u.name:24s} {u.role:10s} {state:8s} key {u.key_fp[:16]} "
                   f"last login {u.last_login or '-'}")


@users_app.command("export-keys")
def users_export_keys(out: Path = typer.Argument(..., help="new trusted-key file (JSON)"),
                      users_db: Path = typer.Option(..., help="user database")):
    """Write every user's public keys (current and retired) for verifiers elsewhere."""
    try:
        if out.exists():
            raise ValidationError(f"{out} exists already; refusing to overwrite it")
        keys = load_trusted_keys(_existing(users_db, "user database"))
        doc = {"format": KEYFILE_FORMAT, "version": 1,
               "keys": {n: [base64.b64encode(public_bytes(k)).decode() for k in ks]
                        for n, ks in sorted(keys.items())}}
        out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    except MedTwinError as exc:
        _fail(exc)
    typer.echo(f"wrote the public keys of {len(keys)} user(s) to {out}")


def mount(app: typer.Typer) -> None:
    """Add ``audit``, ``users`` and ``verify-export`` to the main ``medtwin`` app."""
    app.add_typer(audit_app, name="audit")
    app.add_typer(users_app, name="users")
    app.command("verify-export")(verify_export)
