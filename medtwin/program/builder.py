"""The builder API model authors write FHE programs with.

Example::

    b = ProgramBuilder(name="pk_oral", slots=n)
    x = b.input("weight", range=(40.0, 150.0))        # encrypted, declared range of every slot
    t = b.plain(np.arange(n) / n)                      # plaintext vector known to the compute node
    y = (x * 0.5 + t) * x - 3.0                        # +, -, * with Expr, float, ndarray/Plain
    z = b.apply(np.exp, -y / 100.0, domain=(-200.0, 0.0), tol=1e-6)
    s = b.sum_blocks(z, block=8)                       # block sums, in the first slot of each block
    b.output("z", z)
    prog = b.build()                                   # planned Program
    print(prog.report())

Handles: :class:`Expr` (an encrypted value) and :class:`Plain` (a plaintext vector). Arithmetic
between them and Python floats / numpy arrays records *logical* operations; ``build()`` hands
them to the planner (:mod:`medtwin.program.planner`), which inserts relinearisations, rescales and
level alignment, checks ranges and headroom, and computes error bounds.

Every Expr knows its value range at once (``expr.range``), by interval analysis from the declared
input ranges, so authors can size the domains of later approximations from it.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from medtwin.errors import ProgramError
from medtwin.program import bounds as B
from medtwin.program import chebyshev as cheb

Number = (int, float, np.integer, np.floating)


@dataclass
class Node:
    """A logical (unplanned) operation recorded by the builder."""

    id: int
    kind: str
    args: tuple[int, ...] = ()
    const: float | None = None
    plain: int | None = None
    rot: int | None = None
    name: str | None = None
    region: int | None = None


@dataclass
class LogicalRegion:
    label: str
    method: str
    domain: tuple[float, float]
    degree: int
    input: int
    output: int = -1
    approx_error: float = 0.0
    lipschitz: float = 0.0
    out_range: tuple[float, float] = (0.0, 0.0)
    detail: str = ""
    sens: dict[int, float] = field(default_factory=dict)  # node -> max |d output / d node| on the grid


@dataclass
class LogicalGraph:
    """What the builder hands to the planner."""

    name: str
    slots: int
    nodes: list[Node]
    plaintexts: list[np.ndarray]
    inputs: list[tuple[str, tuple[float, float]]]
    outputs: list[tuple[str, int, float | None]]
    regions: list[LogicalRegion]
    hints: dict[int, tuple[float, float, str]] = field(default_factory=dict)


class Plain:
    """A plaintext vector of ``slots`` values (known to the compute node, not encrypted)."""

    __array_ufunc__ = None  # make ndarray <op> Plain defer to Plain

    def __init__(self, builder: ProgramBuilder, values: np.ndarray):
        self.builder = builder
        self.values = values

    @property
    def range(self) -> tuple[float, float]:
        return B.plain_range(self.values)

    def _v(self, o):
        if isinstance(o, Plain):
            return o.values
        if isinstance(o, np.ndarray) or isinstance(o, Number):
            return self.builder._check_vector(o) if isinstance(o, np.ndarray) else float(o)
        return None

    def _op(self, o, f):
        v = self._v(o)
        if v is None:
            return NotImplemented
        return Plain(self.builder, np.asarray(f(self.values, v), dtype=np.float64))

    def __add__(self, o):
        return self._op(o, lambda a, b: a + b) if not isinstance(o, Expr) else o + self

    def __radd__(self, o):
        return self._op(o, lambda a, b: b + a)

    def __sub__(self, o):
        return self._op(o, lambda a, b: a - b) if not isinstance(o, Expr) else (-o) + self

    def __rsub__(self, o):
        return self._op(o, lambda a, b: b - a)

    def __mul__(self, o):
        return self._op(o, lambda a, b: a * b) if not isinstance(o, Expr) else o * self

    def __rmul__(self, o):
        return self._op(o, lambda a, b: b * a)

    def __neg__(self):
        return Plain(self.builder, -self.values)

    def __repr__(self) -> str:
        return f"Plain(range={self.range})"


class Expr:
    """Handle of an encrypted value in a program under construction.

    Supports ``+ - *`` with Expr, Plain, numpy arrays of ``slots`` values and Python numbers,
    unary ``-``, and ``** n`` for small integers n >= 1. ``range`` is the interval of the value.
    """

    __array_ufunc__ = None  # ndarray <op> Expr -> Expr.__rop__

    def __init__(self, builder: ProgramBuilder, node: int):
        self.builder = builder
        self.node = node

    @property
    def range(self) -> tuple[float, float]:
        """Interval containing the value in every slot (when inputs are in their declared ranges)."""
        return self.builder._ranges[self.node]

    def _bin(self, o, kind: str, reflected: bool = False):
        b = self.builder
        if isinstance(o, Expr):
            if o.builder is not b:
                raise ProgramError("cannot combine values of two different program builders")
            if kind == "sub":
                return Expr(b, b._node("sub", (o.node, self.node) if reflected else (self.node, o.node)))
            return Expr(b, b._node(kind, (self.node, o.node)))
        if isinstance(o, Number):
            c = float(o)
            if not math.isfinite(c):
                raise ProgramError(f"non-finite constant in {kind}")
            if kind == "add":
                return b._add_const(self, c)
            if kind == "sub":
                return b._add_const(-self, c) if reflected else b._add_const(self, -c)
            return b._mul_const(self, c)
        if isinstance(o, (Plain, np.ndarray)):
            v = o.values if isinstance(o, Plain) else b._check_vector(o)
            if kind == "add":
                return b._add_plain(self, v)
            if kind == "sub":
                return b._add_plain(-self, v) if reflected else b._add_plain(self, -v)
            return b._mul_plain(self, v)
        return NotImplemented

    def __add__(self, o):
        return self._bin(o, "add")

    __radd__ = __add__

    def __sub__(self, o):
        return self._bin(o, "sub")

    def __rsub__(self, o):
        return self._bin(o, "sub", reflected=True)

    def __mul__(self, o):
        return self._bin(o, "mul")

    __rmul__ = __mul__

    def __truediv__(self, o):
        if isinstance(o, Number) and float(o) != 0.0:
            return self * (1.0 / float(o))
        return NotImplemented

    def __neg__(self):
        return Expr(self.builder, self.builder._node("neg", (self.node,)))

    def __pos__(self):
        return self

    def __pow__(self, n):
        if not isinstance(n, (int, np.integer)) or n < 1 or n > 64:
            raise ProgramError("Expr ** n needs an integer 1 <= n <= 64 (use apply() for other powers)")
        result, base, n = None, self, int(n)
        while n:
            if n & 1:
                result = base if result is None else result * base
            n >>= 1
            if n:
                base = base * base
        return result

    def square(self) -> Expr:
        return self * self

    def __repr__(self) -> str:
        return f"Expr(node={self.node}, range={self.range})"


class ProgramBuilder:
    """Records a program over encrypted inputs; :meth:`build` plans it into a :class:`Program`.

    Args:
        name: program name (appears in reports and the audit log).
        slots: slots per ciphertext (a power of two; plaintext vectors must have this length).

    Raises:
        ProgramError: ``slots`` is not a power of two.
    """

    def __init__(self, name: str, slots: int):
        slots = int(slots)
        if slots < 1 or slots & (slots - 1):
            raise ProgramError(f"slots must be a power of two, got {slots}")
        self.name = str(name)
        self.slots = slots
        self._nodes: list[Node] = []
        self._ranges: list[tuple[float, float]] = []
        self._plains: list[np.ndarray] = []
        self._plain_ix: dict[bytes, int] = {}
        self._inputs: list[tuple[str, tuple[float, float]]] = []
        self._outputs: list[tuple[str, int, float | None]] = []
        self._regions: list[LogicalRegion] = []
        self._hints: dict[int, tuple[float, float, str]] = {}
        self._memo: dict[tuple, int] = {}
        self._region: int | None = None
        self._labels: dict[str, int] = {}

    # -- node recording ------------------------------------------------------------------------
    def _node(self, kind: str, args: tuple[int, ...] = (), *, const: float | None = None,
              plain: int | None = None, rot: int | None = None, name: str | None = None) -> int:
        if kind in ("add", "mul"):
            args = tuple(sorted(args))
        key = (kind, args, const, plain, rot, name)
        if kind != "input" and key in self._memo:
            return self._memo[key]
        nid = len(self._nodes)
        self._nodes.append(Node(nid, kind, args, const, plain, rot, name, self._region))
        self._ranges.append(self._node_range(self._nodes[-1]))
        self._memo[key] = nid
        return nid

    def _node_range(self, n: Node) -> tuple[float, float]:
        a = [self._ranges[x] for x in n.args]
        k = n.kind
        if k == "input":
            r = dict(self._inputs)[n.name]
        elif k == "add":
            r = B.iv_add(*a)
        elif k == "sub":
            r = B.iv_sub(*a)
        elif k == "neg":
            r = B.iv_neg(a[0])
        elif k == "mul":
            r = B.iv_mul(*a)
        elif k == "mul_plain":
            r = B.iv_mul(a[0], B.plain_range(self._plains[n.plain]))
        elif k == "add_plain":
            r = B.iv_add(a[0], B.plain_range(self._plains[n.plain]))
        elif k == "mul_const":
            r = B.iv_scale(a[0], n.const)
        elif k == "add_const":
            r = B.iv_shift(a[0], n.const)
        elif k == "rotate":
            r = a[0]
        else:
            raise ProgramError(f"internal: unknown logical op {k!r}")
        if not (math.isfinite(r[0]) and math.isfinite(r[1])):
            raise ProgramError(f"the range of a {k} value overflows")
        return float(r[0]), float(r[1])

    def _check_vector(self, v) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        if a.ndim == 0:
            return np.full(self.slots, float(a))
        if a.shape != (self.slots,):
            raise ProgramError(f"plaintext vector of shape {a.shape}; this program has {self.slots} slots")
        if not np.all(np.isfinite(a)):
            raise ProgramError("plaintext vector contains NaN or infinite values")
        return a

    def _plain_index(self, v: np.ndarray) -> int:
        v = np.ascontiguousarray(v, dtype=np.float64)
        key = hashlib.sha256(v.tobytes()).digest()
        if key not in self._plain_ix:
            self._plain_ix[key] = len(self._plains)
            self._plains.append(v.copy())
        return self._plain_ix[key]

    def _add_const(self, x: Expr, c: float) -> Expr:
        if c == 0.0:
            return x
        return Expr(self, self._node("add_const", (x.node,), const=c))

    def _mul_const(self, x: Expr, c: float) -> Expr:
        if c == 1.0:
            return x
        if c == -1.0:
            return -x
        return Expr(self, self._node("mul_const", (x.node,), const=c))

    def _add_plain(self, x: Expr, v: np.ndarray) -> Expr:
        v = self._check_vector(v)
        if not np.any(v):
            return x
        if np.all(v == v[0]):
            return self._add_const(x, float(v[0]))
        return Expr(self, self._node("add_plain", (x.node,), plain=self._plain_index(v)))

    def _mul_plain(self, x: Expr, v: np.ndarray) -> Expr:
        v = self._check_vector(v)
        if np.all(v == v[0]):
            return self._mul_const(x, float(v[0]))
        return Expr(self, self._node("mul_plain", (x.node,), plain=self._plain_index(v)))

    def _expr(self, x, what: str) -> Expr:
        if not isinstance(x, Expr) or x.builder is not self:
            raise ProgramError(f"{what} needs an encrypted value (Expr) of this builder, got {type(x).__name__}")
        return x

    # -- public API ----------------------------------------------------------------------------
    def input(self, name: str, range: tuple[float, float]) -> Expr:  # noqa: A002 - API name
        """Declare an encrypted input whose every slot lies in ``range``.

        Raises:
            ProgramError: a duplicate name or an empty / non-finite range.
        """
        name = str(name)
        lo, hi = float(range[0]), float(range[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ProgramError(f"input {name!r}: range must be finite with lo <= hi")
        if any(n == name for n, _ in self._inputs):
            raise ProgramError(f"input {name!r} declared twice")
        self._inputs.append((name, (lo, hi)))
        return Expr(self, self._node("input", name=name))

    def plain(self, values) -> Plain:
        """A plaintext vector (length ``slots``, or a scalar broadcast to all slots).

        Raises:
            ProgramError: wrong length or non-finite values.
        """
        return Plain(self, self._check_vector(values))

    def constant(self, value: float) -> Plain:
        """A constant broadcast to every slot, as a :class:`Plain`."""
        return self.plain(float(value))

    def square(self, x: Expr) -> Expr:
        return self._expr(x, "square") * x

    def rotate(self, x: Expr, k: int) -> Expr:
        """Rotate slots: result[i] = x[(i + k) mod slots] (OpenFHE ``EvalRotate`` convention)."""
        x = self._expr(x, "rotate")
        k = int(k) % self.slots
        if k == 0:
            return x
        return Expr(self, self._node("rotate", (x.node,), rot=k))

    def sum_blocks(self, x: Expr, block: int, *, broadcast: bool = False) -> Expr:
        """Sum each aligned block of ``block`` slots (a power of two) with log2(block) rotations.

        The block sum lands in the **first slot of each block**; the other slots hold sums that
        run into the next block (garbage). With ``broadcast=True`` the other slots are cleared
        by a plaintext mask (one more level) and the sum is copied into every slot of its block
        (log2(block) more rotations).

        Raises:
            ProgramError: ``block`` is not a power of two dividing ``slots``.
        """
        x = self._expr(x, "sum_blocks")
        block = int(block)
        if block < 1 or block & (block - 1) or self.slots % block:
            raise ProgramError(f"block {block} must be a power of two dividing {self.slots} slots")
        s = x
        step = 1
        while step < block:
            s = s + self.rotate(s, step)
            step *= 2
        if broadcast and block > 1:
            mask = np.zeros(self.slots)
            mask[::block] = 1.0
            s = s * mask
            step = 1
            while step < block:
                s = s + self.rotate(s, -step)
                step *= 2
        return s

    def assume_range(self, x: Expr, range: tuple[float, float]) -> Expr:  # noqa: A002
        """Tell the analysis that ``x`` lies in ``range`` in every slot (narrowing its interval).

        The caller guarantees it (e.g. the client checks the plaintext before encryption, or
        the decrypted result afterwards); the assumption is part of the program and its digest.

        Raises:
            ProgramError: an empty range, or one disjoint from the value's computed interval.
        """
        x = self._expr(x, "assume_range")
        lo, hi = float(range[0]), float(range[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ProgramError("assume_range needs a finite range with lo <= hi")
        self._hint(x.node, lo, hi, "user")
        return x

    def _hint(self, node: int, lo: float, hi: float, reason: str) -> None:
        r = B.iv_intersect(self._ranges[node], (lo, hi), f"assumed range of node {node}")
        old = self._hints.get(node)
        if old is not None:
            lo, hi = max(lo, old[0]), min(hi, old[1])
            reason = old[2] if old[2] == reason else "user"
        self._hints[node] = (lo, hi, reason)
        self._ranges[node] = r

    # -- approximations ------------------------------------------------------------------------
    def _label(self, fn, label: str | None) -> str:
        base = label or getattr(fn, "__name__", "f")
        if base == "<lambda>":
            base = "lambda"
        n = self._labels.get(base, 0) + 1
        self._labels[base] = n
        return base if (label and n == 1) else f"{base}#{n}"

    def _check_domain(self, x: Expr, domain, label: str) -> tuple[float, float]:
        lo, hi = float(domain[0]), float(domain[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ProgramError(f"approximation {label!r}: domain [{lo}, {hi}] is empty or not finite")
        xl, xh = x.range
        slack = 1e-12 * max(1.0, abs(lo), abs(hi))
        if xl < lo - slack or xh > hi + slack:
            raise ProgramError(f"approximation {label!r} (node {x.node}): input range [{xl:.6g}, {xh:.6g}] "
                               f"is not inside its domain [{lo:.6g}, {hi:.6g}]")
        return lo, hi

    @contextlib.contextmanager
    def _in_region(self, reg: LogicalRegion | None):
        if reg is None or self._region is not None:  # nested approximations join the outer region
            yield None
            return
        self._regions.append(reg)
        self._region = len(self._regions) - 1
        try:
            yield self._region
        finally:
            self._region = None

    def _cheb_hint(self, v, lo, hi):
        if isinstance(v, Expr):
            self._hint(v.node, lo, hi, "chebyshev")
        return v

    def _emit_chebyshev(self, x: Expr, coeffs: np.ndarray, domain: tuple[float, float]):
        lo, hi = domain
        if lo == -1.0 and hi == 1.0:
            y = x
        else:
            a = 2.0 / (hi - lo)
            y = self._cheb_hint(x * a + (-(hi + lo) / (hi - lo)), -1.0, 1.0)
        return cheb.eval_chebyshev_ps(coeffs, y, hint=self._cheb_hint)

    def _finish_region(self, reg: LogicalRegion | None, x: Expr, result, fn) -> Expr:
        if not isinstance(result, Expr):  # a constant polynomial: still an encrypted value
            result = (x - x) + float(result)
        if reg is None:
            return result
        reg.output = result.node
        self._measure(reg, fn)
        return result

    def _eval_subgraph(self, out: int, inp: int, xs: np.ndarray, ranges: dict | None = None,
                       sens: dict | None = None) -> np.ndarray:
        """Plaintext value of node ``out`` as a function of node ``inp`` on the points xs; with
        ``ranges``, also the (min, max) of every intermediate node on the points; with ``sens``,
        max |d out / d node| over the points for every intermediate node (reverse mode)."""
        need: set[int] = set()
        stack = [out]
        while stack:
            n = stack.pop()
            if n in need:
                continue
            need.add(n)
            if n != inp:
                node = self._nodes[n]
                if node.kind in ("input", "rotate"):
                    raise ProgramError("internal: an approximation depends on something besides its input")
                stack.extend(node.args)
        val: dict[int, np.ndarray] = {}
        for n in sorted(need):
            if n == inp:
                val[n] = xs
                continue
            nd = self._nodes[n]
            a = [val[x] for x in nd.args]
            k = nd.kind
            if k == "add":
                v = a[0] + a[1]
            elif k == "sub":
                v = a[0] - a[1]
            elif k == "neg":
                v = -a[0]
            elif k == "mul":
                v = a[0] * a[1]
            elif k == "mul_const":
                v = a[0] * nd.const
            elif k == "add_const":
                v = a[0] + nd.const
            else:
                raise ProgramError(f"internal: {k} inside an approximation")
            val[n] = v
            if ranges is not None:
                ranges[n] = (float(v.min()), float(v.max()))
        if sens is not None:
            adj: dict[int, np.ndarray] = {out: np.ones_like(xs)}
            for n in sorted(need, reverse=True):
                if n == inp or n not in adj:
                    continue
                A = adj.pop(n)
                sens[n] = float(np.max(np.abs(A)))
                nd = self._nodes[n]
                k = nd.kind
                if k == "add":
                    parts = [(nd.args[0], A), (nd.args[1], A)]
                elif k == "sub":
                    parts = [(nd.args[0], A), (nd.args[1], -A)]
                elif k == "neg":
                    parts = [(nd.args[0], -A)]
                elif k == "mul":
                    parts = [(nd.args[0], A * val[nd.args[1]]), (nd.args[1], A * val[nd.args[0]])]
                elif k == "mul_const":
                    parts = [(nd.args[0], A * nd.const)]
                else:  # add_const
                    parts = [(nd.args[0], A)]
                for m, g in parts:
                    adj[m] = adj[m] + g if m in adj else g
        return val[out]

    def _measure(self, reg: LogicalRegion, fn) -> None:
        """Approximation error, Lipschitz constant and output range of a region, on a dense grid."""
        lo, hi = reg.domain
        n = max(20001, 64 * reg.degree + 1)
        xs = np.linspace(lo, hi, n)
        inner: dict[int, tuple[float, float]] = {}
        sens: dict[int, float] = {}
        g = self._eval_subgraph(reg.output, reg.input, xs, inner, sens)
        # Sensitivity of the output to a perturbation of each intermediate value (first order),
        # widened for the points between grid nodes: bounds the region's internal CKKS noise far
        # more tightly than propagating magnitudes op by op.
        reg.sens = {node: v * 1.05 for node, v in sens.items()}
        f = cheb.call_vectorised(fn, xs)
        # Every intermediate value is a polynomial in x alone: its range over the domain is known
        # from the grid (widened for the spacing), far tighter than interval arithmetic on sums
        # of Chebyshev terms. Recorded as facts for the error analysis of the region's ops.
        for node, (vlo, vhi) in inner.items():
            if node == reg.output:
                continue
            w = 1e-3 * (vhi - vlo) + 1e-12 * max(abs(vlo), abs(vhi))
            try:
                self._hint(node, vlo - w, vhi + w, "grid")
            except ProgramError:
                pass  # interval arithmetic already tighter than the grid estimate: keep it
        r = g - f
        h = xs[1] - xs[0]
        # Between grid points |r| <= max(|r_i|, |r_i+1|) + h^2/8 max|r''| (r'' by second differences).
        r2 = np.max(np.abs(np.diff(r, 2))) / h ** 2 if n > 2 else 0.0
        g2 = np.max(np.abs(np.diff(g, 2))) / h ** 2 if n > 2 else 0.0
        scale = max(float(np.max(np.abs(f))), float(np.max(np.abs(g))), 1e-300)
        approx = float(np.max(np.abs(r)) + h * h / 8.0 * r2) * 1.01 + 64 * np.finfo(float).eps * scale
        lip = float(np.max(np.abs(np.diff(g))) / h + h / 2.0 * g2) * 1.01 if n > 1 else 0.0
        reg.approx_error = approx
        reg.lipschitz = lip
        reg.out_range = (float(min(f.min(), g.min()) - approx), float(max(f.max(), g.max()) + approx))
        self._ranges[reg.output] = reg.out_range

    def chebyshev(self, fn: Callable, x: Expr, domain: tuple[float, float], degree: int, *,
                  label: str | None = None) -> Expr:
        """Approximate fn(x) by its degree-``degree`` Chebyshev interpolant on ``domain``, evaluated
        with Paterson-Stockmeyer in program ops (depth about ceil(log2(degree + 1)) + 2).

        ``fn`` maps numpy arrays to arrays (scalar functions are vectorised). The error of the
        approximation is measured on a dense grid and enters the program's error bounds.

        Raises:
            ProgramError: x's range is not inside ``domain`` (names the approximation), bad
                degree, or ``fn`` not finite on the domain.
        """
        x = self._expr(x, "chebyshev")
        label = self._label(fn, label)
        domain = self._check_domain(x, domain, label)
        coeffs = cheb.interpolate(fn, domain, degree)
        reg = LogicalRegion(label, "chebyshev", domain, int(degree), x.node)
        with self._in_region(reg) as rid:
            res = self._emit_chebyshev(x, coeffs, domain)
            return self._finish_region(reg if rid is not None else None, x, res, fn)

    def apply(self, fn: Callable, x: Expr, domain: tuple[float, float], degree: int | None = None,
              tol: float | None = None, *, label: str | None = None) -> Expr:
        """fn(x) by a Chebyshev approximation on ``domain``; the degree is ``degree`` or, if None,
        the smallest that meets the absolute tolerance ``tol`` (default 1e-6) on a dense grid.

        Raises:
            ProgramError: as :meth:`chebyshev`; or no degree up to 1023 meets ``tol``.
        """
        x = self._expr(x, "apply")
        if degree is None:
            lbl = label or getattr(fn, "__name__", "f")
            self._check_domain(x, domain, lbl)
            degree = cheb.choose_degree(fn, (float(domain[0]), float(domain[1])), 1e-6 if tol is None else float(tol))
        return self.chebyshev(fn, x, domain, degree, label=label)

    def inverse(self, x: Expr, domain: tuple[float, float], *, tol: float = 1e-6, method: str = "auto",
                label: str | None = None) -> Expr:
        """1/x on ``domain`` (which must not contain 0), to absolute tolerance ``tol``.

        ``method``: "chebyshev" (one interpolant), "newton" (a low-degree Chebyshev seed refined by
        Newton steps y <- y (2 - x y), each squaring the relative error and costing two levels), or
        "auto": the one of smaller depth (Chebyshev on a tie).

        Raises:
            ProgramError: 0 in the domain, x outside it, or the tolerance unreachable.
        """
        x = self._expr(x, "inverse")
        lo, hi = float(domain[0]), float(domain[1])
        if lo <= 0.0 <= hi:
            raise ProgramError("inverse: the domain must not contain 0")
        if method not in ("auto", "chebyshev", "newton"):
            raise ProgramError(f"inverse: unknown method {method!r}")
        label = label or "inverse"
        self._check_domain(x, (lo, hi), label)
        recip = _reciprocal
        cheb_plan = None
        if method in ("auto", "chebyshev"):
            try:
                d = cheb.choose_degree(recip, (lo, hi), tol)
                cheb_plan = (cheb.ps_depth(d) + 1, d)
            except ProgramError:
                if method == "chebyshev":
                    raise
        newton_plan = _newton_plan(lo, hi, tol) if method in ("auto", "newton") else None
        if newton_plan is None and cheb_plan is None:
            raise ProgramError(f"inverse: tolerance {tol:g} unreachable on [{lo:g}, {hi:g}]")
        if newton_plan is None or (cheb_plan is not None and cheb_plan[0] <= newton_plan[0]):
            return self.chebyshev(recip, x, (lo, hi), cheb_plan[1], label=label)
        depth, d0, iters, r0 = newton_plan
        label = self._label(recip, label)
        reg = LogicalRegion(label, "newton", (lo, hi), d0, x.node,
                            detail=f"(Chebyshev seed degree {d0} + {iters} Newton steps)")

        def y_range(r: float) -> tuple[float, float]:
            c = [(1.0 + s * r) / e for s in (-1.0, 1.0) for e in (lo, hi)]
            return min(c), max(c)

        with self._in_region(reg) as rid:
            y = self._emit_chebyshev(x, cheb.interpolate(recip, (lo, hi), d0), (lo, hi))
            if not isinstance(y, Expr):
                y = (x - x) + float(y)
            # Known facts (r_n = r_0^(2^n) bounds |1 - x y_n|) keep the internal ranges tight.
            r = r0
            self._hint(y.node, *y_range(r), "newton")
            for _ in range(iters):
                xy = x * y
                self._hint(xy.node, 1.0 - r, 1.0 + r, "newton")
                y = y * (2.0 - xy)
                r = r * r
                self._hint(y.node, *y_range(r), "newton")
            return self._finish_region(reg if rid is not None else None, x, y, recip)

    def poly(self, x: Expr, coeffs: Sequence[float]) -> Expr:
        """sum_j coeffs[j] x^j (power basis, scalar coefficients) by baby-step giant-step."""
        x = self._expr(x, "poly")
        cs = [float(c) for c in coeffs]
        if not cs:
            raise ProgramError("poly needs at least one coefficient")
        r = cheb.eval_power_bsgs(cs, x)
        return r if isinstance(r, Expr) else (x - x) + float(r)

    def poly_plain(self, x: Expr, coeffs: Sequence) -> Expr:
        """sum_j c_j x^j with per-slot coefficient vectors c_j (arrays of ``slots`` values, Plain,
        or numbers), by baby-step giant-step; vector coefficients become plaintext products."""
        x = self._expr(x, "poly_plain")
        cs = []
        for c in coeffs:
            if isinstance(c, Plain):
                c = c.values
            if isinstance(c, Number):
                cs.append(float(c))
            else:
                v = self._check_vector(c)
                cs.append(float(v[0]) if np.all(v == v[0]) else v)
        if not cs:
            raise ProgramError("poly_plain needs at least one coefficient")
        r = cheb.eval_power_bsgs(cs, x)
        if isinstance(r, Expr):
            return r
        return (x - x) + r

    # -- outputs and build -----------------------------------------------------------------------
    def output(self, name: str, x: Expr, *, scale_hint: float | None = None) -> None:
        """Declare an output. ``scale_hint`` (optional) is the typical magnitude of the value; the
        report gives the error bound relative to it.

        Raises:
            ProgramError: a duplicate output name or a value that is not encrypted.
        """
        x = self._expr(x, f"output {name!r}")
        if any(n == name for n, _, _ in self._outputs):
            raise ProgramError(f"output {name!r} declared twice")
        if scale_hint is not None and not (math.isfinite(scale_hint) and scale_hint > 0):
            raise ProgramError(f"output {name!r}: scale_hint must be positive")
        self._outputs.append((str(name), x.node, None if scale_hint is None else float(scale_hint)))

    def graph(self) -> LogicalGraph:
        return LogicalGraph(self.name, self.slots, list(self._nodes), list(self._plains), list(self._inputs),
                            list(self._outputs), list(self._regions), dict(self._hints))

    def build(self, params: Any = None, *, headroom_bits: int | None = None, noise=None):
        """Plan the program: relinearisation, rescales, level alignment, ranges and error bounds.

        Args:
            params: CKKS facts (any object with ``scaling_mod_size``, ``first_mod_size`` and
                optionally ``ring_dim``, e.g. ``CKKSParams`` or :class:`PlanParams`); default
                PlanParams() (scale 2^40, 49-bit first prime).
            headroom_bits: override first_mod_size - scaling_mod_size.
            noise: a :class:`medtwin.program.bounds.NoiseModel` (default: estimated from params).

        Raises:
            ProgramError: no outputs; an approximation whose input range leaves its domain; a value
                whose magnitude could exceed the headroom at its level (names the output or op).
        """
        from medtwin.program.planner import plan

        return plan(self.graph(), params, headroom_bits=headroom_bits, noise=noise)


def _reciprocal(x):
    return 1.0 / x


def _newton_plan(lo: float, hi: float, tol: float) -> tuple[int, int, int, float] | None:
    """(depth, seed degree, iterations, seed relative error bound) of the shallowest Newton
    scheme for 1/x reaching tol."""
    a = min(abs(lo), abs(hi))
    best = None
    for d0 in (1, 3, 7, 15, 31):
        c = cheb.interpolate(_reciprocal, (lo, hi), d0)
        xs = np.linspace(lo, hi, 4001)
        ys = C_chebval(c, xs, lo, hi)
        rel = float(np.max(np.abs(1.0 - xs * ys))) * 1.05 + 1e-6  # grid maximum, with a margin
        if not rel < 0.9:
            continue
        r0 = rel
        iters = 0
        while rel / a * 1.0 > tol / 2.0 and iters < 12:  # |1/x - y| = |1 - xy| / |x|
            rel = rel * rel
            iters += 1
        if rel / a > tol / 2.0:
            continue
        depth = cheb.ps_depth(d0) + 1 + 2 * iters
        if best is None or depth < best[0]:
            best = (depth, d0, iters, r0)
    return best


def C_chebval(c, xs, lo, hi):
    from numpy.polynomial import chebyshev as C

    return C.chebval((2.0 * xs - (lo + hi)) / (hi - lo), c)
