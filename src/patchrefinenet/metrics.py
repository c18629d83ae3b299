"""Segmentation metrics, accumulated as counts over a stream of batches and reduced at the end.

All metrics are for binary foreground segmentation. Inputs are probability maps in [0, 1] (or
binary predictions) and {0, 1} ground truth, as numpy arrays or torch tensors in any of the
layouts H×W, N×H×W, N×H×W×1 or N×1×H×W. A pixel is predicted foreground iff ``prob > threshold``
(strict, as the authors' numpy evaluation; their torch training logs use ``>=``).
"""
from __future__ import annotations

import numbers

import numpy as np

from data_utils.arrays import as_maps, check_binary, check_probabilities, check_same_shape, to_numpy
from data_utils.errors import InputError
from data_utils.pseudo_labels import DEFAULT_THRESHOLDS, patch_pseudo_labels

SALIENCY_BETA2 = 0.3  # β² of the saliency F-measure (precision weighted more than recall)
SALIENCY_LEVELS = 256  # thresholds of max F: the 8-bit levels t = 0..255


def _to_maps(a, name: str) -> np.ndarray:
    """(N, H, W) view of an H×W, N×H×W, N×H×W×1 or N×1×H×W (torch NCHW) array or tensor."""
    a = to_numpy(a)
    if a.ndim == 4 and a.shape[1] == 1 and a.shape[-1] != 1:
        a = a[:, 0]
    return as_maps(a, name)


