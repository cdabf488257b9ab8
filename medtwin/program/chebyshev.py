"""Chebyshev approximation and Paterson-Stockmeyer evaluation, generic over the arithmetic.

The evaluators here use only ``+``, ``-`` and ``*`` between handles and Python floats (and, for
the power basis, coefficient vectors), so the *same code* runs on numpy arrays (the plaintext
reference, :func:`eval_chebyshev_ps` on floats/arrays) and on :class:`medtwin.program.builder.Expr`
handles (emitting program ops). A constant times a handle costs a rescale under FIXEDMANUAL; the
factor 2 of the Chebyshev product rule is therefore applied as an addition (``p + p``).

Algorithm (Paterson and Stockmeyer, SIAM J. Comput. 2(1), 1973, over the Chebyshev basis as in
Chen, Chillotti, Song, "Improved bootstrapping for approximate HE", EUROCRYPT 2019, and OpenFHE's
``EvalChebyshevSeriesPS``): for a series of degree d, pick a power of two k (baby step) and m
with k 2^m > d. Baby steps T_1..T_k by T_2j = 2 T_j^2 - 1 and T_2j+1 = 2 T_j+1 T_j - T_1; giant
steps T_k 2^i = 2 T_k 2^(i-1)^2 - 1. Then recursively divide p = q T_n + r with n = k 2^i
(using T_n T_j = (T_n+j + T_n-j)/2) until the pieces have degree < k, which are evaluated as
linear combinations of the baby steps. Multiplicative depth (without the affine map into
[-1, 1]): log2(k 2^m) + 1 = ceil(log2(d + 1)) + 1; :func:`ps_depth` computes it exactly.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
from numpy.polynomial import chebyshev as C

from medtwin.errors import ProgramError

MAX_DEGREE = 1023

Hint = Callable[[Any, float, float], Any]


def _is_const(v) -> bool:
    return isinstance(v, (float, int, np.floating, np.integer))


def _is_zero(c) -> bool:
    if _is_const(c):
        return float(c) == 0.0
    a = np.asarray(c)
    return a.dtype != object and not np.any(a)


def interpolate(fn: Callable[[np.ndarray], np.ndarray], domain: tuple[float, float], degree: int) -> np.ndarray:
    """Chebyshev coefficients (on [-1, 1] after the affine map of ``domain``) of the degree-``degree``
    interpolant of ``fn`` at the Chebyshev points of the first kind.

    Raises:
        ProgramError: an empty domain, a degree outside 0..MAX_DEGREE, or ``fn`` not finite there.
    """
    lo, hi = float(domain[0]), float(domain[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ProgramError(f"Chebyshev domain [{lo}, {hi}] is empty or not finite")
    if not 0 <= int(degree) <= MAX_DEGREE:
        raise ProgramError(f"Chebyshev degree {degree} outside 0..{MAX_DEGREE}")

    def g(y):
        v = np.asarray(call_vectorised(fn, 0.5 * (hi - lo) * y + 0.5 * (hi + lo)), dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise ProgramError("the approximated function is not finite on its domain")
        return v

    return C.chebinterpolate(g, int(degree))


def call_vectorised(fn, x: np.ndarray) -> np.ndarray:
    """fn(x) for an array; falls back to element-wise calls when fn is scalar-only."""
    try:
        v = np.asarray(fn(x), dtype=np.float64)
        if v.shape == x.shape:
            return v
    except (TypeError, ValueError):
        pass
    return np.asarray([float(fn(float(t))) for t in np.ravel(x)], dtype=np.float64).reshape(x.shape)


def ps_params(degree: int) -> tuple[int, int]:
    """(k, m) for Paterson-Stockmeyer: k a power of two, k 2^m the smallest power of two > degree,
    chosen to minimise ciphertext products (k - 1 baby + m giant + 2^m - 1 combining)."""
    if degree < 1:
        return 1, 0
    a = max(1, math.ceil(math.log2(degree + 1)))
    best = None
    for b in range(1, a + 1):
        k, m = 1 << b, a - b
        cost = (k - 1) + m + (1 << m) - 1
        if best is None or cost < best[0]:
            best = (cost, k, m)
    return best[1], best[2]


class _Depth:
    """A handle that tracks only multiplicative depth, with the planner's FIXEDMANUAL rules."""

    __array_ufunc__ = None

    def __init__(self, d: int):
        self.d = d

    def _bin(self, o, prod: bool):
        if isinstance(o, _Depth):
            return _Depth(max(self.d, o.d) + (1 if prod else 0))
        if prod and float(o) in (1.0, -1.0, 0.0):
            return _Depth(self.d)
        return _Depth(self.d + (1 if prod else 0))

    def __add__(self, o):
        return self._bin(o, False)

    __radd__ = __sub__ = __rsub__ = __add__

    def __mul__(self, o):
        return self._bin(o, True)

    __rmul__ = __mul__


