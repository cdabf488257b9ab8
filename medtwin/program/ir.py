"""The planned FHE program: a flat, topologically ordered list of CKKS operations on SSA values.

Every :class:`Op` defines exactly one value, whose id is the op's index in :attr:`Program.ops`
(``ops[i].out == i``). Arguments always refer to earlier values. The list is *planned*: it already
contains every relinearisation, rescale and level alignment a backend must perform, so a backend
walks it once, op by op, and never decides anything itself.

Op kinds (``args`` are value ids; the other fields are used as listed):

==============  =========  ===============================================================
kind            args       meaning
==============  =========  ===============================================================
``input``       ()         encrypted input ``name`` (a fresh ciphertext at level 0)
``add``         (a, b)     a + b (same level, scale degree 1)
``sub``         (a, b)     a - b
``neg``         (a,)       -a
``mul``         (a, b)     a * b ciphertext x ciphertext, *without* relinearisation (3 parts)
``relin``       (a,)       relinearise a 3-part product with the relinearisation key
``mul_plain``   (a,)       a * plaintexts[plain], the plaintext encoded at ``level`` (scale 2^p)
``mul_const``   (a,)       a * const (the constant encoded at scale 2^p, so a rescale follows)
``add_plain``   (a,)       a + plaintexts[plain], encoded at ``level``
``add_const``   (a,)       a + const
``rotate``      (a,)       slot rotation: out[i] = a[(i + rot) mod slots] (OpenFHE EvalRotate)
``rescale``     (a,)       divide by the last prime: level + 1, scale degree 2 -> 1
``level_down``  (a,)       drop towers until the value is at ``level`` (no scale change)
==============  =========  ===============================================================

``level`` is the number of rescales the value has been through (OpenFHE's ``GetLevel()``), and
``degree`` its scale degree (1: scale 2^p; 2: scale 2^2p, between a multiplication and its
rescale). With FIXEDMANUAL scaling every multiplication (ciphertext, plaintext or non-trivial
constant) is followed by a rescale, so values that feed an op other than ``relin``/``rescale``
have degree 1.

A :class:`Program` also carries the analysis the planner did (value ranges, error bounds, the
approximation pieces); these are derived data, recomputed on deserialisation, and not part of the
digest.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from medtwin.errors import ProgramError

IR_VERSION = 1

OP_KINDS = ("input", "add", "sub", "neg", "mul", "relin", "mul_plain", "mul_const", "add_plain",
            "add_const", "rotate", "rescale", "level_down")
_ARITY = {"input": 0, "add": 2, "sub": 2, "mul": 2, "neg": 1, "relin": 1, "mul_plain": 1,
          "mul_const": 1, "add_plain": 1, "add_const": 1, "rotate": 1, "rescale": 1, "level_down": 1}


@dataclass(frozen=True)
class Op:
    """One planned operation; it defines the value ``out`` (== its index in the op list)."""

    out: int
    kind: str
    args: tuple[int, ...] = ()
    level: int = 0
    degree: int = 1
    const: float | None = None
    plain: int | None = None
    rot: int | None = None
    name: str | None = None
    region: int | None = None  # index into Program.regions when the op belongs to an approximation

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"out": self.out, "kind": self.kind, "args": list(self.args),
                             "level": self.level, "degree": self.degree}
        for k in ("const", "plain", "rot", "name", "region"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d

    @staticmethod
    def from_dict(d: dict) -> Op:
        try:
            return Op(out=int(d["out"]), kind=str(d["kind"]), args=tuple(int(a) for a in d["args"]),
                      level=int(d["level"]), degree=int(d["degree"]),
                      const=None if d.get("const") is None else float(d["const"]),
                      plain=None if d.get("plain") is None else int(d["plain"]),
                      rot=None if d.get("rot") is None else int(d["rot"]),
                      name=d.get("name"), region=None if d.get("region") is None else int(d["region"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProgramError(f"malformed op record: {exc}") from None


@dataclass(frozen=True)
class InputSpec:
    """An encrypted input and the value range declared for all of its slots."""

    name: str
    range: tuple[float, float]


@dataclass(frozen=True)
class OutputSpec:
    """A named output value; ``scale_hint`` is the magnitude used to report a relative error."""

    name: str
    value: int
    scale_hint: float | None = None


@dataclass(frozen=True)
class Region:
    """A smooth function approximated by a polynomial evaluated in program ops.

    ``input``/``output`` are value ids; ``approx_error`` bounds |g(x) - f(x)| on ``domain`` for the
    polynomial g the ops compute (measured on a dense grid and widened by a second-order term to a
    bound), ``lipschitz`` bounds |g'| on the domain, ``out_range`` bounds g on the domain, and
    ``sens`` gives, for the region's values, the largest first-order sensitivity of the output to
    a perturbation of that value (reverse mode on the grid); the noise analysis uses it for the
    noise sources inside the region.
    """

    label: str
    method: str  # "chebyshev" | "newton"
    domain: tuple[float, float]
    degree: int
    input: int
    output: int
    approx_error: float
    lipschitz: float
    out_range: tuple[float, float]
    depth: int = 0
    detail: str = ""
    sens: tuple[tuple[int, float], ...] = ()  # (value, max |d output / d value| on the domain)

    def to_dict(self) -> dict:
        return {"label": self.label, "method": self.method, "domain": list(self.domain),
                "degree": self.degree, "input": self.input, "output": self.output,
                "approx_error": self.approx_error, "lipschitz": self.lipschitz,
                "out_range": list(self.out_range), "depth": self.depth, "detail": self.detail,
                "sens": [[v, x] for v, x in self.sens]}

    @staticmethod
    def from_dict(d: dict) -> Region:
        return Region(label=str(d["label"]), method=str(d["method"]), domain=_pair(d["domain"]),
                      degree=int(d["degree"]), input=int(d["input"]), output=int(d["output"]),
                      approx_error=float(d["approx_error"]), lipschitz=float(d["lipschitz"]),
                      out_range=_pair(d["out_range"]), depth=int(d.get("depth", 0)),
                      detail=str(d.get("detail", "")),
                      sens=tuple((int(v), float(x)) for v, x in d.get("sens", [])))


def _pair(v) -> tuple[float, float]:
    lo, hi = v
    return float(lo), float(hi)


@dataclass(frozen=True)
class Assumption:
    """A fact the analysis may use: value ``value`` lies in [lo, hi] in every slot.

    ``reason`` says who guarantees it: "user" (``ProgramBuilder.assume_range``; the caller must
    check it, e.g. on the client before encryption) or "chebyshev" (|T_k(y)| <= 1 for y in [-1, 1]).
    """

    value: int
    lo: float
    hi: float
    reason: str = "user"


@dataclass(frozen=True)
class PlanParams:
    """The CKKS facts the planner needs: scale bits p (scalingModSize) and first-prime bits.

    Values must stay below 2^(first_mod_size - scaling_mod_size - 1) in magnitude at the last
    level (the first prime q_0 holds v * 2^p centred in (-q_0/2, q_0/2)); at earlier levels the
    remaining scaling primes add p bits of headroom each. ``ring_dim`` (None: 2^16 assumed) only
    feeds the noise estimate. Any object with these attributes (e.g. ``medtwin.he.params.CKKSParams``)
    can be passed where a PlanParams is expected.
    """

    scaling_mod_size: int = 40
    first_mod_size: int = 49
    ring_dim: int | None = None

    @property
    def headroom_bits(self) -> int:
        return self.first_mod_size - self.scaling_mod_size

    @staticmethod
    def of(obj: Any) -> PlanParams:
        """Coerce ``obj`` (None, a PlanParams, or anything with the attributes) to PlanParams."""
        if obj is None:
            return PlanParams()
        if isinstance(obj, PlanParams):
            return obj
        try:
            return PlanParams(int(obj.scaling_mod_size), int(obj.first_mod_size),
                              None if getattr(obj, "ring_dim", None) is None else int(obj.ring_dim))
        except AttributeError as exc:
            raise ProgramError(f"plan parameters need scaling_mod_size and first_mod_size: {exc}") from None


class Program:
    """A planned FHE program (immutable after construction; build it with ``ProgramBuilder``).

    Attributes: ``name``, ``slots``, ``ops`` (list of :class:`Op`), ``plaintexts`` (list of float64
    arrays of length ``slots``), ``inputs`` (list of :class:`InputSpec`), ``outputs`` (list of
    :class:`OutputSpec`), ``regions`` (list of :class:`Region`), ``params`` (:class:`PlanParams`),
    and the analysis: ``ranges[v]`` (interval of the exact value v over all slots) and
    ``errors[v]`` (bound on |computed - exact| under the noise model used at planning).
    """

    def __init__(self, *, name: str, slots: int, ops: list[Op], plaintexts: list[np.ndarray],
                 inputs: list[InputSpec], outputs: list[OutputSpec], regions: list[Region],
                 params: PlanParams, assumptions: list[Assumption] = (), noise=None):
        self.name = name
        self.slots = int(slots)
        self.ops = list(ops)
        self.plaintexts = [np.asarray(p, dtype=np.float64) for p in plaintexts]
        for p in self.plaintexts:
            p.setflags(write=False)
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.regions = list(regions)
        self.params = PlanParams.of(params)
        self.assumptions = list(assumptions)
        self.validate()
        from medtwin.program.bounds import NoiseModel, analyse

        self.noise = noise if noise is not None else NoiseModel.from_params(self.params, self.depth)
        self.ranges, self.errors = analyse(self, self.noise)
        self._digest: str | None = None

    # -- structure ------------------------------------------------------------------------------
    def validate(self) -> None:
        """Check the structural invariants a backend relies on.

        Raises:
            ProgramError: an op refers to a later value, has the wrong arity, wrong levels or
                scale degrees, an unknown plaintext or input, or an output refers to no value.
        """
        if self.slots < 1 or self.slots & (self.slots - 1):
            raise ProgramError(f"slots must be a power of two, got {self.slots}")
        names = {i.name for i in self.inputs}
        if len(names) != len(self.inputs):
            raise ProgramError("duplicate input names")
        for p in self.plaintexts:
            if p.shape != (self.slots,):
                raise ProgramError(f"plaintext of shape {p.shape} in a program of {self.slots} slots")
        for i, op in enumerate(self.ops):
            if op.out != i:
                raise ProgramError(f"op {i} defines value {op.out}; ops must be numbered in order")
            if op.kind not in _ARITY:
                raise ProgramError(f"op {i}: unknown kind {op.kind!r}")
            if len(op.args) != _ARITY[op.kind]:
                raise ProgramError(f"op {i} ({op.kind}) has {len(op.args)} arguments")
            for a in op.args:
                if not 0 <= a < i:
                    raise ProgramError(f"op {i} ({op.kind}) uses value {a}, which is not defined before it")
            args = [self.ops[a] for a in op.args]
            k = op.kind
            if k == "input":
                if op.name not in names or op.level != 0 or op.degree != 1:
                    raise ProgramError(f"op {i}: input {op.name!r} is not a declared level-0 input")
            elif k in ("add", "sub", "mul"):
                a, b = args
                if a.level != b.level or a.degree != 1 or b.degree != 1 or op.level != a.level:
                    raise ProgramError(f"op {i} ({k}): operands at levels {a.level}/{b.level}, "
                                       f"degrees {a.degree}/{b.degree}; they must be aligned")
                if op.degree != (2 if k == "mul" else 1):
                    raise ProgramError(f"op {i} ({k}): wrong scale degree {op.degree}")
            elif k == "relin":
                if args[0].kind != "mul" or op.level != args[0].level or op.degree != 2:
                    raise ProgramError(f"op {i}: relin must follow a ciphertext product")
            elif k == "rescale":
                if args[0].degree != 2 or op.level != args[0].level + 1 or op.degree != 1:
                    raise ProgramError(f"op {i}: rescale of a value of degree {args[0].degree}")
                if args[0].kind == "mul":
                    raise ProgramError(f"op {i}: rescale of an unrelinearised product")
            elif k == "level_down":
                if op.level <= args[0].level or args[0].degree != 1 or op.degree != 1:
                    raise ProgramError(f"op {i}: level_down must lower a degree-1 value to a later level")
            else:  # unary degree-preserving or multiplying ops on degree-1 operands
                if args[0].degree != 1 or op.level != args[0].level:
                    raise ProgramError(f"op {i} ({k}): operand must be degree 1 at the op's level")
                want = 2 if k in ("mul_plain", "mul_const") else 1
                if op.degree != want:
                    raise ProgramError(f"op {i} ({k}): wrong scale degree {op.degree}")
                if k in ("mul_plain", "add_plain") and not (op.plain is not None and 0 <= op.plain < len(self.plaintexts)):
                    raise ProgramError(f"op {i} ({k}) refers to no plaintext")
                if k in ("mul_const", "add_const") and (op.const is None or not math.isfinite(op.const)):
                    raise ProgramError(f"op {i} ({k}) needs a finite constant")
                if k == "rotate" and (op.rot is None or not 0 < op.rot < self.slots):
                    raise ProgramError(f"op {i}: rotation {op.rot} outside 1..slots-1")
        for a in self.assumptions:
            if not 0 <= a.value < len(self.ops) or not (math.isfinite(a.lo) and math.isfinite(a.hi) and a.lo <= a.hi):
                raise ProgramError(f"assumption on value {a.value} is malformed")
        for r in self.regions:
            if not (0 <= r.input < r.output < len(self.ops)):
                raise ProgramError(f"approximation {r.label!r} refers to values outside the program")
        onames = [o.name for o in self.outputs]
        if not onames:
            raise ProgramError("a program needs at least one output")
        if len(set(onames)) != len(onames):
            raise ProgramError("duplicate output names")
        for o in self.outputs:
            if not 0 <= o.value < len(self.ops) or self.ops[o.value].degree != 1:
                raise ProgramError(f"output {o.name!r} does not refer to a rescaled value")

    @property
    def depth(self) -> int:
        """Multiplicative depth: the largest level of any value (levels the context must provide)."""
        return max((op.level for op in self.ops), default=0)

    def output(self, name: str) -> OutputSpec:
        for o in self.outputs:
            if o.name == name:
                return o
        raise ProgramError(f"program {self.name!r} has no output {name!r}")

    def rotation_indices(self) -> list[int]:
        """Sorted rotation amounts (in 1..slots-1) that need rotation keys.

        The amounts are exactly those the ops pass to ``EvalRotate``; generate keys for them.
        """
        return sorted({op.rot for op in self.ops if op.kind == "rotate"})

    def op_counts(self) -> dict[str, int]:
        c = {k: 0 for k in OP_KINDS}
        for op in self.ops:
            c[op.kind] += 1
        return c

    # -- analysis ------------------------------------------------------------------------------
    def error_bound(self, output: str, noise=None, input_errors: dict[str, float] | None = None) -> float:
        """Bound on |decrypted - exact| for every slot of ``output``.

        The bound adds (i) the approximation error of every polynomial piece (measured on a dense
        grid over its domain and widened to a bound), propagated to the output by first-order
        interval error propagation (see :mod:`medtwin.program.bounds`), and (ii) a conservative
        CKKS noise term per op from ``noise`` (default: the model made for this program's
        parameters; pass ``NoiseModel.from_context(cc)`` for the exact primes of a live context).
        Valid when every input lies in its declared range. ``input_errors`` (input name -> bound
        on its deviation from the exact value) covers inputs that are not fresh encryptions, such
        as states refreshed by bootstrapping.

        Raises:
            ProgramError: no output of that name; an input error naming no input.
        """
        o = self.output(output)
        if noise is None and not input_errors:
            e = self.errors[o.value]
        else:
            from medtwin.program.bounds import analyse

            e = analyse(self, noise if noise is not None else self.noise, input_errors)[1][o.value]
        return float(e)

    def output_range(self, output: str) -> tuple[float, float]:
        """Interval of the exact output value over its declared input ranges."""
        return self.ranges[self.output(output).value]

    def check_inputs(self, inputs: dict[str, Any], *, mask: np.ndarray | None = None) -> None:
        """Refuse plaintext inputs outside their declared ranges (call before encrypting).

        ``mask`` (0/1 per slot) limits the check to used slots.

        Raises:
            RangeError: an input is missing or a slot lies outside the declared range (the message
                names the input, never a value).
        """
        from medtwin.errors import RangeError

        for spec in self.inputs:
            if spec.name not in inputs:
                raise RangeError(f"input {spec.name!r} is missing")
            v = np.asarray(inputs[spec.name], dtype=np.float64)
            if mask is not None:
                v = v[..., np.asarray(mask, dtype=bool)]
            lo, hi = spec.range
            if v.size and (not np.all(np.isfinite(v)) or v.min() < lo or v.max() > hi):
                raise RangeError(f"input {spec.name!r} lies outside its declared range [{lo:g}, {hi:g}]")

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-compatible dict; :meth:`from_dict` restores an equal program."""
        return {
            "ir_version": IR_VERSION,
            "name": self.name,
            "slots": self.slots,
            "params": {"scaling_mod_size": self.params.scaling_mod_size,
                       "first_mod_size": self.params.first_mod_size,
                       "ring_dim": self.params.ring_dim},
            "inputs": [{"name": i.name, "range": list(i.range)} for i in self.inputs],
            "outputs": [{"name": o.name, "value": o.value, "scale_hint": o.scale_hint} for o in self.outputs],
            "plaintexts": [p.tolist() for p in self.plaintexts],
            "regions": [r.to_dict() for r in self.regions],
            "assumptions": [[a.value, a.lo, a.hi, a.reason] for a in self.assumptions],
            "ops": [op.to_dict() for op in self.ops],
        }

    @staticmethod
    def from_dict(d: dict) -> Program:
        """Rebuild a program from :meth:`to_dict` output.

        Raises:
            ProgramError: an unknown IR version or a malformed / inconsistent record.
        """
        if not isinstance(d, dict) or d.get("ir_version") != IR_VERSION:
            raise ProgramError(f"not a medtwin program of IR version {IR_VERSION}")
        try:
            pp = d["params"]
            return Program(
                name=str(d["name"]), slots=int(d["slots"]),
                ops=[Op.from_dict(o) for o in d["ops"]],
                plaintexts=[np.asarray(p, dtype=np.float64) for p in d["plaintexts"]],
                inputs=[InputSpec(str(i["name"]), _pair(i["range"])) for i in d["inputs"]],
                outputs=[OutputSpec(str(o["name"]), int(o["value"]),
                                    None if o.get("scale_hint") is None else float(o["scale_hint"]))
                         for o in d["outputs"]],
                regions=[Region.from_dict(r) for r in d["regions"]],
                assumptions=[Assumption(int(v), float(lo), float(hi), str(why))
                             for v, lo, hi, why in d.get("assumptions", [])],
                params=PlanParams(int(pp["scaling_mod_size"]), int(pp["first_mod_size"]),
                                  None if pp.get("ring_dim") is None else int(pp["ring_dim"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProgramError(f"malformed program record: {exc!r}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @staticmethod
    def from_json(text: str | bytes) -> Program:
        """Raises ProgramError on text that is not a serialised program."""
        try:
            d = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise ProgramError(f"program JSON does not parse: {exc}") from None
        return Program.from_dict(d)

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical (RFC 8785) JSON of the program, plaintexts by their hash.

        Stable across processes and round trips; changes with any op, constant, plaintext value,
        input range, output or approximation record. Used to name the program in the audit log.
        """
        if self._digest is None:
            import rfc8785

            d = self.to_dict()
            d["plaintexts"] = [hashlib.sha256(np.ascontiguousarray(p, dtype="<f8").tobytes()).hexdigest()
                               for p in self.plaintexts]
            self._digest = hashlib.sha256(rfc8785.dumps(d)).hexdigest()
        return self._digest

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Program) and self.digest() == other.digest()

    def __hash__(self) -> int:
        return hash(self.digest())

    # -- report ----------------------------------------------------------------------------------
    def report(self) -> str:
        """A human-readable summary: depth, op counts, rotations, approximations, output bounds."""
        c = self.op_counts()
        lines = [f"program {self.name!r}: {len(self.ops)} ops, {self.slots} slots, "
                 f"multiplicative depth {self.depth}, digest {self.digest()[:16]}",
                 f"  plan: scale 2^{self.params.scaling_mod_size}, first prime {self.params.first_mod_size} bits "
                 f"(output headroom |v| < 2^{self.params.headroom_bits - 1})",
                 f"  ct*ct mult {c['mul']}, relin {c['relin']}, rescale {c['rescale']}, "
                 f"plain mult {c['mul_plain']}, const mult {c['mul_const']}, rotate {c['rotate']}, "
                 f"add/sub {c['add'] + c['sub']}, plain add {c['add_plain']}, const add {c['add_const']}, "
                 f"neg {c['neg']}, level_down {c['level_down']}",
                 f"  rotation keys needed: {self.rotation_indices() or 'none'}",
                 f"  noise model: {self.noise.describe()}"]
        if self.regions:
            lines.append("  approximations:")
            for r in self.regions:
                lines.append(f"    {r.label}: {r.method} degree {r.degree} on [{r.domain[0]:.6g}, {r.domain[1]:.6g}], "
                             f"depth {r.depth}, |error| <= {r.approx_error:.3g}{(' ' + r.detail) if r.detail else ''}")
        lines.append("  outputs:")
        for o in self.outputs:
            lo, hi = self.ranges[o.value]
            e = self.error_bound(o.name)
            rel = f", relative {e / o.scale_hint:.3g} of {o.scale_hint:g}" if o.scale_hint else ""
            lines.append(f"    {o.name}: level {self.ops[o.value].level}, range [{lo:.6g}, {hi:.6g}], "
                         f"error bound {e:.3g}{rel}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Program({self.name!r}, ops={len(self.ops)}, depth={self.depth}, slots={self.slots})"


def last_uses(ops: Iterable[Op], outputs: Iterable[OutputSpec]) -> list[int]:
    """For each value, the index of the last op that reads it (len(ops) for outputs, -1 unused)."""
    ops = list(ops)
    last = [-1] * len(ops)
    for op in ops:
        for a in op.args:
            last[a] = op.out
    for o in outputs:
        last[o.value] = len(ops)
    return last
