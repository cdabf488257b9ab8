"""medtwin.custody."""
from __future__ import annotations
