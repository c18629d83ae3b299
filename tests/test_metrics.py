"""patchrefinenet.metrics against hand-computed values, streaming, layouts and bad input."""
import numpy as np
import pytest
import torch

from data_utils.errors import InputError
from patchrefinenet.metrics import SegmentationMeter, oracle_image_iou, pooled_iou

# Two 2×3 images. Image 0: pred (> 0.5; 0.5 itself is background) [[1,1,0],[0,0,1]] vs
# gt [[1,0,1],[1,0,0]]: TP 1, FP 2, FN 2. Image 1: pred [[1,1,1],[0,0,0]] vs gt [[1,1,0],[0,0,0]]:
# TP 2, FP 1, FN 0. Totals TP 3, FP 3, FN 2. |prob - gt| sums: 2.8 and 1.3 over 12 pixels.
PROB = np.float32([[[0.9, 0.6, 0.2], [0.5, 0.1, 0.7]],
                   [[0.8, 0.8, 0.9], [0.0, 0.0, 0.0]]])
GT = np.uint8([[[1, 0, 1], [1, 0, 0]],
               [[1, 1, 0], [0, 0, 0]]])
EXPECTED = {
    "pooled_iou": (3 + 1) / (8 + 1),
    "mean_iou": ((1 + 1) / (5 + 1) + (2 + 1) / (3 + 1)) / 2,
    "dice": 6 / 11,
    "precision": 3 / 6,
    "recall": 3 / 5,
    "mae": 4.1 / 12,
    "n_images": 2,
}


def assert_metrics(got, expected):
    assert set(expected) <= set(got)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6), key


def test_hand_computed_values():
    meter = SegmentationMeter()
    meter.update(PROB, GT)
    assert_metrics(meter.compute(), EXPECTED)
    assert meter.per_image_iou == pytest.approx([2 / 6, 3 / 4])
    assert "max_f" not in meter.compute()


def test_streaming_equals_one_batch_and_accepts_every_layout():
    meter = SegmentationMeter()
    meter.update(torch.from_numpy(PROB[:1, None]), torch.from_numpy(GT[:1, None]))  # N×1×H×W tensors
    meter.update(PROB[1][..., None][None], GT[1].astype(bool))  # N×H×W×1 and H×W
    assert_metrics(meter.compute(), EXPECTED)


def test_smoothing_and_threshold_options():
    meter = SegmentationMeter(smooth=0.0)
    meter.update(PROB, GT)
    assert meter.compute()["pooled_iou"] == pytest.approx(3 / 8)
    meter = SegmentationMeter(threshold=0.85)  # pred: only the 0.9 pixels → TP 1, FP 1, FN 4
    meter.update(PROB, GT)
    got = meter.compute()
    assert got["pooled_iou"] == pytest.approx(2 / 7) and got["precision"] == 0.5 and got["recall"] == 0.2


def test_binary_predictions_and_empty_images():
    meter = SegmentationMeter()
    meter.update(np.zeros((1, 4, 4), np.uint8), np.zeros((1, 4, 4), np.uint8))
    got = meter.compute()
    assert got["pooled_iou"] == 1.0 and got["mean_iou"] == 1.0 and got["dice"] == 1.0
    assert got["precision"] == 0.0 and got["recall"] == 0.0 and got["mae"] == 0.0
    meter = SegmentationMeter(smooth=0)
    meter.update(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8))
    assert meter.compute()["pooled_iou"] == 1.0 and meter.per_image_iou == [1.0]


def test_max_f_single_image_by_hand():
    # levels ⌊255·p⌋ = 255, 127, 51, 0; gt = 1, 0, 1, 0. t = 0: P 1/2, R 1 → F 0.65/1.15;
    # t ≤ 51: P 2/3, R 1 → F 0.7222; t ≤ 127: P 1/2, R 1/2 → F 0.5; t ≤ 255: P 1, R 1/2 → F 0.8125.
    meter = SegmentationMeter(saliency=True)
    meter.update(np.float32([[1.0, 0.5, 0.2, 0.0]]), np.uint8([[1, 0, 1, 0]]))
    assert meter.compute()["max_f"] == pytest.approx(0.8125)


def test_max_f_averages_precision_and_recall_over_images_before_the_f_measure():
    rng = np.random.default_rng(0)
    gt = (rng.random((3, 8, 8)) < 0.3).astype(np.uint8)
    prob = (0.4 * gt + 0.6 * rng.random((3, 8, 8))).astype(np.float32)
    meter = SegmentationMeter(saliency=True)
    meter.update(prob[:2], gt[:2])
    meter.update(prob[2], gt[2])
    precision, recall = np.zeros(256), np.zeros(256)
    for p, g in zip(prob, gt):
        level = np.floor(p * np.float32(255)).astype(int)
        for t in range(256):
            pred = level >= t
            tp = (pred & (g == 1)).sum()
            precision[t] += tp / pred.sum() if pred.sum() else 0.0
            recall[t] += tp / g.sum()
    precision, recall = precision / 3, recall / 3
    with np.errstate(invalid="ignore"):
        f = 1.3 * precision * recall / (0.3 * precision + recall)  # NaN where P = R = 0
    assert meter.compute()["max_f"] == pytest.approx(np.nanmax(f))


def test_pooled_iou_by_hand():
    pred = np.uint8([[1, 1, 0], [0, 0, 1]])
    gt = np.uint8([[1, 0, 1], [1, 0, 0]])
    assert pooled_iou(pred, gt) == pytest.approx(2 / 6)
    assert pooled_iou(pred, gt, smooth=0) == pytest.approx(1 / 5)
    with pytest.raises(InputError, match="pred_binary: image 0 is not binary"):
        pooled_iou(pred * 0.7, gt)


def test_oracle_image_iou_picks_the_best_threshold_per_image():
    # image 0: best τ = 0.40 → IoU 1. image 1: τ < 0.3 predicts all 4 (I 2, U 4 → 3/5), τ ≥ 0.3
    # predicts none (1/3): best 0.6. Mean 0.8.
    prob = np.float32([[[0.6, 0.4], [0.4, 0.0]], [[0.3, 0.3], [0.3, 0.3]]])
    gt = np.uint8([[[1, 0], [0, 0]], [[1, 1], [0, 0]]])
    assert oracle_image_iou(prob, gt) == pytest.approx(0.8)


def test_bad_input_raises_input_error():
    meter = SegmentationMeter()
    with pytest.raises(InputError, match="no images"):
        meter.compute()
    meter.update(PROB, GT)
    bad = np.repeat(PROB[:1], 3, axis=0)
    bad[1, 0, 0] = np.nan
    with pytest.raises(InputError, match="prob: image 3 contains NaN"):  # index counts earlier batches
        meter.update(bad, np.repeat(GT[:1], 3, axis=0))
    with pytest.raises(InputError, match="sigmoid"):
        meter.update(PROB * 10 - 5, GT)
    with pytest.raises(InputError, match="gt: image 2 is not binary.*divide by 255"):
        meter.update(PROB, GT * 255)
    with pytest.raises(InputError, match=r"prob.*\(2, 2, 3\).*gt.*\(2, 3, 2\)"):
        meter.update(PROB, GT.transpose(0, 2, 1))
    with pytest.raises(InputError, match="empty"):
        meter.update(PROB[:0], GT[:0])
    assert meter.compute()["n_images"] == 2  # failed updates add nothing
    for kwargs in ({"threshold": 1.5}, {"threshold": "0.5"}, {"smooth": -1}):
        with pytest.raises(InputError):
            SegmentationMeter(**kwargs)
