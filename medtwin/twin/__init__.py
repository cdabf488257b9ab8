"""medtwin.twin."""
from __future__ import annotations
