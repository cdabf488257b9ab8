"""Whole programs: the native backend against OpenFHE's executor on the same ciphertexts
(bit-exact towers) and against numpy within the program's stated error bound."""
from __future__ import annotations

import os

import numpy as np
import openfhe
import pytest
from hypothesis import HealthCheck, given, settings

from medtwin import _core
from medtwin.errors import ProgramError, ValidationError
from medtwin.he import bridge
from medtwin.he.native import NativeExecutor, compile_program
from medtwin.program import NoiseModel, OpenFHEExecutor, PlanParams, ProgramBuilder, get_executor
from tests.native.conftest import make_setup
from tests.program.randprog import ROTS, random_program

RING = 1 << 10
SLOTS = RING // 2
DEPTH = 8
PARAMS = PlanParams(40, 49, RING)


@pytest.fixture(scope="module")
def setup():
    return make_setup(RING, DEPTH, 0, rotations=tuple(sorted({r % SLOTS for r in ROTS} | {4, 8})))


def test_native_is_registered(setup):
    ex = get_executor("native", cc=setup.cc)
    assert isinstance(ex, NativeExecutor)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=random_program(slots=SLOTS, max_depth=DEPTH, max_mag=30.0))
def test_random_programs_match_openfhe(setup, case):
    b, inputs, expected, _ = case
    prog = b.build(PARAMS)
    cts = {k: setup.encrypt(v) for k, v in inputs.items()}
    ex = NativeExecutor(engine=setup.engine)
    noise = ex.noise_model()
    assert noise.rescale_factors == NoiseModel.from_context(setup.cc).rescale_factors
    ours = ex.run(prog, cts)
    theirs = OpenFHEExecutor(setup.cc, threads=1).run(prog, cts)
    for name, want in expected.items():
        a = setup.imp(ours[name])
        b_ = setup.imp(theirs[name])
        kinds = [op.kind for op in prog.ops]
        consts = [op.const for op in prog.ops if op.const is not None]
        assert np.array_equal(a.data, b_.data), (kinds, consts)  # same towers as OpenFHE's
        got = setup.decrypt(ours[name])
        assert float(np.max(np.abs(got - want))) <= prog.error_bound(name, noise=noise)


def test_batch_and_output_types(setup):
    rng = np.random.default_rng(3)
    b = ProgramBuilder("batch", SLOTS)
    x = b.input("x", (0.5, 2.0))
    w = rng.uniform(0, 1, SLOTS)
    b.output("y", x * x * w + b.rotate(x, 1) + 0.25)
    prog = b.build(PARAMS)
    xs = [rng.uniform(0.5, 2.0, SLOTS) for _ in range(3)]
    ex = get_executor("native", cc=setup.cc)
    outs = ex.run(prog, {"x": [setup.encrypt(v) for v in xs]})["y"]
    assert len(outs) == 3 and all(isinstance(o, openfhe.Ciphertext) for o in outs)
    for v, ct in zip(xs, outs):
        np.testing.assert_allclose(setup.decrypt(ct), v * v * w + np.roll(v, -1) + 0.25, atol=1e-5)
    # bytes in -> bytes out; engine ciphertexts in -> engine ciphertexts out
    bx = openfhe.Serialize(setup.encrypt(xs[0]), openfhe.BINARY)
    out_b = ex.run(prog, {"x": bx})["y"]
    assert isinstance(out_b, bytes)
    out_n = ex.run(prog, {"x": setup.imp(bx)})["y"]
    assert isinstance(out_n, _core.Ciphertext)
    assert setup.exp(out_n) == out_b


def test_errors(setup):
    b = ProgramBuilder("rot", SLOTS)
    x = b.input("x", (0.0, 1.0))
    b.output("r", b.rotate(x, 7))  # no key for 7
    prog = b.build(PARAMS)
    with pytest.raises(ProgramError, match="rotation key"):
        NativeExecutor(engine=setup.engine).run(prog, {"x": setup.encrypt(np.zeros(SLOTS))})
    b = ProgramBuilder("lvl", SLOTS)
    x = b.input("x", (0.0, 1.0))
    b.output("y", x * x)
    prog = b.build(PARAMS)
    deep = setup.cc.LevelReduce(setup.encrypt(np.zeros(SLOTS)), None, 1)
    with pytest.raises(ProgramError, match="level-0"):
        NativeExecutor(engine=setup.engine).run(prog, {"x": deep})
    with pytest.raises(ProgramError, match="needs a crypto context"):
        NativeExecutor()
    cp = compile_program(prog)
    bad = cp.code.copy()
    bad[0] = 99
    with pytest.raises(ProgramError, match="opcode"):
        setup.engine.run_program(bad, cp.consts, cp.plains, [[setup.imp(setup.encrypt([0.0]))]], cp.n_regs, cp.outputs)
    bad = cp.code.copy()
    bad[2] = 5  # input index out of range
    with pytest.raises(ProgramError, match="input index"):
        setup.engine.run_program(bad, cp.consts, cp.plains, [[setup.imp(setup.encrypt([0.0]))]], cp.n_regs, cp.outputs)


