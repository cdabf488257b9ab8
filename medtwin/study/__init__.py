"""medtwin.study."""
from __future__ import annotations
