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

Longer horizons, three ways:

* :func:`integrate_planned` with :class:`BootstrapRefresh` (non-interactive, stated bound):
  planned segments that each fit the levels left, the states bootstrapped by OpenFHE (FIXEDMANUAL
  context, 55/60-bit moduli, iterative bootstrapping) on the compute node between them; each
  segment's bound takes the incoming states' bound as input error, plus a bootstrap bound
  calibrated by the key holder at key generation (:func:`bootstrap_context`).
* :func:`integrate_bootstrapped` (non-interactive, no planner): runs the user's ``rhs`` directly
  on OpenFHE ciphertexts of a FLEXIBLEAUTO bootstrapping context and bootstraps the states when
  the levels left would not hold another step; measured error only, no stated bound.
* :func:`integrate_planned` / :func:`integrate_encrypted` with :func:`key_holder_refresh`
  (interactive): the key holder decrypts, checks the declared state ranges and re-encrypts the
  states between segments (the compute node never sees plaintext).

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


@dataclass
class PlannedIntegration:
    """Result of :func:`integrate_planned`.

    ``states``: the state ciphertexts at the end; ``segments``: the states after each segment;
    ``programs``: the planned program of each segment; ``bounds``: per segment, the stated bound
    on |decrypted state - plaintext scheme| (each segment's program bound with the incoming
    states' bounds propagated through it as input errors, plus what each refresh adds);
    ``refresh_levels``: the level at which each segment's states arrived.
    """

    states: dict[str, Any]
    segments: list[dict[str, Any]]
    programs: list
    bounds: list[dict[str, float]]
    refresh_levels: list[int]

    @property
    def bound(self) -> dict[str, float]:
        """Stated bound of the final states."""
        return dict(self.bounds[-1])


def integrate_planned(model: ODEModel, executor, inputs: Mapping[str, Any], *, h: float, steps: int,
                      refresh: Callable[[Any, str], Any], segment_steps: int | None = None, method: str = "rk4",
                      order: int = 4, slots: int, params=None) -> PlannedIntegration:
    """Integrate ``steps`` steps as planned segments, refreshing the states between segments, with
    a stated error bound for every segment.

    ``refresh(ct, state_name)`` returns a refreshed state ciphertext: :func:`key_holder_refresh`
    (interactive) or a :class:`BootstrapRefresh` (non-interactive: OpenFHE CKKS bootstrapping on
    the compute node, so the horizon is not limited by the context's depth). A refresh may say
    how much error it adds (``refresh.added_error(name)``) and how many steps fit after it
    (``refresh.max_segment_steps(model, level, h=..., method=..., order=...)``, used when
    ``segment_steps`` is None). The bound of segment k is the program's bound with each state's
    incoming error (the bound after segment k-1 plus the refresh's) entered as an input error
    (:meth:`medtwin.program.ir.Program.error_bound`), under the executor's noise model shifted
    to the level at which the states arrive. Valid while every state stays in its declared
    range (which the key holder checks on decryption, :meth:`ODEModel.check_trajectory`).

    Raises:
        ValidationError: bad step counts, or no segment fits after a refresh.
        ProgramError: a segment does not fit the context.
    """
    if not (h > 0 and steps >= 1):
        raise ValidationError("integration needs h > 0 and steps >= 1")
    if segment_steps is not None and segment_steps < 1:
        raise ValidationError("segment_steps must be at least 1")
    state = {s: inputs[s] for s in model.states}
    par = {k: inputs[k] for k in model.params}
    err_in = {s: 0.0 for s in model.states}
    done = 0
    res = PlannedIntegration({}, [], [], [], [])
    cache: dict[int, Any] = {}
    while done < steps:
        level = max(_level_of(ct) for ct in state.values())
        if segment_steps is not None:
            k = segment_steps
        elif hasattr(refresh, "max_segment_steps"):
            k = refresh.max_segment_steps(model, level, h=h, method=method, order=order)
        else:
            raise ValidationError("give segment_steps (the refresh cannot size the segments)")
        if k < 1:
            raise ValidationError(f"not one {method} step fits the levels left after a refresh")
        k = min(k, steps - done)
        if k not in cache:
            cache[k] = model.build_program(slots, h=h, steps=k, method=method, order=order, params=params)
        prog = cache[k]
        out = executor.run(prog, state | par)
        state = {s: out[f"{s}@{k}"] for s in model.states}
        noise = executor.noise_model(level) if level else executor.noise_model()
        bound = {s: float(prog.error_bound(f"{s}@{k}", noise=noise, input_errors={x: e for x, e in err_in.items() if e}))
                 for s in model.states}
        done += k
        res.segments.append(dict(state))
        res.programs.append(prog)
        res.bounds.append(bound)
        res.refresh_levels.append(level)
        if done < steps:
            add = getattr(refresh, "added_error", None)
            err_in = {s: bound[s] + (float(add(s)) if add is not None else 0.0) for s in model.states}
            state = {s: refresh(ct, s) for s, ct in state.items()}
    res.states = state
    return res


