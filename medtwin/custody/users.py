"""Local user accounts, roles, permissions, sessions and break-glass access.

Accounts live in one sqlite file. Passwords are hashed with Argon2id from ``cryptography``
(random 16-byte salt per password, the keystore's :class:`KdfParams`): the 32-byte Argon2id output
is a master key from which HKDF-Expand (SHA-256) derives a stored *verifier* and a *wrap key*; the
wrap key encrypts the user's Ed25519 signing key with AES-256-GCM (associated data: user name and
key fingerprint). So one Argon2id run per login both checks the password and unlocks the key that
signs the user's audit entries and exports; neither the password nor the wrap key is stored.

Roles and permissions (:data:`ROLE_PERMISSIONS`):

==============  ============  ===============  ==============  =================  ==========  ============  ======
role            create_twins  run_simulation   decrypt_patient decrypt_aggregate  read_audit  manage_users  export
==============  ============  ===============  ==============  =================  ==========  ============  ======
clinician       yes           yes              yes             yes                no          no            yes
researcher      no            yes              no              yes                no          no            yes
auditor         no            no               no              no                 yes         no            no
admin           no            no               no              no                 yes         yes           no
==============  ============  ===============  ==============  =================  ==========  ============  ======

:func:`require` is the one gate the Python API and the CLI call. It re-reads the account, so a
disabled account or a changed role takes effect at once; refusals are logged (``access.denied``)
when the session has an audit log.

Break-glass (:func:`start_breakglass`): a researcher or admin may, in an emergency, take the
clinician's permissions for a limited time (default 60, at most 240 minutes) by stating a reason.
It needs an audit log: the start, every use of a permission the role lacks, the end and the expiry
are logged, and every entry made meanwhile carries ``breakglass: true`` (flagged for review;
:attr:`VerifyReport.flagged`). Auditors cannot break glass (separation of duties).

Failed logins are counted per account; after ``max_failures`` in a row the account is locked for
``lockout_minutes`` (a correct password is refused meanwhile). They cannot be signed by the user
(no key without the password), so they are kept in the user file and reported in the next
successful ``user.login`` entry (``n_failed``).

Someone who can write the user file can change roles in it; protect it with file permissions,
and compare it with the signed ``user.*`` entries of the audit log.
"""
from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from medtwin.custody._util import b64d, b64e, iso, parse_iso, utc_now
from medtwin.custody.identity import ROLES, Identity, fingerprint, public_bytes
from medtwin.custody.kdf import KdfParams
from medtwin.custody.strength import passphrase_strength
from medtwin.errors import (PermissionDenied, SecurityPolicyError, TamperedError, ValidationError)

__all__ = ["ROLES", "PERMISSIONS", "ROLE_PERMISSIONS", "BREAKGLASS_ROLES", "UserStore", "UserInfo",
           "Session", "BreakGlass", "AuthenticationError", "AccountLockedError", "authenticate",
           "require", "start_breakglass", "end_breakglass"]

PERMISSIONS = ("create_twins", "run_simulation", "decrypt_patient", "decrypt_aggregate",
               "read_audit", "manage_users", "export")
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "clinician": frozenset({"create_twins", "run_simulation", "decrypt_patient", "decrypt_aggregate",
                            "export"}),
    "researcher": frozenset({"run_simulation", "decrypt_aggregate", "export"}),
    "auditor": frozenset({"read_audit"}),
    "admin": frozenset({"manage_users", "read_audit"}),
}
#: Roles that may start break-glass, and what it grants (the clinician's permissions).
BREAKGLASS_ROLES = ("researcher", "admin")
BREAKGLASS_PERMISSIONS = ROLE_PERMISSIONS["clinician"]
MAX_BREAKGLASS_MINUTES = 240
_NAME = re.compile(r"[a-z][a-z0-9._-]{1,63}")
_KEY_AAD = b"medtwin-user-signing-key/1\0"


class AuthenticationError(PermissionDenied):
    """Wrong password, unknown or disabled account."""


class AccountLockedError(AuthenticationError):
    """Too many failed logins; the account is locked for a while."""


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: str
    key_fp: str
    disabled: bool
    failed: int
    locked_until: str | None
    created: str
    last_login: str | None


@dataclass
class BreakGlass:
    id: int
    reason: str
    started: datetime
    expires: datetime
    ended: datetime | None = None

    def active(self, now: datetime | None = None) -> bool:
        return self.ended is None and (now or utc_now()) < self.expires