def _ratio(num, den, empty: float):
    """num / den elementwise, ``empty`` where den == 0."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), empty)


class SegmentationMeter:
    """Streaming binary-segmentation metrics over a dataset; ``update`` per batch, ``compute`` at the end.

    Definitions (TP, FP, FN counted with pred = prob > threshold; s = ``smooth``):

    - ``pooled_iou``: (TP + s)/(TP + FP + FN + s) with counts summed over every pixel of the
      dataset — the authors' reported "mIoU" (a micro IoU with +1 smoothing, docs/authors-refine.md §R10).
    - ``mean_iou``: mean over images of each image's (TP + s)/(TP + FP + FN + s) (same +s
      smoothing; an image with empty GT and empty prediction scores 1, also with s = 0).
    - ``dice``: pooled 2TP/(2TP + FP + FN); 1.0 when GT and prediction are empty everywhere.
    - ``precision`` = TP/(TP + FP), ``recall`` = TP/(TP + FN), pooled; 0.0 when the denominator is 0.
    - ``mae``: mean |prob − gt| over all pixels of the dataset (equal to the mean of per-image MAEs
      when all images have the same size).
    - ``max_f`` (``saliency=True`` only): the saliency benchmarks' maximum F-measure. For each
      8-bit level t = 0..255, pred_t = ⌊255·prob⌋ ≥ t; per image precision_t and recall_t (0.0
      where undefined); both are averaged over images, then F_t = (1+β²)·P̄_t·R̄_t/(β²·P̄_t + R̄_t)
      with β² = 0.3, and max_f = max_t F_t. (Some toolkits, e.g. PySODMetrics, average per-image
      F_t instead; that gives slightly different numbers.)
    - ``n_images``: number of images seen.
    """

    def __init__(self, threshold: float = 0.5, smooth: float = 1.0, saliency: bool = False) -> None:
        if isinstance(threshold, bool) or not (isinstance(threshold, numbers.Real) and 0.0 <= threshold < 1.0):
            raise InputError(f"threshold must be a number in [0, 1), got {threshold!r}")
        if isinstance(smooth, bool) or not (isinstance(smooth, numbers.Real) and smooth >= 0):
            raise InputError(f"smooth must be a number >= 0, got {smooth!r}")
        self.threshold, self.smooth, self.saliency = float(threshold), float(smooth), bool(saliency)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._tp = self._fp = self._fn = self._pixels = 0
        self._abs_err = 0.0
        self._image_iou: list[float] = []
        self._precision_sum = np.zeros(SALIENCY_LEVELS, np.float64)
        self._recall_sum = np.zeros(SALIENCY_LEVELS, np.float64)

    @property
    def n_images(self) -> int:
        return len(self._image_iou)

    @property
    def per_image_iou(self) -> list[float]:
        """IoU of every image seen so far, in order (with the +``smooth`` smoothing)."""
        return list(self._image_iou)

    def update(self, prob, gt) -> None:
        """Add a batch: ``prob`` in [0, 1] (or binary predictions), ``gt`` in {0, 1}, same (N, H, W)."""
        start = self.n_images
        p, g = _to_maps(prob, "prob"), _to_maps(gt, "gt")
        check_same_shape(p, "prob (viewed as N×H×W)", g, "gt (viewed as N×H×W)")
        check_probabilities(p, "prob", start=start)
        check_binary(g, "gt", start=start)
        n = p.shape[0]
        pred = (p > self.threshold).reshape(n, -1)
        truth = (g != 0).reshape(n, -1)
        tp = np.count_nonzero(pred & truth, axis=1)
        fp = np.count_nonzero(pred, axis=1) - tp
        fn = np.count_nonzero(truth, axis=1) - tp
        self._tp += int(tp.sum())
        self._fp += int(fp.sum())
        self._fn += int(fn.sum())
        self._pixels += pred.size
        self._image_iou += _ratio(tp + self.smooth, tp + fp + fn + self.smooth, 1.0).tolist()
        pf = p if p.dtype.kind == "f" and p.dtype.itemsize >= 4 else p.astype(np.float32)
        self._abs_err += float(np.abs(pf - g.astype(pf.dtype, copy=False)).sum(dtype=np.float64))
        if self.saliency:
            self._update_pr_curves(pf, truth)

    def _update_pr_curves(self, p: np.ndarray, truth: np.ndarray) -> None:
        n = p.shape[0]
        level = (p * 255).astype(np.uint8).reshape(n, -1)  # ⌊255·prob⌋
        idx = (np.arange(n)[:, None] * 2 + truth) * SALIENCY_LEVELS + level
        hist = np.bincount(idx.ravel(), minlength=n * 2 * SALIENCY_LEVELS).reshape(n, 2, SALIENCY_LEVELS)
        at_least = np.cumsum(hist[:, :, ::-1], axis=2)[:, :, ::-1]  # [i, gt, t] = #pixels with level >= t
        tp, predicted, positives = at_least[:, 1], at_least.sum(axis=1), at_least[:, 1, :1]
        self._precision_sum += _ratio(tp, predicted, 0.0).sum(axis=0)
        self._recall_sum += _ratio(tp, np.broadcast_to(positives, tp.shape), 0.0).sum(axis=0)

    def compute(self) -> dict[str, float]:
        """The metrics defined in the class docstring, as plain floats (``n_images`` as int)."""
        if self.n_images == 0:
            raise InputError("SegmentationMeter.compute: no images were added; call update(prob, gt) first")
        tp, fp, fn, s = self._tp, self._fp, self._fn, self.smooth
        out = {
            "pooled_iou": float(_ratio(tp + s, tp + fp + fn + s, 1.0)),
            "mean_iou": float(np.mean(self._image_iou)),
            "dice": float(_ratio(2 * tp, 2 * tp + fp + fn, 1.0)),
            "precision": float(_ratio(tp, tp + fp, 0.0)),
            "recall": float(_ratio(tp, tp + fn, 0.0)),
            "mae": self._abs_err / self._pixels,
            "n_images": self.n_images,
        }
        if self.saliency:
            precision, recall = self._precision_sum / self.n_images, self._recall_sum / self.n_images
            f = _ratio((1 + SALIENCY_BETA2) * precision * recall, SALIENCY_BETA2 * precision + recall, 0.0)
            out["max_f"] = float(f.max())
        return out


class CalibrationMeter:
    """Streaming calibration of foreground probabilities against {0, 1} ground truth, pixel-wise.

    - ``ece``: expected calibration error with ``bins`` equal-width bins of p on [0, 1]:
      Σ_b (n_b / n)·|mean(y in b) − mean(p in b)|;
    - ``brier``: mean (p − y)².
    Inputs as for :class:`SegmentationMeter` (any layout; counts accumulate in float64).
    """

    def __init__(self, bins: int = 15) -> None:
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise InputError(f"bins must be an int >= 1, got {bins!r}")
        self.bins = bins
        self._n = np.zeros(bins)
        self._p = np.zeros(bins)
        self._y = np.zeros(bins)
        self._sq = 0.0

    def update(self, prob, gt) -> None:
        p = _to_maps(prob, "prob").astype(np.float64).ravel()
        y = _to_maps(gt, "gt").astype(np.float64).ravel()
        if p.shape != y.shape:
            raise InputError(f"CalibrationMeter: prob and gt sizes differ ({p.size} vs {y.size} pixels)")
        b = np.minimum((p * self.bins).astype(np.int64), self.bins - 1)  # p = 1 falls in the last bin
        self._n += np.bincount(b, minlength=self.bins)
        self._p += np.bincount(b, weights=p, minlength=self.bins)
        self._y += np.bincount(b, weights=y, minlength=self.bins)
        self._sq += float(np.sum((p - y) ** 2))

    def compute(self) -> dict[str, float]:
        n = self._n.sum()
        if n == 0:
            raise InputError("CalibrationMeter.compute: no pixels were added; call update(prob, gt) first")
        gap = np.abs(self._y - self._p)  # n_b · |mean y − mean p| per bin
        return {"ece": float(gap.sum() / n), "brier": float(self._sq / n)}


def pooled_iou(pred_binary, gt, smooth: float = 1.0) -> float:
    """(|pred ∩ gt| + smooth)/(|pred ∪ gt| + smooth) over all pixels of two binary arrays (same shape)."""
    p, g = _to_maps(pred_binary, "pred_binary"), _to_maps(gt, "gt")
    check_same_shape(p, "pred_binary (viewed as N×H×W)", g, "gt (viewed as N×H×W)")
    check_binary(p, "pred_binary")
    check_binary(g, "gt")
    p, g = p != 0, g != 0
    return (np.count_nonzero(p & g) + smooth) / (np.count_nonzero(p | g) + smooth)


def oracle_image_iou(prob, gt, thresholds=DEFAULT_THRESHOLDS) -> float:
    """Mean over images of each image's best (I+1)/(U+1) over the threshold grid.

    The authors' kvasir "base mIoU" (docs/authors-refine.md §R13 †, §R15.7): an oracle that picks the best threshold per
    image using the GT, so it is an upper bound for the base model, not comparable with a pooled
    IoU at 0.5. Same search as the P0/IST pseudo-labels (one patch per image).
    """
    p, g = _to_maps(prob, "prob"), _to_maps(gt, "gt")
    res = patch_pseudo_labels(p, g, patch_size=max(p.shape[1:]), thresholds=thresholds)
    return float(res.ious.mean(dtype=np.float64))
