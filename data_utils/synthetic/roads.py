"""DeepGlobe-like satellite tiles: curved road networks on textured land cover.

The scene is built in layers (RGB float in [0, 1]):

1. land cover — 2–4 of {forest, grass, dry field, bare soil, farmland parcels, rooftops} mixed by
   a soft arg-max of smooth random fields, so patches of road-like colour (soil, roofs) appear in
   some regions only;
2. distractors, not labelled — a muddy or dark river, road-coloured lots, footpaths and tracks
   1–2 px wide (unlabelled, as many small tracks in DeepGlobe);
3. roads, labelled — 1–3 through-roads crossing the tile plus 0–3 branches, smooth random
   curves of 2–8 px (at 256 px), paved grey or dirt brown, with a darker shoulder; a smooth field
   fades stretches of them into the terrain (worn or sand-covered road);
4. occluders over roads, still labelled as road (as in DeepGlobe) — rows of tree crowns with cast
   shadows, and sometimes clouds;
5. spatially varying degradations — cloud shadows, an illumination ramp, and haze whose strength
   is a smooth random field (so road contrast, and a trained model's confidence, differ from
   region to region of one tile); then sensor blur and noise (which drowns the faint regions).

All lengths are given for a 256 px tile and scale with ``size``.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from data_utils.synthetic.fields import (Scene, blend, blob_sdf, colour_texture, draw_disc, draw_polyline,
                                         finish, fractal_field, grain, linear_ramp, modulate, random_curve,
                                         smooth_field, soft_step)

PAVED = ((0.55, 0.55, 0.53), (0.62, 0.60, 0.57), (0.47, 0.47, 0.48))
DIRT = ((0.64, 0.54, 0.42), (0.57, 0.48, 0.38), (0.70, 0.62, 0.50))
# road-curve styles (straight, gently bending, winding): random_curve's (sway, sway_scale, drift)
STYLES = ((0.08, 40.0, 0.0), (0.3, 30.0, 0.003), (0.6, 12.0, 0.006))


def _land_cover(rng: np.random.Generator, size: int, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Mixed land cover (H, W, 3) and its "road-likeness" map (H, W) in [0, 1] (soil/roofs = 1)."""
    shape = (size, size)
    names = rng.choice(["forest", "grass", "dry", "soil", "farm", "roofs"], size=rng.integers(2, 5),
                       replace=False, p=[0.22, 0.22, 0.16, 0.12, 0.18, 0.10])
    tex, broad = grain(rng, shape, 0.8 * k), smooth_field(rng, shape, 12 * k)  # shared: covers barely overlap
    layers, roadlike = [], []
    for name in names:
        if name == "forest":
            crowns = smooth_field(rng, shape, 2.5 * k)
            img = colour_texture((0.16, 0.24, 0.12), 0.6 * crowns + 0.25 * tex + 0.2 * broad, 0.45)
        elif name == "grass":
            img = colour_texture((0.32, 0.42, 0.20), 0.4 * tex + broad, 0.12, tint=(1.2, 1.0, 0.8))
        elif name == "dry":
            img = colour_texture((0.58, 0.54, 0.37), 0.4 * tex + broad, 0.10)
        elif name == "soil":
            img = colour_texture((0.55, 0.43, 0.32), 0.5 * tex + broad, 0.10)
        else:
            img = _parcels(rng, size, k, roofs=(name == "roofs"), tex=tex)
        layers.append(img)
        roadlike.append(1.0 if name in ("soil", "roofs") else 0.0)
    weights = np.stack([smooth_field(rng, shape, rng.uniform(30, 70) * k) for _ in names])
    weights = np.exp((weights - weights.max(axis=0)) / 0.12)
    weights /= weights.sum(axis=0)
    cover = np.einsum("khw,khwc->hwc", weights, np.stack(layers)).astype(np.float32)
    return cover, np.einsum("khw,k->hw", weights, np.asarray(roadlike, np.float32)).astype(np.float32)


