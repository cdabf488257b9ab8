"""Level and scale planning (FIXEDMANUAL), then range, headroom and error analysis.

Lowering rules, applied to the builder's logical graph in order (only what the outputs need):

* ``mul`` (ciphertext x ciphertext) -> ``mul``, ``relin``, ``rescale``: the product is at the
  operands' level with scale degree 2; the rescale brings it to level + 1, degree 1.
* ``mul_plain`` -> ``mul_plain`` (plaintext encoded at the operand's level, scale 2^p), ``rescale``.
* ``mul_const c`` -> ``mul_const``, ``rescale``, except: c = 1 (nothing), c = -1 (``neg``), c = 0
  (``sub(x, x)``), and integers 2 <= |c| <= 8, done by additions (``x + x`` doubling; no level).
* ``add``/``sub``/``mul`` of operands at different levels: the shallower operand gets a
  ``level_down`` to the deeper one's level first (EVA-style alignment; one ``level_down`` per
  (value, level) is shared by all its uses).
* ``add_plain``/``add_const``/``rotate``/``neg``: at the operand's level, no scale change.

Then :func:`medtwin.program.bounds.analyse` gives every value a range and an error bound, and
the planner refuses (ProgramError) an approximation whose input range leaves its domain, and any
value whose magnitude plus error could exceed what its level's modulus holds:
|v| < 2^(first_mod_size + (depth - level) p - degree p - 1), i.e. |v| < 2^(first - p - 1) for a
value at the program's last level. (Programs run on contexts of exactly the program's depth or
deeper; a deeper context only adds headroom.)
"""
from __future__ import annotations

from typing import Any

from medtwin.errors import ProgramError
from medtwin.program.builder import LogicalGraph
from medtwin.program.ir import Assumption, InputSpec, Op, OutputSpec, PlanParams, Program, Region

SMALL_INT = 8


class _Lowering:
    def __init__(self, g: LogicalGraph):
        self.g = g
        self.ops: list[Op] = []
        self.val: dict[int, int] = {}  # logical node -> planned value
        self.down: dict[tuple[int, int, int | None], int] = {}
        self.region: int | None = None
        self.region_map: dict[int, int] = {}  # logical region -> planned region index
        self.origin: list[int] = []  # planned value -> logical node that emitted it
        self.node: int = -1

    def emit(self, kind: str, args: tuple[int, ...] = (), *, degree: int = 1, level: int | None = None,
             **kw: Any) -> int:
        if level is None:
            level = max((self.ops[a].level for a in args), default=0)
        i = len(self.ops)
        self.ops.append(Op(out=i, kind=kind, args=tuple(args), level=level, degree=degree,
                           region=self.region, **kw))
        self.origin.append(self.node)
        return i

    def at(self, v: int, level: int) -> int:
        if self.ops[v].level == level:
            return v
        key = (v, level, self.region)
        if key not in self.down:
            self.down[key] = self.emit("level_down", (v,), level=level)
        return self.down[key]

    def align(self, a: int, b: int) -> tuple[int, int]:
        lv = max(self.ops[a].level, self.ops[b].level)
        return self.at(a, lv), self.at(b, lv)

    def rescaled(self, v: int) -> int:
        return self.emit("rescale", (v,), level=self.ops[v].level + 1)

    def mul_small_int(self, x: int, c: int) -> int:
        neg = c < 0
        c = abs(c)
        acc, base = None, x
        while c:
            if c & 1:
                acc = base if acc is None else self.emit("add", (acc, base))
            c >>= 1
            if c:
                base = self.emit("add", (base, base))
        return self.emit("neg", (acc,)) if neg else acc

    def lower(self, needed: set[int]) -> None:
        for n in self.g.nodes:
            if n.id not in needed:
                continue
            self.region = n.region if n.region in self.region_map else None
            self.node = n.id
            a = [self.val[x] for x in n.args]
            k = n.kind
            if k == "input":
                v = self.emit("input", (), level=0, name=n.name)
            elif k in ("add", "sub"):
                x, y = self.align(*a)
                v = self.emit(k, (x, y))
            elif k == "mul":
                x, y = self.align(*a)
                m = self.emit("mul", (x, y), degree=2)
                v = self.rescaled(self.emit("relin", (m,), degree=2))
            elif k == "neg":
                v = self.emit("neg", (a[0],))
            elif k == "mul_plain":
                v = self.rescaled(self.emit("mul_plain", (a[0],), degree=2, plain=n.plain))
            elif k == "mul_const":
                c = float(n.const)
                if c == 1.0:
                    v = a[0]
                elif c == -1.0:
                    v = self.emit("neg", (a[0],))
                elif c == 0.0:
                    v = self.emit("sub", (a[0], a[0]))
                elif c == int(c) and 2 <= abs(c) <= SMALL_INT:
                    v = self.mul_small_int(a[0], int(c))
                else:
                    v = self.rescaled(self.emit("mul_const", (a[0],), degree=2, const=c))
            elif k == "add_plain":
                v = self.emit("add_plain", (a[0],), plain=n.plain)
            elif k == "add_const":
                v = self.emit("add_const", (a[0],), const=float(n.const))
            elif k == "rotate":
                v = self.emit("rotate", (a[0],), rot=int(n.rot))
            else:
                raise ProgramError(f"internal: unknown logical op {k!r}")
            self.val[n.id] = v


