"""Fixed-step integration of user-defined ODE models with polynomial right-hand sides, in plaintext
and under encryption, from the same Python code.

A model is a function ``rhs(y, p) -> list`` giving dy/dt for the state list ``y`` and a dict of
parameters ``p``, written with ``+``, ``-``, ``*`` and numbers only (a polynomial). The same
function runs on numpy arrays (the plaintext reference) and on the program builder's encrypted
``Expr`` values (the FHE program), for example logistic growth with a drug effect::

    def rhs(y, p):
        (n,) = y
        return [p["r"] * n * (1.0 - n * (1.0 / 100.0)) - p["kill"] * n]

    model = ODEModel(rhs, states=("n",), state_ranges={"n": (0.0, 100.0)},
                     params={"r": (0.05, 0.5), "kill": (0.0, 0.3)})
    ref = model.reference({"n": n0, "r": r, "kill": k}, h=0.5, steps=20, method="rk4")
    prog = model.build_program(slots, h=0.5, steps=20, method="rk4", record=[5, 10, 20])

Methods (one step of size h; Hairer, Norsett and Wanner, *Solving Ordinary Differential
Equations I*, 2nd ed., Springer 1993, ch. II.1 and I.8):

* ``euler``: y + h f(y).
* ``rk4``: the classical Runge-Kutta method of order 4 (Kutta 1901).
* ``taylor``: the Taylor series of the solution to ``order``, its coefficients computed by
  automatic differentiation in truncated power-series arithmetic (y_(k+1) = [f(y)]_k / (k + 1),
  Moore 1966): for a polynomial f only additions and Cauchy products are needed, so it runs on
  encrypted values unchanged.

Depth per step: d_f the multiplicative depth of rhs (products of encrypted values; a product
with a non-integer constant also costs one level under FIXEDMANUAL scaling). Euler costs d_f + 1
levels per step, RK4 about 4 (d_f + 1), Taylor of order q about q (d_f + 1). The exact value for
a model is measured by :meth:`ODEModel.depth_per_step` (a program of one step and of two steps,
planned and compared), and the horizon one context allows by :meth:`ODEModel.max_steps`.

Longer horizons, two ways:

* :func:`integrate_bootstrapped` (non-interactive): runs the user's ``rhs`` directly on OpenFHE
  ciphertexts of a bootstrapping context (:func:`bootstrap_context`: FLEXIBLEAUTO, uniform
  ternary secret, 2^50 scaling, 60-bit first prime) and bootstraps the states when the levels
  left would not hold another step. Measured at N = 2^12 (test ring), level budget (2, 2): a
  bootstrap consumes 18 levels and takes 7-20 s on the busy 2-core machine, error about 1.5e-4 of
  the state range. This path bypasses the planner, so it has no stated bound (measured against
  the plaintext scheme in a ``slow`` test). The planned path cannot bootstrap yet because the
  program executors accept only level-0 inputs and the presets use 2^40/49-bit moduli.
* :func:`integrate_encrypted` (planned programs): runs the horizon in segments that each fit the
  context depth and refreshes the state ciphertexts between segments through a ``refresh``
  callable (ciphertext -> fresh level-0 ciphertext), e.g. :func:`key_holder_refresh`, the
  interactive refresh (the key holder decrypts, checks the declared state ranges, re-encrypts;
  the compute node never sees plaintext).

Bounds: ``program.error_bound(name)`` bounds |encrypted - plaintext scheme| (CKKS noise and
rounding through the steps), valid while every state stays inside ``state_ranges``; the
interval analysis would otherwise blow up over steps, so each step's states carry those ranges
as *assumptions* which the key holder checks on the decrypted trajectory
(:meth:`ODEModel.check_trajectory`). The discretisation error of the scheme against the exact
ODE is a plaintext matter: :meth:`ODEModel.reference` is checked against
``scipy.integrate.solve_ivp`` in the tests, and step-doubling estimates it for a given h.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from medtwin.errors import RangeError, ValidationError
from medtwin.models.two_compartment import check_ranges

METHODS = ("euler", "rk4", "taylor")


class Series:
    """Truncated power series sum_k c_k s^k with coefficients of any ring type (float, ndarray, Expr)."""

    __array_ufunc__ = None

    def __init__(self, coeffs: Sequence[Any], order: int):
        self.c = list(coeffs)[: order + 1]
        self.order = order

    def _coerce(self, o) -> Series:
        return o if isinstance(o, Series) else Series([o], self.order)

    def __add__(self, o):
        o = self._coerce(o)
        n = max(len(self.c), len(o.c))
        out = []
        for k in range(n):
            a = self.c[k] if k < len(self.c) else None
            b = o.c[k] if k < len(o.c) else None
            out.append(b if a is None else a if b is None else a + b)
        return Series(out, self.order)

    __radd__ = __add__

    def __neg__(self):
        return Series([-a for a in self.c], self.order)

    def __sub__(self, o):
        return self + (-self._coerce(o))

    def __rsub__(self, o):
        return self._coerce(o) + (-self)

    def __mul__(self, o):
        if not isinstance(o, Series):
            return Series([a * o for a in self.c], self.order)
        out = []
        for k in range(min(self.order, len(self.c) + len(o.c) - 2) + 1):
            acc = None
            for i in range(max(0, k - len(o.c) + 1), min(k, len(self.c) - 1) + 1):
                t = self.c[i] * o.c[k - i]
                acc = t if acc is None else acc + t
            out.append(acc)
        return Series(out, self.order)

    def __rmul__(self, o):
        return self * o


def _axpy(y, a, k):
    return [yi + a * ki for yi, ki in zip(y, k)]


def euler_step(rhs: Callable, y: list, p: Mapping, h: float) -> list:
    """y + h f(y)."""
    return _axpy(y, h, rhs(y, p))


def rk4_step(rhs: Callable, y: list, p: Mapping, h: float) -> list:
    """Classical fourth-order Runge-Kutta step."""
    k1 = rhs(y, p)
    k2 = rhs(_axpy(y, h / 2.0, k1), p)
    k3 = rhs(_axpy(y, h / 2.0, k2), p)
    k4 = rhs(_axpy(y, h, k3), p)
    return [yi + (h / 6.0) * (a + b + b + c + c + d) for yi, a, b, c, d in zip(y, k1, k2, k3, k4)]


def taylor_step(rhs: Callable, y: list, p: Mapping, h: float, order: int = 4) -> list:
    """Taylor step of ``order`` by power-series automatic differentiation (exact for polynomial f)."""
    if order < 1:
        raise ValidationError("Taylor order must be at least 1")
    ser = [Series([yi], order) for yi in y]
    for k in range(order):
        f = rhs(ser, p)
        for i, fi in enumerate(f):
            fi = fi if isinstance(fi, Series) else Series([fi], order)
            ck = fi.c[k] if k < len(fi.c) else None
            if ck is not None:
                ser[i] = Series(ser[i].c + [ck * (1.0 / (k + 1))], order)
            else:
                ser[i] = Series(ser[i].c + [0.0 * ser[i].c[0]], order)
    out = []
    for s in ser:
        acc = s.c[0]
        for k in range(1, len(s.c)):
            acc = acc + s.c[k] * (h ** k)
        out.append(acc)
    return out


def _step(method: str, order: int):
    if method == "euler":
        return euler_step
    if method == "rk4":
        return rk4_step
    if method == "taylor":
        return lambda f, y, p, h: taylor_step(f, y, p, h, order)
    raise ValidationError(f"unknown method {method!r}; choose one of {METHODS}")


@dataclass(frozen=True)
class ODEModel:
    """A user-defined polynomial ODE model with declared state and parameter ranges."""

    rhs: Callable[[list, Mapping[str, Any]], list]
    states: tuple[str, ...]
    state_ranges: Mapping[str, tuple[float, float]]
    params: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    name: str = "user-ode"
    citation: str = "user-defined model"

    def __post_init__(self) -> None:
        for s in self.states:
            if s not in self.state_ranges:
                raise ValidationError(f"model {self.name}: state {s!r} has no declared range")

    # -- plaintext reference -------------------------------------------------------------------
    def validate(self, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Initial states and parameters as arrays, checked against their ranges.

        Raises:
            ValidationError: a value is missing; RangeError: outside its range (names the field).
        """
        ranges = dict(self.state_ranges) | dict(self.params)
        return check_ranges(self.name, ranges, values, tuple(self.states) + tuple(self.params))

    def reference(self, values: Mapping[str, Any], *, h: float, steps: int, method: str = "rk4",
                  order: int = 4) -> np.ndarray:
        """Trajectory of the fixed-step scheme in float64: array (steps + 1, n_states, patients).

        Raises:
            ValidationError, RangeError: as :meth:`validate`; a bad method or step.
        """
        if not (h > 0 and steps >= 1):
            raise ValidationError("integration needs h > 0 and steps >= 1")
        v = self.validate(values)
        step = _step(method, order)
        y = [v[s] for s in self.states]
        p = {k: v[k] for k in self.params}
        out = [np.array(y)]
        for _ in range(int(steps)):
            y = step(self.rhs, y, p, h)
            out.append(np.array(y))
        return np.stack(out)

    def check_trajectory(self, traj: Mapping[str, np.ndarray]) -> None:
        """Refuse a decrypted trajectory that left the declared state ranges (the assumption the
        program's error bound rests on).

        Raises:
            RangeError: a state left its range (names the state, never a value).
        """
        for s in self.states:
            lo, hi = self.state_ranges[s]
            v = np.asarray(traj[s], dtype=np.float64)
            if np.any(v < lo) or np.any(v > hi):
                raise RangeError(f"model {self.name}: state {s} left its declared range [{lo:g}, {hi:g}]; "
                                 "the encrypted result's error bound does not hold")

    # -- FHE program ---------------------------------------------------------------------------
    def build_program(self, slots: int, *, h: float, steps: int, method: str = "rk4", order: int = 4,
                      record: Sequence[int] | None = None, params=None, name: str | None = None):
        """FHE program: encrypted initial states (inputs named as the states) and parameters per
        slot; outputs ``<state>@<step>`` for every recorded step (default: the last).

        Raises:
            ValidationError: bad method, step or record list.
            ProgramError: the plan does not fit ``params`` (depth: see :meth:`max_steps`).
        """
        from medtwin.program.builder import ProgramBuilder

        if not (h > 0 and steps >= 1):
            raise ValidationError("integration needs h > 0 and steps >= 1")
        rec = sorted(set(record or [steps]))
        if rec[0] < 1 or rec[-1] > steps:
            raise ValidationError("record steps must lie in 1..steps")
        step = _step(method, order)
        b = ProgramBuilder(name=name or f"{self.name}-{method}", slots=slots)
        y = [b.input(s, range=self.state_ranges[s]) for s in self.states]
        p = {k: b.input(k, range=r) for k, r in self.params.items()}
        for n in range(1, int(steps) + 1):
            y = step(self.rhs, y, p, h)
            y = [b.assume_range(v, self._hint(v, s)) for v, s in zip(y, self.states)]
            if n in rec:
                for v, s in zip(y, self.states):
                    b.output(f"{s}@{n}", v)
        return b.build(params)

    def _hint(self, v, s: str) -> tuple[float, float]:
        lo, hi = self.state_ranges[s]
        vl, vh = v.range
        return max(lo, vl), min(hi, vh)

    def depth_per_step(self, *, h: float, method: str = "rk4", order: int = 4, slots: int = 8) -> int:
        """Levels one step consumes (planned programs of two steps and of one step, compared)."""
        d1 = self.build_program(slots, h=h, steps=1, method=method, order=order).depth
        d2 = self.build_program(slots, h=h, steps=2, method=method, order=order).depth
        return d2 - d1

    def max_steps(self, depth: int, *, h: float, method: str = "rk4", order: int = 4) -> int:
        """Most steps a context of multiplicative ``depth`` allows without bootstrapping."""
        d1 = self.build_program(8, h=h, steps=1, method=method, order=order).depth
        per = self.depth_per_step(h=h, method=method, order=order)
        if d1 > depth:
            return 0
        return 1 + (depth - d1) // max(per, 1)