def _parcels(rng: np.random.Generator, size: int, k: float, *, roofs: bool, tex: np.ndarray) -> np.ndarray:
    """Rectangular parcels on a rotated grid: farmland (green/brown tones, striped, with light field
    edges that look like footpaths) or rooftops (small grey/red/white cells, dark gaps)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    a = rng.uniform(0, math.pi / 2)
    u, v = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
    cw, ch = (rng.uniform(6, 11, 2) if roofs else rng.uniform(18, 45, 2)) * k
    iu, iv = np.floor(u / cw).astype(np.int64) % 61, np.floor(v / ch).astype(np.int64) % 59
    table = rng.integers(0, 1 << 20, size=(61, 59))
    cell = table[iu, iv]
    if roofs:
        palette = np.array([(0.62, 0.60, 0.58), (0.70, 0.45, 0.38), (0.80, 0.79, 0.77), (0.45, 0.45, 0.47),
                            (0.30, 0.36, 0.22)], np.float32)
        img = modulate(_lookup(palette, cell), 1 + 0.06 * tex)
        fu, fv = (u / cw) % 1.0, (v / ch) % 1.0
        gap = ((fu < 0.15) | (fv < 0.15)).astype(np.float32)
        return blend(img, (0.22, 0.24, 0.20), 0.8 * gap)
    palette = np.array([(0.36, 0.46, 0.22), (0.50, 0.52, 0.28), (0.58, 0.50, 0.35), (0.28, 0.38, 0.18),
                        (0.62, 0.58, 0.40)], np.float32)
    img = _lookup(palette, cell)
    period = rng.uniform(2.5, 5.0) * k
    stripes = np.sin(2 * math.pi * u / period) * ((cell // 7) % 2)
    img = modulate(img, 1 + 0.07 * stripes + 0.05 * tex)
    fu, fv = (u / cw) % 1.0, (v / ch) % 1.0
    edge = ((np.minimum(fu, 1 - fu) * cw < 0.7 * k) | (np.minimum(fv, 1 - fv) * ch < 0.7 * k)).astype(np.float32)
    return blend(img, (0.60, 0.57, 0.45), 0.45 * edge)


def _lookup(palette: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(H, W, 3) image of ``palette[index % len(palette)]`` built plane by plane."""
    i = index % len(palette)
    return cv2.merge([palette[:, c][i].astype(np.float32) for c in range(3)])


def _border_start(rng: np.random.Generator, size: int) -> tuple[tuple[float, float], float]:
    """A point on the tile border and a heading towards a random interior point."""
    t = rng.uniform(0, size)
    side = rng.integers(4)
    start = [(t, -2.0), (size + 1.0, t), (t, size + 1.0), (-2.0, t)][side]
    target = rng.uniform(0.2 * size, 0.8 * size, 2)
    return start, math.atan2(target[1] - start[1], target[0] - start[0])


def _road_curves(rng: np.random.Generator, size: int, k: float) -> list[tuple[np.ndarray, float]]:
    """Road centre lines with widths: 1–3 through-roads and 0–3 branches off them."""
    roads: list[tuple[np.ndarray, float]] = []
    for _ in range(rng.integers(1, 4)):
        start, heading = _border_start(rng, size)
        sway, scale, drift = STYLES[rng.integers(len(STYLES))]
        pts = random_curve(rng, start, heading, 1.6 * size, step=2 * k, sway=sway, sway_scale=scale, drift=drift)
        roads.append((pts, rng.uniform(3.5, 8.0) * k))
    for _ in range(rng.integers(0, 4)):
        parent, _ = roads[rng.integers(len(roads))]
        inside = np.flatnonzero((parent >= 0).all(axis=1) & (parent < size).all(axis=1))
        if len(inside) < 3:
            continue
        i = int(inside[rng.integers(1, len(inside) - 1)])
        d = parent[i + 1] - parent[i - 1]
        heading = math.atan2(d[1], d[0]) + rng.choice([-1, 1]) * rng.uniform(0.9, 2.2)
        sway, scale, drift = STYLES[rng.integers(1, len(STYLES))]
        pts = random_curve(rng, tuple(parent[i]), heading, rng.uniform(0.25, 1.2) * size,
                           step=2 * k, sway=sway, sway_scale=scale, drift=drift)
        roads.append((pts, rng.uniform(2.0, 4.5) * k))
    return roads


