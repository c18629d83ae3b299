"""The authors' training augmentations (docs/authors-seg.md §S2.3), driven only by a passed ``numpy.random.Generator``.

Images are H×W×3 in OpenCV's BGR order (uint8 or float32), masks H×W; every function returns
new C-contiguous arrays of the input dtypes. The per-dataset entry points
(:data:`AUGMENTATIONS`) draw all their randomness from the ``rng`` argument, so a seed fixes
the result. Fixes relative to the authors' code (which crashes on NumPy ≥ 2):

* the hue shift is done modulo 180, OpenCV's 8-bit hue range for ``COLOR_BGR2HSV`` (the authors
  cast the shift to uint8 and let it wrap modulo 256, which produced invalid hues 180…255 and,
  for negative shifts, raises ``OverflowError`` on NumPy ≥ 2);
* the shift/scale warp uses ``math`` instead of the removed ``np.math``.

The random draws follow the authors' probabilities and ranges, but the stream is our own (the
authors used NumPy's unseeded global RNG), so augmented images are reproducible from a seed but
not bit-identical to any upstream run.
"""
from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

Augmentation = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _as_uint8(image: np.ndarray) -> np.ndarray:
    return image if image.dtype == np.uint8 else np.clip(np.rint(image), 0, 255).astype(np.uint8)


def hsv_jitter(image: np.ndarray, hue_shift: int, sat_shift: float, val_shift: float) -> np.ndarray:
    """Shift hue (modulo 180), saturation and value of a BGR image in OpenCV's 8-bit HSV space.

    Saturation and value shifts are rounded to the nearest integer (half to even) and added with
    saturation at 0/255 — what ``cv2.add(channel, float)`` does in OpenCV 5.
    """
    hsv = cv2.cvtColor(_as_uint8(image), cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(hue_shift)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + int(np.rint(sat_shift)), 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + int(np.rint(val_shift)), 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    return out.astype(image.dtype)


def shift_scale(image: np.ndarray, mask: np.ndarray, scale: float, aspect: float, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale about the centre (x by scale·√aspect, y by scale/√aspect), shift by (dx, dy) pixels.

    As the authors: the four corners are mapped and the resulting (affine) perspective warp is
    applied to image and mask with bilinear interpolation and a black border.
    """
    h, w = mask.shape[:2]
    sx, sy = scale * math.sqrt(aspect), scale / math.sqrt(aspect)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    centre = np.array([w / 2, h / 2])
    moved = (corners - centre) * np.array([sx, sy]) + centre + np.array([dx, dy])
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), moved.astype(np.float32))
    warp = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return (cv2.warpPerspective(image, matrix, (w, h), **warp),
            cv2.warpPerspective(mask, matrix, (w, h), **warp))


def rotate_expand(image: np.ndarray, mask: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate counter-clockwise by ``angle`` degrees about the centre, enlarging the canvas so nothing
    is cropped (bilinear, black border). A (h, w) input gives int(h·|sin|+w·|cos|) columns and
    int(h·|cos|+w·|sin|) rows."""
    h, w = mask.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(h * sin + w * cos), int(h * cos + w * sin)
    matrix[0, 2] += new_w / 2 - w / 2
    matrix[1, 2] += new_h / 2 - h / 2
    return cv2.warpAffine(image, matrix, (new_w, new_h)), cv2.warpAffine(mask, matrix, (new_w, new_h))


def brightness_contrast(image: np.ndarray, contrast: float, light: float) -> np.ndarray:
    """``clip(contrast·image + light, 0, 255)``, keeping the dtype (uint8 results are rounded)."""
    out = np.clip(image.astype(np.float32) * np.float32(contrast) + np.float32(light), 0, 255)
    return _as_uint8(out) if image.dtype == np.uint8 else out.astype(image.dtype)


def _contiguous(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def augment_deepglobe(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """D-LinkNet's augmentation, in order, each with probability 0.5: HSV jitter (hue ±30, sat ±5,
    value ±15), shift ±10 % / scale 0.9–1.1 / aspect 0.9–1.1 warp, horizontal flip, vertical
    flip, 90° counter-clockwise rotation (image and mask jointly)."""
    if rng.random() < 0.5:
        hue = int(rng.integers(-30, 31))
        sat = rng.uniform(-5, 5)
        val = rng.uniform(-15, 15)
        image = hsv_jitter(image, hue, sat, val)
    if rng.random() < 0.5:
        h, w = mask.shape[:2]
        scale = rng.uniform(0.9, 1.1)
        aspect = rng.uniform(0.9, 1.1)
        dx = round(rng.uniform(-0.1, 0.1) * w)
        dy = round(rng.uniform(-0.1, 0.1) * h)
        image, mask = shift_scale(image, mask, scale, aspect, dx, dy)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    if rng.random() < 0.5:
        image, mask = np.rot90(image), np.rot90(mask)
    return _contiguous(image, mask)


def augment_duts(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """PFANet's augmentation at native resolution (before padding/resizing), in order:

    1. crop: c_h < h//8 rows and c_w < w//8 columns are removed, the window starting at an offset
       below each crop amount; then a horizontal flip with probability 0.5;
    2. rotation by an integer angle in [−25, 24]° with canvas enlargement (:func:`rotate_expand`);
    3. image only: contrast in [0.5, 1.5), brightness an integer in [−20, 19], clipped to [0, 255].
    Images smaller than 8 pixels on a side are not cropped (the authors' code raised there).
    """
    h, w = mask.shape[:2]
    crop_h = int(rng.integers(h // 8)) if h // 8 > 0 else 0
    crop_w = int(rng.integers(w // 8)) if w // 8 > 0 else 0
    top = int(rng.integers(crop_h)) if crop_h > 0 else 0
    left = int(rng.integers(crop_w)) if crop_w > 0 else 0
    image = image[top:top + h - crop_h, left:left + w - crop_w]
    mask = mask[top:top + h - crop_h, left:left + w - crop_w]
    if rng.integers(10) >= 5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    image, mask = _contiguous(image, mask)
    image, mask = rotate_expand(image, mask, int(rng.integers(-25, 25)))
    contrast = rng.random() + 0.5
    light = int(rng.integers(-20, 20))
    return _contiguous(brightness_contrast(image, contrast, light), mask)


def augment_kvasir(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """ResUNet++'s augmentation as the authors left it: a vertical flip with probability 0.5."""
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    return _contiguous(image, mask)


def no_augmentation(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Identity (``augmentation = "none"``)."""
    return image, mask


AUGMENTATIONS: dict[str, Augmentation] = {
    "deepglobe": augment_deepglobe,
    "duts": augment_duts,
    "kvasir": augment_kvasir,
    "none": no_augmentation,
}
