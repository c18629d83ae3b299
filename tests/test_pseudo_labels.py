"""Region-specific thresholding: hand-made cases, equality with the authors' per-patch loop,
the streaming file path, and clear errors on bad input."""
from fractions import Fraction

import numpy as np
import pytest

from data_utils.errors import InputError
from data_utils.pseudo_labels import (
    DEFAULT_THRESHOLDS,
    generate_pseudo_label_file,
    patch_grid_shape,
    patch_pseudo_labels,
)


def reference_rst(prob, gt, p, thresholds=DEFAULT_THRESHOLDS):
    """The authors' semantics as a plain loop: per image, per patch (row-major), per threshold.

    ``pp > t`` with a Python float compares in prob's dtype (float32 for float32 maps); the IoU
    is (I + 1)/(U + 1) on float32 sums; ``np.argmax`` keeps the first maximum.
    """
    n, h, w = prob.shape
    labels = np.zeros((n, h, w), np.uint8)
    taus, ious = [], []
    for i in range(n):
        for y in range(0, h, p):
            for x in range(0, w, p):
                pp, gp = prob[i, y:y + p, x:x + p], gt[i, y:y + p, x:x + p].astype(np.float32)
                scores = []
                for t in thresholds:
                    b = (pp > t).astype(np.float32)
                    inter = np.sum(gp * b)
                    scores.append((inter + 1) / (np.sum(gp) + np.sum(b) - inter + 1))
                j = int(np.argmax(scores))
                labels[i, y:y + p, x:x + p] = pp > thresholds[j]
                taus.append(thresholds[j])
                ious.append(scores[j])
    return labels, np.float32(taus), np.float32(ious)


