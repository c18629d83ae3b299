"""Training losses of the base segmentation models (docs/authors-seg.md §S3).

Both take ``(pred_prob, target)`` in that order: probabilities after the sigmoid (not logits)
and a {0,1} (or soft, for DUTS) target of the same shape, and compute in float32 whatever the
input dtype or autocast state.

- ``dice_bce`` (D-LinkNet, ResUNet++): mean BCE + (1 − soft Dice) with the Dice sums taken over
  the whole batch. The authors also compute a focal term that they never add; it is left out.
- ``edge_saliency`` (PFANet): 0.7 · weighted BCE (1.12 on foreground) + 0.3 · BCE between
  Laplacian edge maps. PFANet's training objective is this loss **plus** the channel-attention
  regulariser that ``PFANet.forward_with_aux`` returns; the caller adds it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from data_utils.errors import InputError


def _as_float32_pair(pred_prob: torch.Tensor, target: torch.Tensor, loss: str,
                     need_bchw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and return both tensors as float32."""
    if not isinstance(pred_prob, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise InputError(f"{loss} takes two tensors (pred_prob, target), got "
                         f"{type(pred_prob).__name__} and {type(target).__name__}")
    if pred_prob.shape != target.shape:
        raise InputError(f"{loss}: pred_prob {tuple(pred_prob.shape)} and target {tuple(target.shape)} "
                         "must have the same shape (B, 1, H, W)")
    if need_bchw and (pred_prob.dim() != 4 or pred_prob.shape[1] != 1):
        raise InputError(f"{loss} needs one-channel maps (B, 1, H, W), got {tuple(pred_prob.shape)}")
    if pred_prob.numel() == 0:
        raise InputError(f"{loss}: empty input of shape {tuple(pred_prob.shape)}")
    return pred_prob.float(), target.float()


class DiceBCELoss(nn.Module):
    """BCE (mean over all pixels) + (1 − soft Dice), the authors' ``dice_bce_loss``.

    Soft Dice = (2 Σ y·p + eps) / (Σ y + Σ p + eps) with the sums over the **whole batch** (not
    per image). The authors use no smoothing, which gives 0/0 = NaN when both maps are empty;
    ``eps`` (default 1e-6, negligible otherwise) makes that case a perfect Dice of 1.
    (B, 1, H, W) probabilities and targets → scalar.
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, pred_prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=pred_prob.device.type, enabled=False):
            p, y = _as_float32_pair(pred_prob, target, "DiceBCELoss")
            bce = F.binary_cross_entropy(p, y)
            dice = (2 * (y * p).sum() + self.eps) / (y.sum() + p.sum() + self.eps)
            return bce + (1 - dice)


def laplacian_edges(x: torch.Tensor) -> torch.Tensor:
    """Edge map ReLU(tanh(K ⋆ x)) with the 3×3 Laplacian K (centre 8, neighbours −1) and zero
    padding: (B, 1, H, W) → (B, 1, H, W) in [0, 1)."""
    kernel = torch.full((1, 1, 3, 3), -1.0, dtype=x.dtype, device=x.device)
    kernel[0, 0, 1, 1] = 8.0
    return F.relu(torch.tanh(F.conv2d(x, kernel, padding=1)))


class EdgeSaliencyLoss(nn.Module):
    """PFANet's loss: ``alpha`` · weighted BCE + (1 − ``alpha``) · BCE(edges(pred), edges(target)).

    Weighted BCE = mean of −w₁·y·log(p + eps) − w₀·(1 − y)·log(1 − p + eps) with w₁ = 1.12,
    w₀ = 1.0, eps = 1e-15 (representable in float32, which is why inputs are cast to float32
    first: in float16 it underflows and log(0) returns). Edges: :func:`laplacian_edges`.
    The PFANet objective adds the channel-attention regulariser to this value (the caller
    does). (B, 1, H, W) probabilities and targets → scalar.
    """

    def __init__(self, alpha: float = 0.7, pos_weight: float = 1.12, neg_weight: float = 1.0, eps: float = 1e-15):
        super().__init__()
        self.alpha, self.pos_weight, self.neg_weight, self.eps = alpha, pos_weight, neg_weight, eps

    def forward(self, pred_prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=pred_prob.device.type, enabled=False):
            p, y = _as_float32_pair(pred_prob, target, "EdgeSaliencyLoss", need_bchw=True)
            weighted_bce = -(self.pos_weight * y * torch.log(p + self.eps)
                             + self.neg_weight * (1 - y) * torch.log(1 - p + self.eps)).mean()
            edge_bce = F.binary_cross_entropy(laplacian_edges(p), laplacian_edges(y))
            return self.alpha * weighted_bce + (1 - self.alpha) * edge_bce


class _Registry(dict):
    """A dict whose KeyError for an unknown name lists the valid names."""

    def __missing__(self, name):
        raise KeyError(f"unknown segmentation loss {name!r}; valid names: {', '.join(sorted(self))}")


SEG_LOSSES: dict[str, type[nn.Module]] = _Registry({
    "dice_bce": DiceBCELoss,
    "edge_saliency": EdgeSaliencyLoss,
})


def build_seg_loss(name: str, **kwargs) -> nn.Module:
    """Construct the base-model loss registered as ``name`` (``dice_bce`` or ``edge_saliency``)."""
    if name not in SEG_LOSSES:
        raise InputError(f"unknown segmentation loss {name!r}; valid names: {', '.join(sorted(SEG_LOSSES))}")
    return SEG_LOSSES[name](**kwargs)