def test_constants_out_of_range_are_errors_not_a_dead_process(setup):
    """A constant no 2^126 holds (times the scale), or not finite, is refused with an error; it was
    checked inside an OpenMP loop, where the exception terminated the process (found by fuzzing
    run_program)."""
    eng, a = setup.engine, setup.imp(setup.encrypt([0.5]))
    for c in (1e300, -1e300, float("nan"), float("inf")):
        for op in (eng.mul_const, eng.add_const, eng.mul_const_rescale):
            with pytest.raises(ValidationError, match="constant"):
                op(a, c)
        # OP_INPUT r0 <- inputs[0]; OP_MUL_CONST / OP_ADD_CONST r1 <- r0 * consts[0] over a batch of two
        for opcode in (6, 8, 17):
            code = np.array([0, 0, 0, 0, opcode, 1, 0, 0], dtype=np.int64)
            with pytest.raises(ValidationError, match="constant"):
                eng.run_program(code, np.array([c]), [], [[a], [a]], 2, [1])
    assert np.allclose(setup.decrypt(bridge.to_openfhe(eng, eng.mul_const(a, 2.0)))[:1], [1.0], atol=1e-6)


def test_scale_correction_matches_openfhe_executor(setup):
    rng = np.random.default_rng(9)
    b = ProgramBuilder("corr", SLOTS)
    x = b.input("x", (0.5, 2.0))
    w = rng.uniform(0, 1, SLOTS)
    b.output("y", (x * 0.7 + 0.1) * w * x)
    prog = b.build(PARAMS)
    ct = setup.encrypt(rng.uniform(0.5, 2.0, SLOTS))
    for corr in (False, True):
        ours = NativeExecutor(engine=setup.engine, correct_scale=corr).run(prog, {"x": ct})["y"]
        theirs = OpenFHEExecutor(setup.cc, correct_scale=corr).run(prog, {"x": ct})["y"]
        np.testing.assert_array_equal(setup.imp(ours).data, setup.imp(theirs).data)


def test_mul_const_read_only_by_its_rescale_is_fused(setup):
    """compile_program runs such a pair as one op (rescale(x * c), no intermediate product) and
    keeps the pair when the product has another reader; both give OpenFHE's towers."""
    rng = np.random.default_rng(13)
    b = ProgramBuilder("fuse", SLOTS)
    x = b.input("x", (-1.0, 1.0))
    b.output("y", x * 0.37 + x * -1.25)  # two products, each read only by its rescale
    prog = b.build(PARAMS)
    code = compile_program(prog).code.reshape(-1, 4)
    ops = [o.kind for o in prog.ops]
    assert ops.count("mul_const") == 2 and ops.count("rescale") >= 2
    # the second product's rescale also takes the sum (opcode 19, see the rescale_add test)
    assert (code[:, 0] == 17).sum() == 1 and (code[:, 0] == 19).sum() == 1 and (code[:, 0] == 6).sum() == 0
    unfused = compile_program(prog, fuse=False).code.reshape(-1, 4)
    assert (unfused[:, 0] == 6).sum() == 2 and not np.isin(unfused[:, 0], (17, 18, 19)).any()
    ct = setup.encrypt(rng.uniform(-1, 1, SLOTS))
    for corr in (False, True):
        ours = NativeExecutor(engine=setup.engine, correct_scale=corr).run(prog, {"x": ct})["y"]
        theirs = OpenFHEExecutor(setup.cc, correct_scale=corr).run(prog, {"x": ct})["y"]
        np.testing.assert_array_equal(setup.imp(ours).data, setup.imp(theirs).data)
    # a raw instruction array: the fused op equals mul_const then rescale, and leaves r0 alone
    a = setup.imp(ct)
    before = a.data.copy()
    raw = np.array([[0, 0, 0, 0], [17, 1, 0, 0], [6, 2, 0, 0], [10, 3, 2, 0]], dtype=np.int64).reshape(-1)
    (f, g), = setup.engine.run_program(raw, np.array([0.37]), [], [[a]], 4, [1, 3])
    np.testing.assert_array_equal(f.data, g.data)
    np.testing.assert_array_equal(a.data, before)


