"""Scores, differences from a baseline and the expected score over IIV replicates are computed
under encryption and agree with the float64 reference within their stated bounds, on both
backends; the ranking uses the decrypted encrypted expected score."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medtwin.data import cohort_csv_path
from medtwin.errors import ValidationError
from medtwin.models.pk_oral import COVARIATES, THEOPHYLLINE
from medtwin.program import get_executor
from medtwin.study import workflow
from medtwin.study.optimise import optimisation_spec, rank_options, regimen_grid
from medtwin.study.scenario import Regimen, Scenario
from medtwin.study.study import (StudySpec, compile_study, decrypt_outcome, encrypt_cohort, reference_outcome,
                                 replicate_rotations, simulate)

IDS = ["tw-a", "tw-b", "tw-c"]
PAIR = ("above", "score", "auc_diff", "tiw_diff", "score_diff")


def _cmp_spec() -> StudySpec:
    """A per-patient comparison against the current regimen, penalty 2."""
    scen = [Scenario("current 300 q12h", Regimen(dose_mg=300, interval_h=12, count=4)),
            Scenario("700 q12h", Regimen(dose_mg=700, interval_h=12, count=4)),
            Scenario("250 q8h, smoker", Regimen(dose_mg=250, interval_h=8, count=6), clearance_factor=1.6),
            Scenario("300 q12h, renal decline, one missed", Regimen(dose_mg=300, interval_h=12, count=4),
                     renal_factor=0.5, missed_doses=(1,))]
    return StudySpec.grid("theophylline", scen, 48, 4, preset="test-insecure", baseline="current 300 q12h",
                          penalty=2.0)


def _opt_spec() -> StudySpec:
    """4 candidate regimens x 4 IIV replicates, the current regimen (200 mg q12h) as baseline."""
    regs = regimen_grid([200, 400], [8, 12], 48)
    return optimisation_spec("theophylline", regs, 48, 4, replicates=4, preset="test-insecure",
                             baseline=Regimen(dose_mg=200, interval_h=12, count=4))


@pytest.fixture(scope="module")
def cov():
    recs = workflow.load_records([cohort_csv_path()])[: len(IDS)]
    return workflow.covariates_of(recs)


@pytest.fixture(scope="module")
def keys():
    return workflow.make_keys("test-insecure", studies=[_opt_spec()])


def _run(spec, cov, ctx, backend):
    enc = encrypt_cohort(spec, cov, IDS, ctx)
    out = simulate(enc, ctx, backend=backend)
    res = decrypt_outcome(out, ctx)
    res.reference = reference_outcome(spec, cov)
    return out, res


@pytest.fixture(scope="module", params=["openfhe", "native"])
def runs(request, cov, keys):
    ctx, _ = keys
    return request.param, _run(_cmp_spec(), cov, ctx, request.param), _run(_opt_spec(), cov, ctx, request.param)


# ------------------------------------------------------------------------------ plaintext
def test_spec_fields_validate_and_round_trip():
    spec = _cmp_spec()
    assert StudySpec.from_dict(spec.to_dict()) == spec
    assert spec.base_index() == [0, 0, 0, 0]
    with pytest.raises(ValidationError, match="baseline"):
        dataclasses.replace(spec, baseline="no such scenario")
    with pytest.raises(ValidationError, match="penalty"):
        dataclasses.replace(spec, penalty=-1.0)
    with pytest.raises(ValidationError, match="replicates"):
        dataclasses.replace(spec, replicates=3)
    with pytest.raises(ValidationError, match="mixes regimens"):
        dataclasses.replace(spec, replicates=2)
    # the digest of a study without the new fields is what it was before they existed
    plain = dataclasses.replace(spec, baseline=None, penalty=1.0)
    assert set(plain.to_dict()) == {"model", "scenarios", "times", "preset", "time_in_window"}
    opt = _opt_spec()
    assert StudySpec.from_dict(opt.to_dict()) == opt
    assert opt.replicates == 4 and opt.encrypted_mean and len(opt.groups()) == 4  # the baseline is a candidate
    # each replicate is compared with the baseline's replicate of the same index
    bi = opt.base_index()
    assert [opt.scenarios[j].tags["replicate"] for j in bi] == [s.tags["replicate"] for s in opt.scenarios]
    assert {opt.scenarios[j].tags["regimen"] for j in bi} == {"200 mg oral q12h x4"}
    # log2(R) rotations by multiples of the block (13 time points -> block 16)
    assert replicate_rotations(opt) == [16, 32] and replicate_rotations(spec) == []
    with pytest.raises(ValidationError, match="candidate"):
        optimisation_spec("theophylline", regimen_grid([200], [8], 48), 48, 4, replicates=2, baseline="nope")


def test_reference_metrics_are_consistent():
    cov = {"age_years": np.array([40.0, 70.0]), "weight_kg": np.array([70.0, 50.0]),
           "serum_creatinine_mg_dl": np.array([1.0, 1.4]), "female": np.array([0.0, 1.0])}
    spec = _cmp_spec()
    ref = reference_outcome(spec, cov)
    np.testing.assert_allclose(ref["score"], ref["tiw"] - 2.0 * ref["above"], atol=1e-15)
    np.testing.assert_allclose(ref["auc_diff"], ref["auc"][:, :, -1] - ref["auc"][:, :1, -1], atol=1e-12)
    assert np.all(ref["auc_diff"][:, 0] == 0) and np.all(ref["tiw_diff"][:, 0] == 0)
    # 700 mg q12h exposes more than 300 mg q12h: positive AUC difference, more time above 20 mg/L
    assert np.all(ref["auc_diff"][:, 1] > 0) and np.all(ref["above"][:, 1] >= ref["above"][:, 0])
    # the above-window indicator is the window's upper logistic edge
    c = np.linspace(0, 40, 81)
    lo_edge = 1.0 / (1.0 + np.exp(-(c - 10.0)))
    np.testing.assert_allclose(THEOPHYLLINE.smooth_window(c) + THEOPHYLLINE.smooth_above(c), lo_edge, atol=1e-15)


@pytest.mark.parametrize("make_spec", [_cmp_spec, _opt_spec])
def test_plaintext_semantics_of_the_new_outputs(make_spec, cov):
    spec = make_spec()
    cs = compile_study(spec, len(IDS), 2048)
    lay = cs.layout
    ex = get_executor("numpy")
    outs: dict[str, list] = {}
    for c in range(lay.n_ciphertexts):
        for k, v in ex.run(cs.programs[c], {k: lay.spread_patients(cov[k])[c] for k in COVARIATES}).items():
            outs.setdefault(k, []).append(v)
    ref = reference_outcome(spec, cov)
    g = lambda n: lay.gather(np.stack(outs[n]))
    for name, metric in (("above_terms", "above"), ("score_terms", "score"), ("tiw_diff_terms", "tiw_diff"),
                         ("score_diff_terms", "score_diff")):
        assert np.abs(g(name).sum(axis=2) - ref[metric]).max() < 1e-3, metric
    assert np.abs(g("auc_diff_h")[:, :, -1] * 100 - ref["auc_diff"]).max() < 1e-3
    if spec.encrypted_mean:
        first = [idx[0] for _, idx in spec.groups()]
        assert np.abs(g("score_mean_terms").sum(axis=2)[:, first] - ref["expected_score"]).max() < 1e-3
        assert np.abs(g("score_diff_mean_terms").sum(axis=2)[:, first] - ref["expected_score_diff"]).max() < 1e-3
    else:
        assert "score_mean_terms" not in outs


# ------------------------------------------------------------------------------ encrypted
def test_comparison_metrics_encrypted_within_bounds(runs):
    backend, (out, res), _ = runs
    for name in ("above_terms", "score_terms", "auc_diff_h", "tiw_diff_terms", "score_diff_terms"):
        assert name in out.outputs, name  # each metric is an encrypted output of the program
    dev = res.deviations()
    print(backend, {k: (dev[f"{k}_abs"], res.bounds[k]) for k in ("tiw",) + PAIR})
    for k in ("conc", "auc", "tiw") + PAIR:
        assert dev[f"{k}_abs"] <= res.bounds[k], k
        assert res.bounds[k] < (1.0 if k.startswith("auc") else 0.01), k  # informative bounds
    for k in ("tiw",) + PAIR[:2] + PAIR[3:]:
        assert (res.extra["sources"][k] == "encrypted").all(), k
    assert res.above[:, 1].max() > 0.05  # the 700 mg regimen spends time above 20 mg/L
    # the baseline against itself: zero within the bound
    assert np.abs(res.auc_diff[:, 0]).max() <= res.bounds["auc_diff"]
    assert np.abs(res.score_diff[:, 0]).max() <= res.bounds["score_diff"]


def test_expected_score_encrypted_and_used_for_the_ranking(runs, keys):
    backend, _, (out, res) = runs
    ctx, _ = keys
    spec = res.spec
    assert "score_mean_terms" in out.outputs and not res.extra["notes"]
    dev = res.deviations()
    print(backend, {k: (dev[f"{k}_abs"], res.bounds[k]) for k in ("expected_score", "expected_score_diff")})
    for k in ("tiw", "expected_score", "expected_score_diff") + PAIR:
        assert dev[f"{k}_abs"] <= res.bounds[k], k
    assert res.bounds["expected_score"] < 0.01 and res.bounds["expected_score_diff"] < 0.02
    assert (res.extra["sources"]["expected_score_diff"] == "encrypted").all()
    # the expected score is the decryption of its own ciphertext, not a mean of decrypted scores
    lay = out.layout
    first = [idx[0] for _, idx in spec.groups()]
    direct = lay.gather(np.stack([ctx.decrypt(c, lay.slots) for c in out.outputs["score_mean_terms"]]))
    np.testing.assert_allclose(res.expected_score, direct.sum(axis=2)[:, first], atol=1e-6)  # randomised decryption
    options = rank_options(res)
    names = [n for n, _ in spec.groups()]
    for p, tid in enumerate(res.twin_ids):
        opts = options[tid]
        for o in opts:
            g = names.index(o.regimen)
            assert o.score_source == "encrypted" and o.score == res.expected_score[p, g]
            assert o.score_bound == res.bounds["expected_score"]
            assert o.vs_baseline == res.expected_score_diff[p, g]
            if o.regimen == "200 mg oral q12h x4":  # the baseline itself
                assert abs(o.vs_baseline) <= res.bounds["expected_score_diff"]
            assert o.tiw[0] <= o.tiw[1] <= o.tiw[2] and o.above[0] <= o.above[2]
        # same order as the plaintext reference wherever the reference scores differ by more
        # than twice the bound
        ref = res.reference["expected_score"][p]
        pos = {o.regimen: o.rank for o in opts}
        tol = 2 * res.bounds["expected_score"]
        checked = 0
        for a in names:
            for b in names:
                if ref[names.index(a)] > ref[names.index(b)] + tol:
                    assert pos[a] < pos[b]
                    checked += 1
        assert checked >= 6
    # rank_options follows the decrypted encrypted value: change it and the ranking follows
    tampered = dataclasses.replace(res, expected_score=res.expected_score.copy())
    last = options[res.twin_ids[0]][-1].regimen
    tampered.expected_score[0, names.index(last)] = 5.0
    assert rank_options(tampered)[res.twin_ids[0]][0].regimen == last


def test_without_rotation_keys_and_for_older_results_ranking_still_works(cov, keys):
    from medtwin.study.study import run_study

    spec = _opt_spec()
    ctx, _ = workflow.make_keys("test-insecure")  # no rotation keys
    sub = {k: v[:1] for k, v in cov.items()}
    res = run_study(spec, sub, IDS[:1], ctx, backend="native")
    assert res.expected_score is None and "rotations" in res.extra["notes"]["expected_score"]
    opts = rank_options(res)[IDS[0]]
    assert all(o.score_source == "per-pair encrypted" for o in opts)
    names = [n for n, _ in spec.groups()]
    for o in opts:
        idx = spec.groups()[names.index(o.regimen)][1]
        assert o.score == pytest.approx(float(np.mean(res.score[0, idx])), abs=1e-15)
    # an older result (no encrypted score outputs): the former after-decryption score
    old = dataclasses.replace(res, above=None, score=None, auc_diff=None, tiw_diff=None, score_diff=None)
    old.extra = {k: v for k, v in res.extra.items() if k != "sources"}
    for o in rank_options(old)[IDS[0]]:
        idx = spec.groups()[names.index(o.regimen)][1]
        assert o.score_source == "after decryption"
        assert o.score == pytest.approx(float(np.mean(res.tiw[0, idx]) - np.mean(res.peak[0, idx] > 20.0)))
    # another penalty than the study's is applied after decryption, to the decrypted metrics
    for o in rank_options(res, toxicity_penalty=3.0)[IDS[0]]:
        idx = spec.groups()[names.index(o.regimen)][1]
        assert o.score_source == "after decryption"
        assert o.score == pytest.approx(float(np.mean(res.tiw[0, idx]) - 3.0 * np.mean(res.above[0, idx])))
