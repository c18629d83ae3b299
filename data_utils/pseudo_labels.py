"""Pseudo-labels by region-specific thresholding (RST; IST when one patch covers the image).

The authors' algorithm (docs/authors-refine.md §R11): cut each probability map into p×p patches; binarise
each patch at the threshold τ from a fixed grid (0.05, 0.10, …, 1.00) that maximises the patch's
IoU against the ground truth; stitch the binarised patches back. This module is the one
implementation used everywhere (generation, the kvasir "oracle" metric, tests, benchmarks).

How it is vectorised (no Python loop over pixels or patches): for every pixel, ``k`` = the
number of thresholds it exceeds (foreground at threshold j ⇔ j < k), from one vectorised compare
per threshold over all pixels. One ``np.bincount`` over the combined index (image, patch, gt, k)
gives each patch's histogram of k for GT-positive and GT-negative pixels; cumulative sums over k
turn it into TP and FP counts for every threshold at once, hence the IoUs of all (patch,
threshold) pairs, and an argmax picks each patch's threshold. Images go through a few at a time,
so memory stays bounded. ``bench/pseudo_labels.py`` compares it with the plain loop.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
from tqdm import tqdm

from data_utils.arrays import as_maps, check_binary, check_probabilities, check_same_shape, open_maps, open_npy
from data_utils.errors import InputError
from data_utils import provenance
from data_utils.io import open_memmap_atomic

log = logging.getLogger("patchrefinenet")

#: The authors' threshold grid 0.05, 0.10, …, 1.00. They search with 0.05·t and apply
#: round(0.05·t, 2); the two differ by float64 noise only (0.15000000000000002 vs 0.15) and
#: are the same number once rounded to float32, the dtype the comparison is made in.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * t, 2) for t in range(1, 21))

_BLOCK_PIXELS = 1 << 18  # images processed together in the hot path: bounds the temporaries (~3 MB)


@dataclass(frozen=True)
class PseudoLabels:
    """Result of :func:`patch_pseudo_labels`.

    labels: uint8 {0, 1}, same layout as the input ``prob`` (H×W, N×H×W or N×H×W×1).
    thresholds: float32 (N, gh, gw) — (gh, gw) for an H×W input — the τ chosen per patch.
    ious: float32, same shape — each patch's IoU at its chosen τ, (I + 1)/(U + 1).
    """

    labels: np.ndarray
    thresholds: np.ndarray
    ious: np.ndarray


def patch_grid_shape(h: int, w: int, patch_size: int) -> tuple[int, int]:
    """Number of patch rows and columns, ``(ceil(h / p), ceil(w / p))``."""
    p = _check_patch_size(patch_size)
    return -(-int(h) // p), -(-int(w) // p)


def patch_pseudo_labels(prob, gt, patch_size: int, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> PseudoLabels:
    """Binarise every p×p patch of ``prob`` at the grid threshold that maximises its IoU with ``gt``.

    prob: probabilities in [0, 1], H×W, N×H×W or N×H×W×1. gt: {0, 1} masks, same (N, H, W).
    Semantics are the authors' (docs/authors-refine.md §R11.1):

    - a pixel is foreground at τ iff ``prob > τ`` (strict), compared in prob's dtype: float32
      maps are compared with τ rounded to float32 — exactly what numpy does for
      ``float32_array > 0.15`` — float64 maps in float64, other dtypes are converted to float32;
    - patch IoU at τ = (I + 1)/(U + 1) in float32 arithmetic, I and U pixel counts (exact
      integers up to 2**24 pixels per patch), so ties are the ties the authors' float32 code sees;
    - the first (lowest) threshold attaining the maximum wins, hence an empty-GT patch gets the
      lowest τ ≥ its maximum probability and an all-zero label;
    - when H or W is not a multiple of p, the last row/column of patches is smaller and is
      thresholded on its own pixels; ``patch_size`` ≥ H and W gives one patch per image, the
      authors' image-level variant (IST, used by P0).

    ``thresholds`` must be strictly increasing (at most 127 values).
    """
    maps = as_maps(prob, "prob")
    gt_maps = as_maps(gt, "gt")
    check_same_shape(maps, "prob (viewed as N×H×W)", gt_maps, "gt (viewed as N×H×W)")
    check_probabilities(maps, "prob")
    check_binary(gt_maps, "gt")
    grid = _Grid.build(maps.shape[1], maps.shape[2], patch_size, thresholds, maps.dtype)
    res = _search(maps, gt_maps, grid)
    lead = () if np.ndim(prob) == 2 else (maps.shape[0],)
    return PseudoLabels(
        labels=res.labels.reshape(np.shape(prob)),
        thresholds=grid.thresholds_f32[res.choice].reshape(lead + grid.shape),
        ious=res.iou.reshape(lead + grid.shape),
    )


def generate_pseudo_label_file(
    prob_path: str | os.PathLike,
    gt_path: str | os.PathLike,
    out_path: str | os.PathLike,
    patch_size: int,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    chunk: int = 8,
    out_dtype=np.uint8,
    threshold_map_path: str | os.PathLike | None = None,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Stream :func:`patch_pseudo_labels` over the N maps of a ``.npy`` file, ``chunk`` images at a time.

    Inputs are memory-mapped (the authors' float64 GT/pseudo-label files are accepted as they
    are); the labels are written to ``out_path`` with the shape of the prob file (e.g. N×H×W×1)
    and dtype ``out_dtype``; ``threshold_map_path`` optionally receives the chosen τ per patch,
    (N, gh, gw) float32. Both files appear only when complete (nothing is left on failure).
    Returns a summary: n_images, image_size, patch_size, grid, n_thresholds, mean_patch_iou,
    mean_image_iou (mean over images of each label's (I+1)/(U+1) against the GT, the kvasir
    "RST mIoU"), pooled_iou, mean_threshold and the output paths. ``device`` (e.g. ``"cuda"``) runs
    the search there with :mod:`data_utils.pseudo_labels_torch` (identical labels); None: numpy.
    """
    prob_raw = open_npy(prob_path, "prob")
    prob = as_maps(prob_raw, f"prob ({prob_path})")
    gt = open_maps(gt_path, "gt")
    check_same_shape(prob, f"prob ({prob_path}, viewed as N×H×W)", gt, f"gt ({gt_path}, viewed as N×H×W)")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise InputError(f"chunk must be a positive integer (images per step), got {chunk!r}")
    try:
        out_dtype = np.dtype(out_dtype)
    except TypeError as exc:
        raise InputError(f"out_dtype: not a numpy dtype: {out_dtype!r} ({exc})") from None
    if out_dtype.kind not in "biuf":
        raise InputError(f"out_dtype must be a numeric dtype (uint8 or the authors' float64), got {out_dtype}")
    n, h, w = prob.shape
    grid = _Grid.build(h, w, patch_size, thresholds, prob.dtype)
    tmap_ctx = (
        open_memmap_atomic(threshold_map_path, (n,) + grid.shape, np.float32)
        if threshold_map_path is not None
        else contextlib.nullcontext()
    )
    iou_sum, tau_sum, img_iou_sum, inter, union = 0.0, 0.0, 0.0, 0, 0
    with open_memmap_atomic(out_path, prob_raw.shape, out_dtype) as out_mm, tmap_ctx as tmap:
        out = as_maps(out_mm, str(out_path))
        with tqdm(total=n, desc=f"pseudo-labels p={grid.patch_size}", unit="img", disable=not progress) as bar:
            for s in range(0, n, chunk):
                e = min(s + chunk, n)
                pb, gb = prob[s:e], gt[s:e]
                check_probabilities(pb, f"prob ({prob_path})", start=s)
                check_binary(gb, f"gt ({gt_path})", start=s)
                if device is None:
                    res = _search(pb, gb, grid)
                else:
                    from data_utils.pseudo_labels_torch import search_chunk  # imports torch

                    res = search_chunk(pb, gb, grid, device)
                out[s:e] = res.labels
                taus = grid.thresholds_f32[res.choice]
                if tmap is not None:
                    tmap[s:e] = taus.reshape((e - s,) + grid.shape)
                iou_sum += float(res.iou.sum(dtype=np.float64))
                tau_sum += float(taus.sum(dtype=np.float64))
                img_iou_sum += float(((res.inter + 1) / (res.union + 1)).sum())
                inter, union = inter + int(res.inter.sum()), union + int(res.union.sum())
                bar.update(e - s)
                bar.set_postfix(patch_iou=f"{iou_sum / (e * grid.n_patches):.4f}")
    summary = {
        "n_images": n,
        "image_size": (h, w),
        "patch_size": grid.patch_size,
        "grid": grid.shape,
        "n_thresholds": len(grid.thresholds),
        "mean_patch_iou": iou_sum / (n * grid.n_patches),
        "mean_image_iou": img_iou_sum / n,
        "pooled_iou": (inter + 1) / (union + 1),
        "mean_threshold": tau_sum / (n * grid.n_patches),
        "out_path": str(out_path),
        "threshold_map_path": None if threshold_map_path is None else str(threshold_map_path),
    }
    log.info("pseudo-labels p=%d for %d images -> %s: mean patch IoU %.4f, mean image IoU %.4f",
             grid.patch_size, n, out_path, summary["mean_patch_iou"], summary["mean_image_iou"])
    record = _settings(prob_raw.shape, patch_size, thresholds, out_dtype)
    record["inputs"] = {"prob": provenance.fingerprint(prob_path), "gt": provenance.fingerprint(gt_path)}
    record["output"] = provenance.fingerprint(out_path, content=False)
    provenance.write_provenance(out_path, record)
    return summary


