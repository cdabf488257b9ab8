"""Interval analysis and the error model of planned programs.

Ranges
------
Every value gets an interval that contains its *exact* value in every slot whenever each input
lies in its declared range: interval arithmetic per op (a plaintext operand contributes its
min/max over slots), intersected with the program's assumptions (``ProgramBuilder.assume_range``;
facts the approximations know, such as |T_k(y)| <= 1 for Chebyshev polynomials of y in [-1, 1];
and the ranges of a polynomial piece's intermediate values measured on its dense grid).

Errors
------
``errors[v]`` bounds |computed(v) - exact(v)| in every slot, where *exact* is real arithmetic with
every approximated function evaluated exactly. A computed value is modelled as

    computed = s * exact + d + n

* s, the **scale drift**: OpenFHE's FIXEDMANUAL rescale divides by the dropped prime q but keeps
  the nominal scale 2^p, so it multiplies the value by f = 2^p/q (|f - 1| up to about 1e-5 at
  N = 2^16). Tracked as an interval per value: a point when the context's primes are known
  (:meth:`NoiseModel.from_context`), else f in [1/(1+eps), 1/(1-eps)] with eps estimated. With an
  executor that applies :func:`scale_corrections`, s is reset to 1 by every constant or plaintext
  product.
* d, **deterministic** error, bounded in the worst case: approximation errors of the polynomial
  pieces, constant rounding, drift mismatches where values of different drift meet (|s_a - s_b|
  times the operand's magnitude), products of errors.
* n, **random** CKKS noise: a sum of independent zero-mean sources (every fresh encryption,
  relinearisation, rotation, rescale and plaintext encoding is one), each reaching the value with
  a sensitivity bounded by first-order propagation (add: g_a + g_b; mul: M_b g_a + M_a g_b with
  M = max |value|; constants scale it; the triangle inequality covers sources that arrive by
  several paths). Stored per source as sensitivity * standard deviation, so its standard
  deviation is at most the 2-norm of that vector, and the bound takes k_sigma (8) times it:
  for Gaussian-like noise a per-slot exceedance probability below 1e-15.

total = |s - 1| max|exact| + d + k_sigma * sqrt(1 + c_dec^2) * ||n||_2  (c_dec: decryption noise).

Rotations and sums over slots. A source's noise is a vector over the slots, and a rotation moves
it: the noise of rot(x, r) in slot i is x's noise in slot i + r. The random part is therefore
kept per (source, shift), the shift being the sum of the rotations on the path mod slots
(slot-wise ops keep it). Under the same model that gives the "slot variance = N V / 2" rule
below (coefficient errors independent, zero-mean, of equal variance V), the errors of *different
slots* of one source are uncorrelated: a slot is the evaluation e(zeta_j) at a primitive 2N-th
root of unity, and for two slots j != j' (neither the conjugate of the other, which holds for the
N/2 slots of CKKS) sum_k zeta_j^k conj(zeta_j')^k = 0 and sum_k zeta_j^k zeta_j'^k = 0, so
E[e(zeta_j) conj e(zeta_j')] = E[e(zeta_j) e(zeta_j')] = 0 and the real parts are uncorrelated
(orthogonality of the canonical embedding; the independence heuristic of Costache et al. SAC
2023 and Cheon-Kim-Kim-Song 2017 cited below). So one source reaching a slot at two different
shifts contributes two uncorrelated terms, and the standard deviation is bounded by the 2-norm
over (source, shift): a rotate-and-sum over M slots grows the random noise like sqrt(M), not M.
The same source at the same shift (e.g. x + rot(rot(x, k), slots - k)) still adds linearly. Shifts
are taken mod the program's slot count; with sparse packing (slots < N/2) two shifts equal mod
slots may still be different canonical slots, and adding them linearly is then conservative.
The deterministic parts (approximation errors, drift, the rotation's systematic slot-0 term)
add linearly as before. Values from independent encryptions (e.g. separate chunks of a cohort,
added outside the program) have independent random parts; :func:`error_parts` returns each
value's (fixed, random) split so that a caller can combine them the same way.

An approximation region (a polynomial g of its input x computing f) is analysed with its input
taken as exact (s = 1, no error); at the region's output the input's error enters through g's
Lipschitz constant:  d = L (|s_x - 1| M_x + d_x) + approx_error + d_internal,
n = L n_x + n_internal. ``approx_error`` is max |g - f| on a dense grid over the domain widened by a
second-order term for the grid spacing, so it is a bound, not only the theoretical Chebyshev
estimate.

CKKS noise sources (:class:`NoiseModel`, standard deviations per slot, in value units)
-------------------------------------------------------------------------------------
Heuristic canonical-embedding estimates (Costache, Curtis, Hales, Murphy, Ogilvie, Player, "On
the precision loss in approximate homomorphic encryption", SAC 2023; the average-case analysis
of Cheon, Kim, Kim, Song, ASIACRYPT 2017, section 3) for a uniform ternary secret (OpenFHE's
default, Hamming weight about 2N/3) and Gaussian errors with sigma = 3.19. A coefficient error of
variance V becomes a slot error of variance about N V / 2 (real part), and a value error after
division by the scale 2^p:

* fresh encryption: sigma^2 (4N/3) per coefficient  ->  sigma N sqrt(2/3) / 2^p, times 1.5
  (calibrated against OpenFHE, see ``FRESH_CAL``)
* rescale rounding: (1/12)(1 + 2N/3) per coefficient  ->  about N / (6 * 2^p)
* hybrid key switching (relinearisation, rotation): the digit-times-key-noise term divided by P
  (sigma N sqrt(dnum/6) / 2^p at most when P is about the digit size); measured 0.34x the fresh
  term, charged 0.75x (``KEYSWITCH_CAL``); each rotation also gets a deterministic
  2 N^1.5 / 2^p (``ROTATE_BIAS``) for a systematic slot-0 error that is fixed per key pair
* plaintext encoding rounding: (1/12) per coefficient -> sqrt(N/24) / 2^p
* decryption: OpenFHE adds Gaussian noise of about the ciphertext's own noise level (estimated from
  the imaginary parts); the random part of the bound is multiplied by sqrt(1 + 1.5^2)
  (``DECRYPT_CAL``), so ``errors[v]`` is the error of v as decrypted
* eps (drift without a context): (depth/2 + 1) * N * p ln 2 * 2 / 2^p: the primes = 1 mod 2N
  nearest to 2^p are spaced about N p ln 2 apart and OpenFHE takes them alternately above and
  below 2^p.
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
# Calibration against the openfhe 1.6.1 wheel (N = 2^12..2^14, FIXEDMANUAL, HYBRID, default dnum,
# tens of thousands of slots). OpenFHE's Decrypt adds Gaussian noise whose standard deviation it
# estimates from the imaginary parts, i.e. about the ciphertext's own noise: two decryptions of
# one ciphertext differ by sqrt(2) x 1.0e-8 at N = 2^12 for a fresh ciphertext whose error
# without that term is 0.92e-8 (sigma N sqrt(2/3) / 2^40 = 0.97e-8), and the ratio stayed 1.05-1.1
# after products that amplified the noise 30x and 900x. The extra error of one rotation was 0.34x
# a fresh encryption's in the bulk of the slots, plus a systematic error in slot 0 that is fixed
# for a key pair (the same sign and size for every ciphertext and rotation amount) and random
# across key pairs: |error| / (N^1.5 / 2^40) was 0.2-0.65 over three key pairs each at N = 2^12,
# 2^13 and 2^14. It is charged per rotation as a deterministic 2 N^1.5 / 2^p.
FRESH_CAL = 1.2  # ciphertext noise of a fresh encryption = 1.2 sigma N sqrt(2/3) / 2^p
KEYSWITCH_CAL = 0.75  # random key-switch noise = 0.75 x the fresh term
DECRYPT_CAL = 1.5  # decryption adds noise of std <= 1.5 x the ciphertext's noise std
ROTATE_BIAS = 2.0  # per rotation: ROTATE_BIAS * N^1.5 / 2^p for the slot-0 term


@dataclass(frozen=True)
class NoiseModel:
    """CKKS noise sources as per-slot standard deviations in value units (divided by the scale),
    the drift of each rescale, and ``k_sigma``, the multiple of the standard deviation taken as
    the bound. ``decrypt`` is the ratio of the decryption's added noise to the ciphertext's.

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
    rescale_factors: tuple[float, ...] = ()  # [l]: exactly 2^p / q for the rescale leaving level l
    corrected: bool = False  # the executor applies :func:`scale_corrections`
    k_sigma: float = 8.0
    rotate_bias: float = 0.0

    def factor_range(self, level: int) -> tuple[float, float]:
        """Interval of 2^p/q for the prime a rescale from ``level`` drops (a point when known)."""
        if 0 <= level < len(self.rescale_factors):
            f = self.rescale_factors[level]
            return f, f
        e = self.rescale_rel
        return 1.0 / (1.0 + e), 1.0 / (1.0 - e) if e < 1 else math.inf

    def shifted(self, levels: int) -> NoiseModel:
        """The model for a program whose inputs arrive ``levels`` levels down the modulus chain
        (e.g. ciphertexts refreshed by bootstrapping): its level l is the context's l + levels.

        Raises:
            ProgramError: a negative shift, or more levels than the known primes.
        """
        from dataclasses import replace

        k = int(levels)
        if k < 0:
            raise ProgramError("a level shift cannot be negative")
        if k == 0:
            return self
        if self.rescale_factors and k > len(self.rescale_factors):
            raise ProgramError(f"a shift of {k} levels is beyond the context's {len(self.rescale_factors)}")
        return replace(self, rescale_factors=self.rescale_factors[k:],
                       source=f"{self.source}, inputs at level {k}")

    def with_correction(self, corrected: bool = True) -> NoiseModel:
        """The same model for an executor that does (or does not) apply scale corrections."""
        from dataclasses import replace

        return replace(self, corrected=bool(corrected))

    @staticmethod
    def make(ring_dim: int, scaling_mod_size: int, rescale_rel: float, *, k_sigma: float = 8.0,
             source: str = "estimate", factors: tuple[float, ...] = (), corrected: bool = False) -> NoiseModel:
        """The model for ring dimension N, scale 2^p and a given bound on |2^p/q - 1|."""
        n = float(ring_dim)
        delta = 2.0 ** scaling_mod_size
        fresh = FRESH_CAL * SIGMA * n * math.sqrt(2.0 / 3.0) / delta
        rnd = math.sqrt((1.0 + 2.0 * n / 3.0) / 12.0 * n / 2.0) / delta
        enc = math.sqrt(n / 24.0) / delta
        return NoiseModel(ring_dim=int(ring_dim), scaling_mod_size=int(scaling_mod_size), fresh=fresh,
                          rescale_round=rnd, keyswitch=KEYSWITCH_CAL * fresh, encode=enc,
                          rescale_rel=float(rescale_rel), decrypt=DECRYPT_CAL,
                          rotate_bias=ROTATE_BIAS * n ** 1.5 / delta, source=source, rescale_factors=tuple(factors),
                          corrected=corrected, k_sigma=float(k_sigma))

    @staticmethod
    def from_params(params, depth: int, *, corrected: bool = False) -> NoiseModel:
        """Estimate for plan parameters (``ring_dim`` None: 2^16, what 128-bit security needs for
        the depths of this project's models). ``corrected``: the executor applies scale
        corrections (:func:`scale_drift`)."""
        from medtwin.program.ir import PlanParams

        pp = PlanParams.of(params)
        n = pp.ring_dim or (1 << 16)
        p = pp.scaling_mod_size
        eps = (max(depth, 1) / 2.0 + 1.0) * n * p * math.log(2.0) * 2.0 / 2.0 ** p
        return NoiseModel.make(n, p, eps, source=f"estimate for N=2^{int(math.log2(n))}, depth {depth}",
                               corrected=corrected)

    @staticmethod
    def from_context(cc, *, corrected: bool = False) -> NoiseModel:
        """The model for a live OpenFHE CKKS context: its ring dimension, scale and actual primes
        (in tower order, so the scale drift of every value is computed exactly). ``corrected``:
        the executor applies scale corrections (``OpenFHEExecutor(correct_scale=True)``; use
        ``executor.noise_model()`` to get the matching model).

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
        factors: tuple[float, ...] = ()
        if chain and chain[0] == q0 and sorted(chain[1:]) == sorted(primes):
            # a rescale from level l drops the last remaining tower, q_(L - l)
            factors = tuple(base / q for q in reversed(chain[1:]))
        return NoiseModel.make(n, p, eps, source=f"context N=2^{int(math.log2(n))}, {len(primes)} scaling primes"
                               f"{' in order' if factors else ''}{', corrected' if corrected else ''}",
                               factors=factors, corrected=corrected)

    def describe(self) -> str:
        return (f"{self.source}: noise std fresh {self.fresh:.2g}, keyswitch {self.keyswitch:.2g}, "
                f"rescale {self.rescale_round:.2g}, encode {self.encode:.2g} (bound {self.k_sigma:g} sigma); "
                f"rescale drift |2^p/q - 1| <= {self.rescale_rel:.2g}")


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


def analyse(prog: Program, noise: NoiseModel, input_errors: dict[str, float] | None = None
            ) -> tuple[list[tuple[float, float]], list[float]]:
    """Ranges and error bounds of every value of a planned program (see the module docstring).

    ``input_errors``: a worst-case bound on |input - exact| for inputs that are not fresh
    encryptions of exact values (e.g. the states of an earlier segment, refreshed by
    bootstrapping); it enters as deterministic error and is propagated like any other.

    Raises:
        ProgramError: an assumption contradicts the computed range, a value is not finite, an
            input error is negative or names no input.
    """
    rng, err, _, _, _ = _propagate(prog, noise, input_errors)
    return rng, err


def error_parts(prog: Program, noise: NoiseModel, input_errors: dict[str, float] | None = None
                ) -> list[tuple[float, float]]:
    """Per value, ``(fixed, random_std)``: the error bound of :func:`analyse` split into its
    worst-case part (drift, deterministic errors and rotation bias; adds linearly wherever values
    meet) and a bound on the standard deviation of its random CKKS noise (before decryption; the
    bound takes ``noise.k_sigma * sqrt(1 + noise.decrypt^2)`` times it). Values computed from
    independent encryptions (e.g. chunks of a cohort) have independent random parts: the error
    of their sum is at most the sum of the fixed parts plus that factor times the 2-norm of the
    random parts.

    Raises:
        ProgramError: as :func:`analyse`.
    """
    return _propagate(prog, noise, input_errors)[4]


def scale_corrections(prog: Program, noise: NoiseModel) -> dict[int, float]:
    """Factors by which an executor multiplies the constant / plaintext of an op so that the
    FIXEDMANUAL scale drift is cancelled where it can be (see the module docstring):
    ``mul_const``/``mul_plain`` at level l on a value of drift s get 1/(s 2^p/q_l), so the value
    after the rescale has drift exactly 1; ``add_const``/``add_plain`` get s, so the constant
    joins the value at the value's drift. Ops not listed keep factor 1.

    Raises:
        ProgramError: ``noise`` does not know the exact primes for every level of the program
            (build it with :meth:`NoiseModel.from_context`).
    """
    if len(noise.rescale_factors) < prog.depth:
        raise ProgramError("scale corrections need the context's primes for every level "
                           f"(the noise model knows {len(noise.rescale_factors)}, the program needs {prog.depth})")
    return _propagate(prog, noise.with_correction(True))[3]


class _Noise:
    """Random-noise sensitivities of one value, tracked per (source, slot shift).

    The contribution of source s reaching slot i of the value from slot i + t of the source's own
    noise vector is keyed (s, t) (t: the sum of the rotations on the path, mod slots; slot-wise
    ops keep t). Stored as components ``(shifts, src)``: ``shifts`` maps t -> weight and ``src``
    maps s -> sensitivity * std, and the pair stands for the sensitivities
    ``g[s, t] = shifts[t] * src[s]``. Components that reach the same (s, t) add linearly
    (triangle inequality); distinct (s, t) are independent, so the standard deviation is at most
    the 2-norm over (s, t) (see the module docstring). Dictionaries are never changed after a
    component is made, so components may be shared between values; a rotate-and-sum keeps one
    component per source group (merged by identity) instead of one entry per shift.
    """

    __slots__ = ("comps", "_norm")

    def __init__(self, comps=()):
        self.comps = tuple(comps)
        self._norm = None

    @staticmethod
    def local(v: dict[int, float]) -> _Noise:
        """Sources at shift 0 (no rotation on their path)."""
        return _Noise((({0: 1.0}, v),)) if v else _Noise()

    @property
    def v(self) -> dict[int, float] | None:
        """{source: sensitivity * std} when every component is at shift 0 with weight 1, else None."""
        if not self.comps:
            return {}
        if len(self.comps) == 1 and self.comps[0][0] == {0: 1.0}:
            return self.comps[0][1]
        return None

    def scaled(self, c: float) -> _Noise:
        c = abs(c)
        if c == 1.0 or not self.comps:
            return self
        return _Noise(_normal([({t: w * c for t, w in sh.items()}, src) for sh, src in self.comps]))

    def rotated(self, r: int, slots: int) -> _Noise:
        """The noise of rot(value, r): every shift t becomes t + r (mod slots)."""
        if not self.comps or r % slots == 0:
            return self
        return _Noise([({(t + r) % slots: w for t, w in sh.items()}, src) for sh, src in self.comps])

    def plus(self, o: _Noise) -> _Noise:
        if not o.comps:
            return self
        if not self.comps:
            return o
        return _Noise(_merge(self.comps + o.comps))

    def add_source(self, key: int, std: float, record: dict | None = None) -> _Noise:
        if record is not None:
            record[key] = record.get(key, 0.0) + std
        if std == 0.0:
            return self
        return _Noise(_merge(self.comps + (({0: 1.0}, {key: std}),)))

    def norm(self) -> float:
        """2-norm over (source, shift) of the summed sensitivities: a bound on the std."""
        if self._norm is None:
            cs = self.comps
            tot = 0.0
            for i, (sh_i, src_i) in enumerate(cs):
                for j in range(i, len(cs)):
                    sh_j, src_j = cs[j]
                    a, b = (sh_i, sh_j) if len(sh_i) <= len(sh_j) else (sh_j, sh_i)
                    st = sum(w * b[t] for t, w in a.items() if t in b)
                    if st == 0.0:
                        continue
                    a, b = (src_i, src_j) if len(src_i) <= len(src_j) else (src_j, src_i)
                    ss = sum(x * b[k] for k, x in a.items() if k in b)
                    tot += st * ss * (1.0 if i == j else 2.0)
            self._norm = math.sqrt(max(tot, 0.0))
        return self._norm


def _dsum(dicts) -> dict:
    """Entry-wise sum of dictionaries (a new one unless there is only one)."""
    if len(dicts) == 1:
        return dicts[0]
    r = dict(dicts[0])
    for d in dicts[1:]:
        for k, x in d.items():
            r[k] = r.get(k, 0.0) + x
    return r


def _normal(comps):
    """Fold the weight of single-shift components into their sources (so that values at the
    same shift merge by shift below) and drop empty ones."""
    out = []
    for sh, src in comps:
        if not sh or not src:
            continue
        if len(sh) == 1:
            (t, w), = sh.items()
            if w != 1.0:
                src = {k: x * w for k, x in src.items()}
                sh = {t: 1.0}
        out.append((sh, src))
    return out


def _merge(comps):
    """Canonical component list: the same source dictionary (by identity) at several shifts
    becomes one component (shift weights add); then components with equal shift maps become one
    (sources add). Both are exact rewrites of the sensitivities g[s, t]."""
    by_src: dict[int, list] = {}
    order = []
    for sh, src in comps:
        k = id(src)
        if k not in by_src:
            by_src[k] = [src, []]
            order.append(k)
        by_src[k][1].append(sh)
    step = []
    for k in order:
        src, shs = by_src[k]
        step.append((_dsum(shs), src))
    step = _normal(step)
    by_sh: dict[tuple, list] = {}
    order2 = []
    for sh, src in step:
        key = tuple(sorted(sh.items()))
        if key not in by_sh:
            by_sh[key] = [sh, []]
            order2.append(key)
        by_sh[key][1].append(src)
    return [(by_sh[k][0], _dsum(by_sh[k][1])) for k in order2]


_MEMO_SIZE = 16  # analyses kept per program (one per noise model and input-error set)


def _propagate(prog: Program, noise: NoiseModel, input_errors: dict[str, float] | None = None):
    """The analysis pass (see the module docstring). Returns ranges, total error bounds, drift
    intervals, the executor's scale corrections (meaningful when the primes are known) and the
    (fixed, random std) split of every bound (:func:`error_parts`).

    A program is immutable once built, so the result is memoised on it per (noise model, input
    errors): a study asks for the bound of each output under two or three models, and each pass
    over a cohort program's ~4,300 ops costs ~0.2 s. Callers must not modify the returned lists.
    """
    try:
        key = (noise, tuple(sorted((str(k), float(v)) for k, v in (input_errors or {}).items())))
        hash(key)
    except (TypeError, ValueError):
        key = None
    memo = prog.__dict__.setdefault("_propagate_memo", {})
    if key is not None and key in memo:
        return memo[key]
    out = _propagate_uncached(prog, noise, input_errors)
    if key is not None:
        if len(memo) >= _MEMO_SIZE:
            memo.pop(next(iter(memo)))
        memo[key] = out
    return out


def _propagate_uncached(prog: Program, noise: NoiseModel, input_errors: dict[str, float] | None = None):
    ops = prog.ops
    in_err = dict(input_errors or {})
    names = {i.name for i in prog.inputs}
    for k_, e_ in in_err.items():
        if k_ not in names:
            raise ProgramError(f"input error given for {k_!r}, which is not an input of {prog.name!r}")
        if not (math.isfinite(float(e_)) and float(e_) >= 0.0):
            raise ProgramError(f"the error bound of input {k_!r} must be finite and non-negative")
    hints = {a.value: (a.lo, a.hi) for a in getattr(prog, "assumptions", [])}
    input_range = {i.name: i.range for i in prog.inputs}
    pr = [plain_range(p) for p in prog.plaintexts]
    region_in = {r_i: r.input for r_i, r in enumerate(prog.regions)}
    region_out = {r.output: r_i for r_i, r in enumerate(prog.regions)}
    region_sens = [dict(r.sens) for r in prog.regions]
    sigma: dict[int, float] = {}  # noise source -> its standard deviation
    corrected = noise.corrected
    ks = noise.k_sigma * math.sqrt(1.0 + noise.decrypt ** 2)
    n_ops = len(ops)
    rng: list[tuple[float, float]] = []
    drift: list[tuple[float, float]] = []
    det: list[float] = []
    rnd_n: list[_Noise | None] = []
    err: list[float] = []
    parts: list[tuple[float, float]] = []
    corr: dict[int, float] = {}
    eps_q = 2.0 ** -noise.scaling_mod_size
    one = (1.0, 1.0)
    empty = _Noise()
    # free the noise vectors of values nobody reads any more (outputs and region inputs are kept)
    last = [-1] * n_ops
    for op in ops:
        for x in op.args:
            last[x] = op.out
    keep = {o.value for o in prog.outputs} | {r.input for r in prog.regions}

    def dev(sv):
        return max(abs(sv[0] - 1.0), abs(sv[1] - 1.0))

    for op in ops:
        k = op.kind
        a = [rng[x] for x in op.args]
        sa = [drift[x] for x in op.args]
        da = [det[x] for x in op.args]
        na = [rnd_n[x] for x in op.args]
        if op.region is not None:  # the region input enters as exact; its error is charged at the output
            src = region_in[op.region]
            for i, x in enumerate(op.args):
                if x == src:
                    sa[i], da[i], na[i] = one, 0.0, empty
        ta = [da[i] + ks * na[i].norm() for i in range(len(op.args))]  # error bounds of the operands
        sv = sa[0] if sa else one
        src_key = op.out
        if k == "input":
            r, sv, nv = input_range[op.name], one, empty.add_source(src_key, noise.fresh, sigma)
            d = float(in_err.get(op.name, 0.0))
        elif k in ("add", "sub"):
            r = iv_add(*a) if k == "add" else iv_sub(*a)
            i = 0 if mag(a[0]) >= mag(a[1]) else 1  # the drift of the larger operand is kept
            j = 1 - i
            sv = sa[i]
            mism = max(abs(sa[j][1] - sa[i][0]), abs(sa[i][1] - sa[j][0]))
            d = da[0] + da[1] + mism * mag(a[j])
            nv = na[0].plus(na[1])
        elif k == "neg":
            r, d, nv = iv_neg(a[0]), da[0], na[0]
        elif k == "mul":
            r = iv_mul(*a)
            sv = iv_mul(sa[0], sa[1])
            m0, m1 = sa[0][1] * mag(a[0]), sa[1][1] * mag(a[1])
            d = m0 * da[1] + m1 * da[0] + ta[0] * ta[1]
            nv = na[1].scaled(m0).plus(na[0].scaled(m1))
        elif k == "relin":
            r, d, nv = a[0], da[0], na[0].add_source(src_key, noise.keyswitch, sigma)
        elif k == "rotate":
            r, d = a[0], da[0] + noise.rotate_bias
            nv = na[0].rotated(op.rot, prog.slots).add_source(src_key, noise.keyswitch, sigma)
        elif k == "level_down":
            r, d, nv = a[0], da[0], na[0]
        elif k == "rescale":
            r = a[0]
            arg = ops[op.args[0]]
            f = noise.factor_range(arg.level)
            if corrected and arg.kind in ("mul_const", "mul_plain"):
                sv = one  # the correction made the product's drift exactly 1 / f
            else:
                sv = (sa[0][0] * f[0], sa[0][1] * f[1])
            d = da[0] * f[1]
            nv = na[0].scaled(f[1]).add_source(src_key, noise.rescale_round, sigma)
        elif k in ("mul_const", "mul_plain"):
            if k == "mul_const":
                c = (op.const, op.const)
                r = iv_scale(a[0], op.const)
            else:
                c = pr[op.plain]
                r = iv_mul(a[0], c)
            g = 1.0
            if corrected:
                f = noise.factor_range(op.level)
                g = 1.0 / (sa[0][0] * f[0])  # the executor's factor (exact when s and f are known)
                corr[op.out] = g
                sv = (1.0 / f[1], 1.0 / f[0])
            cm = mag(c) * g
            d = cm * da[0]
            nv = na[0].scaled(cm)
            if k == "mul_const":
                d += (sa[0][1] * mag(a[0]) + ta[0]) * eps_q / 2 * g  # the constant rounded to 2^-p
            else:
                nv = nv.add_source(src_key, (sa[0][1] * mag(a[0]) + ta[0]) * noise.encode * g, sigma)
        elif k in ("add_const", "add_plain"):
            c = (op.const, op.const) if k == "add_const" else pr[op.plain]
            r = iv_add(a[0], c)
            if corrected:
                corr[op.out] = sa[0][0]
                d = da[0] + (sa[0][1] - sa[0][0]) * mag(c)
            else:
                d = da[0] + dev(sa[0]) * mag(c)
            nv = na[0]
            if k == "add_const":
                d += eps_q / 2 * sa[0][1]
            else:
                nv = nv.add_source(src_key, noise.encode * sa[0][1], sigma)
        else:  # validated before analysis
            raise ProgramError(f"op {op.out}: unknown kind {k!r}")
        if op.out in region_out:
            reg = prog.regions[region_out[op.out]]
            x = reg.input
            lip = reg.lipschitz
            d = lip * (dev(drift[x]) * mag(rng[x]) + det[x]) + reg.approx_error + d
            # internal sources: the region's measured sensitivity instead of the propagated one
            sv_map = region_sens[region_out[op.out]]
            # (only when every internal source is at shift 0: a region holds no rotations)
            loc = nv.v
            if loc is not None:
                nv = _Noise.local({src: (min(g, sv_map[src] * sigma[src]) if src in sv_map and src in sigma else g)
                                   for src, g in loc.items()})
            nv = rnd_n[x].scaled(lip).plus(nv)
            r = reg.out_range  # hull of f and g over the domain (the exact value is f(x))
        if op.out in hints:
            r = iv_intersect(r, hints[op.out], f"value {op.out} ({k})")
        fixed = dev(sv) * mag(r) + d
        total = fixed + ks * nv.norm()
        if not (math.isfinite(r[0]) and math.isfinite(r[1]) and math.isfinite(total)):
            raise ProgramError(f"value {op.out} ({k}) has an unbounded range or error")
        rng.append((float(r[0]), float(r[1])))
        drift.append((float(sv[0]), float(sv[1])))
        det.append(float(d))
        rnd_n.append(nv)
        err.append(float(total))
        parts.append((float(fixed), float(nv.norm())))
        for x in op.args:
            if last[x] == op.out and x not in keep:
                rnd_n[x] = None
    return rng, err, drift, corr, parts