def _level_of(ct) -> int:
    get = getattr(ct, "GetLevel", None)
    return int(get()) if get is not None else int(getattr(ct, "level", 0))


class BootstrapRefresh:
    """Non-interactive refresh for :func:`integrate_planned`: the compute node bootstraps each
    state with OpenFHE (FIXEDMANUAL context from ``bootstrap_context(..., scaling="fixedmanual",
    calibration_trials=...)``), so no key holder is involved between segments.

    Per state: map its declared range [lo, hi] onto [-1, 1] (one level), bootstrap
    (:meth:`BootstrapContext.raw_bootstrap`), map back (one level). Error added per refresh
    (:meth:`added_error`): half the range times the calibrated bootstrap bound, plus the two
    rescales' drift and noise (from the context's noise model, 8 sigma). A state that left its
    range would be refreshed wrongly; the bound assumes it did not (checked by the key holder on
    the decrypted trajectory).

    Raises (constructor):
        ValidationError: a FLEXIBLEAUTO context, or one without a calibrated ``boot_bound``.
    """

    def __init__(self, bctx: BootstrapContext, model: ODEModel):
        if bctx.scaling != "fixedmanual":
            raise ValidationError("planned programs need a FIXEDMANUAL bootstrapping context")
        if bctx.boot_bound is None:
            raise ValidationError("the bootstrapping context has no calibrated error bound (calibration_trials=0)")
        from medtwin.program.bounds import NoiseModel

        self.bctx = bctx
        self.model = model
        self.noise = NoiseModel.from_context(bctx.cc)
        self.count = 0

    @property
    def plan_params(self):
        """Plan parameters for the segments: the context's scale and first prime, with one level of
        headroom above the last (a segment ends at least one level before it: the mapping onto
        [-1, 1] spends that level)."""
        from medtwin.program.ir import PlanParams

        b = self.bctx
        return PlanParams(b.scaling_mod_size, b.first_mod_size + b.scaling_mod_size, int(b.cc.GetRingDimension()))

    def max_segment_steps(self, model: ODEModel, level: int, *, h: float, method: str = "rk4", order: int = 4) -> int:
        """Steps that fit from ``level`` while keeping one level for the mapping before a bootstrap."""
        return model.max_steps(self.bctx.depth - 1 - int(level) - 1, h=h, method=method, order=order)

    def added_error(self, name: str) -> float:
        lo, hi = self.model.state_ranges[name]
        mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        nm = self.noise
        slack = 2.0 * nm.rescale_rel * (abs(mid) + half) + nm.k_sigma * (nm.rescale_round + nm.encode) * (1.0 + half)
        return half * float(self.bctx.boot_bound) + slack

    def __call__(self, ct, name: str):
        cc = self.bctx.cc
        lo, hi = self.model.state_ranges[name]
        mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        x = cc.Rescale(cc.EvalMult(cc.EvalAdd(ct, -mid), 1.0 / half))
        y = self.bctx.raw_bootstrap(x)
        self.count += 1
        return cc.EvalAdd(cc.Rescale(cc.EvalMult(y, half)), mid)


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
    """An OpenFHE CKKS context with bootstrapping keys (uniform ternary secret).

    Build with :func:`bootstrap_context`. ``depth`` is the total multiplicative depth,
    ``boot_depth`` what one bootstrap consumes (the rest is left for computation). ``scaling``
    is ``"flexibleauto"`` (for :func:`integrate_bootstrapped`) or ``"fixedmanual"`` (for planned
    programs with :class:`BootstrapRefresh`); ``iterations`` 2 runs OpenFHE's iterative
    (meta-) bootstrapping. ``boot_bound``: the calibrated bound on one bootstrap's error for
    values in [-1, 1] (None when not calibrated, see :func:`bootstrap_context`).
    """

    cc: Any
    keys: Any
    slots: int
    depth: int
    boot_depth: int
    insecure: bool
    scaling: str = "flexibleauto"
    iterations: int = 1
    boot_bound: float | None = None
    calibration: dict = field(default_factory=dict)
    scaling_mod_size: int = 50
    first_mod_size: int = 60

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

    def raw_bootstrap(self, ct) -> Any:
        """FIXEDMANUAL: bootstrap a rescaled ciphertext of values in [-1, 1]; returns it rescaled
        (scale degree 1) at :attr:`out_level`. The input is first level-reduced to the chain's
        last usable level: OpenFHE returns a ciphertext that still has more levels than a
        bootstrap leaves unchanged, so without this a shallow state would silently not be
        refreshed."""
        cc = self.cc
        if ct.GetNoiseScaleDeg() != 1:
            raise ValidationError("bootstrap input must be rescaled (scale degree 1)")
        last = self.depth - 1
        lvl = int(ct.GetLevel())
        if lvl > last:
            raise ValidationError(f"the ciphertext is at level {lvl}, past the last level {last} a bootstrap can start from")
        if lvl < last:
            ct = cc.LevelReduce(ct, None, last - lvl)
        out = cc.EvalBootstrap(ct, self.iterations, 17 if self.iterations > 1 else 0)
        if out.GetNoiseScaleDeg() == 2:
            out = cc.Rescale(out)
        return out

    @property
    def out_level(self) -> int:
        """Level of a ciphertext after :meth:`raw_bootstrap` (FIXEDMANUAL): the bootstrap's depth
        plus one for each extra iteration (measured: 18 + 1 at level budget (2, 2), 2 iterations)."""
        return self.boot_depth + (self.iterations - 1)


