"""Benchmark: vectorised RST pseudo-labels vs a plain per-patch, per-threshold loop (authors' semantics).

Run: ``python bench/pseudo_labels.py`` (about a minute). Both run in the same process on the
same seeded maps (smooth random probability fields, GT from thresholded smooth noise); the table
gives CPU ms per image, the speed-up (CPU and wall), whether labels and chosen thresholds are
identical, and the streaming file path (memmap in, atomic memmap out). Records its section of
bench/RESULTS.md.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb, record, table  # noqa: E402

from data_utils.pseudo_labels import DEFAULT_THRESHOLDS, generate_pseudo_label_file, patch_pseudo_labels  # noqa: E402

CASES = [(16, 512, 64), (16, 512, 16), (16, 512, 8), (4, 1024, 64)]  # (images, size, patch size)


def smooth_noise(rng: np.random.Generator, n: int, size: int, sigma: float) -> np.ndarray:
    """(n, size, size) Gaussian-blurred white noise, standardised per image."""
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        f = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), sigma)
        out[i] = (f - f.mean()) / (f.std() + 1e-6)
    return out


def make_maps(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Base-model-like probabilities (float32) and a correlated binary GT (uint8), (n, size, size)."""
    rng = np.random.default_rng(seed)
    shape_field = smooth_noise(rng, n, size, size / 32)
    gt = (shape_field > 0.8).astype(np.uint8)  # ~20% foreground blobs
    error = smooth_noise(rng, n, size, size / 64)  # the base model's spatially varying mistakes
    logits = 4.0 * (shape_field - 0.8) + 1.5 * error + rng.normal(-0.5, 1.0, (n, 1, 1))
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32), gt


def reference(prob: np.ndarray, gt: np.ndarray, p: int, thresholds=DEFAULT_THRESHOLDS):
    """The straightforward loop: per image, per patch, per threshold (docs/authors-refine.md §R11.1)."""
    n, h, w = prob.shape
    labels = np.zeros((n, h, w), np.uint8)
    chosen = []
    for i in range(n):
        for y in range(0, h, p):
            for x in range(0, w, p):
                pp = prob[i, y:y + p, x:x + p]
                gp = gt[i, y:y + p, x:x + p].astype(np.float32)
                ious = []
                for t in thresholds:
                    b = (pp > t).astype(np.float32)
                    inter = np.sum(gp * b)
                    ious.append((inter + 1) / (np.sum(gp) + np.sum(b) - inter + 1))
                j = int(np.argmax(ious))
                labels[i, y:y + p, x:x + p] = pp > thresholds[j]
                chosen.append(thresholds[j])
    return labels, np.asarray(chosen, np.float32)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall seconds, CPU seconds of this process) over ``repeats`` runs.

    CPU time is reported next to wall time because the benchmark machine is shared: other jobs
    stretch wall times (and so wall-time ratios) far more than the CPU time numpy spends here.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


HEADERS = ["maps", "p", "loop ms/img", "vectorised ms/img", "speed-up (CPU)", "speed-up (wall)", "file ms/img",
           "identical"]


def main() -> None:
    load_before = os.getloadavg()[0]
    rows = []
    for n, size, p in CASES:
        prob, gt = make_maps(n, size, seed=size + p)
        w0, c0 = time.perf_counter(), time.process_time()
        ref_labels, ref_thr = reference(prob, gt, p)  # one run, seconds long
        ref_wall, ref_cpu = time.perf_counter() - w0, time.process_time() - c0
        fast = patch_pseudo_labels(prob, gt, p)  # also the warm-up
        fast_wall, fast_cpu = timed(lambda: patch_pseudo_labels(prob, gt, p), repeats=7)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            np.save(tmp / "prob.npy", prob[..., None])
            np.save(tmp / "gt.npy", gt[..., None].astype(np.float32))
            _, file_cpu = timed(
                lambda: generate_pseudo_label_file(tmp / "prob.npy", tmp / "gt.npy", tmp / "out.npy", p, progress=False),
                repeats=3,
            )
            same_file = np.array_equal(np.load(tmp / "out.npy")[..., 0], fast.labels)
        same = np.array_equal(fast.labels, ref_labels) and np.array_equal(fast.thresholds.ravel(), ref_thr)
        rows.append([f"{n}×{size}²", p, 1e3 * ref_cpu / n, 1e3 * fast_cpu / n, ref_cpu / fast_cpu,
                     ref_wall / fast_wall, 1e3 * file_cpu / n, "yes" if same and same_file else "NO"])
        print(table(HEADERS, rows[-1:]))
    body = table(HEADERS, rows)
    body += (
        f"\n\nTimes are CPU ms per image (median; wall-clock only in the second ratio). loop = per image, "
        f"patch and threshold (authors' semantics, written in the bench; one run); vectorised = "
        f"`patch_pseudo_labels` on the in-memory stack (median of 7); file = `generate_pseudo_label_file` "
        f"from N×H×W×1 .npy files (float32 prob, float32 GT, chunk 8, memmaps, atomic output; median of 3). "
        f"identical = same labels and same chosen thresholds as the loop, and the file equals the "
        f"in-memory result. Peak RSS of the whole run: {peak_rss_mb():.0f} MiB. 1-min load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores "
        f"shared with other jobs."
    )
    print()
    print(body)
    record("Pseudo-labels (bench/pseudo_labels.py)", body)


if __name__ == "__main__":
    main()
