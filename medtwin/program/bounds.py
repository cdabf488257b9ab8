"""Interval analysis and the error model of planned programs.

Ranges
------
Every value gets an interval that contains its *exact* value in every slot whenever each input
lies in its declared range: interval arithmetic per op (a plaintext operand contributes its
min/max over slots), intersected with the program's assumptions (``ProgramBuilder.assume_range``,
and facts the approximations know, such as |T_k(y)| <= 1 for Chebyshev polynomials of y in
[-1, 1]).

Errors
------
``errors[v]`` bounds |computed(v) - exact(v)|, where *exact* means real arithmetic with every
approximated function evaluated exactly. It is propagated op by op (first order in the
approximation errors, exact for the products of errors that interval arithmetic gives):

* add/sub: e_a + e_b;  neg, level_down: e_a
* mul: M_a e_b + M_b e_a + e_a e_b  (M = max |exact value| from the range)
* mul_plain: M_p e_a + (M_a + e_a) * encode;  mul_const c: |c| e_a + (M_a + e_a) 2^-p / 2
* add_plain: e_a + encode;  add_const: e_a + 2^-p / 2
* relin, rotate: e_a + keyswitch
* rescale: e_a (1 + eps_r) + eps_r (M_a + e_a) + rescale_round, where eps_r bounds |2^p/q - 1|
  for the dropped prime q (OpenFHE's FIXEDMANUAL divides by q but keeps the nominal scale 2^p)
* an approximation region (a polynomial g of its input x computing f): internal ops are
  propagated with the input's error set to 0 (only the CKKS noise of the internal ops
  accumulates), and the region's output gets  lipschitz(g) * e_x + approx_error + internal.
  ``approx_error`` is max |g - f| measured on a dense grid over the domain plus a Lipschitz term
  for the grid spacing, so it is a bound, not just the theoretical Chebyshev estimate.

Decryption adds ``noise.decrypt`` to an output (see :meth:`medtwin.program.ir.Program.error_bound`).

CKKS noise terms (:class:`NoiseModel`)
--------------------------------------
Heuristic canonical-embedding estimates (Costache, Curtis, Hales, Murphy, Ogilvie, Player, "On
the precision loss in approximate homomorphic encryption", SAC 2023; the average-case analysis
of Cheon, Kim, Kim, Song, ASIACRYPT 2017, section 3) for a uniform ternary secret (OpenFHE's
default, Hamming weight about 2N/3) and Gaussian errors with sigma = 3.19. A coefficient error of
variance V becomes a slot error of variance about N V / 2 (real part), and a value error after
division by the scale 2^p. Each term is the standard deviation times ``k_sigma`` (default 8, so a
per-slot exceedance probability below 1e-14 for a Gaussian), and the terms are added in the worst
case, which makes the bound conservative by roughly the square root of the number of noisy ops:

* fresh encryption: sigma^2 (4N/3) per coefficient  ->  sigma N sqrt(2/3) / 2^p, times 1.5
  (calibrated against OpenFHE, see ``FRESH_CAL``)
* rescale rounding: (1/12)(1 + 2N/3) per coefficient  ->  about N / (6 * 2^p)
* hybrid key switching (relinearisation, rotation): the digit-times-key-noise term divided by P
  is of the order of a fresh encryption's noise (sigma N sqrt(dnum/6) / 2^p when P is about the
  digit size); measured, it is; charged 1.5x the fresh term (``KEYSWITCH_CAL``)
* decryption/decoding: a rounding term like the rescale's
* plaintext / constant encoding rounding: (1/12) per coefficient -> sqrt(N/24) / 2^p
* eps_r: from the live context's primes (:meth:`NoiseModel.from_context`, per level: a rescale
  from level l drops q_(L-l)), otherwise estimated as
  (depth/2 + 1) * N * p ln 2 * 2 / 2^p: the primes = 1 mod 2N nearest to 2^p are spaced about
  N p ln 2 apart and OpenFHE takes them alternately above and below 2^p.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medtwin.errors import ProgramError

if TYPE_CHECKING:
    from medtwin.program.ir import Program

SIGMA = 3.19
# Calibration against the openfhe 1.6.1 wheel (N=2^12, depth 10, FIXEDMANUAL, HYBRID, default
# dnum; 12288 slots): fresh encryption error std 1.38e-8 where sigma N sqrt(2/3) / 2^40 gives
# 0.97e-8, so the formula is scaled by 1.5; the extra error of one rotation (hybrid key switch)
# had std 1.44e-8, about that of a fresh encryption, so key switching is charged 1.5x fresh.
FRESH_CAL = 1.5
KEYSWITCH_CAL = 1.5


@dataclass(frozen=True)
class NoiseModel:
    """Per-op CKKS noise bounds in value units (already divided by the scale).

    Build with :meth:`from_params` (no live context: N and the primes estimated) or
    :meth:`from_context` (the primes of an OpenFHE context).
    """

    ring_dim: int
    scaling_mod_size: int
    fresh: float
    rescale_round: float
    keyswitch: float
    encode: float
    rescale_rel: float
    decrypt: float
    source: str = "estimate"
    rescale_rel_by_level: tuple[float, ...] = ()  # [l]: |2^p/q - 1| for the rescale leaving level l

    def rel_at(self, level: int) -> float:
        """Bound on |2^p/q - 1| for the prime a rescale from ``level`` drops."""
        if 0 <= level < len(self.rescale_rel_by_level):
            return self.rescale_rel_by_level[level]
        return self.rescale_rel

    @staticmethod
    def make(ring_dim: int, scaling_mod_size: int, rescale_rel: float, *, k_sigma: float = 8.0,
             source: str = "estimate", by_level: tuple[float, ...] = ()) -> NoiseModel:
        """The model for ring dimension N, scale 2^p and a given bound on |2^p/q - 1|."""
        n = float(ring_dim)
        delta = 2.0 ** scaling_mod_size
        fresh_std = FRESH_CAL * SIGMA * n * math.sqrt(2.0 / 3.0) / delta
        fresh = k_sigma * fresh_std
        rnd = k_sigma * math.sqrt((1.0 + 2.0 * n / 3.0) / 12.0 * n / 2.0) / delta
        enc = k_sigma * math.sqrt(n / 24.0) / delta
        return NoiseModel(ring_dim=int(ring_dim), scaling_mod_size=int(scaling_mod_size), fresh=fresh,
                          rescale_round=rnd, keyswitch=KEYSWITCH_CAL * fresh, encode=enc,
                          rescale_rel=float(rescale_rel), decrypt=rnd, source=source, rescale_rel_by_level=tuple(by_level))

    @staticmethod
    def from_params(params, depth: int) -> NoiseModel:
        """Estimate for plan parameters (``ring_dim`` None: 2^16, what 128-bit security needs for
        the depths of this project's models)."""
        from medtwin.program.ir import PlanParams

        pp = PlanParams.of(params)
        n = pp.ring_dim or (1 << 16)
        p = pp.scaling_mod_size
        eps = (max(depth, 1) / 2.0 + 1.0) * n * p * math.log(2.0) * 2.0 / 2.0 ** p
        return NoiseModel.make(n, p, eps, source=f"estimate for N=2^{int(math.log2(n))}, depth {depth}")

    @staticmethod
    def from_context(cc) -> NoiseModel:
        """The model for a live OpenFHE CKKS context: its ring dimension, scale and actual primes.

        Raises:
            ProgramError: the context's modulus does not factor into primes near 2^p (not a
                FIXEDMANUAL CKKS context of the expected shape).
        """
        n = int(cc.GetRingDimension())
        p = int(cc.GetEncodingParams().GetPlaintextModulus())  # CKKS: the scaling modulus size
        q_all = int(cc.GetElementParams().GetModulus())
        q0 = int(cc.GetModulusCKKS())
        if q0 <= 1 or q_all % q0:
            raise ProgramError("cannot read the first prime of the crypto context")
        rest = q_all // q0
        primes = []
        step = 2 * n
        base = 1 << p
        k = 0
        while rest > 1 and k < 1_000_000:
            k += 1
            for c in (base + k * step + 1, base - k * step + 1):
                if rest % c == 0:
                    primes.append(c)
                    rest //= c
        if rest != 1:
            raise ProgramError("the crypto context's modulus is not a product of primes near the scale")
        eps = max((abs(base / q - 1.0) for q in primes), default=0.0)
        chain = _tower_moduli(cc)
        by_level: tuple[float, ...] = ()
        if chain and chain[0] == q0 and sorted(chain[1:]) == sorted(primes):
            # a rescale from level l drops the last remaining tower, q_(L - l)
            by_level = tuple(abs(base / q - 1.0) for q in reversed(chain[1:]))
        return NoiseModel.make(n, p, eps, source=f"context N=2^{int(math.log2(n))}, {len(primes)} scaling primes",
                               by_level=by_level)

    def describe(self) -> str:
        return (f"{self.source}: fresh {self.fresh:.2g}, rescale {self.rescale_round:.2g} + "
                f"{self.rescale_rel:.2g} relative, keyswitch {self.keyswitch:.2g}, encode {self.encode:.2g}")


def _tower_moduli(cc) -> list[int]:
    """The context's Q towers q_0..q_L in order, read from its JSON serialisation (small: no
    keys), or [] when the layout is not as expected."""
    try:
        import json

        import openfhe

        doc = json.loads(openfhe.Serialize(cc, openfhe.JSON))
    except Exception:
        return []

    def find(o, key):
        if isinstance(o, dict):
            if key in o:
                return o[key]
            for v in o.values():
                r = find(v, key)
                if r is not None:
                    return r
        elif isinstance(o, list):
            for v in o:
                r = find(v, key)
                if r is not None:
                    return r
        return None

    try:
        towers = find(find(doc, "elp"), "p")
        return [int(t["ptr_wrapper"]["data"]["value0"]["cm"]["v"]) for t in towers]
    except (TypeError, KeyError, ValueError):
        return []


# -- interval arithmetic ----------------------------------------------------------------------------

def iv_add(a, b):
    return a[0] + b[0], a[1] + b[1]


def iv_sub(a, b):
    return a[0] - b[1], a[1] - b[0]


def iv_neg(a):
    return -a[1], -a[0]


def iv_mul(a, b):
    ps = (a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1])
    return min(ps), max(ps)