# ----------------------------------------------------------------------------------------------
# Provenance: is an existing pseudo-label file made from these inputs with these settings?

#: Bumped whenever the labels this module writes for the same inputs change.
PSEUDO_LABEL_VERSION = 1


def _settings(shape, patch_size: int, thresholds, out_dtype) -> dict:
    return {"kind": "pseudo_labels", "version": PSEUDO_LABEL_VERSION, "shape": [int(s) for s in shape],
            "patch_size": int(patch_size), "thresholds": [float(t) for t in thresholds],
            "dtype": np.dtype(out_dtype).str}


def pseudo_label_staleness(out_path: str | os.PathLike, prob_path: str | os.PathLike, gt_path: str | os.PathLike,
                           patch_size: int, *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> str | None:
    """None if ``out_path`` was written by :func:`generate_pseudo_label_file` from the current
    ``prob_path`` / ``gt_path`` with ``patch_size`` and ``thresholds`` (and this code version);
    otherwise a short reason (missing file, no provenance record, which input or setting changed).

    Reads the sidecar ``<out_path>.provenance.json``; an input whose size and mtime changed is
    re-hashed, so a touched but identical file still counts as current.
    """
    if not os.path.isfile(out_path):
        return f"{out_path} does not exist"
    record = provenance.read_provenance(out_path)
    if record is None or record.get("kind") != "pseudo_labels":
        return f"{out_path} has no provenance record ({provenance.sidecar_path(out_path).name})"
    if not provenance.matches(record.get("output", {}), out_path):
        return f"{out_path} was replaced after it was generated"
    why = []
    changed = provenance.changed_inputs(record.get("inputs", {}), {"prob": prob_path, "gt": gt_path})
    why += [f"{os.path.basename(prob_path if k == 'prob' else gt_path)} changed since" for k in changed]
    if record.get("patch_size") != int(patch_size):
        why.append(f"made with {record.get('patch_size')}-px patches, {int(patch_size)} asked")
    if record.get("thresholds") != [float(t) for t in thresholds]:
        why.append("made with other thresholds")
    if record.get("version") != PSEUDO_LABEL_VERSION:
        why.append(f"made by pseudo-label code version {record.get('version')}, now {PSEUDO_LABEL_VERSION}")
    return f"{out_path} is stale: " + "; ".join(why) if why else None


# ----------------------------------------------------------------------------------------------
# The vectorised search


def _check_patch_size(patch_size) -> int:
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size <= 0:
        raise InputError(f"patch_size must be a positive integer number of pixels, got {patch_size!r}")
    return int(patch_size)


class _Grid(NamedTuple):
    """Everything that depends only on (H, W, p, thresholds): built once, reused per chunk."""

    patch_size: int
    shape: tuple[int, int]  # (gh, gw)
    n_patches: int
    thresholds: np.ndarray  # in the comparison dtype, strictly increasing
    thresholds_f32: np.ndarray
    rows: np.ndarray  # (gh,) height of each patch row (the last one may be smaller)
    cols: np.ndarray  # (gw,) width of each patch column
    bin_base: np.ndarray  # (B, H, W) intp: bincount offset of each pixel of the b-th image of a block
    block: int  # images per block in the hot path

    @staticmethod
    def build(h: int, w: int, patch_size, thresholds, dtype) -> "_Grid":
        p = _check_patch_size(patch_size)
        gh, gw = patch_grid_shape(h, w, p)
        cmp_dtype = np.float64 if np.dtype(dtype).kind == "f" and np.dtype(dtype).itemsize == 8 else np.float32
        thr = _prepare_thresholds(thresholds, cmp_dtype)
        n_bins = 2 * (len(thr) + 1)  # (gt, k) pairs per patch
        pid = (np.arange(h) // p)[:, None] * gw + (np.arange(w) // p)[None, :]
        block = max(1, _BLOCK_PIXELS // (h * w))
        offsets = np.arange(block, dtype=np.intp)[:, None, None] * (gh * gw * n_bins)
        bin_base = offsets + pid[None].astype(np.intp) * n_bins
        rows, cols = np.diff(np.minimum(np.arange(gh + 1) * p, h)), np.diff(np.minimum(np.arange(gw + 1) * p, w))
        return _Grid(p, (gh, gw), gh * gw, thr, thr.astype(np.float32), rows, cols, bin_base, block)


def _prepare_thresholds(thresholds, dtype) -> np.ndarray:
    try:
        thr = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"thresholds must be a sequence of numbers, got {thresholds!r}") from None
    if thr.ndim != 1 or not 1 <= thr.size <= 127 or not np.isfinite(thr).all():
        raise InputError(f"thresholds must be a 1-D list of 1 to 127 finite numbers, got {thresholds!r}")
    thr = thr.astype(dtype)
    if (np.diff(thr) <= 0).any():
        raise InputError(
            f"thresholds must be strictly increasing (also after rounding to {np.dtype(dtype)}), got {thresholds!r}"
        )
    return thr


class _Result(NamedTuple):
    labels: np.ndarray  # (n, H, W) uint8
    choice: np.ndarray  # (n, P) index of the chosen threshold
    iou: np.ndarray  # (n, P) float32 IoU at the chosen threshold
    inter: np.ndarray  # (n,) per-image |label ∩ gt|
    union: np.ndarray  # (n,) per-image |label ∪ gt|


def _search(prob: np.ndarray, gt: np.ndarray, grid: _Grid) -> _Result:
    """Run the search on (n, H, W) maps (already validated), ``grid.block`` images at a time."""
    n = prob.shape[0]
    parts = [_search_block(prob[s:s + grid.block], gt[s:s + grid.block], grid) for s in range(0, n, grid.block)]
    return _Result(*(np.concatenate(x) for x in zip(*parts)))


def _search_block(prob: np.ndarray, gt: np.ndarray, grid: _Grid) -> _Result:
    n, (h, w), n_thr = prob.shape[0], prob.shape[1:], len(grid.thresholds)
    x = np.asarray(prob, dtype=grid.thresholds.dtype).reshape(-1)
    # k = how many thresholds each pixel exceeds (foreground at threshold j <=> j < k): one SIMD
    # compare per threshold over all pixels (much faster than a per-pixel binary search); the
    # bool results are summed 8 pixels at a time through a uint64 view (bytes stay <= T < 128).
    size = -(-x.size // 8) * 8
    k_buf, above = np.zeros(size, np.uint8), np.zeros(size, bool)
    k64, above64 = k_buf.view(np.uint64), above.view(np.uint64)
    for t in grid.thresholds:
        np.greater(x, t, out=above[: x.size])
        k64 += above64
    k = k_buf[: x.size].reshape(n, h, w)
    code = np.asarray(gt).astype(np.uint8, copy=False) if gt.dtype.kind != "b" else gt.view(np.uint8)
    code = code * np.uint8(n_thr + 1) + k  # (n, H, W): gt·(T+1) + k
    idx = grid.bin_base[:n] + code  # (n, H, W) bincount slot of each pixel: (image, patch, gt, k)
    counts = np.bincount(idx.ravel(), minlength=n * grid.n_patches * 2 * (n_thr + 1))
    counts = counts.reshape(n, grid.n_patches, 2, n_thr + 1)  # (n, P, gt, k)
    # Counts are exact in float32 up to 2**24 pixels per patch, as the authors' float32 sums.
    at_most = np.cumsum(counts, axis=3).astype(np.float32)  # [..., j] = #pixels with k <= j
    fg = at_most[..., -1:] - at_most[..., :-1]  # (n, P, 2, T): foreground at threshold j (k > j)
    tp, fp, n_gt = fg[:, :, 1], fg[:, :, 0], at_most[:, :, 1, -1:]
    inter, union = tp, n_gt + fp
    iou = (inter + 1) / (union + 1)  # (n, P, T) float32 as the authors
    choice = iou.argmax(axis=2)  # first maximum = lowest threshold on ties
    per_patch = choice.astype(np.uint8).reshape((n,) + grid.shape)  # (n, gh, gw)
    per_pixel = np.repeat(np.repeat(per_patch, grid.rows, axis=1), grid.cols, axis=2)  # (n, H, W)
    labels = k > per_pixel  # (n, H, W): foreground at the patch's chosen threshold
    pick = lambda a: np.take_along_axis(a, choice[..., None], axis=2)[..., 0]  # noqa: E731
    return _Result(
        labels.view(np.uint8),
        choice,
        pick(iou),
        pick(inter).sum(axis=1, dtype=np.int64),
        pick(union).sum(axis=1, dtype=np.int64),
    )
