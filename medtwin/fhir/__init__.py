"""medtwin.fhir."""
from __future__ import annotations