def random_maps(rng, n, h, w, dtype=np.float32):
    """Probabilities with many values exactly on the threshold grid, and a correlated GT."""
    prob = rng.random((n, h, w)).astype(dtype)
    on_grid = rng.random((n, h, w)) < 0.3
    prob[on_grid] = (rng.integers(0, 21, on_grid.sum()) * 0.05).astype(dtype)
    gt = ((prob + rng.normal(0, 0.3, prob.shape)) > 0.6).astype(np.uint8)
    gt[:, : h // 4, : w // 4] = 0  # some empty-GT patches
    return prob, gt


# ---------------------------------------------------------------- the threshold grid and the grid shape


def test_default_thresholds_are_the_authors_grid():
    assert len(DEFAULT_THRESHOLDS) == 20 and DEFAULT_THRESHOLDS[0] == 0.05 and DEFAULT_THRESHOLDS[-1] == 1.0
    searched = np.float32([0.05 * t for t in range(1, 21)])  # how the authors search...
    assert np.array_equal(searched, np.float32(DEFAULT_THRESHOLDS))  # ...equals how they apply, in float32


@pytest.mark.parametrize("h, w, p, expected", [(64, 64, 16, (4, 4)), (50, 37, 8, (7, 5)), (32, 32, 100, (1, 1))])
def test_patch_grid_shape_rounds_up(h, w, p, expected):
    assert patch_grid_shape(h, w, p) == expected


@pytest.mark.parametrize("p", [0, -8, 8.0, True, "8"])
def test_bad_patch_size_is_rejected(p):
    with pytest.raises(InputError, match="patch_size"):
        patch_grid_shape(32, 32, p)
    with pytest.raises(InputError, match="patch_size"):
        patch_pseudo_labels(np.zeros((4, 4), np.float32), np.zeros((4, 4)), p)


# ---------------------------------------------------------------- hand-made cases


def test_value_equal_to_a_threshold_is_background_and_the_lowest_best_threshold_wins():
    # τ ≤ 0.35 keeps all three pixels: IoU (1+1)/(3+1) = 0.5. From τ = 0.40 on (0.4 > 0.4 is
    # false) only the true pixel remains: IoU 1 for τ = 0.40 … 0.55, a tie won by 0.40.
    prob = np.float32([[0.6, 0.4], [0.4, 0.0]])
    gt = np.uint8([[1, 0], [0, 0]])
    res = patch_pseudo_labels(prob, gt, patch_size=2)
    assert res.thresholds.shape == (1, 1) and res.thresholds[0, 0] == np.float32(0.4)
    assert res.ious[0, 0] == 1.0
    np.testing.assert_array_equal(res.labels, gt)


def test_empty_gt_patch_gets_an_all_zero_label_at_the_lowest_threshold_above_its_max():
    prob = np.float32([[0.33, 0.1, 0.9, 0.8], [0.2, 0.35, 0.7, 1.0]])
    gt = np.zeros((2, 4), np.uint8)
    res = patch_pseudo_labels(prob, gt, patch_size=2)
    # left patch: max 0.35 exactly → τ = 0.35; right patch: max 1.0 → only τ = 1.00 empties it
    np.testing.assert_array_equal(res.thresholds, np.float32([[0.35, 1.0]]))
    np.testing.assert_array_equal(res.ious, np.float32([[1.0, 1.0]]))
    assert res.labels.dtype == np.uint8 and not res.labels.any()


def test_ties_are_float32_ties_as_in_the_authors_code():
    # One 80×80 patch. At τ = 0.05: I = 1485, U = 5942; at τ = 0.10 … 0.45: I = 1484, U = 5938.
    # 1486/5943 < 1485/5939 exactly, but the two are the same float32, so the authors' argmax
    # keeps the first: τ = 0.05 (and the five 0.07 pixels are foreground).
    assert Fraction(1486, 5943) < Fraction(1485, 5939)
    assert np.float32(1486) / np.float32(5943) == np.float32(1485) / np.float32(5939)
    values = [(0.5, 1, 1484), (0.07, 1, 1), (0.07, 0, 4), (0.01, 1, 4453), (0.0, 0, 6400 - 5942)]
    prob = np.concatenate([np.full(c, v, np.float32) for v, _, c in values]).reshape(80, 80)
    gt = np.concatenate([np.full(c, g, np.uint8) for _, g, c in values]).reshape(80, 80)
    res = patch_pseudo_labels(prob, gt, patch_size=80)
    assert res.thresholds[0, 0] == np.float32(0.05)
    assert res.ious[0, 0] == np.float32(1486) / np.float32(5943)
    assert res.labels.sum() == 1489
    ref_labels, ref_taus, _ = reference_rst(prob[None], gt[None], 80)
    assert ref_taus[0] == np.float32(0.05) and np.array_equal(ref_labels[0], res.labels)


def test_partial_last_patches_use_only_their_own_pixels():
    # 3×5 map with p = 2: patches of 2×2, 2×1, 1×2 and 1×1 pixels. Bottom-left: τ = 0.05 keeps
    # the 0.08 pixel (IoU 2/3), τ = 0.10 drops it (IoU 1). Empty-GT patches: max 0.3 → 0.30, 0.22 → 0.25.
    prob = np.float32([[0.9, 0.9, 0.3, 0.3, 0.62],
                       [0.9, 0.9, 0.3, 0.3, 0.62],
                       [0.12, 0.08, 0.5, 0.5, 0.22]])
    gt = np.uint8([[1, 1, 0, 0, 1],
                   [1, 1, 0, 0, 1],
                   [1, 0, 1, 1, 0]])
    res = patch_pseudo_labels(prob, gt, patch_size=2)
    assert res.thresholds.shape == (2, 3)
    np.testing.assert_array_equal(res.thresholds, np.float32([[0.05, 0.3, 0.05], [0.1, 0.05, 0.25]]))
    np.testing.assert_array_equal(res.labels, gt)


# ---------------------------------------------------------------- equality with the reference loop


@pytest.mark.parametrize(
    "n, h, w, p", [(3, 32, 32, 8), (2, 48, 40, 16), (2, 37, 29, 8), (1, 33, 70, 64), (2, 20, 20, 7)]
)
def test_equals_the_authors_loop(n, h, w, p):
    prob, gt = random_maps(np.random.default_rng(h * w + p), n, h, w)
    res = patch_pseudo_labels(prob, gt, p)
    labels, taus, ious = reference_rst(prob, gt, p)
    np.testing.assert_array_equal(res.labels, labels)
    np.testing.assert_array_equal(res.thresholds.ravel(), taus)
    np.testing.assert_array_equal(res.ious.ravel(), ious)


def test_float64_maps_bool_gt_and_custom_thresholds_equal_the_loop():
    prob, gt = random_maps(np.random.default_rng(1), 2, 24, 24, dtype=np.float64)
    thresholds = (0.1, 0.3, 0.45, 0.5, 0.9)
    res = patch_pseudo_labels(prob, gt.astype(bool), 8, thresholds=thresholds)
    labels, taus, ious = reference_rst(prob, gt, 8, thresholds)
    np.testing.assert_array_equal(res.labels, labels)
    np.testing.assert_array_equal(res.thresholds.ravel(), taus)
    np.testing.assert_array_equal(res.ious.ravel(), ious)


@pytest.mark.parametrize("p", [48, 64, 1000])
def test_patch_at_least_the_image_is_the_image_level_search(p):
    prob, gt = random_maps(np.random.default_rng(5), 3, 40, 48)
    res = patch_pseudo_labels(prob, gt, p)
    labels, taus, ious = reference_rst(prob, gt, 48)  # one patch = the whole image (IST)
    assert res.thresholds.shape == res.ious.shape == (3, 1, 1)
    np.testing.assert_array_equal(res.labels, labels)
    np.testing.assert_array_equal(res.thresholds.ravel(), taus)
    np.testing.assert_array_equal(res.ious.ravel(), ious)


def test_output_layout_follows_the_input():
    prob, gt = random_maps(np.random.default_rng(2), 2, 16, 24)
    nhwc = patch_pseudo_labels(prob[..., None], gt, 8)
    assert nhwc.labels.shape == (2, 16, 24, 1) and nhwc.thresholds.shape == nhwc.ious.shape == (2, 2, 3)
    single = patch_pseudo_labels(prob[1], gt[1], 8)
    assert single.labels.shape == (16, 24) and single.thresholds.shape == (2, 3)
    np.testing.assert_array_equal(single.labels, nhwc.labels[1, ..., 0])
    assert single.thresholds.dtype == single.ious.dtype == np.float32 and set(np.unique(single.labels)) <= {0, 1}


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise_input_error_naming_what_and_where():
    prob, gt = random_maps(np.random.default_rng(3), 3, 16, 16)
    nan = prob.copy()
    nan[2, 3, 3] = np.nan
    with pytest.raises(InputError, match="prob: image 2 contains NaN"):
        patch_pseudo_labels(nan, gt, 8)
    with pytest.raises(InputError, match="prob: image 0 .*sigmoid"):
        patch_pseudo_labels(prob * 4 - 2, gt, 8)
    with pytest.raises(InputError, match="gt: image 0 is not binary.*255"):
        patch_pseudo_labels(prob, gt * 255, 8)
    with pytest.raises(InputError, match=r"prob.*\(3, 16, 16\).*gt.*\(3, 16, 8\)"):
        patch_pseudo_labels(prob, gt[:, :, :8], 8)
    with pytest.raises(InputError, match="empty"):
        patch_pseudo_labels(prob[:0], gt[:0], 8)
    with pytest.raises(InputError, match="strictly increasing"):
        patch_pseudo_labels(prob, gt, 8, thresholds=(0.5, 0.3))


# ---------------------------------------------------------------- the streaming file path


def test_file_path_equals_in_memory_and_accepts_the_authors_float64_gt(tmp_path):
    prob, gt = random_maps(np.random.default_rng(4), 7, 24, 20)
    np.save(tmp_path / "val_pred.npy", prob[..., None])
    np.save(tmp_path / "val_orig_gt.npy", gt[..., None].astype(np.float64))
    summary = generate_pseudo_label_file(
        tmp_path / "val_pred.npy", tmp_path / "val_orig_gt.npy", tmp_path / "train_aux_gt_p_8.npy", 8,
        chunk=3, threshold_map_path=tmp_path / "thresholds.npy", progress=False,
    )
    ref = patch_pseudo_labels(prob, gt, 8)
    out = np.load(tmp_path / "train_aux_gt_p_8.npy")
    assert out.shape == (7, 24, 20, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], ref.labels)
    np.testing.assert_array_equal(np.load(tmp_path / "thresholds.npy"), ref.thresholds)
    inter = (ref.labels & gt).sum(axis=(1, 2))
    union = (ref.labels | gt).sum(axis=(1, 2))
    assert summary["n_images"] == 7 and summary["grid"] == (3, 3) and summary["patch_size"] == 8
    assert summary["mean_patch_iou"] == pytest.approx(ref.ious.mean(dtype=np.float64))
    assert summary["mean_image_iou"] == pytest.approx(np.mean((inter + 1) / (union + 1)))
    assert summary["pooled_iou"] == pytest.approx((inter.sum() + 1) / (union.sum() + 1))
    assert summary["mean_threshold"] == pytest.approx(ref.thresholds.mean(dtype=np.float64))


