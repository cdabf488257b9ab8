"""Executors: walk a planned :class:`~medtwin.program.ir.Program` on some backend.

Common interface (:class:`Executor`)::

    outputs = executor.run(program, inputs, progress=None)

``inputs`` maps every input name to one value (a ciphertext, or a numpy vector for the numpy
executor) or to a *batch*: a list of values, the same length for every input. The program runs
once per batch element; ``outputs`` maps every output name to a value, or to a list of values in
batch order when the inputs were batches.

Registry: :func:`get_executor` ("numpy", "openfhe"; other backends call
:func:`register_executor`, e.g. the native engine registers "native").

Progress: any object with ``start(total, label)``, ``update(done)`` and ``close()`` (see
:class:`ProgressMeter`); the core knows neither tqdm nor Qt.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from medtwin.errors import ProgramError
from medtwin.program.ir import Program, last_uses


# -- progress -----------------------------------------------------------------------------------

class ProgressMeter:
    """Progress reporting protocol (and the silent default). ``update`` gets the number of ops done
    so far out of ``total`` (ops x batch elements); calls may come from worker threads."""

    def start(self, total: int, label: str) -> None:
        pass

    def update(self, done: int) -> None:
        pass

    def close(self) -> None:
        pass


class CallbackProgress(ProgressMeter):
    """Calls ``fn(done, total)`` at most every ``min_interval`` seconds and once at the end."""

    def __init__(self, fn: Callable[[int, int], None], min_interval: float = 0.1):
        self.fn = fn
        self.min_interval = min_interval
        self.total = 0
        self._last = 0.0
        self._done = 0
        self._lock = threading.Lock()

    def start(self, total: int, label: str) -> None:
        self.total = total
        self._done = 0
        self.fn(0, total)

    def update(self, done: int) -> None:
        with self._lock:
            self._done = max(self._done, done)
            now = time.monotonic()
            if now - self._last < self.min_interval:
                return
            self._last = now
        self.fn(self._done, self.total)

    def close(self) -> None:
        self.fn(self._done, self.total)


class _Counter:
    def __init__(self, meter: ProgressMeter, total: int, label: str):
        self.meter = meter
        self.done = 0
        self.lock = threading.Lock()
        meter.start(total, label)

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            d = self.done
        self.meter.update(d)


# -- interface and registry ------------------------------------------------------------------------

class Executor:
    """Base class: subclasses implement :meth:`run_one`; :meth:`run` handles batches and progress."""

    name = "abstract"

    def run(self, program: Program, inputs: dict[str, Any], *, progress: ProgressMeter | None = None) -> dict[str, Any]:
        """Run ``program`` on ``inputs`` (one value or a list per input name).

        Raises:
            ProgramError: missing/extra inputs, batches of different lengths, or a backend failure
                (the message names the op).
        """
        names = self.check_input_names(program, inputs)
        batched = {n: self._is_batch(inputs[n]) for n in names}
        if len(set(batched.values())) > 1:
            raise ProgramError("either every input is a batch (a list) or none is")
        is_batch = bool(names) and all(batched.values())
        if is_batch:
            lens = {len(inputs[n]) for n in names}
            if len(lens) != 1:
                raise ProgramError(f"input batches have different lengths {sorted(lens)}")
            nb = lens.pop()
        else:
            nb = 1
        meter = _Counter(progress or ProgressMeter(), len(program.ops) * nb, program.name)
        try:
            if is_batch:
                outs = self.run_batch(program, [{n: inputs[n][i] for n in names} for i in range(nb)], meter)
                return {o.name: [out[o.name] for out in outs] for o in program.outputs}
            return self.run_one(program, dict(inputs), meter)
        finally:
            meter.meter.close()

    @staticmethod
    def check_input_names(program: Program, inputs: dict[str, Any]) -> list[str]:
        """The program's input names, after checking ``inputs`` has exactly those.

        Raises:
            ProgramError: missing or unknown inputs.
        """
        names = [i.name for i in program.inputs]
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ProgramError(f"program {program.name!r}: missing inputs {missing}")
        extra = sorted(set(inputs) - set(names))
        if extra:
            raise ProgramError(f"program {program.name!r}: unknown inputs {extra}")
        return names

    def run_many(self, jobs: Sequence[tuple[Program, dict[str, Any]]], *,
                 progress: ProgressMeter | None = None) -> list[dict[str, Any]]:
        """Run several programs, each on its own inputs (one value per input name): the
        results in order. The chunks of a study are such jobs. This base runs them one after
        another; a backend may run them side by side.

        Raises:
            ProgramError: as :meth:`run`, for any job.
        """
        return [self.run(p, dict(i), progress=progress) for p, i in jobs]

    def _is_batch(self, v) -> bool:
        return isinstance(v, (list, tuple))

    def chunk_group(self) -> int:
        """How many chunk jobs :func:`run_chunked` hands to :meth:`run_many` at a time where the
        executor runs them side by side: one per CPU core unless the executor knows better."""
        return os.cpu_count() or 1

    def add_outputs(self, a: Any, b: Any) -> Any:
        """The sum of two outputs of this executor's programs, in the representation the
        executor returned them (a cohort's chunks add their aggregate sums). This base adds
        arrays (the plaintext executor).

        Raises:
            ProgramError: outputs the backend cannot add (here: arrays of other shapes; the
                encrypted backends: other noise-scale degrees or key pairs).
        """
        try:
            return a + b
        except (TypeError, ValueError) as exc:
            raise ProgramError(f"cannot add these outputs: {exc}") from None

    def run_batch(self, program: Program, elems: list[dict[str, Any]], meter) -> list[dict[str, Any]]:
        return [self.run_one(program, e, meter) for e in elems]

    def run_one(self, program: Program, inputs: dict[str, Any], meter) -> dict[str, Any]:
        raise NotImplementedError


def run_chunked(ex: Executor, jobs: Sequence[tuple[Program, dict[str, Any]]],
                on_result: Callable[[int, dict[str, Any]], None] | None = None,
                group: int | None = None) -> list[dict[str, Any]]:
    """Run a study's chunk jobs ``(program, inputs)`` (one value per input) and return their
    outputs in order. Where the executor runs jobs side by side (it overrides
    :meth:`Executor.run_many`), they go ``group`` at a time (default: :meth:`Executor.chunk_group`);
    otherwise one at a time. ``on_result(i, outputs)`` is called for every job, in order, as
    soon as its group is done: progress, cancellation (raise from it) and partial display.

    Raises:
        ProgramError: as :meth:`Executor.run`.
    """
    jobs = list(jobs)
    side_by_side = type(ex).run_many is not Executor.run_many
    if group is None:
        group = ex.chunk_group() if side_by_side else 1
    g = max(1, int(group)) if side_by_side else 1
    out: list[dict[str, Any]] = []
    for start in range(0, len(jobs), g):
        part = jobs[start:start + g]
        if len(part) == 1:
            p, i = part[0]
            res = [{k: v[0] for k, v in ex.run(p, {n: [x] for n, x in i.items()}).items()}]
        else:
            res = ex.run_many(part)
        for j, r in enumerate(res):
            out.append(r)
            if on_result is not None:
                on_result(start + j, r)
    return out


_REGISTRY: dict[str, Callable[..., Executor]] = {}


def register_executor(name: str, factory: Callable[..., Executor]) -> None:
    """Make ``get_executor(name, **kw)`` call ``factory(**kw)``; re-registering replaces."""
    _REGISTRY[str(name)] = factory


def available_executors() -> list[str]:
    return sorted(_REGISTRY)


def get_executor(name: str, **kw: Any) -> Executor:
    """An executor by name: "numpy" (no arguments), "openfhe" (``cc``, optional ``threads``), or one
    another module registered.

    Raises:
        ProgramError: unknown name (the message lists the registered ones).
    """
    if name == "native" and name not in _REGISTRY:
        try:  # the native engine registers itself on import
            import medtwin.he.native  # noqa: F401
        except ImportError:
            pass
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ProgramError(f"unknown executor {name!r}; available: {available_executors()}") from None
    return factory(**kw)


# -- numpy reference -------------------------------------------------------------------------------

class NumpyExecutor(Executor):
    """Plaintext semantics of the op list on float64 arrays: the exact reference.

    Relinearisation, rescale and level_down are identities; everything else is the real arithmetic
    the op denotes, so results differ from the intended functions only by the polynomial
    approximations (and float64 rounding). Inputs are vectors of ``slots`` values (shorter vectors
    are zero padded); a batch (a list, or a 2-D array per input) runs vectorised.
    """

    name = "numpy"

    def _is_batch(self, v) -> bool:
        return isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim == 2)

    def run_batch(self, program, elems, meter):
        stacked = {n: np.stack([self._vec(program, e[n], n) for e in elems]) for n in elems[0]} if elems else {}
        if not elems:
            return []
        res = self._run(program, stacked, meter, len(elems))
        return [{k: v[i] for k, v in res.items()} for i in range(len(elems))]

    def run_one(self, program, inputs, meter):
        return self._run(program, {n: self._vec(program, v, n) for n, v in inputs.items()}, meter, 1)

    @staticmethod
    def _vec(program: Program, v, name: str) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64).ravel()
        if a.size > program.slots:
            raise ProgramError(f"input {name!r} has {a.size} values for {program.slots} slots")
        if a.size < program.slots:
            a = np.concatenate([a, np.zeros(program.slots - a.size)])
        return a

    def _run(self, program: Program, inputs: dict[str, np.ndarray], meter, nb: int) -> dict[str, np.ndarray]:
        last = last_uses(program.ops, program.outputs)
        vals: list[np.ndarray | None] = [None] * len(program.ops)
        pts = program.plaintexts
        for op in program.ops:
            k = op.kind
            a = [vals[x] for x in op.args]
            if k == "input":
                v = inputs[op.name]
            elif k == "add":
                v = a[0] + a[1]
            elif k == "sub":
                v = a[0] - a[1]
            elif k == "neg":
                v = -a[0]
            elif k == "mul":
                v = a[0] * a[1]
            elif k in ("relin", "rescale", "level_down"):
                v = a[0]
            elif k == "mul_plain":
                v = a[0] * pts[op.plain]
            elif k == "add_plain":
                v = a[0] + pts[op.plain]
            elif k == "mul_const":
                v = a[0] * op.const
            elif k == "add_const":
                v = a[0] + op.const
            elif k == "rotate":
                v = np.roll(a[0], -op.rot, axis=-1)
            else:
                raise ProgramError(f"op {op.out}: unknown kind {k!r}")
            vals[op.out] = v
            for x in op.args:
                if last[x] == op.out:
                    vals[x] = None
            meter.add(nb)
        return {o.name: np.array(vals[o.value], dtype=np.float64, copy=True) for o in program.outputs}


register_executor("numpy", lambda **kw: NumpyExecutor(**kw))


# -- OpenFHE -------------------------------------------------------------------------------------

class OpenFHEExecutor(Executor):
    """Runs the planned ops with OpenFHE (CKKS, FIXEDMANUAL), exactly as planned.

    ``mul`` -> ``EvalMultNoRelin``, ``relin`` -> ``Relinearize``, ``rescale`` -> ``Rescale``,
    ``mul_plain``/``add_plain`` -> ``EvalMult``/``EvalAdd`` with ``MakeCKKSPackedPlaintext(values, 1,
    level)`` encoded at the operand's level (cached per plaintext and level), ``mul_const`` /
    ``add_const`` -> ``EvalMult``/``EvalAdd`` with a double, ``rotate`` -> ``EvalRotate`` (keys for
    ``program.rotation_indices()`` must exist), ``level_down`` -> ``LevelReduce``.

    Args:
        cc: the OpenFHE crypto context (with relinearisation and rotation keys loaded); its depth
            must be at least ``program.depth``.
        ctx: alternatively a :class:`medtwin.he.openfhe_backend.HEContext` (its ``cc`` is used).
        correct_scale: cancel FIXEDMANUAL's scale drift (OpenFHE divides by the prime q but keeps
            the nominal scale 2^p, so every rescale multiplies the value by 2^p/q, |2^p/q - 1| up
            to about 1e-5 at N=2^16) by scaling the constant / plaintext of ``mul_const``,
            ``mul_plain``, ``add_const`` and ``add_plain`` ops with the factors of
            :func:`medtwin.program.bounds.scale_corrections` for this context's primes. Costs
            nothing at run time. Off by default, so that every backend runs the plan literally
            and ``NoiseModel.from_context(cc)`` bounds hold for all of them; when on, use
            :meth:`noise_model` for the matching (tighter) error bounds.
        threads: batch elements run in a pool of this many threads (None or 1: sequential).
            OpenFHE already spreads each operation over its OpenMP threads; measured on the 2-core
            development machine (N=2^14, EvalMult, :func:`measure_gil_release`), two Python
            threads ran 0.6-0.9x as fast as sequential calls with OpenMP on, and 0.7-1.2x with
            ``OMP_NUM_THREADS=1``, so the default is sequential. More threads may pay off on many
            cores with ``OMP_NUM_THREADS`` lowered.
    """

    name = "openfhe"

    def __init__(self, cc=None, *, ctx=None, threads: int | None = None, correct_scale: bool = False):
        if cc is None and ctx is not None:
            cc = ctx.cc
        if cc is None:
            raise ProgramError("OpenFHEExecutor needs a crypto context (cc=...) or an HEContext (ctx=...)")
        self.cc = cc
        self.threads = max(1, int(threads)) if threads is not None else 1
        self._pt: dict[tuple, Any] = {}  # (program id, plaintext, level, factor) -> Plaintext
        self._corr: dict[int, tuple[Program, dict[int, float]]] = {}
        self._lock = threading.Lock()
        self.slots = int(cc.GetRingDimension()) // 2
        from medtwin.program.bounds import NoiseModel

        self._noise = NoiseModel.from_context(cc)
        self.correct_scale = bool(correct_scale) and bool(self._noise.rescale_factors)
        self._noise = self._noise.with_correction(self.correct_scale)

    def noise_model(self, level: int = 0):
        """The :class:`~medtwin.program.bounds.NoiseModel` of this context and correction mode, for
        ``program.error_bound(name, noise=executor.noise_model())``; ``level``: the level at which
        the program's inputs arrive (0 for fresh encryptions; deeper after a bootstrap)."""
        return self._noise.shifted(level)

    def _corrections(self, program: Program, offset: int = 0) -> dict[int, float]:
        if not self.correct_scale:
            return {}
        key = (id(program), offset)
        with self._lock:
            hit = self._corr.get(key)
        if hit is not None and hit[0] is program:
            return hit[1]
        from medtwin.program.bounds import scale_corrections

        if len(self._noise.rescale_factors) < program.depth + offset:
            raise ProgramError(f"program depth {program.depth} from level {offset} exceeds the context's "
                               f"{len(self._noise.rescale_factors)}")
        corr = scale_corrections(program, self._noise.shifted(offset))
        with self._lock:
            self._corr[key] = (program, corr)
        return corr

    def _input_level(self, program: Program, inputs: dict[str, Any]) -> int:
        """The level the program starts at: that of its deepest input (others are level-reduced
        to it). Inputs must be rescaled (scale degree 1) and leave the program's depth."""
        level = 0
        for i in program.inputs:
            v = inputs.get(i.name)
            if v is None:
                raise ProgramError(f"input {i.name!r} is missing")
            if v.GetNoiseScaleDeg() != 1:
                raise ProgramError(f"input {i.name!r} has scale degree {v.GetNoiseScaleDeg()}; "
                                   "the program expects rescaled ciphertexts (degree 1)")
            level = max(level, int(v.GetLevel()))
        room = len(self._noise.rescale_factors)
        if room and level + program.depth > room:
            raise ProgramError(f"the inputs arrive at level {level}; the program needs {program.depth} more levels "
                               f"and the context has {room}")
        return level

    def _plaintext(self, program: Program, idx: int, level: int, factor: float = 1.0):
        key = (id(program), idx, level, factor)
        with self._lock:
            pt = self._pt.get(key)
        if pt is None:
            v = program.plaintexts[idx] if factor == 1.0 else program.plaintexts[idx] * factor
            pt = self.cc.MakeCKKSPackedPlaintext(v.tolist(), 1, level)
            with self._lock:
                self._pt[key] = pt
        return pt

    def add_outputs(self, a: Any, b: Any) -> Any:
        """``EvalAdd`` of two output ciphertexts (the deeper level wins, as in OpenFHE).

        Raises:
            ProgramError: ciphertexts of different noise-scale degrees (OpenFHE adds those into
                a ciphertext that no longer decrypts), or that OpenFHE refuses.
        """
        da, db = a.GetNoiseScaleDeg(), b.GetNoiseScaleDeg()
        if da != db:
            raise ProgramError(f"cannot add outputs of noise-scale degrees {da} and {db} (rescale first)")
        try:
            return self.cc.EvalAdd(a, b)
        except Exception as exc:  # OpenFHE raises RuntimeError/TypeError with its own text
            raise ProgramError(f"OpenFHE cannot add these outputs: {exc}") from None

    def run_batch(self, program, elems, meter):
        if self.threads <= 1 or len(elems) <= 1:
            return [self.run_one(program, e, meter) for e in elems]
        with ThreadPoolExecutor(max_workers=min(self.threads, len(elems))) as pool:
            return list(pool.map(lambda e: self.run_one(program, e, meter), elems))

    def run_one(self, program: Program, inputs: dict[str, Any], meter) -> dict[str, Any]:
        if program.slots > self.slots:
            raise ProgramError(f"program has {program.slots} slots; the context has {self.slots}")
        cc = self.cc
        base = self._input_level(program, inputs)
        corr = self._corrections(program, base)
        last = last_uses(program.ops, program.outputs)
        vals: list[Any] = [None] * len(program.ops)
        done = 0
        for op in program.ops:
            k = op.kind
            a = [vals[x] for x in op.args]
            try:
                if k == "input":
                    v = inputs[op.name]
                    if int(v.GetLevel()) < base:  # e.g. parameters beside bootstrapped states
                        v = cc.LevelReduce(v, None, base - int(v.GetLevel()))
                elif k == "add":
                    v = cc.EvalAdd(a[0], a[1])
                elif k == "sub":
                    v = cc.EvalSub(a[0], a[1])
                elif k == "neg":
                    v = cc.EvalNegate(a[0])
                elif k == "mul":
                    v = cc.EvalMultNoRelin(a[0], a[1])
                elif k == "relin":
                    v = cc.Relinearize(a[0])
                elif k == "rescale":
                    v = cc.Rescale(a[0])
                elif k == "mul_plain":
                    v = cc.EvalMult(a[0], self._plaintext(program, op.plain, base + op.level, corr.get(op.out, 1.0)))
                elif k == "add_plain":
                    v = cc.EvalAdd(a[0], self._plaintext(program, op.plain, base + op.level, corr.get(op.out, 1.0)))
                elif k == "mul_const":
                    v = cc.EvalMult(a[0], float(op.const) * corr.get(op.out, 1.0))
                elif k == "add_const":
                    v = cc.EvalAdd(a[0], float(op.const) * corr.get(op.out, 1.0))
                elif k == "rotate":
                    v = cc.EvalRotate(a[0], int(op.rot))
                elif k == "level_down":
                    v = cc.LevelReduce(a[0], None, base + op.level - self.ops_level(a[0]))
                else:
                    raise ProgramError(f"op {op.out}: unknown kind {k!r}")
            except ProgramError:
                raise
            except Exception as exc:  # OpenFHE raises RuntimeError (missing key, depth exhausted, ...)
                hint = f" (is there a rotation key for {op.rot}?)" if k == "rotate" else ""
                raise ProgramError(f"op {op.out} ({k}, level {op.level}) failed in OpenFHE{hint}: {exc}") from None
            vals[op.out] = v
            for x in op.args:
                if last[x] == op.out:
                    vals[x] = None
            done += 1
            if done % 16 == 0:
                meter.add(16)
        meter.add(done % 16)
        return {o.name: vals[o.value] for o in program.outputs}

    @staticmethod
    def ops_level(ct) -> int:
        return int(ct.GetLevel())


register_executor("openfhe", lambda **kw: OpenFHEExecutor(**kw))


def measure_gil_release(cc, ct, repeats: int = 4) -> float:
    """Speed-up of running ``repeats`` relinearised products in 2 threads over running them in
    sequence (about 2.0 when OpenFHE releases the GIL on a 2-core machine, about 1.0 when not)."""
    def work():
        for _ in range(repeats):
            cc.EvalMult(ct, ct)

    t0 = time.perf_counter()
    work(); work()
    seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    ts = [threading.Thread(target=work) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    par = time.perf_counter() - t0
    return seq / par
