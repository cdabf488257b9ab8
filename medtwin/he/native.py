"""The native program backend: runs a whole planned FHE program in C++ (:mod:`medtwin._core`).

A :class:`medtwin.program.ir.Program` is compiled once into a compact instruction array (four
int64 words per op: opcode, destination register, operand, operand/argument; SSA value ids are
the registers, and a ``free`` instruction follows each value's last use) and executed by
``Engine.run_program`` in one C++ call per batch with the GIL released. Inputs and outputs are
OpenFHE's own ciphertexts (objects or BINARY bytes) under OpenFHE's own keys; results decrypt
with OpenFHE (see :mod:`medtwin.he.bridge`).

Registered as backend ``"native"`` (``medtwin.program.get_executor("native", cc=cc)``), with
the same constructor arguments as the OpenFHE executor plus an optional ready ``engine``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medtwin import _core
from medtwin.errors import CiphertextFormatError, KeyMismatchError, MedTwinError, ProgramError
from medtwin.he import bridge
from medtwin.program.executors import Executor, ProgressMeter, _Counter, register_executor
from medtwin.program.ir import Program

__all__ = ["NativeExecutor", "NativeBackend", "compile_program", "OPCODES"]

#: Instruction opcodes shared with ``cpp/include/medtwin/program.h``.
OPCODES = {
    "input": 0, "add": 1, "sub": 2, "neg": 3, "mul_relin": 4, "mul_plain": 5, "mul_const": 6,
    "add_plain": 7, "add_const": 8, "rotate": 9, "rescale": 10, "level_down": 11, "free": 12,
    "sub_plain": 13, "copy": 14, "mul": 15, "relin": 16, "mul_const_rescale": 17, "rescale_add": 18,
    "mul_const_rescale_add": 19, "mul_rescale": 20, "mul_rescale_add": 21, "mul_rescale_double": 22,
}


class CompiledProgram:
    """The instruction array of a program (built by :func:`compile_program`)."""

    def __init__(self, code: np.ndarray, consts: np.ndarray, plains: list[np.ndarray], n_regs: int,
                 outputs: list[int], input_names: list[str]):
        self.code = code
        self.consts = consts
        self.plains = plains
        self.n_regs = n_regs
        self.outputs = outputs
        self.input_names = input_names

    @property
    def n_instructions(self) -> int:
        return int(self.code.size // 4)


def compile_program(program: Program, corrections: dict[int, float] | None = None, *,
                    fuse: bool = True) -> CompiledProgram:
    """Translate a planned program into the engine's instruction array.

    ``corrections`` (op id -> factor, from :func:`medtwin.program.bounds.scale_corrections`)
    multiplies the constant / plaintext of those ops exactly as the OpenFHE executor does, so
    both backends compute the same ciphertexts.

    With ``fuse`` (the default) values read by a single op run inside that op, with the same
    towers as the separate ops (the engine's fused forms are bit-exact):

    * a ``mul_const`` read only by its ``rescale``: ``mul_const_rescale`` (no intermediate product);
    * a ``rescale`` (or that fused pair) read only by an ``add`` as its second operand:
      ``rescale_add`` / ``mul_const_rescale_add``, the sum formed in the rescale's last pass (the
      rescaled value is never stored). Linear combinations ``sum_i c_i x_i`` of the models are
      chains of these;
    * a ``mul`` (tensor product) read only by its ``relin``: ``mul_relin``, the third element kept
      in scratch memory (the product then occupies two elements, not three);
    * that ``mul_relin`` read only by its ``rescale``: ``mul_rescale``, the key switch's ModDown and
      the rescale sharing their transforms (the product is never stored at the higher level), and
      read by an ``add`` as above: ``mul_rescale_add``; read only by an ``add`` of it to itself
      (the Chebyshev rule's factor 2): ``mul_rescale_double``, the factor folded into the
      rescale's constants;
    * a ``level_down`` read only by an ``add``, ``sub`` or ``mul``: dropped, the op reads the
      value itself (the engine's binary ops and tensor product use the operands' common towers,
      which is what the level drop keeps, so nothing is copied).

    Raises:
        ProgramError: an op kind the native engine does not implement.
    """
    corr = corrections or {}
    plains: list[np.ndarray] = [np.ascontiguousarray(p, dtype=np.float64) for p in program.plaintexts]
    scaled: dict[tuple[int, float], int] = {}
    names = [i.name for i in program.inputs]
    ops = program.ops
    uses = [0] * len(ops)
    for op in ops:
        for x in op.args:
            uses[x] += 1
    outs = {o.value for o in program.outputs}

    def single(x: int) -> bool:  # read by one op only, and not an output
        return uses[x] == 1 and x not in outs

    fused_mc: dict[int, int] = {}   # rescale -> its mul_const
    fused_add: dict[int, int] = {}  # add -> its rescale
    elided: dict[int, int] = {}     # level_down -> the value it drops towers of
    fused_mr: dict[int, int] = {}   # relin -> its tensor product
    fused_mrs: dict[int, int] = {}  # rescale -> its fused relin (mul_relin)
    fused_dbl: dict[int, int] = {}  # add(r, r) -> its fused rescale r (in fused_mrs)
    if fuse:
        fused_mr = {op.out: op.args[0] for op in ops
                    if op.kind == "relin" and ops[op.args[0]].kind == "mul" and single(op.args[0])}
        reader: dict[int, int] = {}
        for op in ops:
            for x in op.args:
                reader[x] = op.out
        elided = {op.out: op.args[0] for op in ops
                  if op.kind == "level_down" and single(op.out) and ops[reader[op.out]].kind in ("add", "sub", "mul")}
        fused_mrs = {op.out: op.args[0] for op in ops
                     if op.kind == "rescale" and op.args[0] in fused_mr and single(op.args[0])}
        fused_mc = {op.out: op.args[0] for op in ops
                    if op.kind == "rescale" and ops[op.args[0]].kind == "mul_const" and single(op.args[0])}
        fused_dbl = {op.out: op.args[0] for op in ops
                     if op.kind == "add" and len(op.args) == 2 and op.args[0] == op.args[1]
                     and op.args[0] in fused_mrs and uses[op.args[0]] == 2 and op.args[0] not in outs
                     and ops[op.args[0]].level == op.level}
        fused_add = {op.out: op.args[1] for op in ops
                     if op.kind == "add" and len(op.args) == 2 and op.args[0] != op.args[1]
                     and ops[op.args[1]].kind == "rescale" and single(op.args[1])
                     and ops[op.args[1]].level == op.level}
    skipped = (set(fused_mc.values()) | set(fused_add.values()) | set(elided) | set(fused_mr.values())
               | set(fused_mrs.values()) | set(fused_dbl.values()))

    def src(x: int) -> int:  # the register an op reads for value x
        return elided.get(x, x)

    def const_index(m) -> int:
        consts.append(float(m.const) * corr.get(m.out, 1.0))
        return len(consts) - 1

    # (dst, opcode, a, b word, registers read) per instruction, in program order
    code_ops: list[tuple[int, int, int, int, tuple[int, ...]]] = []
    consts: list[float] = []
    for op in ops:
        k = op.kind
        if op.out in skipped:
            continue
        if op.out in fused_add:
            y, r = src(op.args[0]), fused_add[op.out]
            if r in fused_mc:
                m = ops[fused_mc[r]]
                c = const_index(m)
                code_ops.append((op.out, OPCODES["mul_const_rescale_add"], m.args[0], (c << 32) | y, (m.args[0], y)))
            elif r in fused_mrs:
                t = ops[fused_mr[fused_mrs[r]]]
                xa, xb = src(t.args[0]), src(t.args[1])
                code_ops.append((op.out, OPCODES["mul_rescale_add"], xa, (xb << 32) | y, (xa, xb, y)))
            else:
                x = ops[r].args[0]
                code_ops.append((op.out, OPCODES["rescale_add"], x, y, (x, y)))
            continue
        if op.out in fused_dbl:
            t = ops[fused_mr[fused_mrs[fused_dbl[op.out]]]]
            xa, xb = src(t.args[0]), src(t.args[1])
            code_ops.append((op.out, OPCODES["mul_rescale_double"], xa, xb, (xa, xb)))
            continue
        if op.out in fused_mrs:
            t = ops[fused_mr[fused_mrs[op.out]]]
            xa, xb = src(t.args[0]), src(t.args[1])
            code_ops.append((op.out, OPCODES["mul_rescale"], xa, xb, (xa, xb)))
            continue
        if op.out in fused_mr:
            t = ops[fused_mr[op.out]]
            xa, xb = src(t.args[0]), src(t.args[1])
            code_ops.append((op.out, OPCODES["mul_relin"], xa, xb, (xa, xb)))
            continue
        if op.out in fused_mc:
            m = ops[fused_mc[op.out]]
            code_ops.append((op.out, OPCODES["mul_const_rescale"], m.args[0], const_index(m), (m.args[0],)))
            continue
        a = src(op.args[0]) if op.args else 0
        b = src(op.args[1]) if len(op.args) > 1 else 0
        if k == "input":
            code_ops.append((op.out, OPCODES["input"], names.index(op.name), 0, ()))
            continue
        if k in ("add", "sub", "mul"):
            ins = (OPCODES[k], a, b)
        elif k in ("neg", "relin", "rescale"):
            ins = (OPCODES[k], a, 0)
        elif k in ("mul_plain", "add_plain"):
            f = corr.get(op.out, 1.0)
            idx = int(op.plain)
            if f != 1.0:
                key = (idx, f)
                if key not in scaled:
                    plains.append(np.ascontiguousarray(program.plaintexts[idx] * f, dtype=np.float64))
                    scaled[key] = len(plains) - 1
                idx = scaled[key]
            ins = (OPCODES[k], a, idx)
        elif k in ("mul_const", "add_const"):
            ins = (OPCODES[k], a, const_index(op))
        elif k == "rotate":
            ins = (OPCODES[k], a, int(op.rot))
        elif k == "level_down":
            ins = (OPCODES[k], a, int(op.level - ops[a].level))
        else:
            raise ProgramError(f"op {op.out}: the native engine has no op {k!r}")
        code_ops.append((op.out, ins[0], ins[1], ins[2], tuple(src(x) for x in op.args)))
    # free each value after its last reader (outputs: never)
    last: dict[int, int] = {}
    for i, (_, _, _, _, reads) in enumerate(code_ops):
        for x in reads:
            last[x] = i
    for o in program.outputs:
        last[o.value] = len(code_ops)
    code: list[int] = []
    for i, (dst, opc, a, b, reads) in enumerate(code_ops):
        code.extend((opc, dst, a, b))
        for x in sorted(set(reads)):
            if last.get(x) == i:
                code.extend((OPCODES["free"], x, 0, 0))
    return CompiledProgram(np.asarray(code, dtype=np.int64), np.asarray(consts, dtype=np.float64),
                           plains, len(ops), [o.value for o in program.outputs], names)


class NativeExecutor(Executor):
    """Runs planned programs on the native engine, one C++ call per batch.

    Args:
        cc: the OpenFHE crypto context holding the evaluation keys; the engine is built from
            ``cc.GetEvalMultKeyVector(tag)[0]`` and ``cc.GetEvalAutomorphismKeyMap(tag)`` for the
            key tag of the first input ciphertext (so inputs must be OpenFHE ciphertexts or bytes).
        ctx: alternatively a :class:`medtwin.he.openfhe_backend.HEContext`; its public key
            material (``ctx.public``) gives the keys.
        engine: alternatively a ready :class:`medtwin._core.Engine` (see
            :func:`medtwin.he.bridge.load_engine`).
        threads: engine threads (None: OpenMP's default, i.e. every core).
        correct_scale: (default off, like the OpenFHE executor: the plan runs literally) cancel
            FIXEDMANUAL's scale drift exactly as ``OpenFHEExecutor(correct_scale=True)`` does (the same factors from :func:`medtwin.program.bounds.scale_corrections` for the
            engine's primes), so both backends produce identical ciphertexts; use
            :meth:`noise_model` for the matching error bounds.

    Inputs may be ``openfhe.Ciphertext`` objects, their BINARY bytes, or ``medtwin._core.Ciphertext``;
    outputs have the type of the program's first input (OpenFHE objects, bytes, or engine
    ciphertexts).

    Raises (from :meth:`run`): ProgramError for an ill-formed program, missing rotation keys or
    operands the engine refuses; CiphertextFormatError / KeyMismatchError for inputs that are not
    ciphertexts of the engine's key pair.
    """

    name = "native"

    def __init__(self, cc=None, *, ctx=None, engine: _core.Engine | None = None, threads: int | None = None,
                 correct_scale: bool = False):
        if engine is None and ctx is not None:
            engine = bridge.engine_from_public(ctx.public)
            cc = ctx.cc
        if engine is None and cc is None:
            raise ProgramError("NativeExecutor needs a crypto context (cc=...), an HEContext (ctx=...) or an engine")
        self.cc = cc
        self.engine = engine
        self.threads = threads
        self._compiled: dict[int, tuple[Program, CompiledProgram]] = {}
        self.correct_scale = bool(correct_scale)
        self._noise = None
        if threads is not None:
            _core.set_num_threads(max(1, int(threads)))

    # -- engine and conversions -------------------------------------------------------------------
    def _ensure_engine(self, sample) -> _core.Engine:
        if self.engine is not None:
            return self.engine
        import openfhe

        if isinstance(sample, _core.Ciphertext):
            tag = sample.key_tag
        elif isinstance(sample, (bytes, bytearray)):
            tag = openfhe.DeserializeCiphertextString(bytes(sample), openfhe.BINARY).GetKeyTag()
        else:
            tag = sample.GetKeyTag()
        try:
            mk = self.cc.GetEvalMultKeyVector(tag)[0]
        except Exception as exc:
            raise KeyMismatchError("the crypto context has no relinearisation key for the inputs' key pair") from exc
        try:
            rk = openfhe.Serialize(self.cc.GetEvalAutomorphismKeyMap(tag), openfhe.BINARY)
        except Exception:  # no rotation keys generated
            rk = b""
        self.engine = bridge.load_engine(mk, rk)
        return self.engine

    def _import(self, eng: _core.Engine, v) -> _core.Ciphertext:
        if isinstance(v, _core.Ciphertext):
            return v
        return bridge.import_ciphertext(eng, v)

    def _export(self, eng: _core.Engine, ct: _core.Ciphertext, kind: str):
        if kind == "native":
            return ct
        if kind == "bytes":
            return bridge.export_ciphertext(eng, ct)
        return bridge.to_openfhe(eng, ct)

    def noise_model(self):
        """The :class:`~medtwin.program.bounds.NoiseModel` of the engine's primes and this
        executor's correction mode (available once the engine exists)."""
        if self._noise is None:
            from medtwin.program.bounds import NoiseModel

            if self.cc is not None:  # the same (calibrated) model the OpenFHE executor uses
                self._noise = NoiseModel.from_context(self.cc, corrected=self.correct_scale)
                return self._noise
            if self.engine is None:
                raise ProgramError("the engine is built on the first run; pass engine=... to ask earlier")
            e = self.engine
            p = e.scaling_mod_size
            q = e.moduli_q
            base = float(2 ** p)
            factors = tuple(base / qq for qq in reversed(q[1:]))
            eps = max((abs(f - 1.0) for f in factors), default=0.0)
            self._noise = NoiseModel.make(e.n, p, eps, source=f"native engine N={e.n}", factors=factors,
                                          corrected=self.correct_scale)
        return self._noise

    def compiled(self, program: Program) -> CompiledProgram:
        """The cached instruction array of ``program``."""
        hit = self._compiled.get(id(program))
        if hit is not None and hit[0] is program:
            return hit[1]
        corr = None
        if self.correct_scale:
            from medtwin.program.bounds import scale_corrections

            nm = self.noise_model()
            if len(nm.rescale_factors) < program.depth:
                raise ProgramError(f"program depth {program.depth} exceeds the context's {len(nm.rescale_factors)}")
            corr = scale_corrections(program, nm)
        cp = compile_program(program, corr)
        self._compiled[id(program)] = (program, cp)
        return cp

    # -- Executor interface ----------------------------------------------------------------------
    def run_one(self, program: Program, inputs: dict[str, Any], meter) -> dict[str, Any]:
        return self.run_batch(program, [inputs], meter)[0]

    def _prepare(self, program: Program, elems: list[dict[str, Any]]):
        """Engine, compiled program, output kind and imported input rows of one program's batch."""
        names_in = [i.name for i in program.inputs]
        first = elems[0][names_in[0]] if names_in else None
        if first is None:
            raise ProgramError("the native backend needs at least one encrypted input")
        eng = self._ensure_engine(first)
        cp = self.compiled(program)
        kind = ("native" if isinstance(first, _core.Ciphertext)
                else "bytes" if isinstance(first, (bytes, bytearray)) else "openfhe")
        if program.slots > eng.n // 2:
            raise ProgramError(f"program has {program.slots} slots; the context has {eng.n // 2}")
        batch = []
        for e in elems:
            row = [self._import(eng, e[n]) for n in cp.input_names]
            for n, c in zip(cp.input_names, row):
                if c.level != 0 or c.noise_degree != 1:
                    raise ProgramError(f"input {n!r} is at level {c.level} with scale degree {c.noise_degree}; "
                                       "the program expects fresh level-0 ciphertexts")
            batch.append(row)
        return eng, cp, kind, batch

    @staticmethod
    def _engine_call(fn, what: str):
        try:
            return fn()
        except (CiphertextFormatError, KeyMismatchError, ProgramError):
            raise
        except MedTwinError as exc:  # ValidationError from the engine (missing key, depth, ...)
            raise ProgramError(f"{what} failed in the native engine: {exc}") from None

    def run_batch(self, program: Program, elems: list[dict[str, Any]], meter) -> list[dict[str, Any]]:
        if not elems:
            return []
        eng, cp, kind, batch = self._prepare(program, elems)
        res = self._engine_call(lambda: eng.run_program(cp.code, cp.consts, cp.plains, batch, cp.n_regs, cp.outputs),
                                f"program {program.name!r}")
        meter.add(len(program.ops) * len(elems))
        names = [o.name for o in program.outputs]
        return [{n: self._export(eng, c, kind) for n, c in zip(names, row)} for row in res]

    def add_outputs(self, a: Any, b: Any) -> Any:
        """The sum of two outputs in the engine, returned in ``a``'s representation: engine
        ciphertexts, BINARY bytes (imported, added and exported by the engine, never through
        OpenFHE) or OpenFHE objects.

        Raises:
            ProgramError: operands the engine refuses (other noise-scale degrees, other key pairs);
                levels are aligned, as in OpenFHE.
            CiphertextFormatError, KeyMismatchError: bytes that are not ciphertexts of the
                engine's key pair.
        """
        eng = self._ensure_engine(a)
        kind = ("native" if isinstance(a, _core.Ciphertext)
                else "bytes" if isinstance(a, (bytes, bytearray)) else "openfhe")
        x, y = self._import(eng, a), self._import(eng, b)
        return self._export(eng, self._engine_call(lambda: eng.add(x, y), "adding two outputs"), kind)

    def chunk_group(self) -> int:
        """Chunks side by side (one thread each) on small rings, one at a time (every thread on
        each op) on large ones. Measured: a ring-2^12 study's two chunks run about 1.8x faster
        side by side; on the main job's ring (2^16, depth 32) two 150-patient chunks took
        15.9-16.1 s one at a time against 17.7-18.2 s side by side, and the whole 1,200-patient
        job (8 chunks) 48.8 and 52.1 s against 47.0 and 52.5 s (alternating fresh processes, a
        slow machine phase): no slower, and one chunk's working set in memory instead of two.
        Rings between 2^13 and 2^16 were not measured (no preset uses them); they count as large
        from 2^14."""
        if self.engine is not None and self.engine.n >= 1 << 14:
            return 1
        return super().chunk_group()

    def run_many(self, jobs: Sequence[tuple[Program, dict[str, Any]]], *,
                 progress: ProgressMeter | None = None) -> list[dict[str, Any]]:
        """Run several programs (e.g. a study's chunks), each on one set of inputs, in one engine
        call: the jobs run side by side, one thread each, which on small rings beats spreading
        every op over the threads (a ring-2^12 study's two chunks: about 1.8x). Same results,
        bit for bit, as :meth:`run` on each.

        Raises:
            ProgramError: as :meth:`run`; a batch (list) given as an input value.
        """
        jobs = [(p, dict(i)) for p, i in jobs]
        if len(jobs) <= 1:
            return super().run_many(jobs, progress=progress)
        for program, inputs in jobs:
            names = self.check_input_names(program, inputs)
            if any(self._is_batch(inputs[n]) for n in names):
                raise ProgramError("run_many takes one value per input of each program (no batches)")
        meter = _Counter(progress or ProgressMeter(), sum(len(p.ops) for p, _ in jobs), "programs")
        try:
            prepared = [self._prepare(p, [i]) for p, i in jobs]
            eng = prepared[0][0]
            if any(pr[0] is not eng for pr in prepared):
                raise ProgramError("the jobs' inputs belong to different key sets")
            progs = [(cp.code, cp.consts, cp.plains, cp.n_regs, cp.outputs) for _, cp, _, _ in prepared]
            res = self._engine_call(lambda: eng.run_programs(progs, [b for _, _, _, b in prepared]),
                                    f"programs {sorted({p.name for p, _ in jobs})}")
            meter.add(sum(len(p.ops) for p, _ in jobs))
            return [{o.name: self._export(eng, c, kind) for o, c in zip(p.outputs, r[0])}
                    for (p, _), (_, _, kind, _), r in zip(jobs, prepared, res)]
        finally:
            meter.meter.close()


#: Alias named in the engine's issue (the backend object ``backend="native"`` selects).
NativeBackend = NativeExecutor

register_executor("native", lambda **kw: NativeExecutor(**kw))
