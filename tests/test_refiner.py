"""The in-memory API: Refiner.fit / save / load / refine / evaluate, held-out selection and the guard."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data_utils.errors import InputError
from patchrefinenet import Refiner
from patchrefinenet.metrics import CalibrationMeter
from patchrefinenet.models.prn import PRN, PRNConfig
from patchrefinenet.refine.predict import combine_heads
from patchrefinenet.refiner import cell_size, grid_for
from patchrefinenet.selection import Rule, RuleScores, ThresholdSweep, apply_rule, choose_rule

TINY = dict(epochs=1, width=4, max_batches_per_epoch=4, progress=False)


def blobs(n: int, h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(probs, masks): discs, with probabilities that are too low on the left half (a regional bias)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    gt = np.zeros((n, h, w), np.float32)
    for i in range(n):
        for _ in range(2):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(3, 8)
            gt[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    bias = np.where(xx < w // 2, -0.25, 0.0)
    probs = np.clip(0.15 + 0.6 * gt + bias * gt + rng.normal(0, 0.05, gt.shape), 0, 1).astype(np.float32)
    return probs, gt


@pytest.fixture(scope="module")
def fitted() -> Refiner:
    probs, gt = blobs(10, 32, 32)
    return Refiner.fit(probs, gt, patch_size=16, **TINY)


def test_refine_keeps_odd_and_mixed_sizes_without_masks(fitted):
    probs, _ = blobs(2, 81, 90, seed=3)
    maps = [probs[0][:70, :90], probs[1][:81, :57]]
    out = fitted.refine(maps)
    assert [m.shape for m in out.mask] == [(70, 90), (81, 57)]
    assert [p.shape for p in out.prob] == [(70, 90), (81, 57)]
    for m, t, (h, w) in zip(out.mask, out.thresholds, [(70, 90), (81, 57)]):
        assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
        p = cell_size(h, w, fitted.grid)
        assert t.shape == (-(-h // p), -(-w // p))
    stacked = fitted.refine(np.stack([probs[0][:70, :90]] * 3)[..., None])  # (N, H, W, 1)
    assert stacked.mask.shape == (3, 70, 90) and stacked.thresholds.ndim == 3
    assert np.array_equal(stacked.mask[0], out.mask[0])


def test_outputs_do_not_depend_on_the_batch_size(fitted):
    probs, _ = blobs(5, 32, 32, seed=4)
    forced = Refiner(fitted.model, Rule("global"), device="cpu")
    one = forced.refine(probs, batch_size=1, thresholds=False)
    many = forced.refine(probs, batch_size=5, thresholds=False)
    np.testing.assert_allclose(one.prob, many.prob, atol=1e-5)


def test_save_load_keeps_the_rule_and_selection(fitted, tmp_path):
    path = fitted.save(tmp_path / "prn.pt")
    with pytest.raises(InputError, match="exists"):
        fitted.save(path)
    again = Refiner.load(path)
    assert again.rule == fitted.rule
    assert again.selection == fitted.selection
    probs, _ = blobs(2, 32, 32, seed=5)
    np.testing.assert_array_equal(again.refine(probs).mask, fitted.refine(probs).mask)
    assert Refiner.load(path, rule="global@0.3").rule == Rule("global", 0.3)


def test_selection_is_deterministic_for_a_seed():
    probs, gt = blobs(8, 32, 32, seed=1)
    a = Refiner.fit(probs, gt, patch_size=16, seed=3, **TINY)
    b = Refiner.fit(probs, gt, patch_size=16, seed=3, **TINY)
    assert a.selection == b.selection
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(x, y)


def test_guard_falls_back_to_the_base_map_when_prn_is_worse():
    """A perfect base map cannot be improved: an untrained PRN loses, so the base at its best threshold is used."""
    _, gt = blobs(6, 32, 32, seed=2)
    base = torch.from_numpy(0.1 + 0.8 * gt)[:, None]
    torch.manual_seed(0)
    model = PRN(PRNConfig(grid=2, width=4)).eval()
    scores = RuleScores(has_local=True)
    with torch.no_grad():
        g, loc = model(base)
    scores.update(base, g, loc, torch.from_numpy(gt)[:, None])
    sel = choose_rule(scores, margin=0.0)
    assert sel.fell_back and sel.rule.head == "base" and sel.base_score == pytest.approx(1.0)
    assert "returns the base map" in sel.message()
    forced = choose_rule(scores, margin=0.0, force_prn=True)
    assert not forced.fell_back and forced.rule.head != "base"
    out = Refiner(model, sel.rule, device="cpu").refine(base[:, 0].numpy())
    np.testing.assert_array_equal(out.mask, gt.astype(np.uint8))


def test_authors_rule_is_their_combination_exactly():
    torch.manual_seed(1)
    g, loc = torch.rand(3, 1, 24, 24), torch.rand(3, 1, 24, 24)
    _, mask = apply_rule(Rule("authors"), torch.rand(3, 1, 24, 24), g, loc)
    assert torch.equal(mask.to(torch.uint8), combine_heads(g, loc, "upstream"))


def test_threshold_sweep_equals_direct_counts():
    rng = np.random.default_rng(0)
    p = torch.from_numpy(rng.random((2, 1, 20, 20)).astype(np.float32))
    y = torch.from_numpy((rng.random((2, 1, 20, 20)) < 0.3).astype(np.float32))
    sweep = ThresholdSweep((0.1, 0.5, 0.9))
    sweep.update(p[:1], y[:1])
    sweep.update(p[1:], y[1:])
    for t, score in zip((0.1, 0.5, 0.9), sweep.scores()):
        pred, truth = p > t, y > 0.5
        inter, union = (pred & truth).sum().item(), (pred | truth).sum().item()
        assert score == pytest.approx((inter + 1) / (union + 1))


def test_calibration_meter_by_hand():
    m = CalibrationMeter(bins=2)
    m.update(np.array([[0.2, 0.4, 0.8, 0.6]]), np.array([[0, 1, 1, 1]]))
    # bin [0, .5): mean p 0.3, mean y 0.5; bin [.5, 1]: mean p 0.7, mean y 1.0
    assert m.compute()["ece"] == pytest.approx(0.5 * 0.2 + 0.5 * 0.3)
    assert m.compute()["brier"] == pytest.approx((0.04 + 0.36 + 0.04 + 0.16) / 4)


def test_evaluate_reports_base_and_refined(fitted):
    probs, gt = blobs(3, 32, 32, seed=6)
    result = fitted.evaluate(probs, gt)
    for key in ("base", "refined"):
        assert {"pooled_iou", "mean_iou", "dice", "ece", "brier"} <= set(result[key])
    assert result["gain_pooled_iou"] == pytest.approx(result["refined"]["pooled_iou"] - result["base"]["pooled_iou"])


def test_load_bare_authors_p64_state_dict(tmp_path):
    torch.manual_seed(0)
    authors = PRN(PRNConfig(grid=8, width=32, row7_quirk=True))
    torch.save(authors.state_dict(), tmp_path / "p64_weights.th")
    refiner = Refiner.load(tmp_path / "p64_weights.th", device="cpu")
    assert refiner.grid == 8 and refiner.rule == Rule("authors") and refiner.batch_stats
    x = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
    out = refiner.refine(x)
    with torch.no_grad():
        g, loc = authors.eval().set_batch_statistics(True)(torch.from_numpy(x)[:, None])
    np.testing.assert_array_equal(out.mask[0], combine_heads(g, loc, "upstream")[0, 0].numpy())


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(patch_size=16, select=1.5), "select"),
    (dict(patch_size=16, epoch=3), "unknown option"),
    (dict(), "patch_size"),
    (dict(patch_size=16, aux_model="p64"), "give one of them"),
])
def test_fit_rejects_bad_arguments(kwargs, fragment):
    probs, gt = blobs(4, 32, 32)
    with pytest.raises(InputError, match=fragment):
        Refiner.fit(probs, gt, **kwargs)


def test_grid_for_patch_sizes_and_names():
    assert grid_for(64, None, [(512, 512)]).grid == 8
    assert grid_for(None, "p16", [(70, 90)]).grid == 4
    assert grid_for(512, None, [(512, 512)]).grid == 0
    with pytest.raises(InputError, match="perfect square"):
        grid_for(None, "p5", [(64, 64)])


def test_bootstrap_bound_is_low_when_the_gain_rests_on_one_map():
    from patchrefinenet.selection import bootstrap_gain_lower

    base = np.array([[50, 10, 10]] * 10)  # (TP, FP, FN) per map
    steady = base + np.array([5, -5, -5])  # PRN better on every map
    lucky = base.copy()
    lucky[0] = [500, 0, 0]  # one map carries the whole pooled gain; the rest get worse
    lucky[1:] = [45, 15, 15]
    assert bootstrap_gain_lower(steady, base) > 0
    pooled = lambda c: (c[:, 0].sum() + 1) / (c.sum() + 1)  # noqa: E731
    assert pooled(lucky) > pooled(base)  # the point estimate says PRN wins ...
    assert bootstrap_gain_lower(lucky, base) < 0  # ... but not with 90 % confidence
    assert bootstrap_gain_lower(lucky, base) == bootstrap_gain_lower(lucky, base)  # seeded


def test_guard_falls_back_when_the_held_out_gain_is_not_confident():
    """PRN's pooled score beats the base map by far more than the margin, but per map the gain rests
    on one map: the guard keeps the base map, and says why."""
    rng = np.random.default_rng(0)
    gt = torch.from_numpy((rng.random((4, 1, 32, 32)) < 0.3).astype(np.float32))
    base = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))  # uninformative
    prn = 0.1 + 0.8 * gt  # a head that is right everywhere
    scores = RuleScores(has_local=False)
    scores.update(base, prn, None, gt)
    one_map = np.array([[10_000, 0, 0], [1, 3, 3], [1, 3, 3], [1, 3, 3]])
    flat = np.array([[5, 3, 3]] * 4)
    confident = choose_rule(scores, margin=0.005)  # no per-map counts: the margin alone decides
    assert not confident.fell_back and confident.gain_lower is None
    sel = choose_rule(scores, margin=0.005, per_map=(one_map, flat))
    assert sel.prn_score > sel.base_score + 0.005 and sel.gain_lower < 0
    assert sel.fell_back and sel.rule.head == "base" and "confidence" in sel.message()


def test_held_out_maps_split_into_disjoint_choose_and_judge_halves():
    from patchrefinenet.refine.heldout import halves

    held = (None, None, [3, 5, 8, 13, 21, 34, 55])
    (_, _, choose), (_, _, judge) = halves(held, seed=1)
    assert sorted(choose + judge) == held[2] and not set(choose) & set(judge)
    assert len(judge) == 3 and halves(held, seed=1)[1][2] == judge  # deterministic for a seed
    assert halves((None, None, [4]), seed=0) == ((None, None, [4]), None)  # one map: no judge half
