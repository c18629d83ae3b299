"""Synthetic scribbles from binary masks, and their on-disk format.

A scribble map is an (H, W) uint8 array: 0 = background, 1 = foreground, 255 = unlabelled — the
rloss/ScribbleSup convention (thin strokes, a few % of the pixels labelled). On disk: a PNG with
the mask's file stem, values exactly {0, 1, 255}.

Generation (:func:`scribbles_from_mask`) imitates hand-drawn scribbles:

* foreground: for each connected component, a random contiguous part of the longest path along
  its skeleton (``skimage.morphology.skeletonize``) — a stroke along the middle of roads and
  other elongated shapes — or, for blobs (whose skeleton is nearly a point), a smooth random
  stroke through the component's core; clipped to the component;
* background: a few smooth random strokes (slowly turning heading) confined to background pixels
  at least ``margin`` px from any foreground pixel (Euclidean distance transform);
* strokes are ``width`` px wide (≈ 3 px at 512 px, scaled with the image size). The masks
  themselves are never copied: unlabelled pixels, the boundary band included, stay 255.
"""
from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order
from skimage.morphology import skeletonize
from tqdm.auto import tqdm

from data_utils.errors import InputError
from data_utils.io import atomic_path

BACKGROUND, FOREGROUND, UNLABELLED = 0, 1, 255
SCRIBBLE_VALUES = (BACKGROUND, FOREGROUND, UNLABELLED)

logger = logging.getLogger("patchrefinenet")


def default_width(shape: Sequence[int]) -> int:
    """Stroke width in px: 3 at 512 px (the ScribbleSup rasterisation), scaled with the longer side."""
    return max(1, round(3 * max(shape[:2]) / 512))


def default_margin(shape: Sequence[int]) -> int:
    """Minimum distance (px) of background strokes from the foreground: 8 at 512 px, at least 2."""
    return max(2, round(max(shape[:2]) / 64))


def _check_mask(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"{name} must be an (H, W) binary mask, got shape {mask.shape}")
    values = np.unique(mask)
    if not np.isin(values, (0, 1)).all():
        raise InputError(f"{name} must hold only 0 and 1, found values {values[:10].tolist()}; "
                         f"binarise it first (e.g. mask > 127)")
    return mask.astype(bool)


