"""The torch pseudo-labels (any device) equal the numpy reference exactly: labels, thresholds, IoUs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data_utils.errors import InputError
from data_utils.pseudo_labels import DEFAULT_THRESHOLDS, generate_pseudo_label_file, patch_pseudo_labels
from data_utils.pseudo_labels_torch import patch_pseudo_labels_torch


def _assert_same(prob, gt, patch, **kw):
    ref = patch_pseudo_labels(prob, gt, patch, **{k: v for k, v in kw.items() if k == "thresholds"})
    got = patch_pseudo_labels_torch(torch.as_tensor(prob), torch.as_tensor(gt), patch, **kw)
    assert got.labels.dtype == torch.uint8 and tuple(got.labels.shape) == ref.labels.shape
    np.testing.assert_array_equal(got.labels.numpy(), ref.labels)
    np.testing.assert_array_equal(got.thresholds.numpy(), ref.thresholds)
    np.testing.assert_array_equal(got.ious.numpy(), ref.ious)
    assert got.thresholds.dtype == got.ious.dtype == torch.float32
    return got


@pytest.mark.parametrize(
    "shape,patch",
    [((3, 64, 64), 16), ((2, 50, 37), 16), ((64, 64), 64), ((2, 64, 64, 1), 8), ((4, 33, 65), 100), ((1, 40, 24), 7)],
)
def test_random_maps_equal_numpy(shape, patch):
    rng = np.random.default_rng(sum(shape) + patch)
    prob = rng.random(shape).astype(np.float32)
    gt = (rng.random(shape) > 0.6).astype(np.uint8)
    _assert_same(prob, gt, patch)


def test_edge_cases_equal_numpy():
    rng = np.random.default_rng(1)
    n, s, p = 6, 32, 8
    prob = rng.random((n, s, s)).astype(np.float32)
    gt = (rng.random((n, s, s)) > 0.5).astype(np.float32)
    gt[0] = 0  # empty GT everywhere: the lowest threshold >= the patch maximum, all-zero labels
    gt[1] = 1  # all foreground
    prob[2] = 0.0  # exact 0 and 1 probabilities
    prob[3] = 1.0
    # ties: probabilities exactly on the grid (float32 0.05·t), and constant patches
    prob[4] = np.array(DEFAULT_THRESHOLDS, np.float32)[rng.integers(0, 20, (s, s))]
    prob[5, :16, :16] = np.float32(0.15)
    gt[5, :16, :8] = 0
    got = _assert_same(prob, gt, p)
    assert got.labels[0].sum() == 0


def test_dtypes_chunks_and_thresholds_equal_numpy():
    rng = np.random.default_rng(2)
    prob = rng.random((5, 24, 24))
    gt = rng.random((5, 24, 24)) > 0.5
    _assert_same(prob, gt, 8)  # float64 compared in float64, bool masks
    _assert_same(prob.astype(np.float16), gt.astype(np.float32), 8)
    _assert_same(prob.astype(np.float32), gt, 8, chunk_pixels=1)  # one image per step
    _assert_same(prob.astype(np.float32), gt, 8, thresholds=(0.1, 0.33, 0.5, 0.9))


def test_arrays_in_tensors_out_on_the_requested_device():
    rng = np.random.default_rng(3)
    prob = rng.random((2, 16, 16)).astype(np.float32)
    gt = (rng.random((2, 16, 16)) > 0.5).astype(np.uint8)
    got = patch_pseudo_labels_torch(prob, gt, 8, device="cpu")
    assert got.labels.device.type == "cpu"
    np.testing.assert_array_equal(got.labels.numpy(), patch_pseudo_labels(prob, gt, 8).labels)


def test_bad_input_is_named_like_the_numpy_checks():
    prob = torch.rand(3, 16, 16)
    gt = (torch.rand(3, 16, 16) > 0.5).float()
    bad = prob.clone()
    bad[2, 0, 0] = float("nan")
    with pytest.raises(InputError, match="image 2 contains NaN"):
        patch_pseudo_labels_torch(bad, gt, 8)
    with pytest.raises(InputError, match="image 1 is not binary"):
        patch_pseudo_labels_torch(prob, gt * torch.tensor([1.0, 255.0, 1.0])[:, None, None], 8)
    with pytest.raises(InputError, match="must match"):
        patch_pseudo_labels_torch(prob, gt[:2], 8)
    with pytest.raises(InputError, match="patch_size"):
        patch_pseudo_labels_torch(prob, gt, 0)
    with pytest.raises(InputError, match="one map per image"):
        patch_pseudo_labels_torch(prob[:, None], gt[:, None], 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_equals_numpy():
    rng = np.random.default_rng(4)
    prob = rng.random((7, 96, 80)).astype(np.float32)
    gt = (rng.random((7, 96, 80)) > 0.5).astype(np.uint8)
    ref = patch_pseudo_labels(prob, gt, 32)
    got = patch_pseudo_labels_torch(torch.from_numpy(prob).cuda(), torch.from_numpy(gt).cuda(), 32)
    assert got.labels.is_cuda
    np.testing.assert_array_equal(got.labels.cpu().numpy(), ref.labels)
    np.testing.assert_array_equal(got.thresholds.cpu().numpy(), ref.thresholds)
    np.testing.assert_array_equal(got.ious.cpu().numpy(), ref.ious)


def test_file_generator_on_a_device_writes_the_same_file(tmp_path):
    rng = np.random.default_rng(5)
    prob = rng.random((5, 40, 40, 1)).astype(np.float32)
    gt = (rng.random((5, 40, 40, 1)) > 0.5).astype(np.float32)
    np.save(tmp_path / "prob.npy", prob)
    np.save(tmp_path / "gt.npy", gt)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = generate_pseudo_label_file(tmp_path / "prob.npy", tmp_path / "gt.npy", tmp_path / "a.npy", 16,
                                     chunk=2, threshold_map_path=tmp_path / "ta.npy", progress=False)
    got = generate_pseudo_label_file(tmp_path / "prob.npy", tmp_path / "gt.npy", tmp_path / "b.npy", 16,
                                     chunk=2, threshold_map_path=tmp_path / "tb.npy", progress=False, device=device)
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), np.load(tmp_path / "a.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "tb.npy"), np.load(tmp_path / "ta.npy"))
    for key in ("mean_patch_iou", "mean_image_iou", "pooled_iou", "mean_threshold"):
        assert got[key] == ref[key], key