def test_file_path_can_write_the_authors_float64_labels(tmp_path):
    prob, gt = random_maps(np.random.default_rng(6), 2, 16, 16)
    np.save(tmp_path / "p.npy", prob)
    np.save(tmp_path / "g.npy", gt)
    generate_pseudo_label_file(
        tmp_path / "p.npy", tmp_path / "g.npy", tmp_path / "o.npy", 16, out_dtype=np.float64, progress=False
    )
    out = np.load(tmp_path / "o.npy")
    assert out.dtype == np.float64 and out.shape == (2, 16, 16)
    np.testing.assert_array_equal(out, patch_pseudo_labels(prob, gt, 16).labels)


def test_file_path_leaves_no_file_when_an_image_is_bad(tmp_path):
    prob, gt = random_maps(np.random.default_rng(7), 8, 16, 16)
    prob[5, 0, 0] = np.inf
    np.save(tmp_path / "val_pred.npy", prob[..., None])
    np.save(tmp_path / "val_orig_gt.npy", gt[..., None])
    with pytest.raises(InputError, match=r"val_pred\.npy.*image 5 contains inf"):
        generate_pseudo_label_file(tmp_path / "val_pred.npy", tmp_path / "val_orig_gt.npy", tmp_path / "out.npy", 8,
                                   chunk=2, threshold_map_path=tmp_path / "tau.npy", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val_orig_gt.npy", "val_pred.npy"]


def test_file_path_errors_name_the_file(tmp_path):
    prob, gt = random_maps(np.random.default_rng(8), 3, 16, 16)
    np.save(tmp_path / "p.npy", prob)
    np.save(tmp_path / "g.npy", gt[:2])
    with pytest.raises(InputError, match=r"not found: .*nope\.npy"):
        generate_pseudo_label_file(tmp_path / "nope.npy", tmp_path / "g.npy", tmp_path / "o.npy", 8, progress=False)
    with pytest.raises(InputError, match=r"p\.npy.*\(3, 16, 16\).*g\.npy.*\(2, 16, 16\)"):
        generate_pseudo_label_file(tmp_path / "p.npy", tmp_path / "g.npy", tmp_path / "o.npy", 8, progress=False)
    np.save(tmp_path / "g.npy", gt * 255)
    with pytest.raises(InputError, match=r"g\.npy.*image 0 is not binary"):
        generate_pseudo_label_file(tmp_path / "p.npy", tmp_path / "g.npy", tmp_path / "o.npy", 8, progress=False)
    with pytest.raises(InputError, match="chunk"):
        generate_pseudo_label_file(
            tmp_path / "p.npy", tmp_path / "g.npy", tmp_path / "o.npy", 8, chunk=0, progress=False
        )
    assert not (tmp_path / "o.npy").exists()


def test_pseudo_label_provenance_tells_current_from_stale(tmp_path):
    from data_utils.provenance import sidecar_path
    from data_utils.pseudo_labels import generate_pseudo_label_file, pseudo_label_staleness

    rng = np.random.default_rng(0)
    prob_path, gt_path, out = tmp_path / "val_pred.npy", tmp_path / "val_orig_gt.npy", tmp_path / "train_aux_gt_p_8.npy"
    np.save(prob_path, rng.random((3, 16, 16, 1), dtype=np.float32))
    np.save(gt_path, (rng.random((3, 16, 16, 1)) > 0.5).astype(np.float32))
    assert "does not exist" in pseudo_label_staleness(out, prob_path, gt_path, 8)
    generate_pseudo_label_file(prob_path, gt_path, out, 8, progress=False)
    assert sidecar_path(out).is_file()
    assert pseudo_label_staleness(out, prob_path, gt_path, 8) is None
    assert "made with 8-px patches, 16 asked" in pseudo_label_staleness(out, prob_path, gt_path, 16)
    assert "thresholds" in pseudo_label_staleness(out, prob_path, gt_path, 8, thresholds=(0.5, 1.0))
    np.save(prob_path, np.load(prob_path))  # rewritten with the same bytes: still current
    assert pseudo_label_staleness(out, prob_path, gt_path, 8) is None
    np.save(prob_path, rng.random((3, 16, 16, 1), dtype=np.float32))  # new base maps
    reason = pseudo_label_staleness(out, prob_path, gt_path, 8)
    assert "stale" in reason and "val_pred.npy changed" in reason
    sidecar_path(out).unlink()
    assert "no provenance record" in pseudo_label_staleness(out, prob_path, gt_path, 8)