def iv_scale(a, c: float):
    return (a[0] * c, a[1] * c) if c >= 0 else (a[1] * c, a[0] * c)


def iv_shift(a, c: float):
    return a[0] + c, a[1] + c


def iv_intersect(a, hint, what: str):
    lo, hi = max(a[0], hint[0]), min(a[1], hint[1])
    if lo > hi:
        # Interval arithmetic is exact up to rounding; allow a relative slack before refusing.
        tol = 1e-9 * max(1.0, abs(hint[0]), abs(hint[1]))
        if lo - hi <= tol:
            return (hi, hi) if lo > hi else (lo, hi)
        raise ProgramError(f"{what}: assumed range [{hint[0]:.6g}, {hint[1]:.6g}] does not meet the "
                           f"computed range [{a[0]:.6g}, {a[1]:.6g}]")
    return lo, hi


def mag(a) -> float:
    return max(abs(a[0]), abs(a[1]))


def plain_range(v: np.ndarray) -> tuple[float, float]:
    return float(np.min(v)), float(np.max(v))


def analyse(prog: Program, noise: NoiseModel) -> tuple[list[tuple[float, float]], list[float]]:
    """Ranges and error bounds of every value of a planned program (see the module docstring).

    Raises:
        ProgramError: an assumption contradicts the computed range, a value is not finite.
    """
    ops = prog.ops
    hints = {a.value: (a.lo, a.hi) for a in getattr(prog, "assumptions", [])}
    input_range = {i.name: i.range for i in prog.inputs}
    pr = [plain_range(p) for p in prog.plaintexts]
    region_in = {r_i: r.input for r_i, r in enumerate(prog.regions)}
    region_out = {r.output: r_i for r_i, r in enumerate(prog.regions)}
    rng: list[tuple[float, float]] = []
    err: list[float] = []
    eps_q = 2.0 ** -noise.scaling_mod_size
    for op in ops:
        k = op.kind
        a = [rng[x] for x in op.args]
        ea = [err[x] for x in op.args]
        if op.region is not None:
            src = region_in[op.region]
            ea = [0.0 if x == src else e for x, e in zip(op.args, ea)]
        if k == "input":
            r = input_range[op.name]
            e = noise.fresh
        elif k == "add":
            r = iv_add(*a); e = ea[0] + ea[1]
        elif k == "sub":
            r = iv_sub(*a); e = ea[0] + ea[1]
        elif k == "neg":
            r = iv_neg(a[0]); e = ea[0]
        elif k == "mul":
            r = iv_mul(*a)
            e = mag(a[0]) * ea[1] + mag(a[1]) * ea[0] + ea[0] * ea[1]
        elif k == "relin":
            r = a[0]; e = ea[0] + noise.keyswitch
        elif k == "rotate":
            r = a[0]; e = ea[0] + noise.keyswitch
        elif k == "rescale":
            r = a[0]
            eps = noise.rel_at(prog.ops[op.args[0]].level)
            e = ea[0] * (1.0 + eps) + eps * (mag(a[0]) + ea[0]) + noise.rescale_round
        elif k == "level_down":
            r = a[0]; e = ea[0]
        elif k == "mul_plain":
            p = pr[op.plain]
            r = iv_mul(a[0], p)
            e = mag(p) * ea[0] + (mag(a[0]) + ea[0]) * noise.encode
        elif k == "add_plain":
            r = iv_add(a[0], pr[op.plain]); e = ea[0] + noise.encode
        elif k == "mul_const":
            r = iv_scale(a[0], op.const)
            e = abs(op.const) * ea[0] + (mag(a[0]) + ea[0]) * eps_q / 2
        elif k == "add_const":
            r = iv_shift(a[0], op.const); e = ea[0] + eps_q / 2
        else:  # validated before analysis
            raise ProgramError(f"op {op.out}: unknown kind {k!r}")
        if op.out in region_out:
            reg = prog.regions[region_out[op.out]]
            e = reg.lipschitz * err[reg.input] + reg.approx_error + e
            r = reg.out_range  # hull of f and g over the domain (the exact value is f(x))
        if op.out in hints:
            r = iv_intersect(r, hints[op.out], f"value {op.out} ({k})")
        if not (math.isfinite(r[0]) and math.isfinite(r[1]) and math.isfinite(e)):
            raise ProgramError(f"value {op.out} ({k}) has an unbounded range or error")
        rng.append((float(r[0]), float(r[1])))
        err.append(float(e))
    return rng, err
