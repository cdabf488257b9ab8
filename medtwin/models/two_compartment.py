"""Two-compartment IV pharmacokinetics (bolus and zero-order infusion), multiple doses by superposition.

(Model equations follow in the full module; this first version holds the range check shared by the
model modules.)
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from medtwin.errors import RangeError, ValidationError


def check_ranges(model: str, ranges: Mapping[str, tuple[float, float]], cov: Mapping[str, object],
                 names: Sequence[str]) -> dict[str, np.ndarray]:
    """Return the named covariates as float64 arrays after checking each against ``ranges``.

    Raises:
        ValidationError: a covariate is missing, or the arrays have different lengths.
        RangeError: a value is not finite or lies outside its declared range; the message names
            the model, the covariate, how many patients and the first index, never a value.
    """
    out: dict[str, np.ndarray] = {}
    n = None
    for k in names:
        if k not in cov:
            raise ValidationError(f"model {model} needs covariate {k!r}")
        v = np.atleast_1d(np.asarray(cov[k], dtype=np.float64))
        if n is None:
            n = v.shape
        elif v.shape != n:
            raise ValidationError(f"model {model}: covariate {k!r} has {v.size} values, expected {int(np.prod(n))}")
        lo, hi = ranges[k]
        bad = np.flatnonzero(~((v >= lo) & (v <= hi)))
        if bad.size:
            raise RangeError(f"model {model}: {k} of {bad.size} patient(s) (first at index {int(bad[0])}) "
                             f"outside the valid range [{lo:g}, {hi:g}]")
        out[k] = v
    return out