def key_holder_refresh(ctx, model: ODEModel | None = None, slots: int | None = None):
    """A ``refresh`` for :func:`integrate_encrypted` run by the key holder: decrypt, check the
    state's declared range on the first ``slots`` slots (when ``model`` is given), re-encrypt at
    level 0. The compute node hands over ciphertexts and gets ciphertexts back.

    The returned callable ``refresh(ct, state_name)`` raises RangeError when the state left its
    declared range (the encrypted result's bound would no longer hold).
    """
    def refresh(ct, name: str):
        v = ctx.decrypt(ct)
        if model is not None:
            lo, hi = model.state_ranges[name]
            used = v[:slots] if slots else v
            if np.any(used < lo) or np.any(used > hi):
                raise RangeError(f"model {model.name}: state {name} left its declared range [{lo:g}, {hi:g}]")
        return ctx.encrypt(v)
    return refresh


def integrate_encrypted(model: ODEModel, executor, inputs: Mapping[str, Any], *, h: float, steps: int,
                        segment_steps: int, refresh: Callable[[Any, str], Any], method: str = "rk4", order: int = 4,
                        slots: int, params=None) -> tuple[list[dict[str, Any]], list]:
    """Integrate ``steps`` steps in segments of ``segment_steps`` (each one planned program),
    refreshing the state ciphertexts between segments with ``refresh(ct, state_name)``.

    ``inputs`` holds the encrypted initial states and parameters (level-0 ciphertexts; the
    parameter ciphertexts are reused by every segment). Returns the states after every segment
    (dicts state -> ciphertext) and the segment programs (for their error bounds; the bound of the
    whole run adds the segment bounds propagated through the later segments, which the plaintext
    reference check in the tests measures).

    Raises:
        ValidationError: bad step counts; ProgramError: a segment does not fit the context.
    """
    if not (steps >= 1 and segment_steps >= 1):
        raise ValidationError("steps and segment_steps must be at least 1")
    state = {s: inputs[s] for s in model.states}
    par = {k: inputs[k] for k in model.params}
    done, outs, progs = 0, [], []
    cache: dict[int, Any] = {}
    while done < steps:
        k = min(segment_steps, steps - done)
        if k not in cache:
            cache[k] = model.build_program(slots, h=h, steps=k, method=method, order=order, params=params)
        prog = cache[k]
        res = executor.run(prog, state | par)
        state = {s: res[f"{s}@{k}"] for s in model.states}
        done += k
        outs.append(dict(state))
        progs.append(prog)
        if done < steps:
            state = {s: refresh(ct, s) for s, ct in state.items()}
    return outs, progs


