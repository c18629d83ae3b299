"""Kvasir-SEG-like colonoscopy frames: shaded polyps on vascular mucosa under an endoscope light.

Layers (RGB float in [0, 1]):

1. mucosa — orange-pink with a smooth redness field, dark-red branching vessels and mucosal folds
   (dark grooves with a bright crest: the main look-alikes of a polyp's rim);
2. polyps, labelled — 1–3 smooth irregular ellipses (radius 8–22 % of the side) rendered as domes:
   Lambert shading under the camera-mounted light, their own colour shift (paler or redder, from
   subtle to clear) and mottled surface, specular glints;
3. the endoscope light — a bright spot off-centre with a steep fall-off, modulated by a smooth
   random field, so some regions (and some polyps) are dark;
4. spatially varying defocus (a blurred copy blended in through a smooth field), wet glints on the
   mucosa (not labelled), the black frame with cut corners, and sometimes the dark inset box of
   the scope guide in the lower-left corner (masked out of the label, as in Kvasir);
5. sensor noise.

All lengths are given for a 256 px frame and scale with ``size``.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from data_utils.synthetic.fields import (Scene, blend, blob_sdf, colour_texture, draw_polyline, finish, grain,
                                         modulate, random_curve, smooth_field, soft_step)


def _mucosa(rng: np.random.Generator, size: int, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Mucosa with vessels, and the fold relief (H, W) used for shading and glints."""
    shape = (size, size)
    base = np.array([rng.uniform(0.78, 0.90), rng.uniform(0.40, 0.56), rng.uniform(0.30, 0.42)], np.float32)
    red = smooth_field(rng, shape, 50 * k)
    img = colour_texture(base, 0.05 * grain(rng, shape, 1.2 * k) + 0.06 * smooth_field(rng, shape, 8 * k), 1.0)
    img = blend(img, (0.70, 0.26, 0.22), 0.25 * soft_step(red, 0.0, 0.6))
    vessels = np.zeros(shape, np.float32)
    for _ in range(rng.integers(2, 7)):
        start = tuple(rng.uniform(0, size, 2))
        heading = rng.uniform(0, 2 * math.pi)
        trunk = random_curve(rng, start, heading, rng.uniform(0.3, 0.8) * size, step=2 * k, sway=0.7, sway_scale=6)
        draw_polyline(vessels, trunk, rng.uniform(1.0, 2.2) * k, rng.uniform(0.4, 0.8), antialias=True)
        for _ in range(rng.integers(0, 4)):
            j = int(rng.integers(len(trunk)))
            twig = random_curve(rng, tuple(trunk[j]), heading + rng.uniform(-1.5, 1.5), rng.uniform(0.05, 0.25) * size,
                                step=2 * k, sway=0.9, sway_scale=4)
            draw_polyline(vessels, twig, max(1.0, 1.0 * k), rng.uniform(0.3, 0.6), antialias=True)
    vessels = cv2.GaussianBlur(np.clip(vessels, 0, 1), (0, 0), 0.6 * k)
    img = blend(img, (0.55, 0.16, 0.18), vessels)
    relief = np.zeros(shape, np.float32)
    for _ in range(rng.integers(0, 4)):
        start = tuple(rng.uniform(0, size, 2))
        fold = random_curve(rng, start, rng.uniform(0, 2 * math.pi), rng.uniform(0.4, 1.2) * size,
                            step=2 * k, sway=0.5, sway_scale=20, drift=0.01)
        draw_polyline(relief, fold, rng.uniform(4, 10) * k, 1.0, antialias=True)
    relief = cv2.GaussianBlur(relief, (0, 0), 5 * k)
    return img, relief


def _dome(sdf: np.ndarray, radius: float) -> np.ndarray:
    """Height of a dome over a blob: 0 outside, rising like a spherical cap to 1 at depth ``radius``."""
    t = np.clip(sdf / radius, 0.0, 1.0)
    return np.sqrt(1.0 - (1.0 - t) ** 2).astype(np.float32)


