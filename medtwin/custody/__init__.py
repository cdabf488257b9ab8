"""Key custody, users and roles, the audit log and signed exports.

* :mod:`medtwin.custody.keystore`: passphrase-encrypted keystore, public bundle for compute nodes.
* :mod:`medtwin.custody.users`: accounts, roles, :func:`require`, break-glass.
* :mod:`medtwin.custody.audit`: signed, hash-chained, append-only audit log.
* :mod:`medtwin.custody.signing`: detached signatures for exported files.
"""
from __future__ import annotations

from medtwin.custody.audit import AuditEntry, AuditLog, Checkpoint, VerifyReport
from medtwin.custody.identity import Identity
from medtwin.custody.kdf import KdfParams
from medtwin.custody.keystore import (change_passphrase, create_keystore, export_public,
                                      load_public_bundle, passphrase_strength, read_public,
                                      unlock_keystore)
from medtwin.custody.signing import SignerInfo, sign_file, verify_file
from medtwin.custody.users import (PERMISSIONS, ROLE_PERMISSIONS, Session, UserStore, authenticate,
                                   end_breakglass, require, start_breakglass)

__all__ = ["AuditEntry", "AuditLog", "Checkpoint", "VerifyReport", "Identity", "KdfParams",
           "change_passphrase", "create_keystore", "export_public", "load_public_bundle",
           "passphrase_strength", "read_public", "unlock_keystore", "SignerInfo", "sign_file",
           "verify_file", "PERMISSIONS", "ROLE_PERMISSIONS", "Session", "UserStore", "authenticate",
           "end_breakglass", "require", "start_breakglass"]