def test_rescale_read_only_by_an_add_is_fused(setup):
    """A rescale (of a product, of a relinearised square, of a plaintext product) read only by an
    add as its second operand becomes rescale_add / mul_const_rescale_add: the sum is formed in
    the rescale's last pass. Towers equal OpenFHE's and the unfused instruction array's."""
    rng = np.random.default_rng(17)
    b = ProgramBuilder("fuse_add", SLOTS)
    x = b.input("x", (-1.0, 1.0))
    y = b.input("y", (-1.0, 1.0))
    w = rng.uniform(-1, 1, SLOTS)
    lin = x * 0.37 + y * -1.25 + x * 0.5 + 0.125   # a chain of constant products
    sq = lin + x * y                                # relinearised product, then rescale, then add
    b.output("lin", lin)
    b.output("sq", sq + b.plain(w) * y)             # plaintext product
    prog = b.build(PARAMS)
    fused = compile_program(prog).code.reshape(-1, 4)
    plain = compile_program(prog, fuse=False).code.reshape(-1, 4)
    assert (fused[:, 0] == 19).sum() >= 2 and (fused[:, 0] == 18).sum() >= 1
    assert (fused[:, 0] == 1).sum() < (plain[:, 0] == 1).sum()
    # the tensor product, its relinearisation, its rescale and the sum run as one op
    # (mul_rescale_add, opcode 21; see the mul_rescale test)
    assert (fused[:, 0] == 21).sum() == 1 and not np.isin(fused[:, 0], (4, 15, 16)).any()
    assert (plain[:, 0] == 15).sum() == 1 and (plain[:, 0] == 16).sum() == 1
    cts = {"x": setup.encrypt(rng.uniform(-1, 1, SLOTS)), "y": setup.encrypt(rng.uniform(-1, 1, SLOTS))}
    for corr in (False, True):
        ours = NativeExecutor(engine=setup.engine, correct_scale=corr).run(prog, cts)
        theirs = OpenFHEExecutor(setup.cc, correct_scale=corr).run(prog, cts)
        for k in ("lin", "sq"):
            np.testing.assert_array_equal(setup.imp(ours[k]).data, setup.imp(theirs[k]).data)
    # raw instructions: r2 = r1 + rescale(r0 * c) against mul_const_rescale then add; operands at
    # another level take the two-step fallback; a malformed operand word is refused
    a = setup.imp(cts["x"])
    yb = setup.engine.rescale(setup.engine.mul_const(setup.imp(cts["y"]), 0.5))
    before = a.data.copy()
    raw = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [19, 2, 0, (0 << 32) | 1], [17, 3, 0, 0], [1, 4, 1, 3],
                    [6, 6, 0, 0], [18, 5, 6, 1]], dtype=np.int64).reshape(-1)
    (f, g, h), = setup.engine.run_program(raw, np.array([0.75]), [], [[a, yb]], 7, [2, 4, 5])
    np.testing.assert_array_equal(f.data, g.data)
    np.testing.assert_array_equal(a.data, before)
    mc = setup.engine.mul_const(a, 0.75)
    np.testing.assert_array_equal(h.data, setup.engine.add(yb, setup.engine.rescale(mc)).data)
    low = setup.engine.level_down(yb, 1)   # one tower short of the rescaled value: the fallback aligns levels
    (k,), = setup.engine.run_program(np.array([0, 0, 0, 0, 0, 1, 1, 0, 6, 3, 0, 0, 18, 2, 3, 1], dtype=np.int64),
                                     np.array([0.75]), [], [[a, low]], 4, [2])
    np.testing.assert_array_equal(k.data, setup.engine.add(low, setup.engine.rescale(mc)).data)
    high = setup.imp(cts["y"])             # one tower more than the rescaled value: its first towers are read
    (m,), = setup.engine.run_program(np.array([0, 0, 0, 0, 0, 1, 1, 0, 6, 3, 0, 0, 18, 2, 3, 1], dtype=np.int64),
                                     np.array([0.75]), [], [[a, high]], 4, [2])
    ref = setup.engine.add(high, setup.engine.rescale(mc))
    np.testing.assert_array_equal(m.data, ref.data)
    assert bridge.export_ciphertext(setup.engine, m) == bridge.export_ciphertext(setup.engine, ref)
    with pytest.raises(Exception, match="constant index"):
        setup.engine.run_program(np.array([0, 0, 0, 0, 0, 1, 1, 0, 19, 2, 0, (5 << 32) | 1], dtype=np.int64),
                                 np.array([0.5]), [], [[a, yb]], 3, [2])


