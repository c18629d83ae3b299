"""Patch-wise optimal-threshold pseudo-labels in torch, on any device (a GPU for large splits).

The same labels as :mod:`data_utils.pseudo_labels` (the reference; docs/authors-refine.md §R11), bit for bit:
the same threshold grid, compared in the same dtype (float32, float64 for float64 maps), the
same IoU (I + 1)/(U + 1) in float32 from exact integer counts, the same tie-break (the first,
lowest threshold attaining the maximum: ``torch.argmax`` returns the first maximal index, as
``np.argmax``), the same smaller last patch row/column when p does not divide H or W.

How (no atomics, deterministic on every device): ``k`` = how many thresholds each pixel exceeds
(uint8, one compare per threshold); the maps are zero-padded to whole patches (a padded pixel has
k = 0 and gt = 0, so it is background at every threshold and counts nowhere) and rearranged
patch-major, (n, P, p·p); then for each threshold j one reduction over the last axis counts the
foreground pixels (k > j) and the true positives of every patch. The chosen threshold per patch
gives the label k > j*. Images go through ``chunk_pixels`` pixels at a time.

torch tensors only (no ``nn.Module``); never imports ``patchrefinenet``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from data_utils.arrays import check_binary, check_probabilities, to_numpy
from data_utils.errors import InputError
from data_utils.pseudo_labels import (DEFAULT_THRESHOLDS, PseudoLabels, _check_patch_size, _prepare_thresholds,
                                      patch_grid_shape)

__all__ = ["patch_pseudo_labels_torch", "search_chunk", "search_maps"]

_LAYOUTS = "H×W, N×H×W or N×H×W×1"


def _maps(a, name: str, device: torch.device | None) -> torch.Tensor:
    """``a`` (tensor or array; H×W, N×H×W or N×H×W×1) as an (N, H, W) tensor on ``device``."""
    t = a if isinstance(a, torch.Tensor) else _from_numpy(to_numpy(a))
    if device is not None:
        t = t.to(device, non_blocking=True)
    if t.dtype.is_complex:
        raise InputError(f"{name}: expected a numeric array, got dtype {t.dtype}")
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    if t.ndim == 2:
        t = t[None]
    elif t.ndim == 4 and t.shape[-1] == 1:
        t = t[..., 0]
    elif t.ndim != 3:
        raise InputError(f"{name}: expected one map per image as {_LAYOUTS}, got shape {tuple(t.shape)}")
    if 0 in t.shape:
        raise InputError(f"{name}: the dataset is empty, shape {tuple(t.shape)}")
    return t


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing ``a``'s memory, or of a copy when ``a`` is read-only (a memmap) or strided."""
    if not (a.flags.writeable and a.flags.c_contiguous):
        a = np.array(a)
    return torch.from_numpy(a)


def _check(prob: torch.Tensor, gt: torch.Tensor, start: int) -> None:
    """One reduction (one host sync) per chunk; on failure the numpy checks name the image and the fix."""
    p = prob if prob.is_floating_point() else prob.float()
    ok = ((p >= 0) & (p <= 1)).all() & ((gt == 0) | (gt == 1)).all()  # NaN fails both comparisons
    if not bool(ok):
        check_probabilities(to_numpy(prob), "prob", start=start)
        check_binary(to_numpy(gt), "gt", start=start)


