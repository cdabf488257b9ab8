"""medtwin.fhir: FHIR R4 bundle import (Patient + Observation -> PatientRecord) and UCUM units."""
from __future__ import annotations

from medtwin.fhir.importer import load_bundle

__all__ = ["load_bundle"]
