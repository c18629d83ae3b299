"""Benchmark: DenseCRF loss (lattice vs exact filter) and DenseCRF mean-field inference.

Run: ``python bench/densecrf.py [--threads 1] [--repeats 5]`` (a few minutes on 2 cores). Images
are skimage's bundled photos (astronaut, coffee, chelsea) resized to S×S; the segmentation is a
smooth random 2-class softmax. The loss runs at full resolution (scale 1) with rloss's
bandwidths scaled to the size (σ_xy = 50·S/256 px, σ_rgb = 15), K = 2, one image per call.
Reported: median wall and CPU ms of loss forward+backward (lattice build included) and ms per
megapixel; the exact filter where it fits (64², 128²) with the lattice/exact ratio of the raw
loss; mean-field inference (default kernels, 5 iterations). Records its section of
bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb, record, table  # noqa: E402

from patchrefinenet.rloss import DenseCRFLoss, mean_field  # noqa: E402

LATTICE_SIZES = (128, 256, 512)
EXACT_SIZES = (64, 128)


def photos(size: int) -> list[torch.Tensor]:
    """skimage's bundled RGB photos as (1, 3, S, S) float tensors in [0, 255]."""
    from skimage import data

    out = []
    for img in (data.astronaut(), data.coffee(), data.chelsea()):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(img).permute(2, 0, 1)[None].float())
    return out


def soft_segmentation(size: int, seed: int) -> torch.Tensor:
    """(1, 2, S, S) smooth random class probabilities."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, 2, max(2, size // 16), max(2, size // 16), generator=g) * 3
    return torch.softmax(torch.nn.functional.interpolate(logits, size=(size, size), mode="bilinear"), 1)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds over ``repeats`` runs after one warm-up run."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def loss_step(loss_fn: DenseCRFLoss, prob: torch.Tensor, image: torch.Tensor) -> float:
    p = prob.clone().requires_grad_(True)
    value = loss_fn(p, image)
    value.backward()
    return float(value.detach())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the timings in docs/rloss.md §L2b)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]

    rows = []
    for size in sorted(set(LATTICE_SIZES) | set(EXACT_SIZES)):
        image = photos(size)[0]
        prob = soft_segmentation(size, seed=size)
        sigma_xy = 50.0 * size / 256
        row = [f"{size}²"]
        if size in LATTICE_SIZES:
            lat = DenseCRFLoss(sigma_rgb=15, sigma_xy=sigma_xy, scale=1.0, mode="normalized", backend="lattice")
            wall, cpu = timed(lambda: loss_step(lat, prob, image), args.repeats)
            row += [1e3 * wall, 1e3 * cpu, 1e3 * cpu / (size * size / 1e6)]
        else:
            row += ["–", "–", "–"]
        if size in EXACT_SIZES:
            exact = DenseCRFLoss(sigma_rgb=15, sigma_xy=sigma_xy, scale=1.0, mode="normalized", backend="exact")
            wall, cpu = timed(lambda: loss_step(exact, prob, image), max(1, args.repeats // 2))
            ratios = []
            for img in photos(size):
                raw = [float(DenseCRFLoss(sigma_rgb=15, sigma_xy=sigma_xy, scale=1.0, mode="raw", backend=b)(prob, img))
                       for b in ("lattice", "exact")]
                ratios.append(raw[0] / raw[1])
            row += [1e3 * wall, 1e3 * cpu, f"{min(ratios):.3f}–{max(ratios):.3f}"]
        else:
            row += ["–", "–", "–"]
        if size in LATTICE_SIZES:
            wall, cpu = timed(lambda: mean_field(prob, image), args.repeats)
            row += [1e3 * wall, 1e3 * cpu]
        else:
            row += ["–", "–"]
        rows.append(row)
        print(row, flush=True)

    headers = ["size", "lattice loss ms (wall)", "lattice loss ms (CPU)", "lattice CPU ms / MPix",
               "exact loss ms (wall)", "exact loss ms (CPU)", "raw lattice/exact", "mean-field ms (wall)",
               "mean-field ms (CPU)"]
    body = table(headers, rows)
    body += (
        f"\n\nOne image per call, K = 2, loss at full resolution (scale 1), σ_xy = 50·S/256 px, σ_rgb = 15, "
        f"forward + backward including the lattice build (normalized mode; raw mode costs the same). "
        f"Median of {args.repeats} runs ({max(1, args.repeats // 2)} for the exact filter) after one warm-up; "
        f"torch with {args.threads} thread(s). raw lattice/exact = ratio of the raw loss values of the two "
        f"filters on the three photos (the lattice's documented scale). Mean-field = `mean_field` with the "
        f"default kernels (Gaussian σ_xy 3, w 3; bilateral σ_xy 80, σ_rgb 13, w 10), 5 iterations. "
        f"CPU only: no GPU was available for this run. Peak RSS {peak_rss_mb():.0f} MiB. 1-min load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores shared "
        f"with other jobs (wall times are stretched by them; CPU times much less)."
    )
    print()
    print(body)
    record("DenseCRF (bench/densecrf.py)", body)


if __name__ == "__main__":
    main()
