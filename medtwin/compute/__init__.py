"""medtwin.compute."""
from __future__ import annotations