def _needed(g: LogicalGraph) -> set[int]:
    need: set[int] = set()
    stack = [v for _, v, _ in g.outputs]
    while stack:
        n = stack.pop()
        if n in need:
            continue
        need.add(n)
        stack.extend(g.nodes[n].args)
    return need


def plan(g: LogicalGraph, params: Any = None, *, headroom_bits: int | None = None, noise=None) -> Program:
    """Lower a logical graph to a planned :class:`Program` and analyse it (see module docstring).

    Raises:
        ProgramError: no outputs, an approximation input outside its domain, or a headroom overflow.
    """
    if not g.outputs:
        raise ProgramError(f"program {g.name!r} has no outputs")
    pp = PlanParams.of(params)
    if headroom_bits is not None:
        if headroom_bits < 1:
            raise ProgramError("headroom_bits must be at least 1")
        pp = PlanParams(pp.scaling_mod_size, pp.scaling_mod_size + int(headroom_bits), pp.ring_dim)
    need = _needed(g)
    low = _Lowering(g)
    regions_used = [r for r in g.regions if r.output in need and r.input in need]
    for i, r in enumerate(g.regions):
        if r.output in need and r.input in need:
            low.region_map[i] = len(low.region_map)
    low.lower(need)  # ops carry the builder's region ids; renumbered to the planned list below
    ops = [op if op.region is None else _with_region(op, low.region_map[op.region]) for op in low.ops]
    regions = []
    for r in regions_used:
        vin, vout = low.val[r.input], low.val[r.output]
        if vout <= vin:
            raise ProgramError(f"internal: approximation {r.label!r} has no ops of its own")
        # noise enters at the planned ops a logical node emitted (relin, rescale, ...): they carry the
        # node's sensitivity
        sens = tuple((v, r.sens[low.origin[v]]) for v in range(vin + 1, vout + 1)
                     if low.origin[v] in r.sens)
        regions.append(Region(label=r.label, method=r.method, domain=r.domain, degree=r.degree, input=vin,
                              output=vout, approx_error=r.approx_error, lipschitz=r.lipschitz,
                              out_range=r.out_range, depth=ops[vout].level - ops[vin].level, detail=r.detail,
                              sens=sens))
    assumptions = []
    seen = set()
    for node, (lo, hi, why) in sorted(g.hints.items()):
        if node in low.val and low.val[node] not in seen:
            seen.add(low.val[node])
            assumptions.append(Assumption(low.val[node], lo, hi, why))
    prog = Program(name=g.name, slots=g.slots, ops=ops, plaintexts=g.plaintexts,
                   inputs=[InputSpec(n, r) for n, r in g.inputs],
                   outputs=[OutputSpec(n, low.val[v], s) for n, v, s in g.outputs],
                   regions=regions, params=pp, assumptions=assumptions, noise=noise)
    check(prog)
    return prog


def _with_region(op: Op, r: int) -> Op:
    return Op(out=op.out, kind=op.kind, args=op.args, level=op.level, degree=op.degree, const=op.const,
              plain=op.plain, rot=op.rot, name=op.name, region=r)


def check(prog: Program) -> None:
    """Domain and headroom checks on an analysed program.

    Raises:
        ProgramError: an approximation's input range leaves its domain (names it), or a value may
            exceed the modulus at its level (names the output, or the op kind and value id).
    """
    for r in prog.regions:
        lo, hi = prog.ranges[r.input]
        slack = 1e-9 * max(1.0, abs(r.domain[0]), abs(r.domain[1]))
        if lo < r.domain[0] - slack or hi > r.domain[1] + slack:
            raise ProgramError(f"approximation {r.label!r}: input range [{lo:.6g}, {hi:.6g}] is not inside "
                               f"its domain [{r.domain[0]:.6g}, {r.domain[1]:.6g}]")
    p = prog.params.scaling_mod_size
    first = prog.params.first_mod_size
    depth = prog.depth
    out_names = {o.value: o.name for o in prog.outputs}
    order = [prog.ops[o.value] for o in prog.outputs] + list(prog.ops)  # name outputs first
    for op in order:
        m = max(abs(prog.ranges[op.out][0]), abs(prog.ranges[op.out][1])) + prog.errors[op.out]
        bits = first + (depth - op.level) * p - op.degree * p - 1
        if bits < 1000 and m >= 2.0 ** bits:
            what = (f"output {out_names[op.out]!r}" if op.out in out_names
                    else f"value {op.out} ({op.kind}{', ' + prog.regions[op.region].label if op.region is not None else ''})")
            raise ProgramError(f"{what} may reach {m:.4g} in magnitude, above the headroom 2^{bits} at level "
                               f"{op.level} (scale 2^{p}, first prime {first} bits); rescale the value")