def render_polyps(rng: np.random.Generator, size: int) -> Scene:
    """One Kvasir-like frame: RGB uint8 (size, size, 3), polyp mask {0, 1}, condition summaries."""
    k = size / 256.0
    shape = (size, size)
    img, relief = _mucosa(rng, size, k)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)

    # Polyps: domes with their own colour and texture; height feeds the shared shading below.
    height = 0.6 * relief
    inside = np.zeros(shape, np.float32)
    mottled = grain(rng, shape, 1.5 * k)
    n_polyps = int(rng.choice([1, 1, 1, 1, 2, 2, 3]))
    for _ in range(n_polyps):
        radius = rng.uniform(0.08, 0.22) * size
        centre = tuple(rng.uniform(0.2 * size, 0.8 * size, 2))
        sdf = blob_sdf(rng, shape, centre, radius, aspect=rng.uniform(1.0, 1.8), irregularity=0.18)
        alpha = np.clip(sdf + 0.5, 0.0, 1.0)
        height = np.maximum(height, rng.uniform(0.6, 1.6) * _dome(sdf, 0.8 * radius))
        # paler (whitish-pink) or redder than the mucosa, from subtle to clear
        shift = np.array([0.03, 0.22, 0.2] if rng.random() < 0.5 else [0.06, -0.28, -0.22], np.float32)
        tone = 1.0 + rng.uniform(0.25, 1.0) * shift
        local = modulate(modulate(img, tuple(tone)), 1 + 0.07 * mottled)
        img = blend(img, local, alpha * rng.uniform(0.5, 1.0))
        inside = np.maximum(inside, alpha)

    # Camera-mounted light: Lambert shading of the relief, fall-off from an off-centre spot, glints.
    gy, gx = np.gradient(height * 7.0 * k)
    lx, ly = rng.normal(0, 0.3, 2)
    lambert = np.clip((1.0 - lx * gx - ly * gy) / np.sqrt(1.0 + gx * gx + gy * gy + lx * lx + ly * ly), 0, 1)
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    fall = 1.0 / (1.0 + ((x - cx) ** 2 + (y - cy) ** 2) / (rng.uniform(0.35, 0.7) * size) ** 2) ** 1.5
    light = np.clip(fall * (1 + 0.25 * smooth_field(rng, shape, 60 * k)), 0.12, 1.2) * rng.uniform(0.9, 1.2)
    img = modulate(img, lambert * light)
    # glints where the surface is curved and faces the light (domes, fold crests), plus sparse wet spots
    curved = np.clip(np.sqrt(gx * gx + gy * gy) * 4.0, 0, 1)
    glint = np.maximum(curved * soft_step(lambert + 0.02 * smooth_field(rng, shape, 2 * k), 0.992, 0.003),
                       soft_step(smooth_field(rng, shape, 2.5 * k), 3.0, 0.08))
    glint *= np.clip(light * 1.3, 0, 1)
    img = blend(img, (1.0, 0.98, 0.96), glint)

    # Spatially varying defocus, frame, scope-guide box.
    blur = np.zeros(shape, np.float32)
    if rng.random() < 0.6:
        blur = soft_step(smooth_field(rng, shape, 70 * k), rng.uniform(-0.5, 1.0), 0.3)
        img = blend(img, cv2.GaussianBlur(img, (0, 0), rng.uniform(2.0, 4.5) * k), blur)
    u, v = (x - size / 2) / (size / 2), (y - size / 2) / (size / 2)
    frame = soft_step(-(u ** 4 + v ** 4) ** 0.25, -rng.uniform(1.0, 1.15), 0.004)
    img = modulate(img, frame)
    mask = (inside >= 0.5) & (frame >= 0.5)
    if rng.random() < 0.3:
        b = int(round(rng.uniform(0.22, 0.3) * size))
        box = np.zeros(shape, np.float32)
        box[size - b - 2:size - 2, 2:b + 2] = 1.0
        scope = np.zeros(shape, np.float32)
        draw_polyline(scope, random_curve(rng, (2 + 0.2 * b, size - 2 - 0.1 * b), -math.pi / 3, 0.8 * b,
                                          step=2 * k, sway=0.6, sway_scale=6), 2.5 * k, 1.0, antialias=True)
        img = blend(img, (0.04, 0.06, 0.05), box)
        img = blend(img, (0.20, 0.55, 0.30), scope * box)
        mask &= box < 0.5
    lit = light * lambert
    cond = {"n_polyps": float(n_polyps), "fg_fraction": float(mask.mean()),
            "polyp_light_mean": float(lit[mask].mean()) if mask.any() else 0.0,
            "blur_fraction": float((blur > 0.5).mean()),
            "light_p10": float(np.percentile(lit[frame > 0.5], 10))}
    return Scene(finish(img, rng, noise=rng.uniform(0.005, 0.015)), mask.astype(np.uint8), cond)
