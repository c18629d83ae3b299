"""The demo's results table and figures, computed from the arrays the pipeline stages wrote.

Rows (all on the held-out test split, scored with the same streaming metrics as predict.py):

- base model at 0.5 (the authors' protocol);
- base model at the single global threshold that maximises pooled IoU on the *val* split;
- DenseCRF mean-field on the base probabilities (the classic refinement baseline), its kernel
  weights chosen on the val split like the global threshold;
- PRN at each trained grid: the final mask of predict.py (for grids with a local head, the
  authors' combination G ∪ dilate(G ∩ L)) and, for those grids, the global head alone;
- with ``--weak``, the rows of :mod:`.weak` (base models from scribbles, PRN on top);
- the patch oracle: per-patch best thresholds chosen with the *test* ground truth (an upper bound
  for patch-wise thresholding, not a method).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from data_utils.arrays import open_maps
from data_utils.datasets import load_sample, read_split
from data_utils.errors import InputError
from data_utils.io import atomic_path, write_text_atomic
from data_utils.pseudo_labels import DEFAULT_THRESHOLDS
from data_utils.spec import load_dataset_spec
from patchrefinenet.metrics import SegmentationMeter
from patchrefinenet.refine.predict import combine_heads
from patchrefinenet.seg.generate import pseudo_label_paths

log = logging.getLogger("patchrefinenet")

METRICS = ("pooled_iou", "mean_iou", "dice")
CHUNK = 16


def _score(pred_chunks) -> dict:
    """Metrics of an iterable of (prob_or_mask (n,H,W), gt (n,H,W)) chunks."""
    meter = SegmentationMeter()
    for prob, gt in pred_chunks:
        meter.update(prob, gt)
    return meter.compute()


def _chunks(n: int):
    for lo in range(0, n, CHUNK):
        yield slice(lo, min(n, lo + CHUNK))


def best_global_threshold(prob: np.ndarray, gt: np.ndarray, thresholds=DEFAULT_THRESHOLDS[:-1]) -> tuple[float, float]:
    """The threshold of ``thresholds`` maximising pooled IoU (+1 smoothing) of ``prob > τ`` over all maps.

    One pass: each pixel's count of thresholds below it indexes histograms of foreground and all
    pixels, whose reversed cumulative sums give TP and predicted positives for every τ at once.
    """
    t = np.asarray(thresholds, dtype=np.float64)
    k = len(t)
    pos, fg_hist, n_fg = np.zeros(k + 1), np.zeros(k + 1), 0.0
    for sl in _chunks(len(prob)):
        p, g = np.asarray(prob[sl], dtype=np.float32).ravel(), np.asarray(gt[sl]).ravel() > 0.5
        idx = np.searchsorted(t, p, side="left")  # number of thresholds strictly below p
        pos += np.bincount(idx, minlength=k + 1)
        fg_hist += np.bincount(idx[g], minlength=k + 1)
        n_fg += g.sum()
    # pixel with idx = j is positive for thresholds t[0..j-1], i.e. for τ_i when j > i
    pred = np.cumsum(pos[::-1])[::-1][1:]
    tp = np.cumsum(fg_hist[::-1])[::-1][1:]
    iou = (tp + 1) / (pred + n_fg - tp + 1)
    best = int(np.argmax(iou))
    return float(t[best]), float(iou[best])


def _split_images(paths, spec, split: str, n: int) -> np.ndarray:
    """The first ``n`` images of ``split`` as RGB uint8 at the PRN map size, in array order."""
    import cv2

    samples = read_split(spec, paths.data_root, split)
    if split == "test" and len(samples) != n:
        raise InputError(f"{len(samples)} test images but {n} test maps; regenerate the arrays "
                         "(python demo.py --stages arrays --force)")
    samples = samples[:n]
    out = []
    for s in samples:
        rgb = load_sample(spec, s)[2]
        if rgb.shape[0] != spec.prn_size:
            rgb = cv2.resize(rgb, (spec.prn_size, spec.prn_size), interpolation=cv2.INTER_AREA)
        out.append(rgb)
    return np.stack(out)


# DenseCRF kernel weights tried on val (Gaussian, bilateral); the widths scale with the image size
DENSECRF_WEIGHTS = ((3.0, 10.0), (3.0, 3.0), (1.0, 1.0), (1.0, 0.3))
DENSECRF_VAL_MAPS = 32


def _densecrf(images: np.ndarray, prob: np.ndarray, weights: tuple[float, float], progress: bool) -> np.ndarray:
    from patchrefinenet.rloss.meanfield import densecrf_refine_batch

    scale = images.shape[1] / 512  # the default kernel widths are for ~500 px images
    return densecrf_refine_batch(images, prob, progress=progress, gaussian_sxy=max(1.0, 3 * scale),
                                 bilateral_sxy=max(2.0, 80 * scale), gaussian_weight=weights[0],
                                 bilateral_weight=weights[1])


def choose_densecrf_weights(images: np.ndarray, prob: np.ndarray, gt: np.ndarray) -> tuple[tuple[float, float], float]:
    """The (Gaussian, bilateral) weights of :data:`DENSECRF_WEIGHTS` with the best pooled IoU on val maps."""
    scored = [(_score([(_densecrf(images, prob, w, False), gt)])["pooled_iou"], w) for w in DENSECRF_WEIGHTS]
    best_iou, best = max(scored)
    return best, float(best_iou)


def _prn_outputs(paths, aux: str) -> tuple[np.ndarray, np.ndarray | None]:
    out = paths.refine_root / "outputs" / aux
    g = open_maps(out / "test_prob_global.npy", f"PRN {aux} global probabilities")
    local = out / "test_prob_local.npy"
    return g, (open_maps(local, f"PRN {aux} local probabilities") if local.is_file() else None)


def _final_mask(g: np.ndarray, l: np.ndarray | None) -> np.ndarray:
    gt = torch.from_numpy(np.array(g, dtype=np.float32))[:, None]  # a writable copy (g may be a memory map)
    lt = None if l is None else torch.from_numpy(np.array(l, dtype=np.float32))[:, None]
    return combine_heads(gt, lt, "upstream" if lt is not None else "global")[:, 0].numpy()


def write_report(cfg, paths, progress: bool = True, extra_rows: Sequence[dict] = ()) -> dict:
    """Compute every row, write ``results.md``/figures under the demo root, return the report dict.

    ``extra_rows`` (``{"method", "pooled_iou", "mean_iou", "dice", "note"}``, e.g. the weak-supervision
    rows) go after the PRN rows, before the patch oracle.
    """
    spec = load_dataset_spec(paths.config)
    arrays = paths.arrays(cfg.base_model)
    test_prob = open_maps(arrays / "test_input.npy", "test probabilities")
    test_gt = open_maps(arrays / "test_orig_gt.npy", "test ground truth")
    val_prob = open_maps(arrays / "val_pred.npy", "val probabilities")
    val_gt = open_maps(arrays / "val_orig_gt.npy", "val ground truth")
    n = len(test_prob)
    rows: list[dict] = []

    def add(name: str, metrics: dict, note: str = "") -> None:
        rows.append({"method": name, **{k: float(metrics[k]) for k in METRICS}, "note": note})

    base = _score((test_prob[s], test_gt[s]) for s in _chunks(n))
    add("Base model, threshold 0.5", base)
    tau, val_iou = best_global_threshold(val_prob, val_gt)
    add(f"Base model, best global threshold (τ = {tau:.2f}, chosen on val)",
        _score((test_prob[s] > tau, test_gt[s]) for s in _chunks(n)), f"val pooled IoU {val_iou:.4f}")

    k = min(DENSECRF_VAL_MAPS, len(val_prob))
    weights, crf_val_iou = choose_densecrf_weights(_split_images(paths, spec, "val", k), np.asarray(val_prob[:k]),
                                                   np.asarray(val_gt[:k]))
    images = _split_images(paths, spec, "test", n)
    crf = _densecrf(images, np.asarray(test_prob), weights, progress)
    add("DenseCRF mean-field on the base probabilities", _score([(crf, np.asarray(test_gt))]),
        f"kernel weights {weights[0]:g}/{weights[1]:g} chosen on {k} val maps (IoU {crf_val_iou:.4f})")

    prn_final = {}
    for aux in cfg.grids:
        g, l = _prn_outputs(paths, aux)
        final = _final_mask(np.asarray(g), None if l is None else np.asarray(l))
        prn_final[aux] = final
        heads = ", residual heads" if cfg.prn_residual else ""
        add(f"PRN {aux} (width {cfg.prn_width}{heads})", _score([(final, np.asarray(test_gt))]),
            "authors' combination G ∪ dilate(G ∩ L)" if l is not None else "global head")
        if l is not None:
            add(f"PRN {aux}, global head alone", _score([(np.asarray(g) > 0.5, np.asarray(test_gt))]),
                "predict.py --combine global")
    rows.extend({"method": r["method"], **{m: float(r[m]) for m in METRICS}, "note": r.get("note", "")}
                for r in extra_rows)

    from patchrefinenet.demo.pipeline import patch_size_for

    p = patch_size_for(cfg.grids[-1], cfg.input_size)
    label_path, threshold_path = pseudo_label_paths(spec, paths.data_root, cfg.base_model, "test", p)
    oracle_labels = open_maps(label_path, "test patch-oracle labels")
    add(f"Patch oracle, {p}-px patches (uses test ground truth)",
        _score((oracle_labels[s], test_gt[s]) for s in _chunks(n)), "upper bound, not a method")

    markdown = _markdown(rows, cfg, n)
    write_text_atomic(paths.root / "results.md", markdown)
    if not threshold_path.is_file():
        raise InputError(f"missing {threshold_path} (the oracle's per-patch thresholds); rerun the arrays stage: "
                         "python demo.py --stages arrays report")
    figures = _figures(cfg, paths, np.load(threshold_path, mmap_mode="r"), images, test_prob, test_gt, prn_final, p)
    return {"rows": rows, "markdown": markdown, "figures": figures, "best_val_threshold": tau, "n_test": n}


def _markdown(rows: list[dict], cfg, n: int) -> str:
    width = f" width {cfg.base_width}" if cfg.base_model == "resunetplusplus" else ""
    lines = [f"Demo results on {n} held-out test images ({cfg.kind}, {cfg.input_size}×{cfg.input_size}, "
             f"base model {cfg.base_model}{width} trained {cfg.base_epochs} epochs at most, seed {cfg.seed}).", "",
             "| method | pooled IoU | mean IoU | Dice | note |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['pooled_iou']:.4f} | {r['mean_iou']:.4f} | {r['dice']:.4f} | {r['note']} |")
    return "\n".join(lines) + "\n"


def _per_image_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    p, g = pred.reshape(len(pred), -1) > 0.5, gt.reshape(len(gt), -1) > 0.5
    inter = (p & g).sum(1)
    union = (p | g).sum(1)
    return (inter + 1) / (union + 1)


def _figures(cfg, paths, thresholds: np.ndarray, images, test_prob, test_gt, prn_final: dict, p: int) -> dict:
    """The example grid (thresholds: the oracle's (N, H/p, W/p) per-patch thresholds) and the per-image scatter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aux = cfg.grids[-1]
    g, _ = _prn_outputs(paths, aux)
    prob, gt = np.asarray(test_prob), np.asarray(test_gt)
    base_iou, prn_iou = _per_image_iou(prob, gt), _per_image_iou(prn_final[aux], gt)
    gain = prn_iou - base_iou
    # show the images PRN helped most, a typical one and the one it hurt most: honest, not cherry-picked
    order = np.argsort(gain)
    picks = list(dict.fromkeys([int(order[-1]), int(order[-2]), int(order[len(order) // 2]), int(order[0])]))
    cols = ["image", "ground truth", "base probability", f"oracle thresholds ({p}-px patches)",
            f"PRN {aux} probability (global)", f"PRN {aux} final mask"]
    fig, axes = plt.subplots(len(picks), len(cols), figsize=(2.3 * len(cols), 2.4 * len(picks)), squeeze=False)
    for r, i in enumerate(picks):
        panels = [images[i], gt[i], prob[i], None, g[i], prn_final[aux][i]]
        for c, (ax, panel) in enumerate(zip(axes[r], panels)):
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
            if c == 3:
                im = ax.imshow(thresholds[i], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
                if r == 0:
                    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
                continue
            ax.imshow(panel, cmap=None if panel.ndim == 3 else "gray", vmin=0, vmax=1 if panel.ndim == 2 else None)
        axes[r][0].set_ylabel(f"test #{i}\nIoU {base_iou[i]:.2f} → {prn_iou[i]:.2f}", fontsize=8)
    fig.tight_layout()
    examples = paths.root / "demo_examples.png"
    with atomic_path(examples) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.scatter(base_iou, prn_iou, s=14, alpha=0.8)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("per-image IoU, base model at 0.5")
    ax.set_ylabel(f"per-image IoU, PRN {aux}")
    ax.set_title(f"PRN {aux} better on {int((gain > 0).sum())} of {len(gain)} test images", fontsize=9)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    fig.tight_layout()
    scatter = paths.root / "demo_per_image_iou.png"
    with atomic_path(scatter) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return {"examples": str(examples), "per_image_iou": str(scatter)}