def test_relinearised_product_read_only_by_its_rescale_is_fused(setup):
    """mul -> relin -> rescale with single readers runs as mul_rescale (opcode 20), and as
    mul_rescale_add (21) when an add reads the rescale as its second operand: the key switch's
    ModDown and the rescale share their transforms. Towers equal OpenFHE's and the unfused
    array's; a product with another reader keeps its own ops."""
    rng = np.random.default_rng(23)
    b = ProgramBuilder("fuse_mul", SLOTS)
    x, y, z = b.input("x", (-1.0, 1.0)), b.input("y", (-1.0, 1.0)), b.input("z", (-1.0, 1.0))
    xy = x * y
    b.output("p", xy * z)                 # rescale of a product read only by it
    b.output("s", x * z + y * z)          # the second product's rescale takes the sum
    b.output("q", x * x)                  # a square (both operands one register)
    prog = b.build(PARAMS)
    fused = compile_program(prog).code.reshape(-1, 4)
    plain = compile_program(prog, fuse=False).code.reshape(-1, 4)
    kinds = [o.kind for o in prog.ops]
    assert (fused[:, 0] == 20).sum() + (fused[:, 0] == 21).sum() == kinds.count("mul")
    assert (fused[:, 0] == 21).sum() >= 1 and not np.isin(fused[:, 0], (4, 15, 16)).any()
    assert not np.isin(plain[:, 0], (4, 20, 21)).any()
    cts = {k: setup.encrypt(rng.uniform(-1, 1, SLOTS)) for k in "xyz"}
    before = {k: setup.imp(v).data.copy() for k, v in cts.items()}
    for corr in (False, True):
        ours = NativeExecutor(engine=setup.engine, correct_scale=corr).run(prog, cts)
        theirs = OpenFHEExecutor(setup.cc, correct_scale=corr).run(prog, cts)
        for k in ("p", "s", "q"):
            np.testing.assert_array_equal(setup.imp(ours[k]).data, setup.imp(theirs[k]).data)
    for k, v in cts.items():
        np.testing.assert_array_equal(setup.imp(v).data, before[k])
    # raw instructions against the separate engine ops (towers and metadata), the addend below
    # the level (two-step fallback) and above it (its first towers read)
    e = setup.engine
    a, c = setup.imp(cts["x"]), setup.imp(cts["y"])
    ref = e.rescale(e.mul(a, c))
    yb = e.rescale(e.mul(c, c))
    raw = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 2, 2, 0], [20, 3, 0, 1], [21, 4, 0, (1 << 32) | 2]],
                   dtype=np.int64).reshape(-1)
    zc = setup.imp(cts["z"])
    for addend in (yb, e.level_down(yb, 1), zc):
        want = e.add(addend, ref)
        (f, g), = e.run_program(raw, np.zeros(0), [], [[a, c, addend]], 5, [3, 4])
        np.testing.assert_array_equal(f.data, ref.data)
        assert (f.level, f.scale, f.towers) == (ref.level, ref.scale, ref.towers)
        np.testing.assert_array_equal(g.data, want.data)
        assert bridge.export_ciphertext(e, g) == bridge.export_ciphertext(e, want)
        np.testing.assert_array_equal(e.mul_rescale(a, c, addend).data, want.data)
    for bad in (e.mul_const(zc, 0.5), e.level_down(e.mul_const(zc, 0.5), 2)):  # noise degree 2: refused as add
        with pytest.raises(Exception, match="noise-scale degree"):
            e.run_program(raw, np.zeros(0), [], [[a, c, bad]], 5, [4])
        with pytest.raises(Exception, match="noise-scale degree"):
            e.mul_rescale(a, c, bad)
    with pytest.raises(Exception, match="register index"):
        e.run_program(np.array([0, 0, 0, 0, 21, 1, 0, (7 << 32) | 0], dtype=np.int64), np.zeros(0), [], [[a]], 2, [1])
    with pytest.raises(Exception, match="negative operand"):
        e.run_program(np.array([0, 0, 0, 0, 21, 1, 0, -1], dtype=np.int64), np.zeros(0), [], [[a]], 2, [1])
    one = e.level_down(a, a.towers - 1)
    with pytest.raises(ValueError, match="one tower"):
        e.mul_rescale(one, one)


