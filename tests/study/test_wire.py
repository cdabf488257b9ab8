"""The compute node bytes in, bytes out (``EncryptedCohort.to_wire``, ``simulate`` on bytes)."""
from __future__ import annotations

import numpy as np
import pytest

from medtwin.data import cohort_csv_path
from medtwin.errors import CiphertextFormatError, KeyMismatchError, ValidationError
from medtwin.study import workflow
from medtwin.study.scenario import Regimen, Scenario
from medtwin.study.study import StudySpec, decrypt_outcome, encrypt_cohort, reference_outcome, simulate

pytest.importorskip("medtwin._core")


def _spec():
    scen = [Scenario("q12 oral", Regimen(dose_mg=300, interval_h=12, count=4)),
            Scenario("iv bolus", Regimen(dose_mg=350, interval_h=12, count=3, route="iv_bolus", loading_dose_mg=500))]
    return StudySpec.grid("theophylline", scen, horizon_h=24, step_h=3, preset="test-insecure")


def _towers(ctx, ct):
    """A ciphertext's towers and metadata as the engine's parser reads them: OpenFHE's BINARY
    encoding is not canonical (re-serialising a deserialised ciphertext gives other bytes for
    the same towers), and its decryption adds fresh noise, so results are compared this way."""
    from medtwin.he import bridge

    e = bridge.engine_from_public(ctx.public)
    c = e.import_ciphertext(ct if isinstance(ct, bytes) else ctx.serialize(ct))
    return c.data.tobytes(), c.level, c.scale, c.slots, c.noise_degree


@pytest.fixture(scope="module")
def setup():
    from medtwin.he.openfhe_backend import HEContext

    recs = workflow.load_records([cohort_csv_path()])[:6]
    cov = workflow.covariates_of(recs)
    ctx, km = workflow.make_keys("test-insecure")
    node = HEContext.from_public(km.public)
    enc = encrypt_cohort(_spec(), cov, [f"w{i}" for i in range(6)], ctx)
    return ctx, node, cov, enc


@pytest.mark.parametrize("backend", ["openfhe", "native"])
def test_bytes_in_bytes_out_matches_the_object_path(setup, backend):
    ctx, node, cov, enc = setup
    wire = enc.to_wire(ctx)
    assert wire.is_wire() and not enc.is_wire()
    assert all(isinstance(b, bytes) for v in wire.inputs.values() for b in v)
    out_obj = simulate(enc, node, backend=backend)
    out_wire = simulate(wire, node, backend=backend)
    assert all(isinstance(b, bytes) for v in out_wire.outputs.values() for b in v)
    assert set(out_wire.outputs) == set(out_obj.outputs)
    # the same ciphertexts, tower for tower
    for name, cts in out_obj.outputs.items():
        for a, b in zip(cts, out_wire.outputs[name]):
            assert _towers(ctx, a) == _towers(ctx, b)
    res = decrypt_outcome(out_wire, ctx)
    ref = reference_outcome(enc.spec, cov)
    assert np.abs(res.conc - ref["conc"]).max() <= out_wire.bounds["conc"]


def test_both_backends_return_the_same_bytes(setup):
    ctx, node, _, enc = setup
    wire = enc.to_wire(ctx)
    a = simulate(wire, node, backend="openfhe").outputs
    b = simulate(wire, node, backend="native").outputs
    # scale correction on both: identical towers, and the engine writes OpenFHE's own layout
    assert set(a) == set(b)
    for name in a:
        for x, y in zip(a[name], b[name]):
            assert _towers(ctx, x) == _towers(ctx, y)