# ------------------------------------------------------------------------------------------------
# Non-interactive horizons: OpenFHE CKKS bootstrapping (direct OpenFHE path, no planner)
# ------------------------------------------------------------------------------------------------

class _Enc:
    """An OpenFHE ciphertext with ``+ - *`` (FLEXIBLEAUTO rescales and aligns levels itself), so
    the user's ``rhs`` runs on it unchanged."""

    __array_ufunc__ = None

    def __init__(self, cc, ct):
        self.cc = cc
        self.ct = ct

    def _other(self, o):
        return o.ct if isinstance(o, _Enc) else float(o)

    def __add__(self, o):
        return _Enc(self.cc, self.cc.EvalAdd(self.ct, self._other(o)))

    __radd__ = __add__

    def __sub__(self, o):
        return _Enc(self.cc, self.cc.EvalSub(self.ct, self._other(o)))

    def __rsub__(self, o):
        return _Enc(self.cc, self.cc.EvalAdd(self.cc.EvalNegate(self.ct), self._other(o)))

    def __mul__(self, o):
        return _Enc(self.cc, self.cc.EvalMult(self.ct, self._other(o)))

    __rmul__ = __mul__

    def __neg__(self):
        return _Enc(self.cc, self.cc.EvalNegate(self.ct))

    @property
    def level(self) -> int:
        return int(self.ct.GetLevel()) + max(int(self.ct.GetNoiseScaleDeg()) - 1, 0)


