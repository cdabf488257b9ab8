"""medtwin.he."""
from __future__ import annotations