def bootstrap_context(slots: int, *, levels_after: int = 12, level_budget: tuple[int, int] = (2, 2),
                      ring_dim: int | None = 1 << 12, scaling_mod_size: int = 50, first_mod_size: int = 60,
                      allow_insecure: bool = False, scaling: str = "flexibleauto", iterations: int = 1,
                      calibration_trials: int = 0, safety: float = 16.0, seed: int = 0) -> BootstrapContext:
    """A bootstrapping-capable OpenFHE CKKS context (HYBRID, uniform ternary secret).

    ``scaling="flexibleauto"`` serves :func:`integrate_bootstrapped` (OpenFHE rescales by itself);
    ``scaling="fixedmanual"`` serves planned programs (:func:`integrate_planned` with
    :class:`BootstrapRefresh`), which do their own rescaling. For planned programs use 55-bit
    scaling primes under the 60-bit first prime and ``iterations=2``: measured at N = 2^12 (test
    ring, 8 slots, 40 bootstraps of uniform [-1, 1] values and of constants) the largest slot error
    of one bootstrap has median 2.7e-9, 90th percentile 9.3e-8 and maximum 1.6e-7, against 5e-5
    with one iteration and 3.6e-4 (two iterations) / 4e-3 (one) at 50-bit scaling. The
    distribution has two groups: about four bootstraps in five err near 1e-9 and the rest near
    1e-7 (OpenFHE's encryption randomness is not seeded, so which group a bootstrap falls in is
    chance).

    ``calibration_trials`` > 0 (key holder only: it decrypts) measures the bootstrap error on that
    many encryptions of uniform random values in [-1, 1] (fixed ``seed``, no patient data) and
    sets ``boot_bound = safety x`` the largest error seen, the error bound that
    :class:`BootstrapRefresh` adds per refresh. It is a calibrated bound, not a proven one:
    OpenFHE's bootstrapping (approximate modular reduction) has no closed-form error bound. Use
    16 trials or more: with two, both fall in the lower group about two times in three and the
    bound comes out a hundred times too small. The default margin (16x) keeps the bound above the
    upper group even in the rare calibration (about 3% at 16 trials) that sees none of it.

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
    techniques = {"flexibleauto": o.ScalingTechnique.FLEXIBLEAUTO, "fixedmanual": o.ScalingTechnique.FIXEDMANUAL}
    if scaling not in techniques:
        raise ValidationError(f"scaling must be one of {sorted(techniques)}")
    if int(iterations) not in (1, 2):
        raise ValidationError("bootstrapping iterations must be 1 or 2")
    if not (scaling_mod_size < first_mod_size <= 60):
        raise ValidationError("the first prime must be wider than the scaling primes and at most 60 bits")
    p.SetScalingTechnique(techniques[scaling])
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
    b = BootstrapContext(cc, keys, slots, depth, boot, insecure, scaling, int(iterations),
                         scaling_mod_size=int(scaling_mod_size), first_mod_size=int(first_mod_size))
    if calibration_trials > 0:
        if scaling != "fixedmanual":
            raise ValidationError("calibration measures the planned (FIXEDMANUAL) bootstrap; use scaling='fixedmanual'")
        rng = np.random.default_rng(seed)
        worst = 0.0
        for _ in range(int(calibration_trials)):
            x = rng.uniform(-1.0, 1.0, slots)
            y = b.decrypt(b.raw_bootstrap(b.encrypt(x)))
            worst = max(worst, float(np.max(np.abs(y - x))))
        b.boot_bound = float(safety) * max(worst, 2.0 ** -int(scaling_mod_size))
        b.calibration = {"trials": int(calibration_trials), "slots": int(slots), "max_error": worst,
                         "safety": float(safety), "seed": int(seed), "iterations": int(iterations)}
    return b


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