@dataclass
class BootstrapContext:
    """An OpenFHE CKKS context with bootstrapping keys (FLEXIBLEAUTO, uniform ternary secret).

    Build with :func:`bootstrap_context`. ``depth`` is the total multiplicative depth,
    ``boot_depth`` what one bootstrap consumes (the rest is left for computation).
    """

    cc: Any
    keys: Any
    slots: int
    depth: int
    boot_depth: int
    insecure: bool

    def encrypt(self, values) -> Any:
        v = np.zeros(self.slots)
        a = np.asarray(values, dtype=np.float64).ravel()
        if a.size > self.slots:
            raise ValidationError(f"{a.size} values do not fit {self.slots} slots")
        v[: a.size] = a
        pt = self.cc.MakeCKKSPackedPlaintext(v.tolist(), 1, 0, None, self.slots)
        return self.cc.Encrypt(self.keys.publicKey, pt)

    def decrypt(self, ct, n: int | None = None) -> np.ndarray:
        pt = self.cc.Decrypt(ct, self.keys.secretKey)
        pt.SetLength(self.slots)
        v = np.asarray(pt.GetRealPackedValue(), dtype=np.float64)
        return v if n is None else v[:n]


def bootstrap_context(slots: int, *, levels_after: int = 12, level_budget: tuple[int, int] = (2, 2),
                      ring_dim: int | None = 1 << 12, scaling_mod_size: int = 50, first_mod_size: int = 60,
                      allow_insecure: bool = False) -> BootstrapContext:
    """A bootstrapping-capable OpenFHE CKKS context (FLEXIBLEAUTO, HYBRID, uniform ternary secret).

    ``ring_dim`` set means no security level (HEStd_NotSet; a test ring), which is refused unless
    ``allow_insecure`` or ``MEDTWIN_ALLOW_INSECURE=1``; ``ring_dim=None`` uses HEStd_128_classic and
    OpenFHE's ring choice (2^16 or more: minutes per bootstrap on this machine's 2 cores).
    Measured at N = 2^12, level budget (2, 2): a bootstrap consumes 18 levels and takes 7-19 s
    (busy 2-core machine) with an error of about 2e-4 on values in [-1, 1].

    Raises:
        SecurityPolicyError: an insecure ring without permission.
        ValidationError: slots not a power of two or above N/2.
    """
    import openfhe as o

    from medtwin.errors import SecurityPolicyError
    from medtwin.he.params import insecure_allowed

    insecure = ring_dim is not None
    if insecure and not (allow_insecure or insecure_allowed()):
        raise SecurityPolicyError("a bootstrapping context with a fixed test ring has no security level; "
                                  "allowed only in tests (allow_insecure=True or MEDTWIN_ALLOW_INSECURE=1)")
    if slots < 1 or slots & (slots - 1) or (ring_dim is not None and slots > ring_dim // 2):
        raise ValidationError("slots must be a power of two no larger than N/2")
    p = o.CCParamsCKKSRNS()
    p.SetSecretKeyDist(o.SecretKeyDist.UNIFORM_TERNARY)
    p.SetSecurityLevel(o.SecurityLevel.HEStd_NotSet if insecure else o.SecurityLevel.HEStd_128_classic)
    if ring_dim is not None:
        p.SetRingDim(int(ring_dim))
    p.SetScalingTechnique(o.ScalingTechnique.FLEXIBLEAUTO)
    p.SetScalingModSize(int(scaling_mod_size))
    p.SetFirstModSize(int(first_mod_size))
    p.SetKeySwitchTechnique(o.KeySwitchTechnique.HYBRID)
    lb = [int(level_budget[0]), int(level_budget[1])]
    boot = int(o.CryptoContext.GetBootstrapDepth(lb, o.SecretKeyDist.UNIFORM_TERNARY))
    depth = int(levels_after) + boot
    p.SetMultiplicativeDepth(depth)
    cc = o.GenCryptoContext(p)
    for f in (o.PKESchemeFeature.PKE, o.PKESchemeFeature.KEYSWITCH, o.PKESchemeFeature.LEVELEDSHE,
              o.PKESchemeFeature.ADVANCEDSHE, o.PKESchemeFeature.FHE):
        cc.Enable(f)
    cc.EvalBootstrapSetup(lb, [0, 0], slots)
    keys = cc.KeyGen()
    cc.EvalMultKeyGen(keys.secretKey)
    cc.EvalBootstrapKeyGen(keys.secretKey, slots)
    return BootstrapContext(cc, keys, slots, depth, boot, insecure)


def integrate_bootstrapped(model: ODEModel, bctx: BootstrapContext, inputs: Mapping[str, Any], *, h: float,
                           steps: int, method: str = "rk4", order: int = 4, on_bootstrap=None):
    """Integrate on ciphertexts of ``bctx`` for any number of steps, bootstrapping the states when
    the levels left would not hold another step (non-interactive; no key holder involved).

    ``inputs``: encrypted initial states and parameters (ciphertexts of ``bctx``). Before a
    bootstrap each state is mapped from its declared range onto [-1, 1] (the input range CKKS
    bootstrapping approximates well) and mapped back after it. Returns the state ciphertexts after
    ``steps`` steps and the list of steps after which a bootstrap ran. This path runs the ops
    directly (OpenFHE FLEXIBLEAUTO) rather than a planned program, so it has no stated error
    bound: its error is the bootstrap error (about 2e-4 of the state range per bootstrap at
    N = 2^12) plus noise, checked against the plaintext scheme in the tests.

    Raises:
        ValidationError: bad step counts, or a step needs more levels than a bootstrap leaves.
    """
    if not (h > 0 and steps >= 1):
        raise ValidationError("integration needs h > 0 and steps >= 1")
    step = _step(method, order)
    cc = bctx.cc
    y = [_Enc(cc, inputs[s]) for s in model.states]
    p = {k: _Enc(cc, inputs[k]) for k in model.params}
    boots: list[int] = []
    per_step = None
    for n in range(1, int(steps) + 1):
        before = max(v.level for v in y)
        if per_step is not None and before + per_step + 2 > bctx.depth - 1:
            y = [_bootstrap(cc, v, model.state_ranges[s]) for v, s in zip(y, model.states)]
            boots.append(n - 1)
            if on_bootstrap is not None:
                on_bootstrap(n - 1)
            before = max(v.level for v in y)
        y = step(model.rhs, y, p, h)
        used = max(v.level for v in y) - before
        per_step = used if per_step is None else max(per_step, used)
        if per_step + 2 > bctx.depth - bctx.boot_depth:
            raise ValidationError(f"one {method} step needs {per_step} levels; a bootstrap leaves "
                                  f"{bctx.depth - bctx.boot_depth} (raise levels_after)")
    return {s: v.ct for s, v in zip(model.states, y)}, boots


def _bootstrap(cc, v: _Enc, rng: tuple[float, float]) -> _Enc:
    lo, hi = rng
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    x = (v - mid) * (1.0 / half)
    b = _Enc(cc, cc.EvalBootstrap(x.ct))
    return b * half + mid
