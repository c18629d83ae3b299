"""Probability maps with a known, smooth, region-by-region miscalibration (for bias-recovery tests).

PatchRefineNet exists because a base model's errors are regional: the best threshold in a hazy
corner is not the best one in a clear corner. :func:`biased_probability_maps` fabricates base-model
output with exactly that defect and returns the defect itself, so a benchmark can check how much of
it a refiner removes. With ``bias_scale=0`` the maps are unbiased (the control set).
"""
from __future__ import annotations

import cv2
import numpy as np

from data_utils.arrays import as_maps, check_binary
from data_utils.errors import InputError
from data_utils.synthetic.fields import smooth_field


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance (px) of every pixel to the mask outline: (H, W) float32, > 0 on foreground.

    Foreground pixels get ``(distance to the nearest background pixel) − ½``, background pixels
    ``−((distance to the nearest foreground pixel) − ½)`` (exact Euclidean distances), so the
    value is ±½ on either side of the outline and flipping the mask flips the sign exactly.
    An all-background image is −inf everywhere, an all-foreground one +inf.
    """
    fg = (mask > 0).astype(np.uint8)
    if not fg.any():
        return np.full(fg.shape, -np.inf, np.float32)
    if fg.all():
        return np.full(fg.shape, np.inf, np.float32)
    inside = cv2.distanceTransform(fg, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform(1 - fg, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.where(fg > 0, inside - 0.5, 0.5 - outside).astype(np.float32)


def biased_probability_maps(gt, *, seed: int = 0, bias_scale: float = 1.5, noise: float = 0.5,
                            smoothness: float = 0.15, sharpness: float = 4.0,
                            edge_width: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Fake base-model probabilities for ground truth ``gt``, miscalibrated by a known smooth field.

    ``gt``: (N, H, W) (or H×W, N×H×W×1) binary masks, any numeric dtype with values {0, 1}.
    Returns ``(prob, bias_field)``, both (N, H, W) float32; for image ``i``::

        logit = sharpness · tanh(d / edge_width) + bias_field + noise · ε
        prob  = 1 / (1 + exp(−logit))

    - ``d``: :func:`signed_distance` to the outline of ``gt[i]`` (px, > 0 on foreground), so the
      confidence softens over about ``edge_width`` px at object edges;
    - ``bias_field``: a Gaussian random field with correlation length ``smoothness · min(H, W)``
      px (white noise, Gaussian-filtered, see :func:`~data_utils.synthetic.fields.smooth_field`),
      standardised per image to mean 0 and standard deviation 1, times ``bias_scale``; zero mean
      means there is no image-level offset to correct, only region-level ones;
    - ``ε``: independent standard normal noise per pixel.

    Far from edges, foreground logits are ``N(sharpness + b, noise²)`` and background logits
    ``N(−sharpness + b, noise²)`` where the field is ``b``, so the error-minimising threshold
    there is ``sigmoid(b)``: it moves with the bias, which is what a patch-wise refiner must
    learn. Image ``i`` draws its field and its noise, in that order, from
    ``numpy.random.default_rng([seed, i])`` whatever the parameters, so maps made with
    ``bias_scale = 0`` and ``bias_scale > 0`` from one seed share the same noise (a paired
    control) and an image does not depend on how many others are generated.
    """
    maps = as_maps(gt, "gt")
    check_binary(maps, "gt")
    for name, value, strict in (("bias_scale", bias_scale, False), ("noise", noise, False),
                                ("smoothness", smoothness, True), ("sharpness", sharpness, True),
                                ("edge_width", edge_width, True)):
        if not np.isfinite(value) or value < 0 or (strict and value == 0):
            need = "> 0" if strict else ">= 0"
            raise InputError(f"biased_probability_maps: {name} must be a finite number {need}, got {value!r}")
    if int(seed) != seed or seed < 0:
        raise InputError(f"biased_probability_maps: seed must be a non-negative integer, got {seed!r}")
    n, h, w = maps.shape
    prob = np.empty((n, h, w), np.float32)
    field = np.empty((n, h, w), np.float32)
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        field[i] = bias_scale * smooth_field(rng, (h, w), smoothness * min(h, w))
        eps = rng.standard_normal((h, w), dtype=np.float32)
        logit = sharpness * np.tanh(signed_distance(maps[i]) / edge_width) + field[i] + noise * eps
        prob[i] = 1.0 / (1.0 + np.exp(-logit))
    return prob, field
