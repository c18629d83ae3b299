"""Regularized losses for weakly-supervised segmentation (rloss; Tang et al., ECCV 2018).

Scribble supervision = partial cross-entropy on the few labelled pixels + a regulariser on all
pixels that makes the segmentation follow image edges:

* :class:`DenseCRFLoss` — relaxed Potts / DenseCRF energy with the dense RGBXY Gaussian affinity W.
* :class:`NormalizedCutLoss` — soft normalised cut with the same affinity.
* :class:`SizeLoss` — soft-size penalty outside bounds (Kervadec et al., MIDL 2018).
* :func:`partial_cross_entropy`, :class:`RegularizedLoss` (pCE + weight · regulariser) and the
  :func:`build_regularizer` registry (``"densecrf" | "ncut" | "size" | "none"``).

Conventions. ``prob`` holds probabilities, (B, K, H, W) summing to 1 over K, or (B, 1, H, W) /
(B, H, W) binary foreground probabilities, expanded to the two classes ``[1 − p, p]``. ``image``
is (B, C, H, W) (or (B, H, W) grayscale) with colour values in [0, 255] per channel — undo any
mean/std normalisation first; any channel count works. ``roi`` is an optional (B, H, W) 0/1 mask of
pixels that take part (exclude padding; keep unlabelled pixels in). Gradients come from autograd
through the filters' custom Functions (exact transpose of the lattice), never a hand-written formula.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data_utils.errors import InputError
from patchrefinenet.losses import should_check_values
from patchrefinenet.rloss.dense import DenseGaussianFilter
from patchrefinenet.rloss.lattice import PermutohedralLattice, bilateral_features, check_sigma

BACKENDS = ("lattice", "exact")
MODES = ("normalized", "raw")


def as_class_probabilities(prob: Tensor, name: str = "prob") -> Tensor:
    """(B, K, H, W) with K ≥ 2: a (B, H, W) or (B, 1, H, W) foreground map becomes ``[1 − p, p]``."""
    if prob.dim() == 3:
        prob = prob.unsqueeze(1)
    if prob.dim() != 4 or prob.shape[1] < 1:
        raise InputError(f"{name} must be (B, K, H, W) probabilities or a (B, H, W) foreground map, "
                         f"got shape {tuple(prob.shape)}")
    if not prob.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor of probabilities, got {prob.dtype}")
    return torch.cat([1.0 - prob, prob], 1) if prob.shape[1] == 1 else prob


def _as_image(image: Tensor, prob: Tensor) -> Tensor:
    """Image as float (B, C, H, W) matching ``prob`` in batch and size, or :class:`InputError`."""
    if image.dim() == 3:
        image = image.unsqueeze(1)
    if image.dim() != 4:
        raise InputError(f"image must be (B, C, H, W) (or (B, H, W) grayscale), got shape {tuple(image.shape)}")
    if image.shape[0] != prob.shape[0] or image.shape[2:] != prob.shape[2:]:
        raise InputError(f"image {tuple(image.shape)} and prob {tuple(prob.shape)} must have the same batch size "
                         f"and height × width; resize one of them")
    if image.device != prob.device:
        raise InputError(f"image is on {image.device} but prob on {prob.device}; move them to one device")
    return image.detach().to(torch.float64 if prob.dtype == torch.float64 else torch.float32)


def _as_roi(roi: Tensor | None, prob: Tensor) -> Tensor:
    """ROI as a float (B, H, W) 0/1 mask (all ones when ``None``)."""
    B, _, H, W = prob.shape
    if roi is None:
        return torch.ones(B, H, W, device=prob.device, dtype=prob.dtype)
    if roi.dim() == 4 and roi.shape[1] == 1:
        roi = roi[:, 0]
    if tuple(roi.shape) != (B, H, W):
        raise InputError(f"roi must be (B, H, W) = {(B, H, W)} like prob, got shape {tuple(roi.shape)}")
    return (roi.detach() > 0).to(prob.dtype)


def _check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


class _AffinityLoss(nn.Module):
    """Shared front end of the affinity-based losses: resize by ``scale``, mask by the ROI, filter.

    Down-scaling follows rloss: image nearest, probabilities bilinear (``align_corners=False``,
    so gradients flow back to full resolution), ROI nearest; ``σ_xy`` is multiplied by ``scale``,
    ``σ_rgb`` is not.
    """

    def __init__(self, sigma_rgb: float, sigma_xy: float, scale: float, backend: str):
        super().__init__()
        self.sigma_rgb = check_sigma(sigma_rgb, "sigma_rgb")
        self.sigma_xy = check_sigma(sigma_xy, "sigma_xy")
        self.scale = check_sigma(scale, "scale")
        self.backend = _check_choice(backend, BACKENDS, "backend")

    def extra_repr(self) -> str:
        return f"sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, scale={self.scale}, backend={self.backend!r}"

    def _filtered(self, prob: Tensor, image: Tensor, roi: Tensor | None, anchor_colours: bool):
        """Return (S̃, R, W S̃, W R) flattened to (B, P, K), (B, P, 1), (B, P, K), (B, P, 1)."""
        prob = as_class_probabilities(prob)
        image = _as_image(image, prob)
        roi = _as_roi(roi, prob)
        work = torch.float64 if prob.dtype == torch.float64 else torch.float32
        prob = prob.to(work)
        if self.scale != 1.0:
            image = F.interpolate(image, scale_factor=self.scale, mode="nearest")
            prob = F.interpolate(prob, scale_factor=self.scale, mode="bilinear", align_corners=False)
            roi = F.interpolate(roi[:, None].to(work), scale_factor=self.scale, mode="nearest")[:, 0]
        if anchor_colours:  # a constant colour shift then leaves the features (and the lattice) unchanged
            image = image - image.amin(dim=(2, 3), keepdim=True)
        B, K, H, W = prob.shape
        roi = roi.to(work).reshape(B, H * W, 1)
        seg = prob.reshape(B, K, H * W).transpose(1, 2) * roi  # (B, P, K)
        feats = bilateral_features(image, self.sigma_xy * self.scale, self.sigma_rgb)
        filt = PermutohedralLattice(feats) if self.backend == "lattice" else DenseGaussianFilter(feats)
        out = filt(torch.cat([seg, roi], 2))  # one pass filters the K classes and the ROI
        return seg, roi, out[..., :K], out[..., K:]


class DenseCRFLoss(_AffinityLoss):
    """DenseCRF (relaxed Potts) loss of rloss on the RGBXY Gaussian affinity W (self-pair included).

    ``mode="raw"`` is rloss's value ``−(1/B) Σ_b Σ_k S̃_kᵀ W S̃_k`` (S̃ = R ⊙ S): negative, because
    the paper's energy ``Σ_k S_kᵀ W (1 − S_k) = 1ᵀW1 − Σ_k S_kᵀ W S_k`` drops the constant ``1ᵀW1``.
    With the lattice backend it reproduces rloss's filter (same lattice; e.g. the mean degree W·1
    on the test photos of docs/rloss.md §L1.2.7 is 840–985 as measured with rloss's C++), so the published settings
    carry over (weight 2e-9, σ_rgb 15, σ_xy 100, scale 0.5, image in [0, 255]). The value grows with
    pixel count × kernel mass (≈ scale⁴ · σ_xy²); the exact backend gives ≈ 1/0.6 × larger values.

    ``mode="normalized"`` (default) is the expected Potts disagreement between ROI pixel pairs,
    ``Σ_ij R_i R_j W_ij (1 − S_i·S_j) / Σ_ij R_i R_j W_ij = 1 − Σ_k S̃_kᵀ W S̃_k / (Rᵀ W R)`` per image,
    averaged over the batch: in [0, 1] (for S summing to 1 over K), 0 for a constant segmentation
    and ½ for a uniform two-class one; its scale does not depend on pixel count, kernel mass or the
    lattice's scale factor, and it is invariant to a constant colour shift (colours are anchored at
    each image's minimum). Per image its gradient is rloss's times ``1 / (Rᵀ W R)``, so rloss's
    balance (its pCE divided by B) is ``w_norm = w_raw · B · RᵀWR`` against an undivided pCE:
    ≈ 2e-9 · 12 · 65536 · 900 ≈ 1.4 for the published run.

    Call: ``loss(prob, image, roi=None) -> scalar``.
    """

    def __init__(self, sigma_rgb: float = 15.0, sigma_xy: float = 100.0, scale: float = 0.5,
                 mode: str = "normalized", backend: str = "lattice"):
        super().__init__(sigma_rgb, sigma_xy, scale, backend)
        self.mode = _check_choice(mode, MODES, "mode")

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, " + super().extra_repr()

    def forward(self, prob: Tensor, image: Tensor, roi: Tensor | None = None) -> Tensor:
        seg, roi_f, w_seg, w_roi = self._filtered(prob, image, roi, anchor_colours=self.mode == "normalized")
        energy = (seg * w_seg).sum((1, 2))  # (B,) Σ_k S̃_kᵀ W S̃_k
        if self.mode == "raw":
            return -energy.sum() / seg.shape[0]
        mass = (roi_f * w_roi).sum((1, 2))  # (B,) Rᵀ W R
        per_image = torch.where(mass > 0, (mass - energy) / mass.clamp_min(torch.finfo(mass.dtype).tiny),
                                torch.zeros_like(mass))
        return per_image.mean()


class NormalizedCutLoss(_AffinityLoss):
    """Soft normalised cut (Tang et al., CVPR 2018) on the same dense affinity.

    Per image ``Σ_k cut_k / assoc_k`` with ``assoc_k = dᵀ S̃_k``, ``d = W R`` (ROI degree) and
    ``cut_k = assoc_k − S̃_kᵀ W S̃_k = S̃_kᵀ W (R − S̃_k)``; averaged over the batch. Range [0, K);
    0 for a constant segmentation; a class absent from the image contributes 0. Independent of
    the scale of W (lattice or exact), so no mode is needed. Colours are anchored at each image's
    minimum (shift-invariant). Call: ``loss(prob, image, roi=None) -> scalar``.
    """

    def __init__(self, sigma_rgb: float = 15.0, sigma_xy: float = 100.0, scale: float = 0.5,
                 backend: str = "lattice", eps: float = 1e-8):
        super().__init__(sigma_rgb, sigma_xy, scale, backend)
        self.eps = float(eps)

    def forward(self, prob: Tensor, image: Tensor, roi: Tensor | None = None) -> Tensor:
        seg, roi_f, w_seg, w_roi = self._filtered(prob, image, roi, anchor_colours=True)
        assoc = (seg * w_roi).sum(1)  # (B, K) dᵀ S̃_k
        cut = assoc - (seg * w_seg).sum(1)  # (B, K)
        mass = (roi_f * w_roi).sum((1, 2)).unsqueeze(1)  # (B, 1) keeps eps relative to W's scale
        return (cut / (assoc + self.eps * mass + torch.finfo(mass.dtype).tiny)).sum(1).mean()


class SizeLoss(nn.Module):
    """Soft-size penalty (Kervadec et al., MIDL 2018, "naive penalty"), pure torch.

    Soft size ``V_k = Σ_i R_i S_ik`` of each constrained class; with A = Σ_i R_i (H·W without ROI)
    and bounds given as fractions [a, b] of A, the penalty is ``((aA − V)₊² + (V − bA)₊²) / A``
    — Kervadec's formula with pixel bounds aA, bA — averaged over images and constrained classes.
    ``classes=None`` constrains every class except background 0 (the foreground for binary maps).
    Per-image bounds (e.g. ±10 % around a known size) can be passed at call time as ``bounds``
    (B, len(classes), 2) fractions. The image is not used. Call: ``loss(prob, image=None, roi=None, bounds=None)``.
    """

    def __init__(self, lower: float | Sequence[float], upper: float | Sequence[float],
                 classes: Sequence[int] | None = None):
        super().__init__()
        lo = torch.as_tensor(lower, dtype=torch.float64).reshape(-1)
        hi = torch.as_tensor(upper, dtype=torch.float64).reshape(-1)
        if lo.numel() != hi.numel() and min(lo.numel(), hi.numel()) != 1:
            raise InputError(f"lower ({lo.numel()} values) and upper ({hi.numel()} values) must have the same length")
        if (lo < 0).any() or (hi > 1).any() or (lo > hi).any() or not torch.isfinite(torch.cat([lo, hi])).all():
            raise InputError(f"size bounds must be fractions with 0 <= lower <= upper <= 1, "
                             f"got lower={lower}, upper={upper}")
        self.lower, self.upper = lo.tolist(), hi.tolist()
        self.classes = None if classes is None else [int(c) for c in classes]

    def extra_repr(self) -> str:
        return f"lower={self.lower}, upper={self.upper}, classes={self.classes}"

    def forward(self, prob: Tensor, image: Tensor | None = None, roi: Tensor | None = None,
                bounds: Tensor | None = None) -> Tensor:
        prob = as_class_probabilities(prob)
        B, K = prob.shape[:2]
        classes = list(range(1, K)) if self.classes is None else self.classes
        if any(c < 0 or c >= K for c in classes):
            raise InputError(f"SizeLoss classes {classes} out of range for K = {K} probability channels")
        r = _as_roi(roi, prob).reshape(B, 1, -1)
        area = r.sum(2)  # (B, 1)
        size = (prob[:, classes].reshape(B, len(classes), -1) * r).sum(2)  # (B, Kc) soft sizes in pixels
        if bounds is None:
            if max(len(self.lower), len(self.upper)) not in (1, len(classes)):
                raise InputError(f"SizeLoss has {len(self.lower)} lower / {len(self.upper)} upper bounds "
                                 f"for {len(classes)} constrained classes {classes}")
            lo = torch.tensor(self.lower, dtype=prob.dtype, device=prob.device).expand(B, len(classes))
            hi = torch.tensor(self.upper, dtype=prob.dtype, device=prob.device).expand(B, len(classes))
        else:
            if tuple(bounds.shape) != (B, len(classes), 2):
                raise InputError(f"bounds must be (B, classes, 2) = {(B, len(classes), 2)}, got {tuple(bounds.shape)}")
            lo, hi = bounds[..., 0].to(prob), bounds[..., 1].to(prob)
        pen = F.relu(lo * area - size) ** 2 + F.relu(size - hi * area) ** 2
        return (pen / area.clamp_min(1.0)).mean()


class NoRegularizer(nn.Module):
    """The ``"none"`` regulariser: a zero that keeps the graph, device and dtype of ``prob``."""

    def forward(self, prob: Tensor, image: Tensor | None = None, roi: Tensor | None = None) -> Tensor:
        return prob.sum() * 0.0


REGULARIZERS = {"densecrf": DenseCRFLoss, "ncut": NormalizedCutLoss, "size": SizeLoss, "none": NoRegularizer}


def build_regularizer(name: str, **kw) -> nn.Module:
    """Regulariser by name (``"densecrf" | "ncut" | "size" | "none"``) with its keyword parameters."""
    if name not in REGULARIZERS:
        raise InputError(f"unknown regulariser {name!r}; valid names: {', '.join(REGULARIZERS)}")
    try:
        return REGULARIZERS[name](**kw)
    except TypeError as exc:
        raise InputError(f"bad parameters for regulariser {name!r}: {exc}") from None


def default_weight(name: str, mode: str = "normalized") -> float:
    """The regulariser weight used when none is given.

    densecrf: 2e-9 in raw mode (rloss's published value), 1.0 normalised (≈ the same balance
    against a conventional pCE, see :class:`DenseCRFLoss`); size: 1e-2 (Kervadec's tag-bounds
    weight); ncut: 1.0 (no published value — tune it); none: 0.
    """
    if name == "densecrf":
        return 2e-9 if mode == "raw" else 1.0
    return {"ncut": 1.0, "size": 1e-2, "none": 0.0}[name]


def partial_cross_entropy(prob: Tensor, scribble: Tensor, *, ignore_index: int = 255,
                          batch_average: bool = False, class_balanced: bool = False, eps: float = 1e-7,
                          check_values: bool | None = None) -> Tensor:
    """Cross-entropy on labelled pixels only, from probabilities.

    ``prob``: (B, K, H, W) class probabilities or a (B, 1, H, W) / (B, H, W) foreground map;
    ``scribble``: (B, H, W) integer labels in [0, K) (binary: {0, 1}) with ``ignore_index`` for
    unlabelled pixels. Mean over the labelled pixels of the whole batch; 0 (with a graph) when
    none are labelled. ``batch_average=True`` divides once more by B, as rloss does.
    ``class_balanced=True`` (not in rloss, docs/rloss.md §L6.1) averages the per-class means over
    the classes labelled in the batch, so a class with few scribbled pixels weighs as much as one
    with many. ``check_values``: whether labels outside 0..K−1 (other than ``ignore_index``) are
    looked for — True always, False never, None (default) only in a CPU ``scribble``, since on a
    GPU the look is a host-device sync per call (:func:`patchrefinenet.losses.should_check_values`).
    """
    prob = as_class_probabilities(prob)
    B, K, H, W = prob.shape
    if scribble.dim() == 4 and scribble.shape[1] == 1:
        scribble = scribble[:, 0]
    if tuple(scribble.shape) != (B, H, W):
        raise InputError(f"scribble must be (B, H, W) = {(B, H, W)} like prob, got shape {tuple(scribble.shape)}")
    if scribble.is_floating_point():
        raise InputError(f"scribble must hold integer labels (0..{K - 1}, {ignore_index} = unlabelled), "
                         f"got {scribble.dtype}")
    if should_check_values(scribble, check_values):
        raw = scribble.long()
        bad = (raw != ignore_index) & ((raw < 0) | (raw >= K))
        if bool(bad.any()):
            values = torch.unique(raw[bad])[:10].tolist()
            raise InputError(f"scribble holds labels {values} outside 0..{K - 1} (and {ignore_index} = unlabelled)")
    labels = scribble.to(device=prob.device, dtype=torch.long)
    labelled = labels != ignore_index
    picked = prob.gather(1, labels.clamp(0, K - 1).unsqueeze(1))[:, 0]  # (B, H, W)
    nll = -torch.log(picked.clamp_min(eps)) * labelled
    if class_balanced:
        per_class = F.one_hot(labels.clamp(0, K - 1), K).permute(0, 3, 1, 2) * labelled.unsqueeze(1)  # (B, K, H, W)
        counts = per_class.sum((0, 2, 3))
        means = (nll.unsqueeze(1) * per_class).sum((0, 2, 3)) / counts.clamp_min(1)
        loss = means.sum() / (counts > 0).sum().clamp_min(1)
    else:
        loss = nll.sum() / labelled.sum().clamp_min(1)
    return loss / B if batch_average else loss


class RegularizedLoss(nn.Module):
    """pCE + weight · regulariser, the whole scribble-supervised objective in one call.

    ``RegularizedLoss(reg="densecrf", weight=None, **params)(prob, scribble, image, roi=None)``
    returns ``{"loss", "pce", "reg"}`` (``reg`` unweighted). ``params`` go to the regulariser
    (e.g. ``sigma_rgb``, ``sigma_xy``, ``scale``, ``mode``, ``backend``; ``lower``/``upper`` for
    size); ``weight=None`` takes :func:`default_weight`. ``image`` is RGB in [0, 255].
    ``class_balanced`` and ``check_values`` go to :func:`partial_cross_entropy`.
    """

    def __init__(self, reg: str = "densecrf", weight: float | None = None, *, ignore_index: int = 255,
                 batch_average: bool = False, class_balanced: bool = False, check_values: bool | None = None,
                 **params):
        super().__init__()
        self.regularizer = build_regularizer(reg, **params)
        self.reg_name = reg
        self.weight = float(default_weight(reg, params.get("mode", "normalized")) if weight is None else weight)
        self.ignore_index = ignore_index
        self.batch_average = batch_average
        self.class_balanced = class_balanced
        self.check_values = check_values

    def extra_repr(self) -> str:
        return f"reg={self.reg_name!r}, weight={self.weight:g}, ignore_index={self.ignore_index}"

    def partial(self, prob: Tensor, scribble: Tensor) -> Tensor:
        """The pCE term alone, with this loss's settings (e.g. the pCE phase of rloss's two-phase recipe)."""
        return partial_cross_entropy(prob, scribble, ignore_index=self.ignore_index, batch_average=self.batch_average,
                                     class_balanced=self.class_balanced, check_values=self.check_values)

    def forward(self, prob: Tensor, scribble: Tensor, image: Tensor | None,
                roi: Tensor | None = None) -> dict[str, Tensor]:
        pce = self.partial(prob, scribble)
        if self.weight == 0.0 or self.reg_name == "none":
            reg = pce.new_zeros(())
        else:
            if image is None and self.reg_name in ("densecrf", "ncut"):
                raise InputError(f"the {self.reg_name!r} regulariser needs the image (B, C, H, W) in [0, 255]")
            reg = self.regularizer(prob, image, roi)
        return {"loss": pce + self.weight * reg, "pce": pce, "reg": reg}