@pytest.mark.parametrize("backend", ["openfhe", "native"])
def test_corrupted_or_foreign_bytes_are_refused_with_a_clear_error(setup, backend):
    ctx, node, _, enc = setup
    wire = enc.to_wire(ctx)
    name = next(iter(wire.inputs))
    inputs = {k: list(v) for k, v in wire.inputs.items()}
    good = inputs[name][0]
    # truncated
    inputs[name][0] = good[: len(good) // 2]
    bad = type(wire)(wire.spec, wire.twin_ids, wire.layout, wire.key_tag, inputs)
    with pytest.raises(CiphertextFormatError):
        simulate(bad, node, backend=backend)
    # a flipped byte in the embedded crypto context
    inputs[name][0] = good[:40] + bytes([good[40] ^ 0x5A]) + good[41:]
    with pytest.raises((CiphertextFormatError, KeyMismatchError)):
        simulate(type(wire)(wire.spec, wire.twin_ids, wire.layout, wire.key_tag, inputs), node, backend=backend)
    # implausible metadata in the tail (noise-scale degree 7)
    tail = bytearray(good)
    tail[-48 + 12:-48 + 16] = (7).to_bytes(4, "little")
    inputs[name][0] = bytes(tail)
    with pytest.raises(CiphertextFormatError, match="metadata"):
        simulate(type(wire)(wire.spec, wire.twin_ids, wire.layout, wire.key_tag, inputs), node, backend=backend)
    # a ciphertext of another key pair
    other_ctx, _ = workflow.make_keys("test-insecure")
    inputs[name][0] = other_ctx.serialize(other_ctx.encrypt([1.0]))
    with pytest.raises(KeyMismatchError):
        simulate(type(wire)(wire.spec, wire.twin_ids, wire.layout, wire.key_tag, inputs), node, backend=backend)
    # the original cohort is untouched and still simulates
    assert wire.inputs[name][0] == good


def test_mixed_objects_and_bytes_are_refused(setup):
    ctx, node, _, enc = setup
    wire = enc.to_wire(ctx)
    name = next(iter(wire.inputs))
    inputs = {k: list(v) for k, v in wire.inputs.items()}
    inputs[name][0] = enc.inputs[name][0]
    with pytest.raises(ValidationError, match="mixes"):
        simulate(type(wire)(wire.spec, wire.twin_ids, wire.layout, wire.key_tag, inputs), node, backend="native")


def test_client_decrypts_bytes_and_refuses_bad_bytes(setup):
    ctx, _, _, _ = setup
    ct = ctx.encrypt([0.25, -1.5])
    b = ctx.serialize(ct)
    assert np.allclose(ctx.decrypt(b, 2), [0.25, -1.5], atol=1e-6)
    with pytest.raises(CiphertextFormatError):
        ctx.decrypt(b[:100])


def test_deserialised_inputs_keep_their_towers(setup):
    """HEContext.deserialize moves a fresh ciphertext onto the context's own element parameters
    (OpenFHE evaluates a deserialised one 2-4x slower): the towers and metadata are unchanged."""
    ctx, node, _, enc = setup
    ct = next(iter(enc.inputs.values()))[0]
    b = ctx.serialize(ct)
    for c in (ctx, node):
        assert _towers(ctx, c.deserialize(b)) == _towers(ctx, ct)



@pytest.mark.parametrize("backend", ["openfhe", "native"])
def test_node_bundle_path_bytes_in_bytes_out_and_bad_blobs_write_nothing(tmp_path, backend):
    """``simulate_bundle`` (the CLI's compute node) keeps the bundle's ciphertexts as bytes: the
    outcome bundle decrypts to the reference within its bound; a cohort bundle whose blob is not
    a ciphertext of the keys (digest intact, so only the ciphertext checks can catch it) is
    refused with a clear error and no outcome is written."""
    import json

    from medtwin.custody.audit import AuditLog
    from medtwin.custody.kdf import TEST_KDF
    from medtwin.custody.users import UserStore, authenticate
    from medtwin.errors import MedTwinError
    from medtwin.twin.store import Bundle, read_bundle, write_bundle

    pw = "violet tundra kettle 93 marching"
    d = tmp_path
    import csv
    rows = list(csv.reader(open(cohort_csv_path(), newline="")))
    (d / "patients.csv").write_text("\n".join(",".join(r) for r in rows[:5]) + "\n")
    (d / "study.json").write_text(json.dumps(workflow.demo_spec(horizon=12.0, step=4.0, preset="test-insecure").to_dict()))
    log = AuditLog(d / "audit.db")
    store = UserStore(d / "users.db", kdf=TEST_KDF, allow_weak=True)
    store.bootstrap_admin("root", pw)
    store.add_user(authenticate(store, "root", pw), "dr.a", "clinician", pw)
    me = authenticate(store, "dr.a", pw, audit=log)
    workflow.create_keys(d / "ks", pw, preset="test-insecure", session=me, log=log, kdf=TEST_KDF, allow_weak=True)
    workflow.encrypt_files([d / "patients.csv"], d / "ks", pw, d / "study.json", d / "cohort", session=me, log=log)
    workflow.simulate_bundle(d / "cohort", d / "ks", d / "outcome", session=me, log=log, backend=backend)
    out = read_bundle(d / "outcome", kind="encrypted-outcome")
    assert out.blobs and all(isinstance(b, bytes) for v in out.blobs.values() for b in v)
    workflow.decrypt_bundle(d / "outcome", d / "ks", pw, d / "report", session=me, log=log)
    assert (d / "report" / "metrics.csv").exists()
    # a resealed cohort bundle with one blob cut short, then one from other keys
    b = read_bundle(d / "cohort", kind="encrypted-cohort")
    name = next(iter(b.blobs))
    other_ctx, _ = workflow.make_keys("test-insecure")
    for bad in (b.blobs[name][0][:-10], other_ctx.serialize(other_ctx.encrypt([1.0]))):
        blobs = {k: list(v) for k, v in b.blobs.items()}
        blobs[name][0] = bad
        src = d / f"bad-{len(bad)}"
        write_bundle(src, Bundle("encrypted-cohort", b.key_tag, b.meta, blobs))
        dst = d / f"outcome-{len(bad)}"
        with pytest.raises(MedTwinError) as ei:
            workflow.simulate_bundle(src, d / "ks", dst, session=me, log=log, backend=backend)
        assert isinstance(ei.value, (CiphertextFormatError, KeyMismatchError)), ei.value
        assert not dst.exists()
