"""Vancomycin cohort study (medtwin.study.cohort): encrypted per-pair values and cohort aggregates
against the float64 reference within the stated bounds on both backends, published values, the
release policy (minimum cohort, flooding), refusal before encryption, audit entries."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medtwin.custody import policy as pol
from medtwin.custody.audit import AuditLog
from medtwin.custody.kdf import TEST_KDF
from medtwin.custody.users import UserStore, authenticate
from medtwin.data import cohort_csv_path
from medtwin.errors import CiphertextFormatError, KeyMismatchError, RangeError, SecurityPolicyError, ValidationError
from medtwin.models.vancomycin import VANCOMYCIN
from medtwin.models.two_compartment import Dosing
from medtwin.study import cohort as C

PW = "violet tundra kettle 93 marching"
N = 24  # patients: one ciphertext at N = 2^12 (128 patients x 16 regimens)


@pytest.fixture(scope="module")
def keys():
    from medtwin.he.openfhe_backend import HEContext

    spec = C.CohortSpec(preset="test-insecure")
    ctx, _ = C.cohort_keys(spec, allow_insecure=True)
    return spec, ctx, HEContext.from_public(ctx.public)


@pytest.fixture(scope="module")
def cohort():
    from medtwin.study.workflow import load_records

    recs = []
    for r in load_records([cohort_csv_path()]):
        c = C.covariates_of_records([r])
        try:
            VANCOMYCIN.validate_covariates(c)
        except RangeError:
            continue
        recs.append(r)
        if len(recs) == N - 3:
            break
    cov = C.covariates_of_records(recs)
    # the corners of the declared ranges, where the approximations are hardest, and the patient
    # of the published value (70 kg, CrCl 100 mL/min) last
    cov = {"weight_kg": np.r_[cov["weight_kg"], 35.0, 200.0, 70.0],
           "crcl_ml_min": np.r_[cov["crcl_ml_min"], 200.0, 5.0, 100.0]}
    return recs, cov, [f"tw-{i:03d}" for i in range(N)]


@pytest.fixture(scope="module", params=["openfhe", "native"])
def outcome(request, keys, cohort, tmp_path_factory):
    spec, ctx, node = keys
    _, cov, ids = cohort
    d = tmp_path_factory.mktemp("audit")
    log = AuditLog(d / "audit.db")
    store = UserStore(d / "users.db", kdf=TEST_KDF, allow_weak=True)
    store.bootstrap_admin("root", PW)
    store.add_user(authenticate(store, "root", PW), "dr.a", "clinician", PW)
    me = authenticate(store, "dr.a", PW, audit=log)
    res = C.run(spec, cov, ids, ctx, node, backend=request.param, per_patient=True, reference_check=True,
                log=log, actor=me)
    return request.param, res, log


# ------------------------------------------------------------------------------ plaintext
def test_published_auc24_rybak_matzke():
    """1 g q12h, CrCl 100 mL/min, 70 kg: CL = 0.06 (0.689 * 100 + 3.66) = 4.354 L/h (Matzke 1984),
    AUC24 = 2000 / CL = 459 mg*h/L (Rybak 2020), inside the 400-600 target."""
    spec = C.CohortSpec(doses_mg=(1000,), intervals_h=(12,))
    ref = C.reference(spec, {"weight_kg": np.array([70.0]), "crcl_ml_min": np.array([100.0])})
    cl = 0.06 * (0.689 * 100.0 + 3.66)
    assert ref["auc24"][0, 0] == pytest.approx(2000.0 / cl, rel=1e-12)
    assert ref["auc24"][0, 0] == pytest.approx(459.4, abs=0.05)
    assert ref["attain"][0, 0] > 0.8 and ref["dauc24"][0, 0] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("crcl, weight", [(100.0, 70.0), (40.0, 120.0), (180.0, 50.0)])
def test_steady_state_closed_form_matches_superposition(crcl, weight):
    """Trough and peak from the infinite-sum formulas equal the superposition of many doses."""
    spec = C.CohortSpec()
    cov = {"weight_kg": np.array([weight]), "crcl_ml_min": np.array([crcl])}
    ref = C.reference(spec, cov)
    beta = VANCOMYCIN.individual_parameters(cov)["k10"][0] * VANCOMYCIN.k21 / (VANCOMYCIN.k12 + VANCOMYCIN.k21)
    for j, r in enumerate(spec.regimens):
        n = int(math.ceil(40.0 / beta / r.interval_h)) + 1  # about 40 / (beta t1/2 ln2) half-lives
        dosing = Dosing.regular(r.dose_mg, r.interval_h, n, infusion_h=r.infusion_h)
        t = np.array([n * r.interval_h - 1e-9, (n - 1) * r.interval_h + r.infusion_h])
        sup = VANCOMYCIN.reference(cov, dosing, t)["conc"][0]
        assert ref["trough"][0, j] == pytest.approx(sup[0], rel=1e-6)
        assert ref["peak"][0, j] == pytest.approx(sup[1], rel=1e-6)
        assert ref["auc24"][0, j] == pytest.approx(VANCOMYCIN.auc24_ss(cov, r.dose_mg, r.interval_h)[0], rel=1e-12)


def test_spec_and_layout():
    spec = C.CohortSpec()
    assert [r.infusion_h for r in spec.regimens[::4]] == [1.0, 1.0, 1.25, 1.5]
    lay = C.CohortLayout(300, 16, 2048)
    assert lay.patients_per_ct == 128 and lay.n_ciphertexts == 3
    v = np.arange(300.0)
    packed = lay.spread(v)
    assert lay.gather(packed)[:, 5].tolist() == v.tolist()
    assert lay.valid().sum() == 300 * 16
    with pytest.raises(ValidationError):
        C.CohortSpec(doses_mg=(0,))
    with pytest.raises(ValidationError):
        C.CohortSpec(intervals_h=(8, 8))
    with pytest.raises(ValidationError):
        C.CohortSpec(mic=0)


# ------------------------------------------------------------------------------ encrypted
def test_pairs_within_stated_bounds(outcome):
    be, res, _ = outcome
    ref = res.reference
    for k, v in res.per_patient.items():
        dev = float(np.abs(v - ref[k]).max())
        assert dev <= res.bounds[k], (be, k, dev, res.bounds[k])
    # the bounds are meaningful: a trough and AUC to well under 1 mg/L, attainment to 1e-3
    assert res.bounds["trough"] < 0.5 and res.bounds["auc24"] < 1.0 and res.bounds["attain"] < 1e-3


def test_published_value_encrypted(outcome, keys):
    """1 g q12h for 70 kg, CrCl 100 mL/min (the cohort's last patient): AUC24 = 2000 / 4.354 =
    459 mg*h/L (Matzke 1984, Rybak 2020) under encryption, within the stated bound."""
    be, res, _ = outcome
    spec = keys[0]
    j = [r.describe() for r in spec.regimens].index("1000 mg q12h")
    assert abs(res.per_patient["auc24"][-1, j] - 2000.0 / (0.06 * 72.56)) <= res.bounds["auc24"]
    assert res.per_patient["attain"][-1, j] > 0.8


def test_aggregates_within_bounds_and_flooded(outcome, keys):
    be, res, _ = outcome
    spec, ctx, node = keys
    ra = C.reference_aggregates(res.reference)
    agg = res.aggregates
    assert agg.n_patients == N and len(agg.regimens) == 16
    raw = res.extra["aggregates_raw"]
    for k in ra:
        dev = float(np.abs(raw[k] - ra[k]).max())
        assert dev <= agg.bounds[k], (be, k, dev, agg.bounds[k])
        # released: flooded with the policy's sigma for the key-dependent bound, rounded
        assert agg.sigma[k] == pytest.approx(pol.DEFAULT_POLICY.sigma(res.extra["aggregate_noise_bounds"][k]))
        grid = agg.values[k] / agg.precision[k]
        assert np.allclose(grid, np.round(grid), atol=1e-6)
        assert np.all(np.abs(agg.values[k] - ra[k]) <= agg.bounds[k] + 9 * agg.sigma[k] + agg.precision[k])
    # PTA is a probability; decrypted before flooding it matches the plaintext cohort's
    assert np.all((raw["pta"] > -1e-3) & (raw["pta"] < 1 + 1e-3))


def test_audit_entries_without_patient_values(outcome, cohort):
    be, res, log = outcome
    recs, cov, ids = cohort
    acts = [(e.action, e.objects.get("mode"), e.objects.get("outcome")) for e in log.entries()]
    assert ("twin.encrypt", None, None) in acts and ("simulation.run", None, None) in acts
    assert ("result.decrypt", "aggregate", "released") in acts
    assert ("result.decrypt", "per_patient", None) in acts
    values = sorted({float(x) for k in cov for x in cov[k]} - {0.0, 1.0})
    assert log.scan_for_values(values) == []
    assert log.scan_for_values([r.source_id for r in recs]) == []


def test_small_cohort_refused_before_encryption(keys, tmp_path):
    spec, ctx, node = keys
    log = AuditLog(tmp_path / "audit.db")
    store = UserStore(tmp_path / "users.db", kdf=TEST_KDF, allow_weak=True)
    store.bootstrap_admin("root", PW)
    me = authenticate(store, "root", PW, audit=log)

    class NoEncrypt:
        slots, key_tag = ctx.slots, ctx.key_tag

        def encrypt(self, *_a, **_k):
            raise AssertionError("encrypted although the cohort is refused")

    cov = {"weight_kg": np.full(5, 70.0), "crcl_ml_min": np.full(5, 90.0)}
    with pytest.raises(SecurityPolicyError, match="5 patients is below the minimum cohort size of 10"):
        C.run(spec, cov, [f"p{i}" for i in range(5)], NoEncrypt(), node, log=log, actor=me)
    assert any(e.objects.get("outcome") == "refused" for e in log.entries())


def test_out_of_range_covariate_refused_before_encryption(keys):
    spec, ctx, node = keys

    class NoEncrypt:
        slots, key_tag = ctx.slots, ctx.key_tag

        def encrypt(self, *_a, **_k):
            raise AssertionError("encrypted an out-of-range patient")

    cov = {"weight_kg": np.full(12, 70.0), "crcl_ml_min": np.r_[np.full(11, 90.0), 250.0]}
    with pytest.raises(RangeError, match="crcl_ml_min") as ei:
        C.run(spec, cov, [f"p{i}" for i in range(12)], NoEncrypt(), node)
    assert "250" not in str(ei.value)


def test_api_cohort_study(keys, cohort):
    from medtwin import api

    spec, ctx, _ = keys
    _, cov, _ = cohort
    sub = {k: v[:12] for k, v in cov.items()}
    # the node on bytes (as on another machine): per-pair values and aggregates decrypt from bytes
    res = api.cohort_study(sub, keys=ctx, backend="native", per_patient=True, reference=True, preset="test-insecure",
                           wire=True)
    assert res.status in (api.Status.OK, api.Status.FLOODING_DOMINATES)
    assert res.aggregates.regimens[:2] == ["750 mg q8h", "750 mg q12h"] and len(res.aggregates.regimens) == 16
    assert res.per_patient["auc24"].shape == (12, 16)
    assert np.all(np.abs(res.per_patient["trough"] - res.result.reference["trough"]) <= res.bounds["trough"])
    assert "| 1500 mg q48h |" in res.table()
    with pytest.raises(SecurityPolicyError):
        api.cohort_study({k: v[:3] for k, v in cov.items()}, keys=ctx, preset="test-insecure")
    # keys made for another grid lack its rotations: a clear error, not a wrong result
    from medtwin.errors import ProgramError

    with pytest.raises(ProgramError, match="cohort_keys"):
        api.cohort_study(sub, doses_mg=[1000, 1500], intervals_h=[12, 24], keys=ctx, preset="test-insecure")


def test_nothing_asked_is_refused(keys):
    spec, ctx, node = keys
    with pytest.raises(ValidationError, match="aggregates, per-patient values or both"):
        C.run(spec, {"weight_kg": np.full(12, 70.0), "crcl_ml_min": np.full(12, 90.0)}, [f"p{i}" for i in range(12)],
              ctx, node, aggregates=False, per_patient=False)


# ------------------------------------------------------------------------------ cohort-128 preset
def test_agg_scale_follows_the_headroom():
    assert C.agg_scale(9, 1.0, 40) == C.AGG_SCALE  # standard-128: unchanged
    s = C.agg_scale(11, 1.0, 49)  # cohort-128
    assert s["mean_tox"] == 512.0 and s["mean_score"] == 512.0 and s["mean_attain"] == C.AGG_SCALE["mean_attain"]
    assert C.agg_scale(11, tox_penalty=3.0, scaling_mod_size=49)["mean_score"] == 128.0
    # the planner accepts these factors at the last level (it refuses values beyond the headroom)
    from medtwin.program.ir import PlanParams

    prog = C.compile_cohort(C.CohortSpec(tox_penalty=3.0), 128, 2048, params=PlanParams(49, 60)).programs[0]
    assert prog.output_range("mean_tox")[1] == pytest.approx(512.0, rel=1e-3)
    assert prog.output_range("mean_score")[0] == pytest.approx(-3.0 * 128.0, rel=1e-3)


def test_chunk_sums_add_random_parts_in_quadrature():
    """Two chunks: the worst-case parts add, the independent random parts by 2-norm."""
    from medtwin.program import NoiseModel, PlanParams, ProgramBuilder
    from medtwin.program.bounds import error_parts

    b = ProgramBuilder("chunk", 64)
    x = b.input("x", (0.0, 1.0))
    s = x * 0.25
    for step in (1, 2, 4):
        s = s + b.rotate(s, step)
    b.output("mean_attain", s)
    prog = b.build(PlanParams(40, 49, 128))
    nm = NoiseModel.make(128, 40, 1e-6)
    fixed, rnd = error_parts(prog, nm)[prog.output("mean_attain").value]
    ks = nm.k_sigma * math.sqrt(1.0 + nm.decrypt ** 2)
    bounds, kd = C._chunk_sum_bounds([prog, prog, prog], nm, ["mean_attain"])
    assert bounds["mean_attain"] == pytest.approx(3 * fixed + ks * math.sqrt(3) * rnd, rel=1e-12)
    assert kd["mean_attain"] == pytest.approx(3 * 7 * nm.rotate_bias + ks * math.sqrt(3) * rnd, rel=1e-9)
    assert bounds["mean_attain"] < 3 * prog.error_bound("mean_attain", noise=nm)


@pytest.fixture(scope="module")
def keys49():
    from medtwin.he.openfhe_backend import HEContext

    spec = C.CohortSpec(preset="cohort-test-insecure")
    ctx, _ = C.cohort_keys(spec, allow_insecure=True)
    return spec, ctx, HEContext.from_public(ctx.public)


def test_cohort_preset_two_chunks_within_bounds_and_flooding_small(keys49, cohort):
    """49-bit scale on the test ring, 136 patients in two ciphertexts (128 + 8): every released
    aggregate within its bound, and the PTA's flooding sigma under 1e-3 at the default 30 bits."""
    spec, ctx, node = keys49
    assert spec.preset == C.DEFAULT_PRESET.replace("128", "test-insecure") and ctx.public.params["scaling_mod_size"] == 49
    _, cov, _ = cohort
    idx = np.arange(136) % N
    cov2 = {k: v[idx] for k, v in cov.items()}
    res = C.run(spec, cov2, [f"p{i}" for i in range(136)], ctx, node, backend="openfhe", reference_check=True)
    assert res.n_ciphertexts == 2
    ra = C.reference_aggregates(res.reference)
    raw, agg = res.extra["aggregates_raw"], res.aggregates
    for k in ra:
        assert float(np.abs(raw[k] - ra[k]).max()) <= agg.bounds[k], k
        assert agg.sigma[k] == pytest.approx(pol.DEFAULT_POLICY.sigma(res.extra["aggregate_noise_bounds"][k]))
    assert agg.sigma["pta"] < 1e-3 and agg.sigma["p_tox"] < 0.05 and agg.sigma["mean_auc24"] < 0.05


@pytest.fixture(scope="module")
def two_chunks(keys49, cohort):
    """136 patients in two chunks (the second padded) on cohort-128's moduli, simulated from
    OpenFHE objects on both backends."""
    spec, ctx, node = keys49
    _, cov, _ = cohort
    idx = np.arange(136) % N
    cov2 = {k: v[idx] for k, v in cov.items()}
    enc = C.encrypt(spec, cov2, [f"p{i}" for i in range(136)], ctx)
    return enc, C.simulate(enc, node, backend="openfhe"), C.simulate(enc, node, backend="native")


def _same_towers(node, a, b) -> None:
    """Every per-pair output and aggregate of outcomes ``a`` and ``b`` (objects or bytes) has the
    same towers, read by the engine's parser (OpenFHE's BINARY encoding is not canonical)."""
    from medtwin.he import bridge

    eng = bridge.engine_from_public(node.public)
    assert set(a.pairs) == set(b.pairs) and set(a.aggregates) == set(b.aggregates) and a.aggregates
    pairs = [(k, i, x, y) for k in a.pairs for i, (x, y) in enumerate(zip(a.pairs[k], b.pairs[k]))]
    assert len(pairs) == 2 * len(a.pairs)
    for k, i, x, y in pairs + [(k, 0, a.aggregates[k], b.aggregates[k]) for k in a.aggregates]:
        assert np.array_equal(bridge.import_ciphertext(eng, x).data, bridge.import_ciphertext(eng, y).data), (k, i)


def test_native_matches_openfhe_bit_for_bit_at_49_60_bits(keys49, two_chunks):
    """cohort-128's moduli (49-bit scaling primes, 60-bit first prime), 136 patients in two
    chunks (the second padded): every output ciphertext of both chunks, and every aggregate sum,
    has the same towers on the native engine as on OpenFHE. An add_const whose |c| 2^49 lay in
    [2^52, 2^53) once made every later tower differ (OpenFHE's double-precision tie rounding)."""
    _, a, b = two_chunks
    _same_towers(keys49[2], a, b)


@pytest.mark.parametrize("backend", ["openfhe", "native"])
def test_bytes_in_bytes_out_matches_the_object_path(keys49, two_chunks, backend):
    """A node that gets the cohort's bytes returns bytes (per-pair outputs and the chunks'
    aggregate sums, added by the engine itself on the native backend) with the same towers as
    the object path, and the client decrypts the released aggregates within their bounds."""
    spec, ctx, node = keys49
    enc, a, _ = two_chunks
    wire = enc.to_wire(ctx)
    assert wire.is_wire() and not enc.is_wire() and wire.twin_ids == enc.twin_ids
    out = C.simulate(wire, node, backend=backend)
    assert all(isinstance(x, bytes) for v in out.pairs.values() for x in v)
    assert all(isinstance(x, bytes) for x in out.aggregates.values())
    assert out.bounds == a.bounds
    _same_towers(node, a, out)
    raw, bounds, _ = C.decrypt_aggregates(out, ctx)
    want, _, _ = C.decrypt_aggregates(a, ctx)
    for k in raw:  # the same ciphertexts: only the decryptions' fresh noise differs
        assert float(np.abs(raw[k] - want[k]).max()) <= bounds[k], k


@pytest.mark.parametrize("backend", ["openfhe", "native"])
def test_bad_bytes_are_refused_and_the_cohort_is_untouched(keys49, two_chunks, backend):
    spec, ctx, node = keys49
    enc, _, _ = two_chunks
    wire = enc.to_wire(ctx)
    good = wire.inputs["crcl_ml_min"][1]
    other, _ = C.cohort_keys(spec, allow_insecure=True)  # same parameters, another key pair
    for bad, err in ((good[: len(good) // 3], CiphertextFormatError),
                     (other.serialize(other.encrypt([1.0])), KeyMismatchError)):
        inputs = {k: list(v) for k, v in wire.inputs.items()}
        inputs["crcl_ml_min"][1] = bad
        with pytest.raises(err):
            C.simulate(C.EncryptedCohortStudy(spec, wire.twin_ids, wire.layout, wire.key_tag, inputs), node,
                       backend=backend)
    assert wire.inputs["crcl_ml_min"][1] == good


def test_adding_outputs_on_both_backends(keys49):
    """The executors' ``add_outputs`` (a cohort's chunk sums): objects, and bytes on the native
    engine, added with the levels aligned; operands of different noise-scale degrees refused
    with a clear error (OpenFHE itself would add them into a ciphertext that fails to decrypt)."""
    from medtwin.errors import ProgramError
    from medtwin.program import get_executor

    _, ctx, node = keys49
    a = ctx.encrypt([1.0, 2.0])
    deeper = ctx.cc.Rescale(ctx.cc.EvalMult(ctx.encrypt([1.0, 2.0]), 0.5))
    unscaled = ctx.cc.EvalMult(ctx.encrypt([1.0, 2.0]), 0.5)
    for be, wire in (("openfhe", False), ("native", False), ("native", True)):
        ex = get_executor(be, ctx=node)
        conv = ctx.serialize if wire else (lambda c: c)
        s = ex.add_outputs(conv(a), conv(deeper))
        assert isinstance(s, bytes) == wire
        assert np.allclose(ctx.decrypt(s, 2), [1.5, 3.0], atol=1e-6)
        with pytest.raises(ProgramError, match="degree"):
            ex.add_outputs(conv(a), conv(unscaled))
    assert np.allclose(get_executor("numpy").add_outputs(np.ones(2), np.ones(2)), 2.0)