def render_roads(rng: np.random.Generator, size: int) -> Scene:
    """One DeepGlobe-like tile: RGB uint8 (size, size, 3), road mask {0, 1}, condition summaries."""
    k = size / 256.0
    shape = (size, size)
    img, roadlike = _land_cover(rng, size, k)
    cond: dict[str, float] = {}

    # Distractors (unlabelled): a river, road-coloured lots, footpaths.
    paved_here = PAVED[rng.integers(len(PAVED))] if rng.random() < 0.6 else DIRT[rng.integers(len(DIRT))]
    if rng.random() < 0.35:  # a river: wider than roads, width varying along it, dark or muddy water
        start, heading = _border_start(rng, size)
        course = random_curve(rng, start, heading, 1.6 * size, step=2 * k, sway=0.5, sway_scale=15)
        river = np.zeros(shape, np.float32)
        for part in np.array_split(course, 6):
            draw_polyline(river, part, rng.uniform(9, 18) * k, antialias=True)
        river = cv2.GaussianBlur(river, (0, 0), 1.2 * k)
        water = (0.42, 0.42, 0.32) if rng.random() < 0.5 else (0.18, 0.25, 0.26)
        img = blend(img, modulate(img, (0.75, 0.85, 0.7)), np.clip(2.5 * river, 0, 1))  # green banks
        img = blend(img, colour_texture(water, smooth_field(rng, shape, 6 * k), 0.06), river)
    lots = np.zeros(shape, np.float32)
    for _ in range(rng.poisson(1.0)):
        c = tuple(rng.uniform(0, size, 2))
        sdf = blob_sdf(rng, shape, c, rng.uniform(6, 22) * k, aspect=rng.uniform(1, 2.5), irregularity=0.3)
        lots = np.maximum(lots, soft_step(sdf, 0.0, 1.0))
    img = blend(img, colour_texture(paved_here, grain(rng, shape, k), 0.06), 0.9 * lots)
    paths = np.zeros(shape, np.float32)
    for _ in range(rng.poisson(1.5)):
        start, heading = _border_start(rng, size)
        draw_polyline(paths, random_curve(rng, start, heading, rng.uniform(0.4, 1.5) * size, step=2 * k,
                                          sway=0.4, sway_scale=6, drift=0.01), max(1.0, rng.uniform(1.0, 2.2) * k),
                      antialias=True)
    img = blend(img, (0.66, 0.60, 0.50), 0.7 * paths)
    cond["distractor_fraction"] = float(np.mean(np.maximum(np.maximum(lots, paths), roadlike) > 0.5))

    # Roads: one darker shoulder layer, one surface layer (colour per road), the label.
    mask = np.zeros(shape, np.uint8)
    shoulder, surface = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    paint = np.zeros((size, size, 3), np.float32)
    for pts, width in _road_curves(rng, size, k):
        colour = PAVED[rng.integers(len(PAVED))] if rng.random() < 0.55 else DIRT[rng.integers(len(DIRT))]
        draw_polyline(shoulder, pts, width + 2 * k, antialias=True)
        draw_polyline(surface, pts, width, antialias=True)
        draw_polyline(paint, pts, width + 1, colour)
        draw_polyline(mask, pts, width, 1)
    np.clip(surface, 0, 1, out=surface)
    # worn / sand-covered stretches: the surface fades into the terrain where a smooth field is high
    fade = rng.uniform(0.3, 0.75) * soft_step(smooth_field(rng, shape, 40 * k), rng.uniform(0.0, 1.2), 0.3)
    surface *= 1 - fade
    img = modulate(img, 1 - 0.2 * np.clip(shoulder, 0, 1) * (1 - fade))
    tex = 0.5 * grain(rng, shape, 0.7 * k) + smooth_field(rng, shape, 25 * k)
    img = blend(img, modulate(paint, 1 + 0.07 * tex), surface)

    # Occluders over roads (still labelled): tree rows with shadows, clouds.
    trees = np.zeros(shape, np.float32)
    road_px = np.argwhere(mask > 0)
    for _ in range(rng.poisson(1.5) if len(road_px) else 0):
        y0, x0 = road_px[rng.integers(len(road_px))]
        for _ in range(rng.integers(4, 18)):
            draw_disc(trees, (x0 + rng.normal(0, 10 * k), y0 + rng.normal(0, 10 * k)), rng.uniform(2.5, 5.5) * k)
    np.clip(trees, 0, 1, out=trees)
    shadow = np.roll(trees, (int(round(2 * k)), int(round(2 * k))), axis=(0, 1))
    img = modulate(img, 1 - 0.55 * shadow)
    canopy = colour_texture((0.13, 0.21, 0.10), smooth_field(rng, shape, 1.8 * k), 0.35)
    img = blend(img, canopy, trees)
    clouds = np.zeros(shape, np.float32)
    if rng.random() < 0.25:
        clouds = rng.uniform(0.6, 0.95) * soft_step(fractal_field(rng, shape, (50 * k, 20 * k, 8 * k)),
                                                    rng.uniform(0.8, 1.8), 0.25)
        img = blend(img, (0.93, 0.93, 0.94), clouds)
    on_road = mask > 0
    cond["occluded_road_fraction"] = float(np.mean(np.maximum(trees, clouds)[on_road] > 0.5)) if on_road.any() else 0.0

    # Spatially varying degradations: cloud shadows, illumination ramp, haze.
    shade = np.zeros(shape, np.float32)
    if rng.random() < 0.5:
        shade = rng.uniform(0.35, 0.65) * soft_step(smooth_field(rng, shape, 35 * k), rng.uniform(0.3, 1.3), 0.15)
        img = blend(img, modulate(img, (0.0, 0.03, 0.1)), shade)  # shadows are slightly blue
    gain = rng.uniform(0.85, 1.15) * (1 + rng.uniform(-0.35, 0.35) * linear_ramp(shape, rng.uniform(0, 2 * math.pi))
                                      + 0.08 * smooth_field(rng, shape, 60 * k))
    img = modulate(img, gain)
    haze = np.zeros(shape, np.float32)
    if rng.random() < 0.7:
        haze = rng.uniform(0.4, 0.9) * soft_step(smooth_field(rng, shape, 70 * k), rng.uniform(-0.6, 0.9), 0.45)
        img = blend(img, np.array([0.78, 0.80, 0.84], np.float32) * rng.uniform(0.9, 1.05), haze)
    cond.update(haze_mean=float(haze.mean()), haze_max=float(haze.max()), shadow_mean=float(shade.mean()),
                fade_on_road=float(fade[on_road].mean()) if on_road.any() else 0.0,
                illumination_range=float(gain.max() - gain.min()), fg_fraction=float(mask.mean()))
    return Scene(finish(img, rng, noise=rng.uniform(0.01, 0.035), blur=rng.uniform(0.0, 0.7) * k), mask, cond)

