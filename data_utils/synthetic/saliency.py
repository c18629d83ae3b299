"""DUTS-like photographs: one salient object in front of a cluttered, defocused background.

Layers (RGB float in [0, 1]):

1. background — a horizon split (sky-like gradient over textured ground) or an all-over texture,
   then 6–20 clutter shapes (ellipses, boxes, blobs) in muted colours, and 1–3 **look-alikes**:
   shapes in the object's own colour and texture, not labelled; the background is defocused;
2. the object, labelled — a union of 1–4 irregular blobs (body and parts), sometimes with thin
   limbs or a handle, near the centre, 5–35 % of the frame; saturated colour, a surface pattern
   (plain, stripes or spots) and dome shading, sharp edges;
3. spatially varying conditions — a smooth field fades part of the object towards the background
   colour (camouflage), a cast shadow falls across the scene, and a broad illumination ramp;
4. sensor noise.

All lengths are given for a 256 px image and scale with ``size``.
"""
from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

from data_utils.synthetic.fields import (Scene, blend, blob_sdf, blob_window, colour_texture, draw_polyline,
                                         finish, grain, linear_ramp, modulate, random_curve, smooth_field,
                                         soft_step)


def _colour(rng: np.random.Generator, *, saturated: bool, hue: float | None = None) -> np.ndarray:
    """A random RGB colour: saturated (object-like) or muted (background-like)."""
    h = rng.uniform(0, 1) if hue is None else hue % 1.0
    s = rng.uniform(0.55, 0.95) if saturated else rng.uniform(0.05, 0.45)
    v = rng.uniform(0.55, 0.95) if saturated else rng.uniform(0.25, 0.8)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32)


def _pattern(rng: np.random.Generator, shape: tuple[int, int], k: float) -> np.ndarray:
    """A surface pattern in [-1, 1]: plain texture, stripes or spots."""
    kind = rng.integers(3)
    if kind == 0:
        return 0.5 * smooth_field(rng, shape, 4 * k)
    if kind == 1:
        period = rng.uniform(8, 20) * k
        return np.sin(2 * math.pi * linear_ramp(shape, rng.uniform(0, math.pi)) * shape[0] / period
                      + 1.5 * smooth_field(rng, shape, 30 * k)).astype(np.float32)
    return (2.0 * soft_step(smooth_field(rng, shape, rng.uniform(3, 6) * k), 0.8, 0.1) - 1.0).astype(np.float32)


def _shape_sdf(rng: np.random.Generator, size: int, k: float, centre: np.ndarray, radius: float,
               parts: int) -> np.ndarray:
    """Signed distance (px, > 0 inside) of a union of ``parts`` blobs around ``centre``, plus limbs."""
    shape = (size, size)
    sdf = blob_sdf(rng, shape, tuple(centre), radius, aspect=rng.uniform(1.0, 2.2), irregularity=0.2)
    for _ in range(parts - 1):
        a = rng.uniform(0, 2 * math.pi)
        c = centre + radius * rng.uniform(0.6, 1.1) * np.array([math.cos(a), math.sin(a)])
        sdf = np.maximum(sdf, blob_sdf(rng, shape, tuple(c), radius * rng.uniform(0.3, 0.7),
                                       aspect=rng.uniform(1.0, 2.0), irregularity=0.2))
    if rng.random() < 0.4:
        limbs = np.zeros(shape, np.uint8)
        for _ in range(rng.integers(1, 4)):
            a = rng.uniform(0, 2 * math.pi)
            limb = random_curve(rng, tuple(centre), a, radius * rng.uniform(1.2, 1.8), step=2 * k, sway=0.3,
                                sway_scale=10)
            draw_polyline(limbs, limb, rng.uniform(3, 8) * k, 1)
        sdf = np.maximum(sdf, np.where(limbs > 0, 1.0, -8.0).astype(np.float32))
    return sdf


