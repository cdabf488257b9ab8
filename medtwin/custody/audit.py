"""Tamper-evident audit log: a signed SHA-256 hash chain of canonical-JSON entries in sqlite.

Storage: one sqlite file with tables ``entries``, ``checkpoints`` and ``meta``. Triggers refuse
every UPDATE and DELETE on ``entries`` and ``checkpoints`` and any INSERT whose ``seq`` is not the
next one, so the ordinary API can only append. Someone with write access to the file can drop
the triggers; that is what the chain and the signatures are for.

Entry ``seq`` (1, 2, ...) has a *body*, the RFC 8785 canonical JSON of::

    {"v": 1, "seq", "ts" (UTC ISO 8601), "actor", "role", "action", "breakglass" (bool),
     "objects": {whitelisted ids, digests, counts, names}, "details": {...}, "key_fp"}

``entry_hash = SHA-256(bytes(prev_hash) || body)`` with ``prev_hash`` the previous entry's hash
(32 zero bytes for the first entry), and ``signature = Ed25519_actor("medtwin-audit-entry/1\\0" ||
entry_hash)``; ``key_fp`` is the SHA-256 fingerprint of the actor's public key. A *checkpoint*
signs ``{"seq", "head_hash", "ts", "signer", "role", "key_fp"}`` the same way; one is written
automatically every ``checkpoint_every`` entries and on demand (:meth:`AuditLog.checkpoint`).
Keep a copy of a recent checkpoint outside the log (:meth:`Checkpoint.to_json`) and pass it to
:meth:`AuditLog.verify` as ``anchor``: only an external anchor detects a truncation that also
removed every later checkpoint.

:meth:`AuditLog.verify` names what happened: ``edited`` (content no longer matches its hash, or a
re-hashed entry with a forged or unknown signature), ``deleted`` (a sequence number missing
before the last authentic entry), ``reordered`` (authentic entries stored out of order),
``inserted`` (a row that is not an authentic entry, or a replayed copy of one), ``truncated``
(entries missing after the last one but promised by a signed checkpoint or the anchor),
``forked`` (authentic entries that do not chain), ``checkpoint`` (a checkpoint with a bad
signature) and ``schema`` (append-only triggers removed).

**No patient data.** :meth:`AuditLog.append` accepts only whitelisted object fields:

* ids (pseudonymous): ``twin_id(s)``, ``study_id``, ``cohort_id``, ``bundle_id``, ``job_id``,
  ``session_id``, ``scenario_id(s)``, ``key_tag``, ``target_user``: ``[A-Za-z0-9][A-Za-z0-9._:-]*``;
* digests: ``scenario_digest(s)``, ``ciphertext_digest(s)``, ``file_sha256``, ``public_digest``,
  ``result_digest``, ``export_digest``, ``program_digest``, ``bundle_digest``: 64 hex characters;
* counts: ``n_patients``, ``n_twins``, ``n_scenarios``, ``n_ciphertexts``, ``n_time_points``,
  ``n_results``, ``n_values``, ``n_rows``, ``n_failed``: non-negative integers;
* names: ``model``, ``model_version``, ``preset``, ``backend``, ``format``, ``target_role``,
  ``permission``, ``outcome``, ``mode``, and ``reason`` (free text for break-glass, at most 300
  characters).

``details`` is a flat dict whose keys are lower-case identifiers; its values may be booleans,
``None``, short strings, integers only under count/configuration keys (``n_*``, ``*_count``,
``*_bits``, ``depth``, ``ring_dim``, ``level``, ...) and floats only under the non-patient metric
keys in :data:`FLOAT_DETAIL_KEYS` (durations, throughput, error bounds). Every string (objects and
details) is refused when it looks like a measurement or a date (``72.5``, ``1950-03-02``) or an
e-mail address. These rules keep covariates, dates of birth and names out of the log by
construction; they cannot recognise a patient's name typed into ``reason``, so the reason is
length-limited and shown to auditors.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from cryptography.exceptions import InvalidSignature

from medtwin.custody._util import b64d, b64e, canonical, iso, utc_now
from medtwin.custody.identity import Identity, TrustedKeys, key_by_fingerprint
from medtwin.errors import MedTwinError, PermissionDenied, TamperedError, ValidationError

__all__ = ["AuditLog", "AuditEntry", "Checkpoint", "VerifyReport", "AuditProblem", "ACTIONS",
           "FLOAT_DETAIL_KEYS", "GENESIS"]

FORMAT = "medtwin-audit"
VERSION = 1
GENESIS = "0" * 64
_ENTRY_DOMAIN = b"medtwin-audit-entry/1\0"
_CHECKPOINT_DOMAIN = b"medtwin-audit-checkpoint/1\0"

#: Actions that may be logged (``user.*`` and ``breakglass.*`` are open families).
ACTIONS = frozenset({
    "key.create", "key.unlock", "key.rekey", "key.export_public",
    "patient.import", "twin.encrypt", "simulation.run", "result.decrypt", "export.write",
    "audit.read", "audit.verify", "access.denied",
})
_ACTION_FAMILIES = ("user.", "breakglass.")

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_HEX64 = re.compile(r"(sha256:)?[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:+/()=-]{0,127}")
_VERSION = re.compile(r"v?\d+(\.\d+){0,3}([-+][A-Za-z0-9.]{1,32})?")
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
# things that look like patient values: decimal measurements, dates, e-mail addresses
_MEASUREMENT = re.compile(r"(?<![\w.])[+-]?\d+[.,]\d+(?![\w.])")
_DATE = re.compile(r"\b(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})\b")
#: the form of the timestamps ``append`` writes (``iso(utc_now())``)
_TS_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", re.I)

_ID_KEYS = {"twin_id", "study_id", "cohort_id", "bundle_id", "job_id", "session_id", "scenario_id",
            "key_tag", "target_user"}
_ID_LIST_KEYS = {"twin_ids", "scenario_ids"}
_DIGEST_KEYS = {"scenario_digest", "ciphertext_digest", "file_sha256", "public_digest",
                "result_digest", "export_digest", "program_digest", "bundle_digest"}
_DIGEST_LIST_KEYS = {"scenario_digests", "ciphertext_digests"}
_COUNT_KEYS = {"n_patients", "n_twins", "n_scenarios", "n_ciphertexts", "n_time_points",
               "n_results", "n_values", "n_rows", "n_failed"}
_NAME_KEYS = {"model", "preset", "backend", "format", "target_role", "permission", "outcome", "mode"}
OBJECT_KEYS = frozenset(_ID_KEYS | _ID_LIST_KEYS | _DIGEST_KEYS | _DIGEST_LIST_KEYS | _COUNT_KEYS
                        | _NAME_KEYS | {"model_version", "reason"})

#: The only detail keys that may carry floats: non-patient metrics.
FLOAT_DETAIL_KEYS = frozenset({"duration_s", "elapsed_s", "wall_s", "cpu_s", "throughput_per_s",
                               "results_per_s", "error_bound", "max_error_bound", "minutes"})
_INT_DETAIL_KEYS = frozenset({"depth", "ring_dim", "slots", "level", "threads", "batch_size",
                              "degree", "exit_code", "version", "dnum", "min_cohort", "chunk",
                              "attempt", "minutes", "seq"})


def _looks_like_patient_value(s: str) -> str | None:
    if _MEASUREMENT.search(s):
        return "a decimal number (a measurement?)"
    if _DATE.search(s):
        return "a date"
    if _EMAIL.search(s):
        return "an e-mail address"
    return None


def _check_str(key: str, v, pattern: re.Pattern | None, what: str, max_len: int = 128) -> str:
    if not isinstance(v, str):
        raise ValidationError(f"audit field {key!r} must be a string ({what})")
    if len(v) > max_len or (pattern is not None and not pattern.fullmatch(v)):
        raise ValidationError(f"audit field {key!r} is not a valid {what}")
    if pattern is not _HEX64 and pattern is not _VERSION:
        why = _looks_like_patient_value(v)
        if why:
            raise ValidationError(f"audit field {key!r} looks like patient data ({why}); refused")
    return v


def _check_list(key: str, v, check) -> list:
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
        raise ValidationError(f"audit field {key!r} must be a list")
    return [check(x) for x in v]


def _check_int(key: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > 2 ** 53:
        raise ValidationError(f"audit field {key!r} must be a non-negative integer")
    return v


def _check_objects(fields: dict) -> dict:
    out = {}
    for k, v in fields.items():
        if k not in OBJECT_KEYS:
            raise ValidationError(f"audit field {k!r} is not allowed; allowed fields: "
                                  f"{', '.join(sorted(OBJECT_KEYS))} and details")
        if v is None:
            continue
        if k in _ID_KEYS:
            out[k] = _check_str(k, v, _ID, "pseudonymous id")
        elif k in _ID_LIST_KEYS:
            out[k] = _check_list(k, v, lambda x: _check_str(k, x, _ID, "pseudonymous id"))
        elif k in _DIGEST_KEYS:
            out[k] = _check_str(k, v, _HEX64, "SHA-256 hex digest")
        elif k in _DIGEST_LIST_KEYS:
            out[k] = _check_list(k, v, lambda x: _check_str(k, x, _HEX64, "SHA-256 hex digest"))
        elif k in _COUNT_KEYS:
            out[k] = _check_int(k, v)
        elif k == "model_version":
            out[k] = _check_str(k, v, _VERSION, "version (like 1.2.0)")
        elif k == "reason":
            if not isinstance(v, str) or not v.strip():
                raise ValidationError("audit field 'reason' must be a non-empty string")
            out[k] = _check_str(k, v.strip(), None, "reason", max_len=300)
        else:
            out[k] = _check_str(k, v, _NAME, "name")
    return out


def _int_detail_ok(k: str) -> bool:
    return (k in _INT_DETAIL_KEYS or k.startswith("n_") or k.endswith("_count")
            or k.endswith("_bits"))


def _check_detail_value(k: str, v):
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        if not _int_detail_ok(k):
            raise ValidationError(f"audit detail {k!r}: integers are allowed only for counts and "
                                  "configuration keys (n_*, *_count, *_bits, depth, level, ...)")
        return _check_int(k, v)
    if isinstance(v, float):
        if k not in FLOAT_DETAIL_KEYS:
            raise ValidationError(f"audit detail {k!r}: floats are allowed only for non-patient "
                                  f"metrics ({', '.join(sorted(FLOAT_DETAIL_KEYS))})")
        if not math.isfinite(v):
            raise ValidationError(f"audit detail {k!r} is not finite")
        return v
    if isinstance(v, str):
        return _check_str(k, v, _NAME, "short name")
    if isinstance(v, (list, tuple)):
        if any(isinstance(x, (list, tuple, dict)) for x in v):
            raise ValidationError(f"audit detail {k!r}: nested lists or dicts are not allowed")
        return [_check_detail_value(k, x) for x in v]
    raise ValidationError(f"audit detail {k!r} has an unsupported type {type(v).__name__}")


def _check_details(details) -> dict:
    if details is None:
        return {}
    if not isinstance(details, dict):
        raise ValidationError("audit details must be a dict")
    out = {}
    for k, v in details.items():
        if not isinstance(k, str) or not _DETAIL_KEY.fullmatch(k):
            raise ValidationError(f"audit detail key {k!r} must be a lower-case identifier")
        out[k] = _check_detail_value(k, v)
    return out


def _check_action(action: str) -> str:
    if not isinstance(action, str) or not (action in ACTIONS or (
            action.startswith(_ACTION_FAMILIES) and re.fullmatch(r"[a-z]+\.[a-z_]{1,40}", action))):
        raise ValidationError(f"unknown audit action {action!r}; expected one of "
                              f"{', '.join(sorted(ACTIONS))}, user.*, breakglass.*")
    return action


def _identity(actor) -> Identity:
    if getattr(actor, "closed", False):
        raise PermissionDenied("a closed session cannot write audit entries; log in again")
    expires = getattr(actor, "expires", None)
    if expires is not None and utc_now() >= expires:
        raise PermissionDenied("an expired session cannot write audit entries; log in again")
    ident = getattr(actor, "identity", None)
    if not isinstance(ident, Identity):
        raise ValidationError("actor must be an Identity or a Session")
    return ident


# -- records --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: str
    actor: str
    role: str
    action: str
    breakglass: bool
    objects: dict
    details: dict
    key_fp: str
    prev_hash: str
    entry_hash: str
    signature: bytes = field(repr=False)


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement "the log had ``seq`` entries and its head hash was ``head_hash``"."""

    seq: int
    head_hash: str
    ts: str
    signer: str
    role: str
    key_fp: str
    signature: bytes = field(repr=False)

    def body(self) -> bytes:
        return canonical({"v": 1, "kind": "checkpoint", "seq": self.seq, "head_hash": self.head_hash,
                          "ts": self.ts, "signer": self.signer, "role": self.role,
                          "key_fp": self.key_fp})

    def verify(self, trusted: TrustedKeys) -> bool:
        """True when a trusted key of ``signer`` with fingerprint ``key_fp`` signed it."""
        key = key_by_fingerprint(trusted, self.signer, self.key_fp)
        if key is None:
            return False
        try:
            key.verify(self.signature, _CHECKPOINT_DOMAIN + self.body())
            return True
        except InvalidSignature:
            return False

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "head_hash": self.head_hash, "ts": self.ts,
                           "signer": self.signer, "role": self.role, "key_fp": self.key_fp,
                           "signature": b64e(self.signature)}, sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> Checkpoint:
        """Raises TamperedError when ``s`` is not a checkpoint."""
        try:
            d = json.loads(s)
            return cls(seq=int(d["seq"]), head_hash=str(d["head_hash"]), ts=str(d["ts"]),
                       signer=str(d["signer"]), role=str(d["role"]), key_fp=str(d["key_fp"]),
                       signature=b64d(d["signature"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise TamperedError(f"not an audit checkpoint: {exc}") from None


@dataclass(frozen=True)
class AuditProblem:
    kind: str          # edited | deleted | reordered | inserted | truncated | forked | checkpoint | schema
    seq: int | None    # the entry at fault (None when not one entry)
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass
class VerifyReport:
    """Result of :meth:`AuditLog.verify`; ``ok`` only when there is no problem."""

    rows: int = 0
    authentic: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    checkpoints: int = 0
    flagged: list[int] = field(default_factory=list)   # break-glass entries, for review
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def of(self, kind: str) -> list[AuditProblem]:
        return [p for p in self.problems if p.kind == kind]

    def __str__(self) -> str:
        head = (f"{self.rows} entries, {self.authentic} authentic, head {self.head_seq} "
                f"{self.head_hash[:16]}, {self.checkpoints} checkpoints, "
                f"{len(self.flagged)} break-glass entries")
        if self.ok:
            return f"audit log OK: {head}"
        return "audit log FAILED: " + head + "\n" + "\n".join(f"  - {p}" for p in self.problems)


# -- the log --------------------------------------------------------------------------------------

def _require_triggers(con, path) -> None:
    """Refuse to write into a log whose append-only triggers were removed (evidence kept)."""
    have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    missing = _TRIGGERS - have
    if missing:
        raise TamperedError(f"{path}: append-only triggers removed ({', '.join(sorted(missing))}); "
                            "the log is left as found for verification, nothing is appended")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries(
  seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,
  action TEXT NOT NULL, breakglass INTEGER NOT NULL, body BLOB NOT NULL, prev_hash TEXT NOT NULL,
  entry_hash TEXT NOT NULL, key_fp TEXT NOT NULL, signature BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS entries_actor ON entries(actor);
CREATE INDEX IF NOT EXISTS entries_action ON entries(action);
CREATE TABLE IF NOT EXISTS checkpoints(
  id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, head_hash TEXT NOT NULL, ts TEXT NOT NULL,
  signer TEXT NOT NULL, role TEXT NOT NULL, key_fp TEXT NOT NULL, signature BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE refused'); END;
CREATE TRIGGER IF NOT EXISTS entries_in_order BEFORE INSERT ON entries
  WHEN NEW.seq != (SELECT COALESCE(MAX(seq), 0) + 1 FROM entries)
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only: out-of-order INSERT refused'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE refused'); END;
"""
_TRIGGERS = {"entries_no_update", "entries_no_delete", "entries_in_order", "checkpoints_no_update",
             "checkpoints_no_delete"}


def _blob(x) -> bytes:
    """A BLOB column as bytes, whatever sqlite's dynamic typing holds (text, number, NULL)."""
    if isinstance(x, (bytes, memoryview)):
        return bytes(x)
    if isinstance(x, str):
        return x.encode("utf-8", "surrogateescape")
    return b""


def _checkpoint_row(r) -> Checkpoint:
    seq, head, ts, signer, role, fp, sig = r
    if not isinstance(seq, int) or not all(isinstance(x, str) for x in (head, ts, signer, role, fp)):
        raise TamperedError(f"checkpoint row at entry {seq!r} has fields of the wrong type")
    return Checkpoint(seq, head, ts, signer, role, fp, _blob(sig))


_ENTRY_TYPES = {"v": int, "seq": int, "ts": str, "actor": str, "role": str, "action": str,
                "breakglass": bool, "objects": dict, "details": dict, "key_fp": str}


def _well_formed(b) -> bool:
    """An entry body has exactly the expected fields with the expected types."""
    return (isinstance(b, dict) and set(b) == set(_ENTRY_TYPES)
            and all(isinstance(b[k], t) for k, t in _ENTRY_TYPES.items())
            and not isinstance(b["seq"], bool) and b["seq"] >= 1)


def _entry_hash(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


class AuditLog:
    """An append-only, hash-chained, signed audit log in the sqlite file ``path``.

    Args:
        checkpoint_every: write a signed checkpoint after every this many entries (0: never
            automatically).

    Raises:
        TamperedError: ``path`` exists but is not a medtwin audit log (or is corrupt).
    """

    def __init__(self, path: str | os.PathLike, *, checkpoint_every: int = 100):
        self.path = Path(path)
        if not isinstance(checkpoint_every, int) or checkpoint_every < 0:
            raise ValidationError("checkpoint_every must be a non-negative integer")
        self.checkpoint_every = checkpoint_every
        try:
            with self._connect() as con:
                con.execute("BEGIN IMMEDIATE")
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if "meta" not in tables:
                    # A new log: create the schema and its append-only triggers. An existing log is
                    # never "repaired" on open: re-creating dropped triggers would erase the
                    # evidence that verify() reports (kind "schema"); appends are refused instead.
                    for stmt in _split(_SCHEMA):
                        con.execute(stmt)
                row = con.execute("SELECT value FROM meta WHERE key='format'").fetchone()
                if row is None:
                    n = con.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
                    if n:
                        raise TamperedError(f"{self.path}: audit log has entries but no format record")
                    con.execute("INSERT INTO meta VALUES ('format', ?), ('version', ?)",
                                (FORMAT, str(VERSION)))
                elif row[0] != FORMAT:
                    raise TamperedError(f"{self.path} is not a medtwin audit log")
                con.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise TamperedError(f"{self.path} is not a readable audit database: {exc}") from None
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass

    def _connect(self) -> _Closing:
        con = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        con.execute("PRAGMA synchronous=FULL")
        return _Closing(con)

    # -- writing ----------------------------------------------------------------------------
    def append(self, actor, action: str, *, details: dict | None = None, **fields) -> AuditEntry:
        """Append a signed entry; returns it.

        Args:
            actor: the acting :class:`Identity` (or a Session with ``.identity``).
            action: one of :data:`ACTIONS`, ``user.*`` or ``breakglass.*``.
            details: flat dict of non-patient details (see the module docstring).
            **fields: whitelisted object fields (ids, digests, counts, names).

        Raises:
            ValidationError: unknown action or field, or a value that looks like patient data.
            PermissionDenied: the session is closed or expired.
            TamperedError: the log's append-only triggers were removed.
        """
        ident = _identity(actor)
        _check_action(action)
        objects = _check_objects(fields)
        det = _check_details(details)
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            _require_triggers(con, self.path)
            try:
                row = con.execute("SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
                ts = iso(utc_now())
                body = canonical({"v": 1, "seq": seq, "ts": ts, "actor": ident.name, "role": ident.role,
                                  "action": action, "breakglass": bool(ident.breakglass),
                                  "objects": objects, "details": det, "key_fp": ident.fingerprint})
                h = _entry_hash(prev, body)
                sig = ident.sign(_ENTRY_DOMAIN + bytes.fromhex(h))
                con.execute("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            (seq, ts, ident.name, ident.role, action, int(ident.breakglass), body, prev,
                             h, ident.fingerprint, sig))
                if self.checkpoint_every and seq % self.checkpoint_every == 0:
                    self._write_checkpoint(con, ident, seq, h)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return AuditEntry(seq, ts, ident.name, ident.role, action, bool(ident.breakglass), objects, det,
                          ident.fingerprint, prev, h, sig)

    def _write_checkpoint(self, con, ident: Identity, seq: int, head: str) -> Checkpoint:
        cp = Checkpoint(seq, head, iso(utc_now()), ident.name, ident.role, ident.fingerprint, b"")
        cp = Checkpoint(**{**cp.__dict__, "signature": ident.sign(_CHECKPOINT_DOMAIN + cp.body())})
        con.execute("INSERT INTO checkpoints(seq, head_hash, ts, signer, role, key_fp, signature) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (cp.seq, cp.head_hash, cp.ts, cp.signer, cp.role, cp.key_fp, cp.signature))
        return cp

    def checkpoint(self, actor) -> Checkpoint:
        """Sign and store a checkpoint of the current head now; keep ``.to_json()`` elsewhere too."""
        ident = _identity(actor)
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                seq, head = self._head(con)
                cp = self._write_checkpoint(con, ident, seq, head)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return cp

    # -- reading ----------------------------------------------------------------------------
    @staticmethod
    def _head(con) -> tuple[int, str]:
        row = con.execute("SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)

    def head(self) -> tuple[int, str]:
        """(last seq, its entry hash) as stored: keep it outside the log as an anchor."""
        with self._connect() as con:
            return self._head(con)

    def checkpoints(self) -> list[Checkpoint]:
        with self._connect() as con:
            rows = con.execute("SELECT seq, head_hash, ts, signer, role, key_fp, signature "
                               "FROM checkpoints ORDER BY id").fetchall()
        return [_checkpoint_row(r) for r in rows]

    def entries(self, *, actor: str | None = None, action: str | None = None,
                since_seq: int | None = None, flagged: bool | None = None,
                limit: int | None = None) -> list[AuditEntry]:
        """Stored entries in order, optionally filtered (``action`` ending in ``.*`` is a prefix).

        Reading does not verify; use :meth:`verify`. Raises TamperedError when a body is unreadable.
        """
        q, args = "SELECT body, prev_hash, entry_hash, signature FROM entries WHERE 1=1", []
        if actor is not None:
            q += " AND actor = ?"
            args.append(actor)
        if action is not None:
            if action.endswith(".*"):
                q += " AND substr(action, 1, ?) = ?"
                args += [len(action) - 1, action[:-1]]
            else:
                q += " AND action = ?"
                args.append(action)
        if since_seq is not None:
            q += " AND seq >= ?"
            args.append(int(since_seq))
        if flagged is not None:
            q += " AND breakglass = ?"
            args.append(int(bool(flagged)))
        q += " ORDER BY seq"
        if limit is not None:
            q += " LIMIT ?"
            args.append(int(limit))
        with self._connect() as con:
            rows = con.execute(q, args).fetchall()
        out = []
        for body, prev, h, sig in rows:
            try:
                b = json.loads(body)
                out.append(AuditEntry(b["seq"], b["ts"], b["actor"], b["role"], b["action"],
                                      b["breakglass"], b["objects"], b["details"], b["key_fp"], prev, h,
                                      _blob(sig)))
            except (ValueError, KeyError, TypeError):
                raise TamperedError(f"{self.path}: an entry body is unreadable; run verify") from None
        return out

    def scan_for_values(self, values: Iterable, *, rel_tol: float = 1e-9) -> list[tuple[int, str]]:
        """Find patient values in the log: ``[(seq, what), ...]``, empty when none occurs.

        For proving (in tests and audits) that no covariate reached the log. Numbers match any
        numeric field within ``rel_tol`` and any string containing their decimal text (``72.5``,
        ``72,5``); strings match case-insensitively as substrings of any string field (the actor
        and action included). Booleans and ``None`` are ignored.
        """
        nums, strs = [], []
        for v in values:
            if isinstance(v, bool) or v is None:
                continue
            if isinstance(v, (int, float)):
                nums.append(float(v))
            else:
                strs.append(str(v).lower())
        texts = {n: {repr(n), f"{n:g}", f"{n:g}".replace(".", ",")} for n in nums}
        hits: list[tuple[int, str]] = []
        for e in self.entries():
            leaves: list = [e.actor, e.role, e.action]
            # the log writes its own timestamps in one fixed ISO format; their digits are the
            # clock's, so a value such as 0.9 "found" in ``...T10:01:10.912345Z`` is no leak
            if not _TS_FORMAT.fullmatch(str(e.ts)):
                leaves.append(e.ts)

            def walk(x):
                if isinstance(x, dict):
                    for k, y in x.items():
                        leaves.append(k)
                        walk(y)
                elif isinstance(x, list):
                    for y in x:
                        walk(y)
                else:
                    leaves.append(x)
            walk(e.objects)
            walk(e.details)
            for leaf in leaves:
                if isinstance(leaf, (int, float)) and not isinstance(leaf, bool):
                    for n in nums:
                        if math.isclose(float(leaf), n, rel_tol=rel_tol, abs_tol=0.0):
                            hits.append((e.seq, f"number {n:g}"))
                elif isinstance(leaf, str):
                    low = leaf.lower()
                    hits += [(e.seq, f"text {t!r}") for t in strs if t and t in low]
                    for n in nums:
                        if n != int(n) and any(t in low for t in texts[n]):
                            hits.append((e.seq, f"number {n:g} as text"))
        return hits

    # -- verification -----------------------------------------------------------------------
    def verify(self, public_keys: TrustedKeys, *,
               anchor: Checkpoint | tuple[int, str] | None = None) -> VerifyReport:
        """Check the whole log: hashes, signatures, chain, order, checkpoints, triggers.

        Args:
            public_keys: user name -> Ed25519 public key(s) (e.g. ``UserStore.public_keys()``).
            anchor: a checkpoint or a ``(seq, head_hash)`` kept outside the log (detects
                truncation that removed the later checkpoints too).

        Returns a :class:`VerifyReport`; problems are reported, not raised.

        Raises:
            TamperedError: the file is not a readable sqlite database.
        """
        rep = VerifyReport()
        try:
            with self._connect() as con:
                rows = con.execute("SELECT seq, ts, actor, role, action, breakglass, body, prev_hash, "
                                   "entry_hash, key_fp, signature FROM entries ORDER BY seq").fetchall()
                cps = con.execute("SELECT seq, head_hash, ts, signer, role, key_fp, signature "
                                  "FROM checkpoints ORDER BY id").fetchall()
                triggers = {r[0] for r in con.execute(
                    "SELECT name FROM sqlite_master WHERE type='trigger'").fetchall()}
        except sqlite3.DatabaseError as exc:
            raise TamperedError(f"{self.path} is not a readable audit database: {exc}") from None
        missing_triggers = _TRIGGERS - triggers
        if missing_triggers:
            rep.problems.append(AuditProblem("schema", None, "append-only triggers removed: "
                                             + ", ".join(sorted(missing_triggers))))
        rep.rows = len(rows)

        auth: dict[int, tuple] = {}      # body seq -> (position, prev_hash, entry_hash)
        order: list[int] = []            # body seqs of authentic rows in storage order
        bad: list[tuple[int, int | None, int, str, bool]] = []  # (pos, body seq, col seq, why, hash_ok)
        for pos, (cseq, ts, actor, role, action, bg, body, prev, h, fp, sig) in enumerate(rows):
            body = (body.encode("utf-8", "surrogateescape") if isinstance(body, str)
                    else bytes(body) if isinstance(body, (bytes, memoryview)) else b"")
            try:
                b = json.loads(body)
                bseq = b["seq"]
                if not _well_formed(b) or canonical(b) != body:
                    raise ValueError
            except (ValueError, KeyError, TypeError, ValidationError):
                bad.append((pos, None, cseq, "its body is not a canonical entry", False))
                continue
            try:
                hash_ok = _entry_hash(str(prev), body) == h
            except (ValueError, TypeError):
                hash_ok = False
            if not hash_ok:
                bad.append((pos, bseq, cseq, "its content no longer matches its hash", False))
                continue
            key = key_by_fingerprint(public_keys, b.get("actor", ""), b.get("key_fp", ""))
            if key is None:
                bad.append((pos, bseq, cseq, f"it is signed by a key not trusted for "
                            f"{b.get('actor')!r}", True))
                continue
            try:
                key.verify(_blob(sig), _ENTRY_DOMAIN + bytes.fromhex(h))
            except (InvalidSignature, ValueError, TypeError):
                bad.append((pos, bseq, cseq, "its signature is invalid", True))
                continue
            if bseq in auth:
                rep.problems.append(AuditProblem("inserted", bseq, f"entry {bseq} appears again at "
                                                 f"position {pos + 1} (a replayed copy)"))
                continue
            cols = (ts, actor, role, action, bool(bg), fp)
            if cols != (b["ts"], b["actor"], b["role"], b["action"], b["breakglass"], b["key_fp"]):
                rep.problems.append(AuditProblem("edited", bseq, f"entry {bseq}: the indexed columns "
                                                 "(time, actor, role, action or flag) were edited"))
            auth[bseq] = (pos, prev, h)
            order.append(bseq)
            if b["breakglass"]:
                rep.flagged.append(bseq)
        rep.authentic = len(auth)
        max_auth = max(auth, default=0)

        # checkpoints and the anchor tell how far the log reached
        known_head = max_auth
        promises: list[tuple[int, str, str]] = []
        for r in cps:
            try:
                cp = _checkpoint_row(r)
                valid = cp.verify(public_keys)
            except (TamperedError, ValidationError):
                valid, cp = False, None
            if not valid:
                seq = cp.seq if cp is not None else None
                rep.problems.append(AuditProblem("checkpoint", seq, f"checkpoint at entry {seq} "
                                                 "has an invalid or untrusted signature"))
                continue
            rep.checkpoints += 1
            promises.append((cp.seq, cp.head_hash, "a signed checkpoint"))
        if anchor is not None:
            if isinstance(anchor, Checkpoint):
                if not anchor.verify(public_keys):
                    rep.problems.append(AuditProblem("checkpoint", anchor.seq,
                                                     "the external anchor's signature is invalid"))
                else:
                    promises.append((anchor.seq, anchor.head_hash, "the external anchor"))
            else:
                promises.append((int(anchor[0]), str(anchor[1]), "the external anchor"))
        for seq, head, src in promises:
            known_head = max(known_head, seq)
            if seq == 0:
                ok = head == GENESIS
            elif seq in auth:
                ok = auth[seq][2] == head
            else:
                continue   # missing entries are reported below
            if not ok:
                rep.problems.append(AuditProblem("forked", seq, f"entry {seq} differs from the head "
                                                 f"hash recorded by {src}"))

        # missing seqs: a set below the last authentic entry, an interval (truncation) above it
        missing = set(range(1, max_auth + 1)) - set(auth)
        beyond: set[int] = set()          # seqs in (max_auth, known_head] explained by a bad row

        def is_missing(x) -> bool:
            return isinstance(x, int) and (x in missing or (max_auth < x <= known_head and x not in beyond))

        for pos, bseq, cseq, why, hash_ok in bad:
            cands = [x for x in (bseq, cseq) if is_missing(x)]
            if cands:
                x = cands[0]
                (missing.discard(x) if x <= max_auth else beyond.add(x))
                rep.problems.append(AuditProblem("edited", x, f"entry {x} was edited: {why}"))
            elif not hash_ok and bseq is None:
                rep.problems.append(AuditProblem("edited", cseq, f"row {cseq} was edited: {why}"))
            else:
                claim = bseq if bseq is not None else cseq
                rep.problems.append(AuditProblem("inserted", claim, f"row at position {pos + 1} "
                                                 f"(claiming entry {claim}) is not authentic: {why}"))
        for x in sorted(missing):
            rep.problems.append(AuditProblem("deleted", x, f"entry {x} was deleted"))
        n_trunc = known_head - max_auth - len(beyond)
        if n_trunc > 0:
            first = next(x for x in range(max_auth + 1, known_head + 1) if x not in beyond)
            rep.problems.append(AuditProblem(
                "truncated", first, f"entries {first}..{known_head} are missing after the last "
                f"entry {max_auth} ({n_trunc} entries; the log was truncated: a checkpoint or the "
                f"anchor reached {known_head})"))

        # storage order of authentic entries
        ranked = sorted(order)
        moved = [s for s, r in zip(order, ranked) if s != r]
        if moved:
            rep.problems.append(AuditProblem("reordered", min(moved), "entries stored out of order: "
                                             + ", ".join(map(str, sorted(moved)))))

        # chain links between consecutive authentic entries
        for s in sorted(auth):
            prev = auth[s][1]
            if s == 1 and prev != GENESIS:
                rep.problems.append(AuditProblem("forked", 1, "entry 1 does not start the chain"))
            elif s > 1 and s - 1 in auth and auth[s - 1][2] != prev:
                rep.problems.append(AuditProblem("forked", s, f"entry {s} does not chain to entry {s - 1}"))

        # head: the end of the unbroken authentic run from entry 1
        s = 0
        while s + 1 in auth and (s == 0 and auth[1][1] == GENESIS or s > 0 and auth[s + 1][1] == auth[s][2]):
            s += 1
        rep.head_seq, rep.head_hash = s, auth[s][2] if s else GENESIS
        rep.problems.sort(key=lambda p: (p.seq if p.seq is not None else -1, p.kind))
        return rep

    def verify_or_raise(self, public_keys: TrustedKeys, **kw) -> VerifyReport:
        """:meth:`verify`, raising TamperedError (listing the problems) when it fails."""
        rep = self.verify(public_keys, **kw)
        if not rep.ok:
            raise TamperedError(f"{self.path}: " + "; ".join(map(str, rep.problems)))
        return rep


class _Closing:
    """Context manager closing (not just committing) a sqlite connection."""

    def __init__(self, con: sqlite3.Connection):
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        return self.con

    def __exit__(self, *exc) -> None:
        self.con.close()


def _split(script: str) -> Iterable[str]:
    """Split the schema into statements (triggers contain ';' inside BEGIN ... END)."""
    buf = ""
    for line in script.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip():
        raise MedTwinError("incomplete schema statement")
