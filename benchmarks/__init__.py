"""Benchmarks of the native CKKS engine beside OpenFHE (run ``python -m benchmarks``)."""
from __future__ import annotations