def test_product_added_to_itself_runs_doubled(setup):
    """add(p, p) of a fused product p with no other reader (the Chebyshev product rule's factor 2)
    runs as mul_rescale_double (opcode 22): the 2 folded into the rescale's constants. Towers
    equal OpenFHE's and the unfused array's; Engine.mul_rescale(factor=f) equals f additions."""
    rng = np.random.default_rng(31)
    b = ProgramBuilder("double", SLOTS)
    x, y = b.input("x", (-1.0, 1.0)), b.input("y", (-1.0, 1.0))
    p = x * y
    b.output("d", p + p)
    q = x * x
    b.output("q", q)                 # read twice (output and the add): not folded
    b.output("qq", q + q)
    prog = b.build(PARAMS)
    code = compile_program(prog).code.reshape(-1, 4)
    assert (code[:, 0] == 22).sum() == 1
    cts = {k: setup.encrypt(rng.uniform(-1, 1, SLOTS)) for k in "xy"}
    for corr in (False, True):
        ours = NativeExecutor(engine=setup.engine, correct_scale=corr).run(prog, cts)
        theirs = OpenFHEExecutor(setup.cc, correct_scale=corr).run(prog, cts)
        for k in ("d", "q", "qq"):
            np.testing.assert_array_equal(setup.imp(ours[k]).data, setup.imp(theirs[k]).data)
    e = setup.engine
    a, c = setup.imp(cts["x"]), setup.imp(cts["y"])
    r = e.mul_rescale(a, c)
    for f, want in ((2, e.add(r, r)), (3, e.add(e.add(r, r), r))):
        got = e.mul_rescale(a, c, factor=f)
        np.testing.assert_array_equal(got.data, want.data)
        assert bridge.export_ciphertext(e, got) == bridge.export_ciphertext(e, want)
    (g,), = e.run_program(np.array([0, 0, 0, 0, 0, 1, 1, 0, 22, 2, 0, 1], dtype=np.int64), np.zeros(0), [],
                          [[a, c]], 3, [2])
    np.testing.assert_array_equal(g.data, e.add(r, r).data)
    with pytest.raises(Exception, match="factor"):
        e.mul_rescale(a, c, factor=0)
    with pytest.raises(Exception, match="factor"):
        e.mul_rescale(a, c, r, factor=2)


