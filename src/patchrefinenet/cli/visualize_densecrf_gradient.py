"""Implementation of ``tools/visualize_densecrf_gradient.py``: one figure with the image, a
segmentation, the DenseCRF loss value and the loss gradient w.r.t. the segmentation.

The gradient shows where the regulariser pushes: along colour edges that the segmentation
crosses, and nowhere inside uniform regions that the segmentation follows.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from data_utils.errors import InputError
from data_utils.io import atomic_path
from patchrefinenet.cli.common import cli_entry, setup_logging
from patchrefinenet.rloss.losses import BACKENDS, MODES, DenseCRFLoss

logger = logging.getLogger("patchrefinenet")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="visualize_densecrf_gradient.py",
        description="Plot an image, a segmentation, the DenseCRF loss and its gradient w.r.t. the segmentation.")
    p.add_argument("--image", required=True, help="image file (PNG/JPG; colour or grayscale, 8-bit)")
    p.add_argument("--prob", default=None,
                   help="foreground probability map: .npy in [0, 1] or an 8-bit image (/255); "
                        "default: a synthetic disc in the middle of the image")
    p.add_argument("--output", default=None,
                   help="output PNG (default: <image stem>_densecrf_gradient.png next to the image)")
    p.add_argument("--sigma_rgb", type=float, default=15.0, help="colour bandwidth on [0, 255] values (default 15)")
    p.add_argument("--sigma_xy", type=float, default=80.0,
                   help="spatial bandwidth in px at full resolution (default 80)")
    p.add_argument("--scale", type=float, default=1.0, help="down-scaling factor before the loss (rloss: 0.5)")
    p.add_argument("--mode", choices=MODES, default="normalized",
                   help="normalized (default, >= 0) or rloss's raw value")
    p.add_argument("--backend", choices=BACKENDS, default="lattice",
                   help="lattice (default) or exact (small images only)")
    return p


def read_image(path: Path) -> np.ndarray:
    """(H, W, C) uint8 RGB (or 1-channel grayscale) from an 8-bit image file."""
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"cannot read {path} as an image")
    if img.dtype != np.uint8:
        raise InputError(f"{path} has dtype {img.dtype}; convert it to 8 bits (colour values in [0, 255])")
    if img.ndim == 2:
        return img[:, :, None]
    if img.shape[2] in (2, 4):
        img = img[:, :, : img.shape[2] - 1]  # drop alpha
    return img[:, :, ::-1].copy() if img.shape[2] == 3 else img


def read_probability(path: Path | None, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 foreground probability; a synthetic disc when ``path`` is None."""
    H, W = shape
    if path is None:
        yy, xx = np.mgrid[:H, :W]
        r = 0.3 * min(H, W)
        return (((yy - H / 2) ** 2 + (xx - W / 2) ** 2) <= r * r).astype(np.float32)
    if not path.is_file():
        raise InputError(f"probability file not found: {path}")
    if path.suffix.lower() == ".npy":
        prob = np.squeeze(np.load(path)).astype(np.float32)
        if prob.size and (prob.min() < 0 or prob.max() > 1):
            raise InputError(f"{path} holds values in [{prob.min():g}, {prob.max():g}]; "
                             f"expected probabilities in [0, 1]")
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
        if raw is None:
            raise InputError(f"cannot read {path} as an image")
        prob = raw.astype(np.float32) / (65535.0 if raw.dtype == np.uint16 else 255.0)
    if prob.shape != (H, W):
        raise InputError(f"{path} is {prob.shape} but the image is {(H, W)} (H, W); they must have the same size")
    return prob


def loss_and_gradient(image: np.ndarray, prob: np.ndarray, loss_fn: DenseCRFLoss) -> tuple[float, np.ndarray]:
    """DenseCRF loss of the binary map ``prob`` (H, W) on ``image`` (H, W, C) and ∂loss/∂prob (H, W)."""
    p = torch.from_numpy(prob)[None, None].clone().requires_grad_(True)
    img = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    loss = loss_fn(p, img)
    loss.backward()
    return float(loss.detach()), p.grad[0, 0].numpy()


def render(image: np.ndarray, prob: np.ndarray, grad: np.ndarray, loss: float, title: str, out: Path) -> Path:
    """Write the three-panel figure to ``out`` atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    gray = image.shape[2] == 1
    axes[0].imshow(image[:, :, 0] if gray else image[:, :, :3], cmap="gray" if gray else None)
    axes[0].set_title("image")
    axes[1].imshow(prob, cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("segmentation (foreground prob.)")
    lim = float(np.abs(grad).max()) or 1.0
    im = axes[2].imshow(grad, cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[2].set_title("∂loss/∂segmentation")
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"{title}: loss = {loss:.6g}")
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return out


@cli_entry
def main(argv: list[str] | None = None) -> Path:
    """Parse ``argv``, compute the loss and gradient, write the figure; returns its path."""
    args = build_parser().parse_args(argv)
    setup_logging()
    image_path = Path(args.image)
    image = read_image(image_path)
    prob = read_probability(None if args.prob is None else Path(args.prob), image.shape[:2])
    loss_fn = DenseCRFLoss(sigma_rgb=args.sigma_rgb, sigma_xy=args.sigma_xy, scale=args.scale,
                           mode=args.mode, backend=args.backend)
    loss, grad = loss_and_gradient(image, prob, loss_fn)
    out = Path(args.output) if args.output else image_path.with_name(f"{image_path.stem}_densecrf_gradient.png")
    title = (f"DenseCRF loss ({args.mode}, {args.backend}, σ_rgb={args.sigma_rgb:g}, "
             f"σ_xy={args.sigma_xy:g}, scale={args.scale:g})")
    render(image, prob, grad, loss, title, out)
    logger.info("loss %.6g; figure written to %s", loss, out)
    return out
