"""The exception hierarchy. Every error a user can cause derives from :class:`MedTwinError`.

Messages name the thing at fault (file, resource, field, parameter) but never a patient value.
"""
from __future__ import annotations


class MedTwinError(Exception):
    """Base class of every error medtwin raises on purpose."""


class ValidationError(MedTwinError, ValueError):
    """Input data (a record, a dose, a scenario, a parameter) is out of range or malformed."""


class ImportFormatError(ValidationError):
    """A FHIR bundle or CSV file is malformed; the message names the resource/row and field."""


class KeystoreError(MedTwinError):
    """A keystore cannot be created, opened or changed."""


class WrongPassphraseError(KeystoreError):
    """The passphrase does not open the keystore."""


class TamperedError(MedTwinError):
    """Stored data (keystore, ciphertext, result, audit log, export) failed an integrity check."""


class KeyMismatchError(MedTwinError):
    """Keys or ciphertexts belong to another crypto context / key pair."""


class CiphertextFormatError(MedTwinError, ValueError):
    """Bytes are not a ciphertext / key of the expected OpenFHE layout (truncated, wrong type, drift)."""


class ProgramError(MedTwinError):
    """An FHE program is ill-formed or cannot be planned (depth, range, level)."""


class RangeError(ValidationError):
    """A value lies outside the declared input range of a model or approximation."""


class PermissionDenied(MedTwinError):
    """The acting user's role does not allow the operation."""


class SecurityPolicyError(MedTwinError):
    """The operation would break a security policy (insecure preset outside tests, small cohort, ...)."""