@pytest.mark.parametrize("first", [49, 60])
def test_fused_mul_rescale_on_the_large_ring_path(first):
    """From N = 2^13 the fused ModDown-and-rescale forms each tower with one transform (the IFMA
    prologue/epilogue path); a 60-bit first prime takes the two-step path on that tower only.
    Towers equal OpenFHE's, and the portable build's (IFMA switched off)."""
    n = 1 << 13
    st = make_setup(n, 4, 0, first=first, rotations=())
    rng = np.random.default_rng(first + 1)
    b = ProgramBuilder("fuse_mul_big", n // 2)
    x, y = b.input("x", (-1.0, 1.0)), b.input("y", (-1.0, 1.0))
    xx = x * x
    b.output("z", x * 0.5 + y * y + (x * y) * x + (xx + xx))
    prog = b.build(PlanParams(40, first, n))
    code = compile_program(prog).code.reshape(-1, 4)
    assert (code[:, 0] == 20).sum() >= 1 and (code[:, 0] == 21).sum() >= 1 and (code[:, 0] == 22).sum() == 1
    cts = {"x": st.encrypt(rng.uniform(-1, 1, n // 2)), "y": st.encrypt(rng.uniform(-1, 1, n // 2))}
    theirs = st.imp(OpenFHEExecutor(st.cc).run(prog, cts)["z"]).data
    np.testing.assert_array_equal(st.imp(NativeExecutor(engine=st.engine).run(prog, cts)["z"]).data, theirs)
    a, c = st.imp(cts["x"]), st.imp(cts["y"])
    fused, ref = st.engine.mul_rescale(a, c), st.engine.rescale(st.engine.mul(a, c))
    np.testing.assert_array_equal(fused.data, ref.data)
    if _core.ifma_enabled():
        _core.set_ifma_enabled(False)
        try:
            np.testing.assert_array_equal(st.engine.mul_rescale(a, c).data, ref.data)
            np.testing.assert_array_equal(st.imp(NativeExecutor(engine=st.engine).run(prog, cts)["z"]).data, theirs)
        finally:
            _core.set_ifma_enabled(True)


def _chain(e, y, xs, cs):
    """The chain of rescale_add links one by one (mul_const_rescale + add, bit-exact with them)."""
    for x, c in zip(xs, cs):
        y = e.add(y, e.mul_const_rescale(x, c) if c is not None else e.rescale(x))
    return y


@pytest.mark.parametrize("n", [1 << 10, 1 << 13])
def test_rescale_sum_matches_the_chain(n):
    """Engine.rescale_sum (y + sum_t rescale(c_t x_t) with one NTT per tower for the whole sum)
    gives the towers and metadata of the chain of links, on the vector path (N = 2^13) and the
    portable one (N = 2^10, and IFMA switched off); it declines (None) what it does not take."""
    st = make_setup(n, 4, 0, rotations=())
    e = st.engine
    rng = np.random.default_rng(n)
    xs = [st.imp(st.encrypt(rng.uniform(-1, 1, n // 2))) for _ in range(5)]
    y = e.rescale(e.mul_const(xs[0], 0.25))
    sq, sq2 = e.mul(xs[1], xs[2]), e.mul(xs[3], xs[4])  # degree 2: rescaled without a constant
    top = st.imp(st.encrypt(rng.uniform(-1, 1, n // 2)))  # an addend above the level: first towers read
    for yy, terms, consts in ((y, xs, [0.37, -1.25, 0.5, 9.445580514566371, -0.5]),
                              (y, [xs[0], sq, xs[3]], [0.1, None, -2.0]), (y, [sq, sq2], [None, None]),
                              (top, xs[:3], [0.5, 0.2, 0.3])):
        want = _chain(e, yy, terms, consts)
        got = e.rescale_sum(yy, terms, consts)
        assert got is not None
        np.testing.assert_array_equal(got.data, want.data)
        assert (got.level, got.scale, got.towers, got.noise_degree) == (want.level, want.scale, want.towers, want.noise_degree)
        assert bridge.export_ciphertext(e, got) == bridge.export_ciphertext(e, want)
        if _core.ifma_enabled():
            _core.set_ifma_enabled(False)
            try:
                np.testing.assert_array_equal(e.rescale_sum(yy, terms, consts).data, want.data)
            finally:
                _core.set_ifma_enabled(True)
    # declined: one term, terms of other towers, y below the level, a term at another degree
    assert e.rescale_sum(y, xs[:1], [0.5]) is None
    assert e.rescale_sum(y, [xs[0], e.level_down(xs[1], 1)], [0.5, 0.5]) is None
    assert e.rescale_sum(e.level_down(y, 1), xs[:2], [0.5, 0.5]) is None
    assert e.rescale_sum(y, [xs[0], xs[1]], [0.5, None]) is None  # rescale(x) has degree 0 here
    assert e.rescale_sum(e.mul_const(xs[4], 1.0), xs[:2], [0.5, 0.5]) is None  # y of degree 2
    with pytest.raises(Exception, match="one constant"):
        e.rescale_sum(y, xs[:2], [0.5])


def test_rescale_chains_in_programs_run_as_sums(setup):
    """Chains of rescale_add links in a compiled program (linear combinations) run as rescale
    sums where the partial sums have no other reader; a partial sum that is also an output keeps
    its link. Towers equal OpenFHE's and the link-by-link instruction array's."""
    rng = np.random.default_rng(29)
    b = ProgramBuilder("sums", SLOTS)
    x, y, z = b.input("x", (-1.0, 1.0)), b.input("y", (-1.0, 1.0)), b.input("z", (-1.0, 1.0))
    lin = x * 0.37 + y * -1.25 + z * 0.5 + x * 2.0 + y * 0.125        # same-level terms
    part = x * 0.3 + y * 0.6
    b.output("lin", lin)
    b.output("part", part)                                               # a partial sum read twice
    b.output("more", part + z * 0.9 + x * -0.4)
    b.output("mixed", (x * y) * 0.5 + x * 0.25 + y * 0.75 + (x * z) * 1.5)  # terms at two levels
    prog = b.build(PARAMS)
    code = compile_program(prog).code.reshape(-1, 4)
    assert (code[:, 0] == 19).sum() >= 6
    cts = {k: setup.encrypt(rng.uniform(-1, 1, SLOTS)) for k in "xyz"}
    for corr in (False, True):
        ours = NativeExecutor(engine=setup.engine, correct_scale=corr).run(prog, cts)
        theirs = OpenFHEExecutor(setup.cc, correct_scale=corr).run(prog, cts)
        for k in ("lin", "part", "more", "mixed"):
            np.testing.assert_array_equal(setup.imp(ours[k]).data, setup.imp(theirs[k]).data)
    # raw: r3 = y0 + R(x c0); r4 = r3 + R(x1 c1); r5 = r4 + R(x c2), with r3 also an output (its
    # link stays) and without (one sum)
    e = setup.engine
    a, c = setup.imp(cts["x"]), setup.imp(cts["y"])
    y0 = e.rescale(e.mul_const(setup.imp(cts["z"]), 0.5))
    consts = np.array([0.37, -1.25, 2.0])
    raw = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 2, 2, 0], [19, 3, 0, (0 << 32) | 2], [19, 4, 1, (1 << 32) | 3],
                    [12, 3, 0, 0], [19, 5, 0, (2 << 32) | 4]], dtype=np.int64).reshape(-1)
    want = _chain(e, y0, [a, c, a], list(consts))
    (s1,), = e.run_program(raw, consts, [], [[a, c, y0]], 6, [5])
    np.testing.assert_array_equal(s1.data, want.data)
    raw_out = raw.reshape(-1, 4)[[0, 1, 2, 3, 4, 6]].reshape(-1)  # no free of r3: it is an output
    (p3, s2), = e.run_program(raw_out, consts, [], [[a, c, y0]], 6, [3, 5])
    np.testing.assert_array_equal(s2.data, want.data)
    np.testing.assert_array_equal(p3.data, _chain(e, y0, [a], [0.37]).data)


def test_level_drop_read_by_one_binary_op_is_elided(setup):
    """A level_down read only by an add, sub or mul is not run: the op reads the value itself and
    uses the common towers (what the drop keeps). No opcode 11 remains for such drops, nothing
    is copied, and the towers equal OpenFHE's (which runs the drops)."""
    rng = np.random.default_rng(19)
    b = ProgramBuilder("elide", SLOTS)
    x, y, z = b.input("x", (-1.0, 1.0)), b.input("y", (-1.0, 1.0)), b.input("z", (-1.0, 1.0))
    xy = x * y
    b.output("s", xy + x)          # x dropped one level for the add
    b.output("d", xy - y)          # y for the sub
    b.output("p", xy * z)          # z for the tensor product
    b.output("xs", x)              # x itself stays an output
    prog = b.build(PARAMS)
    kinds = [o.kind for o in prog.ops]
    assert kinds.count("level_down") >= 2
    fused = compile_program(prog).code.reshape(-1, 4)
    assert (fused[:, 0] == 11).sum() == 0
    assert (compile_program(prog, fuse=False).code.reshape(-1, 4)[:, 0] == 11).sum() == kinds.count("level_down")
    cts = {k: setup.encrypt(rng.uniform(-1, 1, SLOTS)) for k in "xyz"}
    before = setup.imp(cts["x"]).data.copy()
    for corr in (False, True):
        ours = NativeExecutor(engine=setup.engine, correct_scale=corr).run(prog, cts)
        theirs = OpenFHEExecutor(setup.cc, correct_scale=corr).run(prog, cts)
        for k in ("s", "d", "p", "xs"):
            o, t = setup.imp(ours[k]), setup.imp(theirs[k])
            assert o.data.shape == t.data.shape
            np.testing.assert_array_equal(o.data, t.data)
    np.testing.assert_array_equal(setup.imp(cts["x"]).data, before)


def test_fused_rescale_add_matches_openfhe_on_the_large_ring_path():
    """From N = 2^13 the rescale centres the last tower inside its first NTT pass (the IFMA
    epilogue path, see docs/engine.md); the fused sum must give OpenFHE's towers there too, with
    the 60-bit first prime (cohort presets) as well."""
    n = 1 << 13
    for first in (49, 60):
        st = make_setup(n, 4, 0, first=first, rotations=())
        rng = np.random.default_rng(first)
        b = ProgramBuilder("fuse_add_big", n // 2)
        x, y = b.input("x", (-1.0, 1.0)), b.input("y", (-1.0, 1.0))
        b.output("z", x * 0.37 + y * -1.25 + x * y + x * 2.5)
        prog = b.build(PlanParams(40, first, n))
        assert (compile_program(prog).code.reshape(-1, 4)[:, 0] == 19).sum() >= 2
        cts = {"x": st.encrypt(rng.uniform(-1, 1, n // 2)), "y": st.encrypt(rng.uniform(-1, 1, n // 2))}
        for corr in (False, True):
            ours = NativeExecutor(engine=st.engine, correct_scale=corr).run(prog, cts)["z"]
            theirs = OpenFHEExecutor(st.cc, correct_scale=corr).run(prog, cts)["z"]
            np.testing.assert_array_equal(st.imp(ours).data, st.imp(theirs).data)


def test_in_place_steps_leave_inputs_and_shared_registers_alone(setup):
    """The executor works in place on registers that are dead and unshared; inputs, copies and
    operands read twice must keep their towers (instruction words: opcode, dst, a, b)."""
    e = setup.engine
    rng = np.random.default_rng(11)
    x = rng.uniform(-1, 1, SLOTS)
    a = setup.imp(setup.encrypt(x))
    before = a.data.copy()
    code = np.array([
        [0, 0, 0, 0],    # r0 <- input 0
        [14, 1, 0, 0],   # r1 <- r0 (shared copy)
        [6, 2, 1, 0],    # r2 <- r1 * c0 (r1 dead, but shared with r0: must copy)
        [8, 2, 2, 1],    # r2 <- r2 + c1 (in place)
        [1, 3, 2, 2],    # r3 <- r2 + r2 (same operand twice: must not steal)
        [3, 3, 3, 0],    # r3 <- -r3 (in place)
        [10, 4, 3, 0],   # r4 <- rescale(r3)
        [1, 5, 4, 0],    # r5 <- r4 + r0 (r4 dead: in place; r0 is the input)
    ], dtype=np.int64).reshape(-1)
    consts = np.array([0.5, 0.25])
    outs = e.run_program(code, consts, [], [[a], [a]], 6, [5, 2, 0])
    np.testing.assert_array_equal(a.data, before)
    for y, c2, c0 in outs:
        np.testing.assert_array_equal(c0.data, before)
        want_c2 = e.add_const(e.mul_const(a, 0.5), 0.25)
        np.testing.assert_array_equal(c2.data, want_c2.data)
        want = e.add(e.rescale(e.negate(e.add(want_c2, want_c2))), a)
        np.testing.assert_array_equal(y.data, want.data)


@pytest.mark.parametrize("op", [1, 2])  # OP_ADD, OP_SUB
def test_out_of_place_and_in_place_binary_ops_agree(setup, op):
    """Engine.add/sub (out of place) and the executor's in-place path give identical towers when the
    operands differ in towers (level alignment) or in elements (three-element tensor products)."""
    e = setup.engine
    rng = np.random.default_rng(5)
    a = setup.imp(setup.encrypt(rng.uniform(-1, 1, SLOTS)))
    b = setup.imp(setup.encrypt(rng.uniform(-1, 1, SLOTS)))
    pairs = [(a, e.level_down(b, 1)), (e.level_down(a, 1), b),
             (e.tensor(a, b), e.mul_const(b, 0.5)), (e.mul_const(a, 0.5), e.tensor(a, b))]
    # r2 <- -r0 (copy: r0 is an input), r3 <- -r2 (in place), r4 <- r3 op r1 (in place on r3)
    code = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [3, 2, 0, 0], [3, 3, 2, 0], [op, 4, 3, 1]],
                    dtype=np.int64).reshape(-1)
    for x, y in pairs:
        (got,), = e.run_program(code, np.zeros(0), [], [[x, y]], 5, [4])
        want = e.add(x, y) if op == 1 else e.sub(x, y)
        assert (got.elements, got.towers, got.level) == (want.elements, want.towers, want.level)
        np.testing.assert_array_equal(got.data, want.data)


def test_run_many_matches_run_bit_for_bit(setup):
    """Several programs side by side in one engine call (a study's chunks): each job's towers are
    those of running it alone; run_chunked reports every job in order; batches are refused."""
    from medtwin.program.executors import run_chunked

    rng = np.random.default_rng(17)
    progs = []
    for j, c in enumerate((0.3, -0.8, 1.7)):
        b = ProgramBuilder(f"chunk{j}", SLOTS)
        x = b.input("x", (-1.0, 1.0))
        y = b.input("y", (-1.0, 1.0))
        b.output("z", (x * y + x * c) * rng.uniform(0, 1, SLOTS) + b.rotate(x, 4))
        progs.append(b.build(PARAMS))
    jobs = [(p, {"x": setup.encrypt(rng.uniform(-1, 1, SLOTS)), "y": setup.encrypt(rng.uniform(-1, 1, SLOTS))})
            for p in progs]
    ex = NativeExecutor(engine=setup.engine, correct_scale=True)
    alone = [ex.run(p, i)["z"] for p, i in jobs]
    together = ex.run_many(jobs)
    for a, t in zip(alone, together):
        np.testing.assert_array_equal(setup.imp(a).data, setup.imp(t["z"]).data)
    seen = []
    res = run_chunked(ex, jobs, lambda i, r: seen.append(i), group=2)
    assert seen == [0, 1, 2]
    for a, r in zip(alone, res):
        np.testing.assert_array_equal(setup.imp(a).data, setup.imp(r["z"]).data)
    theirs = run_chunked(OpenFHEExecutor(setup.cc, correct_scale=True), jobs)  # one at a time
    for a, r in zip(alone, theirs):
        np.testing.assert_array_equal(setup.imp(a).data, setup.imp(r["z"]).data)
    with pytest.raises(ProgramError, match="no batches"):
        ex.run_many([(progs[0], {"x": [jobs[0][1]["x"]], "y": [jobs[0][1]["y"]]}), jobs[1]])
    with pytest.raises(ProgramError, match="missing inputs"):
        ex.run_many([(progs[0], {"x": jobs[0][1]["x"]}), jobs[1]])
    # the default grouping: this ring is small, so the chunks go side by side (one per core) ...
    calls = []
    real = ex.run_many
    ex.run_many = lambda js, **kw: calls.append(len(js)) or real(js, **kw)
    res = run_chunked(ex, jobs)
    c = os.cpu_count() or 1
    assert calls == [min(c, 3 - s) for s in range(0, 3, c) if min(c, 3 - s) > 1]
    for a, r in zip(alone, res):
        np.testing.assert_array_equal(setup.imp(a).data, setup.imp(r["z"]).data)


def test_large_rings_run_chunks_one_at_a_time():
    """From N = 2^14 the native executor runs a study's chunks one at a time with every thread on
    each op (measured faster at 2^16); small rings keep them side by side."""
    from types import SimpleNamespace

    assert NativeExecutor(engine=SimpleNamespace(n=1 << 16)).chunk_group() == 1
    assert NativeExecutor(engine=SimpleNamespace(n=1 << 14)).chunk_group() == 1
    assert NativeExecutor(engine=SimpleNamespace(n=1 << 12)).chunk_group() == (os.cpu_count() or 1)