def _longest_skeleton_path(component: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(L, 2) row/col pixels of an approximately longest path along the component's skeleton."""
    skel = skeletonize(component)
    ys, xs = np.nonzero(skel)
    if len(ys) == 0:  # cannot happen for non-empty input, but keep a sensible answer
        dist = ndimage.distance_transform_edt(component)
        return np.array([np.unravel_index(int(np.argmax(dist)), component.shape)])
    index = -np.ones(component.shape, dtype=np.int64)
    index[ys, xs] = np.arange(len(ys))
    rows, cols = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each 8-neighbour pair once
        y2, x2 = ys + dy, xs + dx
        ok = (y2 < component.shape[0]) & (x2 >= 0) & (x2 < component.shape[1])
        j = np.full(len(ys), -1)
        j[ok] = index[y2[ok], x2[ok]]
        rows.append(np.nonzero(j >= 0)[0])
        cols.append(j[j >= 0])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = csr_matrix((np.ones(len(r)), (r, c)), shape=(len(ys), len(ys)))
    graph = graph + graph.T
    start = int(rng.integers(len(ys)))
    end = breadth_first_order(graph, start, directed=False, return_predecessors=False)[-1]  # farthest (hops)
    order, pred = breadth_first_order(graph, end, directed=False, return_predecessors=True)
    node, path = order[-1], []
    while node >= 0:
        path.append(node)
        node = pred[node]
    path = np.array(path)
    return np.stack([ys[path], xs[path]], 1)


def _random_stroke(allowed: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """(L, 2) pixels of a smooth random walk (unit steps, slowly turning) that stays in ``allowed``."""
    H, W = allowed.shape
    starts = np.flatnonzero(allowed)
    y, x = np.unravel_index(int(starts[rng.integers(len(starts))]), allowed.shape)
    pos, heading = np.array([y, x], dtype=float), rng.uniform(0, 2 * np.pi)
    points = [(y, x)]
    for _ in range(length):
        heading += rng.normal(0.0, 0.12)
        for turn in (0.0, 0.5, -0.5, 1.0, -1.0, 1.6, -1.6):  # veer away from obstacles if needed
            step = pos + (np.sin(heading + turn), np.cos(heading + turn))
            iy, ix = int(round(step[0])), int(round(step[1]))
            if 0 <= iy < H and 0 <= ix < W and allowed[iy, ix]:
                heading += turn
                pos = step
                points.append((iy, ix))
                break
        else:
            break
    return np.array(points)


def _foreground_stroke(component: np.ndarray, width: int, fraction: tuple[float, float],
                       rng: np.random.Generator) -> np.ndarray:
    """Stroke (bool, component's shape) inside one connected component.

    Elongated components (skeleton path ≥ 3 × the largest inscribed radius: roads, vessels) get
    a random part of their longest skeleton path; blob-like ones (whose skeleton is nearly a
    point) a smooth random walk through their core (≥ 0.3 × the inscribed radius from the
    boundary) of ``fraction`` × their inscribed diameter.
    """
    depth = ndimage.distance_transform_edt(np.pad(component, 1))[1:-1, 1:-1]  # the box edge is background
    radius = float(depth.max())
    path = _longest_skeleton_path(component, rng)
    if len(path) >= 3 * radius:
        take = max(1, int(round(rng.uniform(*fraction) * len(path))))
        first = int(rng.integers(0, len(path) - take + 1))
        path = path[first:first + take]
    else:
        core = depth >= max(1.0, 0.3 * radius)
        path = _random_stroke(core, int(round(rng.uniform(*fraction) * 2 * radius)), rng)
    return _draw(path, component.shape, width) & component


def _draw(points: np.ndarray, shape: tuple[int, int], width: int) -> np.ndarray:
    canvas = np.zeros(shape, dtype=bool)
    canvas[points[:, 0], points[:, 1]] = True
    if width > 1:
        canvas = ndimage.binary_dilation(canvas, structure=np.ones((width, width), dtype=bool))
    return canvas


def scribbles_from_mask(mask: np.ndarray, *, rng: np.random.Generator | None = None, seed: int | None = None,
                        width: int | None = None, margin: int | None = None, background_strokes: int = 5,
                        foreground_fraction: tuple[float, float] = (0.4, 0.8),
                        background_length: tuple[float, float] = (0.4, 0.8)) -> np.ndarray:
    """Scribbles (H, W) uint8 {0 = background, 1 = foreground, 255 = unlabelled} for a binary ``mask`` (H, W).

    ``rng`` (or ``seed``) makes it reproducible. ``width``/``margin`` default to
    :func:`default_width`/:func:`default_margin`. Each foreground component gets one stroke: a
    random ``foreground_fraction`` of its longest skeleton path, or for a blob a smooth stroke of
    that fraction of its inscribed diameter through its core; ``background_strokes`` strokes of
    ``background_length`` × the longer image side (shorter where they hit an obstacle) go into
    the background ≥ ``margin`` px from the foreground. Foreground labels always lie inside the
    mask, background labels always outside it and off the margin band.
    """
    fg = _check_mask(mask, "mask")
    rng = rng if rng is not None else np.random.default_rng(seed)
    width = default_width(fg.shape) if width is None else int(width)
    margin = default_margin(fg.shape) if margin is None else int(margin)
    if width < 1 or margin < 0 or background_strokes < 0:
        raise InputError(f"need width >= 1, margin >= 0, background_strokes >= 0; "
                         f"got width={width}, margin={margin}, background_strokes={background_strokes}")
    out = np.full(fg.shape, UNLABELLED, dtype=np.uint8)

    if fg.any():
        allowed_bg = ndimage.distance_transform_edt(~fg) >= max(margin, 1)
    else:
        allowed_bg = np.ones(fg.shape, dtype=bool)
    longer = max(fg.shape)
    for _ in range(background_strokes if allowed_bg.any() else 0):
        length = int(rng.uniform(*background_length) * longer)
        stroke = _draw(_random_stroke(allowed_bg, length, rng), fg.shape, width)
        out[stroke & allowed_bg] = BACKGROUND

    labels, _ = ndimage.label(fg, structure=np.ones((3, 3), dtype=bool))
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        component = labels[box] == k  # the stroke is clipped to the component, so its box suffices
        out[box][_foreground_stroke(component, width, foreground_fraction, rng)] = FOREGROUND
    return out


def check_scribble(scribble: np.ndarray, name: str = "scribble") -> np.ndarray:
    """Return ``scribble`` as (H, W) uint8 if its values lie in {0, 1, 255}, else raise :class:`InputError`."""
    s = np.asarray(scribble)
    if s.ndim != 2:
        raise InputError(f"{name} must be an (H, W) label map, got shape {s.shape}")
    values = np.unique(s)
    bad = values[~np.isin(values, SCRIBBLE_VALUES)]
    if len(bad):
        raise InputError(f"{name} holds values {bad[:10].tolist()} outside {{0 = background, 1 = foreground, "
                         f"255 = unlabelled}}")
    return s.astype(np.uint8)


def write_scribble(path: str | os.PathLike, scribble: np.ndarray) -> Path:
    """Write a scribble map as an 8-bit PNG, atomically; values must be in {0, 1, 255}."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"scribbles are stored as PNG; use a .png file name instead of {path}")
    arr = check_scribble(scribble, str(path))
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise InputError(f"could not encode the scribble for {path} as PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path


def read_scribble(path: str | os.PathLike) -> np.ndarray:
    """Read a scribble PNG → (H, W) uint8 {0, 1, 255}; :class:`InputError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"scribble file not found: {path}")
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputError(f"cannot read {path} as an image; scribbles are single-channel PNGs")
    if arr.ndim == 3:
        if not (arr[..., :3] == arr[..., :1]).all():
            raise InputError(f"{path} is a colour image; a scribble is a single-channel label PNG (0, 1, 255)")
        arr = arr[..., 0]
    if arr.dtype != np.uint8:
        raise InputError(f"{path} has dtype {arr.dtype}; scribbles are 8-bit PNGs with values 0, 1, 255")
    return check_scribble(arr, str(path))


def read_binary_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask image (PNG/JPG, any channel count) or .npy → (H, W) bool: > 0 for {0, 1} files, ≥ 128 otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mask file not found: {path}")
    if path.suffix.lower() == ".npy":
        arr = np.squeeze(np.load(path))
    else:
        arr = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if arr is None:
            raise InputError(f"cannot read {path} as an image")
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a single (H, W) mask, got shape {arr.shape}")
    return arr > 0 if arr.max() <= 1 else arr >= 128


def generate_scribbles_for_split(mask_paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike, seed: int,
                                 progress: bool = True, **params) -> list[Path]:
    """Write ``<out_dir>/<mask stem>.png`` scribbles for every mask; returns the written paths.

    Each file's randomness comes from (``seed``, file name), so results do not depend on the order
    or subset of ``mask_paths``. ``params`` go to :func:`scribbles_from_mask`.
    """
    out_dir = Path(out_dir)
    written, fractions = [], []
    for mask_path in tqdm(list(mask_paths), desc="scribbles", disable=not progress):
        mask_path = Path(mask_path)
        rng = np.random.default_rng([int(seed), zlib.crc32(mask_path.name.encode())])
        try:
            scribble = scribbles_from_mask(read_binary_mask(mask_path), rng=rng, **params)
        except InputError as exc:
            raise InputError(f"{mask_path}: {exc}") from None
        written.append(write_scribble(out_dir / f"{mask_path.stem}.png", scribble))
        fractions.append(float((scribble != UNLABELLED).mean()))
    if written:
        logger.info("wrote %d scribble maps to %s (labelled pixels: %.2f%% on average)",
                    len(written), out_dir, 100 * float(np.mean(fractions)))
    return written