def ps_depth(degree: int) -> int:
    """Multiplicative depth of :func:`eval_chebyshev_ps` for a dense series of this degree,
    counted by running the algorithm on depth-tracking handles (input y at depth 0; the affine
    map into [-1, 1], when needed, adds one). At most ceil(log2(degree + 1)) + 1."""
    if degree <= 0:
        return 0
    r = eval_chebyshev_ps([1.0 / (j + 3.0) for j in range(degree + 1)], _Depth(0))
    return r.d if isinstance(r, _Depth) else 0


def divide_chebyshev(c: Sequence, n: int) -> tuple[list, list]:
    """Split a Chebyshev series of length <= 2n into q, r with p = q T_n + r, len(q), len(r) <= n."""
    c = list(c)
    if len(c) > 2 * n:
        raise ProgramError(f"internal: series of length {len(c)} divided by T_{n}")
    c = c + [0.0] * (2 * n - len(c))
    q = [c[n]] + [2.0 * c[n + j] for j in range(1, n)]
    r = [c[0]] + [c[i] - c[2 * n - i] for i in range(1, n)]
    return q, r


def _trim(c: list) -> list:
    c = list(c)
    while len(c) > 1 and _is_zero(c[-1]):
        c.pop()
    return c


def eval_chebyshev_ps(coeffs: Sequence[float], y, *, hint: Hint | None = None):
    """Evaluate sum_j coeffs[j] T_j(y) by Paterson-Stockmeyer, y a handle (array or Expr) whose
    values lie in [-1, 1]. Returns a handle, or a float when the series is constant.

    ``hint(v, lo, hi)`` is called on every T_j handle with the fact that it lies in [-1, 1]
    (the builder records it for the range analysis); it returns the handle to use.
    """
    c = _trim([float(v) for v in coeffs])
    d = len(c) - 1
    if d == 0:
        return c[0]
    hint = hint or (lambda v, lo, hi: v)
    k, m = ps_params(d)
    T: dict[int, Any] = {1: y}

    def t(j: int):
        if j not in T:
            if j % 2 == 0:
                h = t(j // 2)
                p = h * h
                T[j] = hint(p + p - 1.0, -1.0, 1.0)
            else:
                a, b = t(j // 2 + 1), t(j // 2)
                p = a * b
                T[j] = hint(p + p - t(1), -1.0, 1.0)
        return T[j]

    giants = [t(k)] if m > 0 else []
    for _ in range(1, m):
        g = giants[-1]
        p = g * g
        giants.append(hint(p + p - 1.0, -1.0, 1.0))

    def leaf(cs: list):
        cs = _trim(cs)
        acc = None
        for j in range(1, len(cs)):
            if cs[j] == 0.0:
                continue
            term = t(j) if cs[j] == 1.0 else cs[j] * t(j)
            acc = term if acc is None else acc + term
        if acc is None:
            return cs[0]
        return acc + cs[0] if cs[0] != 0.0 else acc

    def rec(cs: list, i: int):
        cs = _trim(cs)
        if len(cs) <= k or i < 0:
            return leaf(cs)
        n = k << i
        if len(cs) <= n:
            return rec(cs, i - 1)
        q, r = divide_chebyshev(cs, n)
        qv = rec(q, i - 1)
        rv = rec(r, i - 1)
        prod = giants[i] * qv if not _is_const(qv) else (qv * giants[i] if qv != 0.0 else 0.0)
        if _is_const(prod) and _is_const(rv):
            return prod + rv
        if _is_const(rv):
            return prod + rv if rv != 0.0 else prod
        if _is_const(prod):
            return rv + prod if prod != 0.0 else rv
        return prod + rv

    return rec(c, m - 1)


def eval_power_bsgs(coeffs: Sequence, x):
    """Evaluate sum_j coeffs[j] x^j (power basis) by baby-step giant-step, x a handle.

    Coefficients are floats or per-slot vectors (numpy arrays of the handle's length); a
    vector coefficient makes a plaintext multiplication. Depth ceil(log2(k)) + 1 + m as for
    :func:`eval_chebyshev_ps`. Returns a handle, a float or a vector when the polynomial is
    constant.
    """
    c = list(coeffs)
    while len(c) > 1 and _is_zero(c[-1]):
        c.pop()
    d = len(c) - 1
    if d <= 0:
        return c[0] if c else 0.0
    k, m = ps_params(d)
    P: dict[int, Any] = {1: x}

    def pw(j: int):
        if j not in P:
            if j % 2 == 0:
                h = pw(j // 2)
                P[j] = h * h
            else:
                P[j] = pw(j // 2 + 1) * pw(j // 2)
        return P[j]

    giants = [pw(k)] if m > 0 else []
    for _ in range(1, m):
        giants.append(giants[-1] * giants[-1])

    def leaf(cs: list):
        acc = None
        for j in range(1, len(cs)):
            cj = cs[j]
            if _is_zero(cj):
                continue
            term = pw(j) if (_is_const(cj) and float(cj) == 1.0) else pw(j) * cj
            acc = term if acc is None else acc + term
        if acc is None:
            return cs[0]
        return acc if _is_zero(cs[0]) else acc + cs[0]

    def rec(cs: list, i: int):
        while len(cs) > 1 and _is_zero(cs[-1]):
            cs = cs[:-1]
        if len(cs) <= k or i < 0:
            return leaf(cs)
        n = k << i
        if len(cs) <= n:
            return rec(cs, i - 1)
        qv = rec(cs[n:], i - 1)
        rv = rec(cs[:n], i - 1)
        prod = giants[i] * qv
        return prod if _is_zero(rv) else prod + rv

    return rec(c, m - 1)


def measured_error(fn, coeffs: np.ndarray, domain: tuple[float, float], n: int = 20001) -> float:
    """max |chebval - fn| on a uniform grid of n points over the domain (plaintext, numpy)."""
    lo, hi = domain
    x = np.linspace(lo, hi, n)
    y = (2.0 * x - (lo + hi)) / (hi - lo)
    return float(np.max(np.abs(C.chebval(y, coeffs) - call_vectorised(fn, x))))


def choose_degree(fn, domain: tuple[float, float], tol: float, *, max_degree: int = MAX_DEGREE) -> int:
    """Smallest degree whose Chebyshev interpolant is within ``tol/2`` of ``fn`` on a dense grid,
    searched first among depth-optimal degrees 2^a - 1, then downwards within that depth.

    Raises:
        ProgramError: ``tol`` is not positive, or no degree up to ``max_degree`` meets it.
    """
    if not (tol > 0 and math.isfinite(tol)):
        raise ProgramError(f"tolerance must be positive, got {tol}")
    target = tol / 2.0
    err_at = {}

    def err(d: int) -> float:
        if d not in err_at:
            err_at[d] = measured_error(fn, interpolate(fn, domain, d), domain)
        return err_at[d]

    a = 1
    while (1 << a) - 1 <= max_degree:
        d = (1 << a) - 1
        if err(d) <= target:
            lo_d = (1 << (a - 1)) - 1  # known (or assumed) to fail
            hi_d = d
            while hi_d - lo_d > 1:
                mid = (lo_d + hi_d) // 2
                if err(mid) <= target:
                    hi_d = mid
                else:
                    lo_d = mid
            return hi_d
        a += 1
    raise ProgramError(f"no Chebyshev degree up to {max_degree} approximates the function within {tol:g} "
                       f"on [{domain[0]:g}, {domain[1]:g}] (narrow the domain or loosen the tolerance)")
