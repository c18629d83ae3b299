"""PRN losses (docs/authors-refine.md §R6) in the intended (prediction, target) argument order.

The authors call every loss as ``loss(target, prediction)`` (docs/authors-refine.md §R6.2). Their forward values are
then L1-like and the gradients ±inf/NaN, so all weights are non-finite after one step (docs/authors-refine.md §R6.3).
Here the prediction always comes first; ``PRNLoss(upstream_order=True)`` reproduces the swapped
order for analysis only. All losses compute in float32 (or float64 for float64 inputs), also
under autocast.

Value checks (maps in [0, 1], no NaN) read every value, which on a CUDA tensor is a host-device
synchronisation. Every loss takes ``check_values``: None (default) checks CPU tensors only, True
checks on every device, False never (the training engines: their datasets check each item as it
is read). Shape checks always run; they are free. Nothing is checked while torch.compile traces.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from data_utils.errors import InputError


def should_check_values(x: torch.Tensor, check_values: bool | None) -> bool:
    """The value-check policy of the module docstring: True always, False never, None only for CPU
    tensors (no host-device sync). Never while torch.compile traces."""
    if torch.compiler.is_compiling():
        return False
    return x.device.type == "cpu" if check_values is None else bool(check_values)


def _as_float(pred: torch.Tensor, target: torch.Tensor, what: str,
              check_values: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a (prediction, target) pair and cast both to at least float32 (values: see the module doc)."""
    for name, t in (("prediction", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{what}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if pred.shape != target.shape:
        raise InputError(f"{what}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if pred.ndim != 4 or pred.shape[1] != 1:
        raise InputError(f"{what}: expected (B, 1, H, W) maps, got {tuple(pred.shape)}")
    dtype = torch.promote_types(pred.dtype, torch.float32) if pred.is_floating_point() else torch.float32
    pred, target = pred.to(dtype), target.to(dtype)
    if not should_check_values(pred, check_values):
        return pred, target
    for name, t in (("prediction", pred), ("target", target)):
        lo, hi = torch.aminmax(t.detach())
        if not (0.0 <= float(lo) and float(hi) <= 1.0):  # also rejects NaN
            raise InputError(f"{what}: {name} must be probabilities/labels in [0, 1], got values in [{float(lo):g}, {float(hi):g}]")
    return pred, target


def laplacian_edges(z: torch.Tensor) -> torch.Tensor:
    """Edge map E(z) = ReLU(tanh(K ⋆ z)), K the 3×3 Laplacian (8 centre, −1 around), zero padding 1.

    (B, 1, H, W) -> (B, 1, H, W) in [0, 1). Zero padding makes masks touching the border give
    edges along the border (docs/authors-refine.md §R6.3), as in the authors' loss.
    """
    k = torch.full((1, 1, 3, 3), -1.0, device=z.device, dtype=z.dtype)
    k[0, 0, 1, 1] = 8.0
    return torch.relu(torch.tanh(F.conv2d(z, k, padding=1)))


class RegionSpecificLoss(nn.Module):
    """RS(p, y) = alpha_rst·focal + (1 − alpha_rst)·BCE(E(p), E(y)) (docs/authors-refine.md §R6.1, intended order).

    focal = mean((1 − alpha_f)·(1 − p_t)^gamma·BCE(p, y)) with p_t = exp(−BCE): a **constant**
    weight 1 − alpha_f (the authors' alpha_f is not a class weight). E is :func:`laplacian_edges`.
    pred, target: (B, 1, H, W) in [0, 1] -> scalar. ``check_values``: see the module docstring.
    """

    def __init__(self, alpha_rst: float = 0.7, alpha_f: float = 0.25, gamma: float = 2.0, *,
                 check_values: bool | None = None) -> None:
        super().__init__()
        self.alpha_rst, self.alpha_f, self.gamma = alpha_rst, alpha_f, gamma
        self.check_values = check_values

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(focal, edge) scalars, before weighting."""
        pred, target = _as_float(pred, target, type(self).__name__, self.check_values)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            bce = F.binary_cross_entropy(pred, target, reduction="none")  # logs clamped at -100
            focal = ((1.0 - self.alpha_f) * (1.0 - torch.exp(-bce)) ** self.gamma * bce).mean()
            edge = F.binary_cross_entropy(laplacian_edges(pred), laplacian_edges(target))
        return focal, edge

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        focal, edge = self.terms(pred, target)
        return self.alpha_rst * focal + (1.0 - self.alpha_rst) * edge


class RegularizationLoss(nn.Module):
    """Weighted BCE: mean(−w_fg·y·ln max(p, ε) − w_bg·(1 − y)·ln max(1 − p, ε)) (docs/authors-refine.md §R6.1, intended order).

    The authors write ln(p + ε) and ln(1 − p + ε) with ε = 1e-15. In float32 adding ε changes
    nothing unless the argument is below ~1e-8 (1 − p is either 0 or ≥ 6e-8), so ln max(·, ε)
    gives the same values to float32 precision, is finite at p ∈ {0, 1} by construction (whatever
    the evaluation order of 1 − p + ε), and has a zero instead of a ~1/ε gradient where a
    prediction has saturated to exactly 0 or 1.
    pred, target: (B, 1, H, W) in [0, 1] -> scalar. ``check_values``: see the module docstring.
    """

    def __init__(self, w_fg: float = 1.12, w_bg: float = 1.0, eps: float = 1e-15, *,
                 check_values: bool | None = None) -> None:
        super().__init__()
        self.w_fg, self.w_bg, self.eps = w_fg, w_bg, eps
        self.check_values = check_values

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = _as_float(pred, target, type(self).__name__, self.check_values)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            fg = target * torch.log(pred.clamp_min(self.eps))
            bg = (1.0 - target) * torch.log((1.0 - pred).clamp_min(self.eps))
            return (-self.w_fg * fg - self.w_bg * bg).mean()


class PRNLoss(nn.Module):
    """The authors' training objective for PRN (docs/authors-refine.md §R6.2), in the intended (prediction, target) order.

    grid 0:  loss = rs_weight·RS(p, pseudo) + reg_weight·Reg(p, gt)
    grid > 0: loss = rs_weight·(gw·RS(p_g, pseudo) + lw·RS(p_l, pseudo))
                   + reg_weight·(gw·Reg(p_g, gt) + lw·Reg(p_l, gt))
    with gw, lw = global_weight, local_weight (0.5 each). Both heads see the same targets.

    ``upstream_order=True`` calls RS(pseudo, p) and Reg(gt, p) as the authors' train.py does —
    for analysis only: its gradients are non-finite (docs/authors-refine.md §R6.3) and training with it destroys the model.
    ``check_values`` goes to both losses (module docstring); the engine passes False.
    """

    def __init__(
        self,
        rs_weight: float = 0.7,
        reg_weight: float = 0.3,
        global_weight: float = 0.5,
        local_weight: float = 0.5,
        upstream_order: bool = False,
        *,
        check_values: bool | None = None,
    ) -> None:
        super().__init__()
        self.rs = RegionSpecificLoss(check_values=check_values)
        self.reg = RegularizationLoss(check_values=check_values)
        self.rs_weight, self.reg_weight = rs_weight, reg_weight
        self.global_weight, self.local_weight = global_weight, local_weight
        self.upstream_order = upstream_order

    def _pair(self, loss: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss(target, pred) if self.upstream_order else loss(pred, target)

    def forward(
        self, global_prob: torch.Tensor, local_prob: torch.Tensor | None, pseudo: torch.Tensor, gt: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """All maps (B, 1, H, W). Returns ``loss`` (with grad) and detached parts ``rs``, ``reg``,
        ``rs_global``, ``reg_global`` and, with a local head, ``rs_local``, ``reg_local``."""
        rs_g, reg_g = self._pair(self.rs, global_prob, pseudo), self._pair(self.reg, global_prob, gt)
        out = {"rs_global": rs_g, "reg_global": reg_g}
        if local_prob is None:
            rs, reg = rs_g, reg_g
        else:
            rs_l, reg_l = self._pair(self.rs, local_prob, pseudo), self._pair(self.reg, local_prob, gt)
            rs = self.global_weight * rs_g + self.local_weight * rs_l
            reg = self.global_weight * reg_g + self.local_weight * reg_l
            out.update(rs_local=rs_l, reg_local=reg_l)
        loss = self.rs_weight * rs + self.reg_weight * reg
        parts = {k: v.detach() for k, v in {"rs": rs, "reg": reg, **out}.items()}
        return {"loss": loss, **parts}