def search_maps(prob: torch.Tensor, gt: torch.Tensor, patch_size: int, thresholds: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The search on validated (n, H, W) maps already in the comparison dtype, on their device.

    ``thresholds``: (T,) strictly increasing, same dtype and device as ``prob``. Returns
    (labels (n, H, W) uint8, choice (n, P) int64, iou (n, P) float32 at the choice, inter (n,)
    int64 and union (n,) int64 of each image's label against ``gt``), P = gh·gw patches row-major.
    """
    n, h, w = prob.shape
    p = int(patch_size)
    gh, gw = patch_grid_shape(h, w, p)
    k = torch.zeros((n, gh * p, gw * p), dtype=torch.uint8, device=prob.device)  # padding: k = 0
    kk = k[:, :h, :w]
    for t in thresholds:  # k = number of thresholds a pixel exceeds (foreground at j <=> j < k)
        kk += prob > t
    g = torch.zeros_like(k, dtype=torch.bool)
    g[:, :h, :w] = gt != 0
    k_p = k.view(n, gh, p, gw, p).permute(0, 1, 3, 2, 4).reshape(n, gh * gw, p * p)  # (n, P, p·p)
    g_p = g.view(n, gh, p, gw, p).permute(0, 1, 3, 2, 4).reshape(n, gh * gw, p * p)
    n_thr = thresholds.numel()
    fg = torch.empty((n, gh * gw, n_thr), dtype=torch.int64, device=prob.device)  # (n, P, T)
    tp = torch.empty_like(fg)
    for j in range(n_thr):
        above = k_p > j  # (n, P, p·p): foreground at threshold j
        fg[..., j] = above.sum(-1)
        tp[..., j] = (above & g_p).sum(-1)
    n_gt = g_p.sum(-1, keepdim=True)  # (n, P, 1)
    # float32 from exact integer counts (exact up to 2**24 pixels per patch), as the reference
    inter = tp.to(torch.float32)
    union = (n_gt + fg - tp).to(torch.float32)
    iou = (inter + 1) / (union + 1)  # (n, P, T)
    choice = iou.argmax(-1)  # (n, P): the first maximum = the lowest threshold on ties
    per_pixel = choice.view(n, gh, gw).repeat_interleave(p, 1).repeat_interleave(p, 2)[:, :h, :w]
    labels = (kk > per_pixel).to(torch.uint8)  # (n, H, W)
    pick = lambda a: a.gather(-1, choice[..., None])[..., 0]  # noqa: E731
    return labels, choice, pick(iou), pick(tp).sum(1), (n_gt[..., 0] + pick(fg) - pick(tp)).sum(1)


def patch_pseudo_labels_torch(prob, gt, patch_size: int, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, *,
                              device: str | torch.device | None = None, chunk_pixels: int | None = None,
                              validate: bool = True) -> PseudoLabels:
    """:func:`data_utils.pseudo_labels.patch_pseudo_labels` in torch: the same labels, thresholds and IoUs.

    prob: probabilities in [0, 1], gt: {0, 1} masks; tensors (any device) or arrays, H×W, N×H×W
    or N×H×W×1. ``device``: where to compute (default: ``prob``'s device; arrays: CPU). Returns
    :class:`PseudoLabels` holding tensors on that device: labels uint8 in ``prob``'s layout,
    thresholds and ious float32 (N, gh, gw) ((gh, gw) for an H×W input). ``chunk_pixels`` bounds
    the pixels per step (default 2**24 on a GPU, 2**20 on the CPU). ``validate`` checks values
    (one host sync per chunk; errors name the image as the numpy checks do).
    """
    p = _check_patch_size(patch_size)
    if device is None and isinstance(prob, torch.Tensor):
        device = prob.device
    device = torch.device(device) if device is not None else torch.device("cpu")
    maps, gt_maps = _maps(prob, "prob", device), _maps(gt, "gt", device)
    if maps.shape != gt_maps.shape:
        raise InputError(f"prob (viewed as N×H×W) has shape {tuple(maps.shape)} but gt (viewed as N×H×W) "
                         f"has {tuple(gt_maps.shape)}; they must match")
    cmp_dtype = torch.float64 if maps.dtype == torch.float64 else torch.float32
    thr = torch.from_numpy(_prepare_thresholds(thresholds, np.float64 if cmp_dtype == torch.float64 else np.float32))
    thr = thr.to(device)
    n, h, w = maps.shape
    if chunk_pixels is None:
        chunk_pixels = 1 << 24 if device.type != "cpu" else 1 << 20
    step = max(1, int(chunk_pixels) // (h * w))
    parts = []
    for s in range(0, n, step):
        pb, gb = maps[s:s + step], gt_maps[s:s + step]
        if validate:
            _check(pb, gb, s)
        parts.append(search_maps(pb.to(cmp_dtype), gb, p, thr))
    labels, choice, iou = (torch.cat(x) for x in list(zip(*parts))[:3])
    gh, gw = patch_grid_shape(h, w, p)
    lead = () if _ndim(prob) == 2 else (n,)
    return PseudoLabels(
        labels=labels.reshape(tuple(np.shape(prob)) if not isinstance(prob, torch.Tensor) else prob.shape),
        thresholds=thr.to(torch.float32)[choice].reshape(lead + (gh, gw)),
        ious=iou.reshape(lead + (gh, gw)),
    )


def _ndim(a) -> int:
    return a.ndim if isinstance(a, torch.Tensor) else np.ndim(a)


def search_chunk(prob: np.ndarray, gt: np.ndarray, grid, device: str | torch.device):
    """:func:`data_utils.pseudo_labels._search` on ``device``, for the file generator: validated numpy
    (n, H, W) chunks in, the same numpy ``_Result`` out (labels uint8, choice, iou, inter, union)."""
    from data_utils.pseudo_labels import _Result

    device = torch.device(device)
    cmp_dtype = torch.float64 if grid.thresholds.dtype == np.float64 else torch.float32
    x = _from_numpy(prob).to(device).to(cmp_dtype)
    g = _from_numpy(gt).to(device)
    thr = torch.from_numpy(np.asarray(grid.thresholds)).to(device)
    out = search_maps(x, g, grid.patch_size, thr)
    labels, choice, iou, inter, union = (t.cpu().numpy() for t in out)
    return _Result(labels, choice, iou, inter, union)