@dataclass(repr=False)
class Session:
    """An authenticated user. Pass it to :func:`require` and as the actor of audit entries."""

    user: str
    role: str
    store: UserStore
    _key: Ed25519PrivateKey
    audit: object | None = None          # an AuditLog
    started: datetime = field(default_factory=utc_now)
    expires: datetime = field(default_factory=utc_now)
    breakglass: BreakGlass | None = None
    closed: bool = False

    @property
    def breakglass_active(self) -> bool:
        return self.breakglass is not None and self.breakglass.active()

    @property
    def identity(self) -> Identity:
        """The signing identity; flagged while break-glass is active."""
        return Identity(self.user, self.role, self._key, breakglass=self.breakglass_active)

    def permissions(self) -> frozenset[str]:
        p = ROLE_PERMISSIONS[self.role]
        return p | BREAKGLASS_PERMISSIONS if self.breakglass_active else p

    def can(self, permission: str) -> bool:
        return permission in self.permissions()

    def close(self) -> None:
        """Log out: the session can no longer pass :func:`require`."""
        if self.closed:
            return
        if self.breakglass_active:
            end_breakglass(self)
        self.closed = True

    def __repr__(self) -> str:
        bg = ", BREAK-GLASS" if self.breakglass_active else ""
        return f"Session({self.user!r}, {self.role!r}{bg})"


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS users(
        name TEXT PRIMARY KEY, role TEXT NOT NULL, pw TEXT NOT NULL, sk_nonce BLOB NOT NULL,
        sk_ct BLOB NOT NULL, key_fp TEXT NOT NULL, failed INTEGER NOT NULL DEFAULT 0,
        locked_until TEXT, disabled INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL,
        last_login TEXT)""",
    """CREATE TABLE IF NOT EXISTS user_keys(
        key_fp TEXT PRIMARY KEY, name TEXT NOT NULL, public_key BLOB NOT NULL, created TEXT NOT NULL,
        retired TEXT)""",
    """CREATE TABLE IF NOT EXISTS breakglass(
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, reason TEXT NOT NULL, started TEXT NOT NULL,
        expires TEXT NOT NULL, ended TEXT)""",
)


def _hkdf(master: bytes, label: bytes) -> bytes:
    return HKDFExpand(algorithm=hashes.SHA256(), length=32, info=label).derive(master)


class UserStore:
    """The local account database at ``path`` (created when missing).

    Args:
        kdf: Argon2id cost for new password hashes (stored per user, so changing it later only
            affects new passwords); below the floor only with ``allow_weak=True``.
        max_failures: failed logins in a row that lock an account.
        lockout_minutes: how long a locked account stays locked.
        min_password_strength: minimum :func:`passphrase_strength` score for new passwords.
        session_hours: how long a session lasts.

    Raises:
        TamperedError: ``path`` is not a medtwin user database.
    """

    def __init__(self, path: str | os.PathLike, *, kdf: KdfParams = KdfParams(), allow_weak: bool = False,
                 max_failures: int = 5, lockout_minutes: int = 15, min_password_strength: int = 3,
                 session_hours: float = 8.0):
        self.path = Path(path)
        self.kdf = kdf.validate(allow_weak=allow_weak)
        if max_failures < 1 or lockout_minutes < 1:
            raise ValidationError("max_failures and lockout_minutes must be at least 1")
        self.max_failures, self.lockout_minutes = int(max_failures), int(lockout_minutes)
        self.min_password_strength = int(min_password_strength)
        self.session_hours = float(session_hours)
        try:
            con = self._con()
            try:
                con.execute("BEGIN IMMEDIATE")
                for s in _SCHEMA:
                    con.execute(s)
                row = con.execute("SELECT value FROM meta WHERE key='format'").fetchone()
                if row is None:
                    con.execute("INSERT INTO meta VALUES ('format', 'medtwin-users'), ('version', '1')")
                elif row[0] != "medtwin-users":
                    raise TamperedError(f"{self.path} is not a medtwin user database")
                con.execute("COMMIT")
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise TamperedError(f"{self.path} is not a readable user database: {exc}") from None
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass

    def _con(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        con.execute("PRAGMA synchronous=FULL")
        return con

    # -- password and key records -----------------------------------------------------------
    def _check_password(self, password: str) -> bytes:
        if not isinstance(password, str) or not password:
            raise ValidationError("password must be a non-empty string")
        if self.min_password_strength > 0:
            score, msg = passphrase_strength(password)
            if score < self.min_password_strength:
                raise ValidationError(f"password too weak (score {score} of 4, need "
                                      f"{self.min_password_strength}): {msg}")
        return password.encode("utf-8")

    def _seal(self, name: str, password: bytes, key: Ed25519PrivateKey) -> tuple[str, bytes, bytes, str]:
        salt = secrets.token_bytes(16)
        master = self.kdf.derive(password, salt)
        fp = fingerprint(key.public_key())
        pw = json.dumps(self.kdf.to_dict() | {"salt": b64e(salt),
                                              "verifier": b64e(_hkdf(master, b"medtwin-user-verifier/1"))},
                        sort_keys=True)
        nonce = secrets.token_bytes(12)
        raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        ct = AESGCM(_hkdf(master, b"medtwin-user-keywrap/1")).encrypt(
            nonce, raw, _KEY_AAD + name.encode() + b"\0" + fp.encode())
        return pw, nonce, ct, fp

    @staticmethod
    def _open(name: str, password: bytes, pw: str, nonce: bytes, ct: bytes, fp: str) -> Ed25519PrivateKey | None:
        """The user's signing key, or None when the password is wrong. TamperedError if altered."""
        try:
            rec = json.loads(pw)
            kdf = KdfParams.from_dict(rec)
            salt, verifier = b64d(rec["salt"]), b64d(rec["verifier"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TamperedError(f"password record of user {name!r} is malformed: {exc}") from None
        master = kdf.derive(password, salt)
        if not hmac.compare_digest(_hkdf(master, b"medtwin-user-verifier/1"), verifier):
            return None
        try:
            raw = AESGCM(_hkdf(master, b"medtwin-user-keywrap/1")).decrypt(
                bytes(nonce), bytes(ct), _KEY_AAD + name.encode() + b"\0" + fp.encode())
        except (InvalidTag, ValueError):
            raise TamperedError(f"signing key record of user {name!r} was altered") from None
        key = Ed25519PrivateKey.from_private_bytes(raw)
        if fingerprint(key.public_key()) != fp:
            raise TamperedError(f"signing key of user {name!r} does not match its fingerprint")
        return key

    # -- accounts ---------------------------------------------------------------------------
    def _insert_user(self, con, name: str, role: str, password: str) -> str:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValidationError("user name must be 2-64 characters: lower-case letters, digits, '.', "
                                  "'_' or '-', starting with a letter")
        if role not in ROLES:
            raise ValidationError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        pw_bytes = self._check_password(password)
        key = Ed25519PrivateKey.generate()
        pw, nonce, ct, fp = self._seal(name, pw_bytes, key)
        now = iso(utc_now())
        try:
            con.execute("INSERT INTO users(name, role, pw, sk_nonce, sk_ct, key_fp, created) "
                        "VALUES (?,?,?,?,?,?,?)", (name, role, pw, nonce, ct, fp, now))
        except sqlite3.IntegrityError:
            raise ValidationError(f"user {name!r} exists already") from None
        con.execute("INSERT INTO user_keys VALUES (?,?,?,?,NULL)",
                    (fp, name, public_bytes(key.public_key()), now))
        return fp

    def bootstrap_admin(self, name: str, password: str) -> None:
        """Create the first account (role admin) in an empty store.

        Raises:
            PermissionDenied: the store has users already (use :meth:`add_user`).
            ValidationError: bad name or weak password.
        """
        con = self._con()
        try:
            con.execute("BEGIN IMMEDIATE")
            if con.execute("SELECT COUNT(*) FROM users").fetchone()[0]:
                con.execute("ROLLBACK")
                raise PermissionDenied("the user store has accounts already; an admin must add users")
            try:
                self._insert_user(con, name, "admin", password)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def _admin_op(self, session: Session, action: str, fn, **log) -> None:
        require(session, "manage_users")
        con = self._con()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                fn(con)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()
        _log(session, action, **log)

    def add_user(self, session: Session, name: str, role: str, password: str) -> None:
        """Create an account (admin only). Raises PermissionDenied, ValidationError."""
        self._admin_op(session, "user.create", lambda con: self._insert_user(con, name, role, password),
                       target_user=name, target_role=role)

    def set_role(self, session: Session, name: str, role: str) -> None:
        """Change a user's role (admin only; effective at once). Raises PermissionDenied, ValidationError."""
        if role not in ROLES:
            raise ValidationError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")

        def fn(con):
            self._must_exist(con, name)
            con.execute("UPDATE users SET role=? WHERE name=?", (role, name))
        self._admin_op(session, "user.role_change", fn, target_user=name, target_role=role)

    def set_disabled(self, session: Session, name: str, disabled: bool = True) -> None:
        """Disable (or re-enable) an account (admin only). Raises PermissionDenied, ValidationError."""
        if name == session.user and disabled:
            raise ValidationError("an admin cannot disable their own account")

        def fn(con):
            self._must_exist(con, name)
            con.execute("UPDATE users SET disabled=? WHERE name=?", (int(bool(disabled)), name))
        self._admin_op(session, "user.disable" if disabled else "user.enable", fn, target_user=name)

    def unlock_account(self, session: Session, name: str) -> None:
        """Clear a lockout (admin only)."""
        def fn(con):
            self._must_exist(con, name)
            con.execute("UPDATE users SET failed=0, locked_until=NULL WHERE name=?", (name,))
        self._admin_op(session, "user.unlock", fn, target_user=name)

    def reset_password(self, session: Session, name: str, new_password: str) -> None:
        """Set a new password for another user (admin only).

        The old signing key cannot be unwrapped without the old password, so the user gets a new
        signing key; the old public key is kept (retired) so that old audit entries still verify.
        """
        def fn(con):
            self._must_exist(con, name)
            key = Ed25519PrivateKey.generate()
            pw, nonce, ct, fp = self._seal(name, self._check_password(new_password), key)
            now = iso(utc_now())
            con.execute("UPDATE user_keys SET retired=? WHERE name=? AND retired IS NULL", (now, name))
            con.execute("INSERT INTO user_keys VALUES (?,?,?,?,NULL)",
                        (fp, name, public_bytes(key.public_key()), now))
            con.execute("UPDATE users SET pw=?, sk_nonce=?, sk_ct=?, key_fp=?, failed=0, locked_until=NULL "
                        "WHERE name=?", (pw, nonce, ct, fp, name))
        self._admin_op(session, "user.password_reset", fn, target_user=name)

    def change_password(self, session: Session, old: str, new: str) -> None:
        """Change one's own password, keeping the signing key.

        Raises:
            AuthenticationError: ``old`` is wrong.
            ValidationError: ``new`` is too weak.
        """
        _check_session(session)
        new_b = self._check_password(new)
        con = self._con()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                r = con.execute("SELECT pw, sk_nonce, sk_ct, key_fp FROM users WHERE name=?",
                                (session.user,)).fetchone()
                if r is None:
                    raise AuthenticationError(f"no such user {session.user!r}")
                key = self._open(session.user, old.encode("utf-8"), *r)
                if key is None:
                    raise AuthenticationError(f"wrong password for user {session.user!r}")
                pw, nonce, ct, fp = self._seal(session.user, new_b, key)
                con.execute("UPDATE users SET pw=?, sk_nonce=?, sk_ct=? WHERE name=?",
                            (pw, nonce, ct, session.user))
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()
        _log(session, "user.password_change", target_user=session.user)

    @staticmethod
    def _must_exist(con, name: str) -> None:
        if con.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone() is None:
            raise ValidationError(f"no such user {name!r}")

    # -- queries ----------------------------------------------------------------------------
    def user(self, name: str) -> UserInfo:
        """Raises ValidationError when there is no such user."""
        con = self._con()
        try:
            r = con.execute("SELECT name, role, key_fp, disabled, failed, locked_until, created, "
                            "last_login FROM users WHERE name=?", (name,)).fetchone()
        finally:
            con.close()
        if r is None:
            raise ValidationError(f"no such user {name!r}")
        return UserInfo(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7])

    def users(self) -> list[UserInfo]:
        con = self._con()
        try:
            names = [r[0] for r in con.execute("SELECT name FROM users ORDER BY name").fetchall()]
        finally:
            con.close()
        return [self.user(n) for n in names]

    def public_keys(self) -> dict[str, list[Ed25519PublicKey]]:
        """user name -> public keys (current and retired): the trusted keys for verification."""
        con = self._con()
        try:
            rows = con.execute("SELECT name, public_key FROM user_keys ORDER BY created").fetchall()
        finally:
            con.close()
        out: dict[str, list[Ed25519PublicKey]] = {}
        for name, pk in rows:
            out.setdefault(name, []).append(Ed25519PublicKey.from_public_bytes(bytes(pk)))
        return out


# -- authentication and authorisation ---------------------------------------------------------------

def _log(session: Session, action: str, **fields) -> None:
    if session.audit is not None:
        session.audit.append(session, action, **fields)


def authenticate(db: UserStore | str | os.PathLike, user: str, password: str, *, audit=None) -> Session:
    """Log in: check the password, unlock the user's signing key, return a :class:`Session`.

    Args:
        db: a :class:`UserStore` or the path of its file.
        audit: an :class:`~medtwin.custody.audit.AuditLog`; the session logs to it (``user.login``
            here, and refusals, break-glass and admin actions later).

    Raises:
        AuthenticationError: unknown user, disabled account or wrong password (the message says
            how many attempts are left); the failure is counted.
        AccountLockedError: too many failures; the message says until when.
        TamperedError: the account record is malformed or its signing key record was altered.
    """
    store = db if isinstance(db, UserStore) else UserStore(db)
    if not isinstance(password, str):
        raise ValidationError("password must be a string")
    now = utc_now()
    con = store._con()
    try:
        con.execute("BEGIN IMMEDIATE")
        r = con.execute("SELECT role, pw, sk_nonce, sk_ct, key_fp, failed, locked_until, disabled "
                        "FROM users WHERE name=?", (user,)).fetchone()
        if r is None:
            con.execute("ROLLBACK")
            raise AuthenticationError(f"no such user {user!r}")
        role, pw, nonce, ct, fp, failed, locked_until, disabled = r
        try:
            if (role not in ROLE_PERMISSIONS or not isinstance(pw, str) or not isinstance(nonce, bytes)
                    or not isinstance(ct, bytes) or not isinstance(fp, str) or not isinstance(failed, int)
                    or not isinstance(disabled, int)
                    or not (locked_until is None or isinstance(locked_until, str))):
                raise TypeError
            lock_time = parse_iso(locked_until) if locked_until is not None else None
        except (TypeError, ValueError):
            con.execute("ROLLBACK")
            raise TamperedError(f"the account record of user {user!r} in {store.path} is malformed") from None
        if disabled:
            con.execute("ROLLBACK")
            raise AuthenticationError(f"account {user!r} is disabled")
        if lock_time is not None:
            if now < lock_time:
                con.execute("ROLLBACK")
                raise AccountLockedError(f"account {user!r} is locked until {locked_until} after "
                                         f"{store.max_failures} failed logins")
            failed = 0
        try:
            key = store._open(user, password.encode("utf-8"), pw, nonce, ct, fp)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if key is None:
            failed += 1
            if failed >= store.max_failures:
                until = iso(now + timedelta(minutes=store.lockout_minutes))
                con.execute("UPDATE users SET failed=?, locked_until=? WHERE name=?", (failed, until, user))
                con.execute("COMMIT")
                raise AccountLockedError(f"wrong password for user {user!r}; {failed} failed logins: "
                                         f"account locked until {until}")
            con.execute("UPDATE users SET failed=?, locked_until=NULL WHERE name=?", (failed, user))
            con.execute("COMMIT")
            left = store.max_failures - failed
            raise AuthenticationError(f"wrong password for user {user!r} ({left} attempt"
                                      f"{'s' if left != 1 else ''} left before a "
                                      f"{store.lockout_minutes}-minute lockout)")
        con.execute("UPDATE users SET failed=0, locked_until=NULL, last_login=? WHERE name=?",
                    (iso(now), user))
        con.execute("COMMIT")
    finally:
        con.close()
    s = Session(user=user, role=role, store=store, _key=key, audit=audit, started=now,
                expires=now + timedelta(hours=store.session_hours))
    _log(s, "user.login", details={"n_failed": int(failed)})
    return s


def _check_session(session: Session) -> None:
    if not isinstance(session, Session):
        raise PermissionDenied("no authenticated session")
    if session.closed:
        raise PermissionDenied(f"the session of user {session.user!r} was closed; log in again")
    if utc_now() >= session.expires:
        raise PermissionDenied(f"the session of user {session.user!r} has expired; log in again")


def require(session: Session, permission: str) -> None:
    """Allow the operation or raise; the single authorisation gate for API, CLI and GUI.

    Uses of break-glass are logged (``breakglass.use``, flagged); refusals are logged
    (``access.denied``) when the session has an audit log.

    Raises:
        ValidationError: unknown permission name.
        PermissionDenied: closed or expired session, disabled account, role changed since login,
            or the role lacks ``permission`` (the message names user, role and permission).
    """
    if permission not in PERMISSIONS:
        raise ValidationError(f"unknown permission {permission!r}; expected one of {', '.join(PERMISSIONS)}")
    _check_session(session)
    try:
        info = session.store.user(session.user)
    except ValidationError:
        raise PermissionDenied(f"user {session.user!r} no longer exists") from None
    if info.disabled:
        raise PermissionDenied(f"account {session.user!r} is disabled")
    if info.role != session.role:
        raise PermissionDenied(f"the role of user {session.user!r} changed since login "
                               f"({session.role} -> {info.role}); log in again")
    if permission in ROLE_PERMISSIONS[session.role]:
        return
    bg = session.breakglass
    if bg is not None and bg.ended is None and not bg.active():
        _expire(session)
    if session.breakglass_active and permission in BREAKGLASS_PERMISSIONS:
        _log(session, "breakglass.use", permission=permission)
        return
    _log(session, "access.denied", permission=permission)
    raise PermissionDenied(f"user {session.user!r} (role {session.role}) lacks permission {permission!r}")


def start_breakglass(session: Session, reason: str, *, minutes: int = 60) -> BreakGlass:
    """Emergency override: the clinician's permissions for ``minutes``, with a stated reason.

    Raises:
        PermissionDenied: the role may not break glass (auditor, or already a clinician), or the
            session is invalid.
        SecurityPolicyError: the session has no audit log (break-glass must be logged).
        ValidationError: no reason (at least 10 characters), a reason that looks like patient data,
            or ``minutes`` outside 1..240.
    """
    _check_session(session)
    if session.role not in BREAKGLASS_ROLES:
        raise PermissionDenied(f"user {session.user!r} (role {session.role}) may not break glass; "
                               f"allowed for roles {', '.join(BREAKGLASS_ROLES)}")
    if session.audit is None:
        raise SecurityPolicyError("break-glass access needs an audit log: log in with audit=...")
    if not isinstance(reason, str) or len(reason.strip()) < 10:
        raise ValidationError("break-glass needs a stated reason of at least 10 characters")
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= MAX_BREAKGLASS_MINUTES:
        raise ValidationError(f"break-glass duration must be 1..{MAX_BREAKGLASS_MINUTES} minutes")
    if session.breakglass_active:
        raise ValidationError("break-glass is already active in this session")
    now = utc_now()
    bg = BreakGlass(id=0, reason=reason.strip(), started=now, expires=now + timedelta(minutes=minutes))
    # log first (the guard may refuse the reason), flagged: the identity carries breakglass=True
    session.audit.append(Identity(session.user, session.role, session._key, breakglass=True),
                         "breakglass.start", reason=bg.reason, details={"minutes": minutes})
    con = session.store._con()
    try:
        cur = con.execute("INSERT INTO breakglass(name, reason, started, expires) VALUES (?,?,?,?)",
                          (session.user, bg.reason, iso(now), iso(bg.expires)))
        bg.id = int(cur.lastrowid)
    finally:
        con.close()
    session.breakglass = bg
    return bg


def _finish(session: Session, action: str) -> None:
    bg = session.breakglass
    bg.ended = utc_now()
    session.audit.append(Identity(session.user, session.role, session._key, breakglass=True), action,
                         details={"n_minutes_used": int((bg.ended - bg.started).total_seconds() // 60)})
    con = session.store._con()
    try:
        con.execute("UPDATE breakglass SET ended=? WHERE id=?", (iso(bg.ended), bg.id))
    finally:
        con.close()


def _expire(session: Session) -> None:
    _finish(session, "breakglass.expire")


def end_breakglass(session: Session) -> None:
    """End an active break-glass early (logged). Raises ValidationError when none is active."""
    if not session.breakglass_active:
        raise ValidationError("no break-glass is active in this session")
    _finish(session, "breakglass.end")