def render_saliency(rng: np.random.Generator, size: int) -> Scene:
    """One DUTS-like photo: RGB uint8 (size, size, 3), salient-object mask {0, 1} (never empty), conditions."""
    k = size / 256.0
    shape = (size, size)
    obj_hue = rng.uniform(0, 1)
    obj_colour = _colour(rng, saturated=True, hue=obj_hue)

    # Background: horizon split or all-over texture, clutter, look-alikes, defocus.
    if rng.random() < 0.6:
        tilt = linear_ramp(shape, math.pi / 2 + rng.normal(0, 0.15))
        horizon = soft_step(tilt + 0.1 * smooth_field(rng, shape, 40 * k), rng.uniform(-0.5, 0.4), 0.03)
        top = colour_texture(_colour(rng, saturated=False), linear_ramp(shape, math.pi / 2), 0.2)
        ground = colour_texture(_colour(rng, saturated=False), smooth_field(rng, shape, 6 * k), 0.2)
        img = blend(top, ground, horizon)
    else:
        img = colour_texture(_colour(rng, saturated=False), smooth_field(rng, shape, rng.uniform(4, 20) * k), 0.3)
    centre = size * (0.5 + rng.normal(0, 0.1, 2)).clip(0.25, 0.75)
    radius = rng.uniform(0.12, 0.28) * size
    for _ in range(rng.integers(5, 15)):
        c = rng.uniform(-0.1, 1.1, 2) * size
        win, sl = blob_window(rng, shape, tuple(c), rng.uniform(0.04, 0.2) * size, aspect=rng.uniform(1, 4),
                              irregularity=float(rng.choice([0.0, 0.1, 0.3])), harmonics=int(rng.choice([2, 5])))
        colour = _colour(rng, saturated=False)
        if win.size:
            img[sl] = blend(img[sl], colour, np.clip(win + 0.5, 0, 1))
    img = modulate(img, 1 + 0.08 * grain(rng, shape, 2 * k))
    # look-alikes: the object's colour and pattern, smaller, away from the object
    n_alike = int(rng.integers(1, 4))
    pattern = _pattern(rng, shape, k)
    for _ in range(n_alike):
        a = rng.uniform(0, 2 * math.pi)
        c = centre + rng.uniform(1.4 * radius, 0.6 * size) * np.array([math.cos(a), math.sin(a)])
        win, sl = blob_window(rng, shape, tuple(c), rng.uniform(0.03, 0.09) * size, aspect=rng.uniform(1, 2.5),
                              irregularity=0.2)
        alike = _colour(rng, saturated=True, hue=obj_hue + rng.normal(0, 0.03))
        if win.size:
            img[sl] = blend(img[sl], colour_texture(alike, pattern[sl], 0.25), np.clip(win + 0.5, 0, 1))
    defocus = rng.uniform(0.0, 3.0) * k
    if defocus > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), defocus)

    # The object: sharp, patterned, shaded; part of it camouflaged towards the background.
    sdf = _shape_sdf(rng, size, k, centre, radius, int(rng.integers(1, 5)))
    alpha = np.clip(sdf + 0.5, 0.0, 1.0)
    shading = 1.0 + 0.25 * np.clip(sdf / radius, 0, 1) * linear_ramp(shape, rng.uniform(0, 2 * math.pi))
    body = modulate(colour_texture(obj_colour, pattern, rng.uniform(0.1, 0.35)), shading)
    camo = np.zeros(shape, np.float32)
    if rng.random() < 0.6:
        camo = rng.uniform(0.3, 0.8) * soft_step(smooth_field(rng, shape, 40 * k), rng.uniform(0.0, 1.0), 0.3)
        body = blend(body, img, camo)
    img = blend(img, body, alpha)
    mask = (alpha >= 0.5).astype(np.uint8)
    if not mask.any():  # DUTS loaders divide by the mask maximum: never leave it empty
        cv2.circle(mask, (int(centre[0]), int(centre[1])), max(2, int(radius / 2)), 1, -1)

    # Scene-wide lighting: a soft cast shadow and an illumination ramp.
    shade = np.zeros(shape, np.float32)
    if rng.random() < 0.5:
        shade = rng.uniform(0.3, 0.6) * soft_step(smooth_field(rng, shape, 50 * k), rng.uniform(0.0, 1.0), 0.1)
    gain = rng.uniform(0.8, 1.2) * (1 + rng.uniform(-0.3, 0.3) * linear_ramp(shape, rng.uniform(0, 2 * math.pi)))
    img = modulate(img, gain * (1 - shade))
    on = mask > 0
    cond = {"fg_fraction": float(mask.mean()), "n_lookalikes": float(n_alike), "defocus": float(defocus),
            "camouflage_mean": float(camo[on].mean()), "shadow_on_object": float(shade[on].mean())}
    return Scene(finish(img, rng, noise=rng.uniform(0.005, 0.02)), mask, cond)
