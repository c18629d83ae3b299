"""DenseCRF mean-field inference (Krähenbühl & Koltun 2011) on the torch lattice — the CRF
post-processing baseline, CPU or GPU, no compiled extension.

Semantics follow ``pydensecrf``: unary ``U = −log(max(p, clip))``; ``Q⁰ = softmax(−U)``; each
iteration ``Q ← softmax(−U + Σ_m w_m · D_m^{-1/2} K_m D_m^{-1/2} Q)`` for a Gaussian kernel on
XY and a bilateral kernel on RGBXY (``D_m = K_m 1``, symmetric normalisation, self-pair
included) with Potts compatibility. Defaults: Gaussian σ_xy 3, w 3; bilateral σ_xy 80, σ_rgb 13,
w 10; 5 iterations. Binary maps are run as the two labels ``[1 − p, p]``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from data_utils.errors import InputError
from patchrefinenet.rloss.lattice import PermutohedralLattice, bilateral_features, check_sigma, spatial_features
from patchrefinenet.rloss.losses import as_class_probabilities


def _check_weight(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number >= 0, got {value!r}") from None
    if not v >= 0:
        raise InputError(f"{name} must be >= 0, got {value!r}")
    return v


def mean_field(prob: Tensor, image: Tensor, *, iterations: int = 5, gaussian_sxy: float = 3.0,
               gaussian_weight: float = 3.0, bilateral_sxy: float = 80.0, bilateral_srgb: float = 13.0,
               bilateral_weight: float = 10.0, clip: float = 1e-5) -> Tensor:
    """Refine probabilities ``prob`` (B, K, H, W) (or a (B, 1, H, W) / (B, H, W) foreground map)
    guided by ``image`` (B, C, H, W) with colours in [0, 255]; returns Q (B, K', H, W), K' = max(K, 2).

    Differentiable in ``prob`` (a CRF-as-RNN layer); no gradient to the image.
    """
    p = as_class_probabilities(prob)
    if image.dim() == 3:
        image = image.unsqueeze(1)
    if image.dim() != 4 or image.shape[0] != p.shape[0] or image.shape[2:] != p.shape[2:]:
        raise InputError(f"image {tuple(image.shape)} must be (B, C, H, W) with the batch size and height × width "
                         f"of prob {tuple(p.shape)}")
    if int(iterations) != iterations or iterations < 0:
        raise InputError(f"iterations must be an integer >= 0, got {iterations!r}")
    check_sigma(gaussian_sxy, "gaussian_sxy")
    check_sigma(bilateral_sxy, "bilateral_sxy")
    check_sigma(bilateral_srgb, "bilateral_srgb")
    gaussian_weight = _check_weight(gaussian_weight, "gaussian_weight")
    bilateral_weight = _check_weight(bilateral_weight, "bilateral_weight")
    B, K, H, W = p.shape
    work = torch.float64 if p.dtype == torch.float64 else torch.float32
    unary = -torch.log(p.to(work).clamp_min(clip)).reshape(B, K, H * W).transpose(1, 2)  # (B, P, K)

    kernels = []  # (lattice, D^{-1/2} (B, P, 1), weight)
    if gaussian_weight > 0:
        feats = spatial_features(B, H, W, gaussian_sxy, device=p.device, dtype=work)
        kernels.append((PermutohedralLattice(feats), gaussian_weight))
    if bilateral_weight > 0:
        feats = bilateral_features(image.to(device=p.device, dtype=work), bilateral_sxy, bilateral_srgb)
        kernels.append((PermutohedralLattice(feats), bilateral_weight))
    ones = torch.ones(B, H * W, 1, device=p.device, dtype=work)
    kernels = [(lat, (lat(ones) + 1e-20).rsqrt(), w) for lat, w in kernels]

    q = torch.softmax(-unary, dim=2)
    for _ in range(int(iterations)):
        message = sum(w * norm * lat(q * norm) for lat, norm, w in kernels)
        q = torch.softmax(-unary + message, dim=2)
    return q.transpose(1, 2).reshape(B, K, H, W)


def _image_hwc(image: np.ndarray | Tensor, name: str = "image") -> Tensor:
    """(H, W) or (H, W, C) numpy/torch image → float32 torch (H, W, C)."""
    t = torch.as_tensor(np.asarray(image) if not isinstance(image, Tensor) else image)
    if t.dim() == 2:
        t = t.unsqueeze(2)
    if t.dim() != 3:
        raise InputError(f"{name} must be (H, W) or (H, W, C), got shape {tuple(t.shape)}")
    return t.to(torch.float32)


def densecrf_refine(image: np.ndarray | Tensor, prob: np.ndarray | Tensor, **params) -> np.ndarray | Tensor:
    """Mean-field refinement of one map: ``image`` (H, W, C) or (H, W), uint8 or float in [0, 255];
    ``prob`` (H, W) foreground probability or (K, H, W) class probabilities.

    Returns the refined map in the shape and kind (numpy float32 / torch) of ``prob``: (H, W)
    foreground probability for (H, W) input, else (K, H, W). ``params`` go to :func:`mean_field`.
    """
    is_numpy = not isinstance(prob, Tensor)
    p = torch.as_tensor(np.asarray(prob, dtype=np.float32) if is_numpy else prob)
    if p.dim() not in (2, 3):
        raise InputError(f"prob must be (H, W) or (K, H, W), got shape {tuple(p.shape)}")
    img = _image_hwc(image).to(p.device)
    if tuple(img.shape[:2]) != tuple(p.shape[-2:]):
        raise InputError(f"image is {tuple(img.shape[:2])} (H, W) but prob is {tuple(p.shape[-2:])}; "
                         f"resize one of them")
    binary = p.dim() == 2
    q = mean_field(p.float()[None, None] if binary else p.float()[None], img.permute(2, 0, 1)[None], **params)[0]
    out = q[1] if binary else q
    return out.cpu().numpy().astype(np.float32) if is_numpy else out.to(p.dtype)


def densecrf_refine_batch(images: np.ndarray | list, probs: np.ndarray, *, progress: bool = True,
                          device: str | torch.device = "cpu",
                          **params) -> np.ndarray:
    """Refine N binary maps one by one: ``images`` (N, H, W, C) or (N, H, W) in [0, 255],
    ``probs`` (N, H, W) or (N, H, W, 1) foreground probabilities → (N, H, W) float32 numpy."""
    probs = np.asarray(probs)
    if probs.ndim == 4 and probs.shape[3] == 1:
        probs = probs[..., 0]
    if probs.ndim != 3:
        raise InputError(f"probs must be (N, H, W) or (N, H, W, 1), got shape {probs.shape}")
    if len(images) != len(probs):
        raise InputError(f"{len(images)} images but {len(probs)} probability maps")
    out = np.empty(probs.shape, dtype=np.float32)
    for i in tqdm(range(len(probs)), desc="DenseCRF", disable=not progress, leave=False):
        try:
            p = torch.as_tensor(np.array(probs[i], dtype=np.float32), device=device)  # a copy: memmaps are read-only
            out[i] = densecrf_refine(_image_hwc(images[i], f"images[{i}]"), p, **params).cpu().numpy()
        except InputError as exc:
            raise InputError(f"map {i}: {exc}") from None
    return out
