"""medtwin.program."""
from __future__ import annotations
