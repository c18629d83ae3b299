"""What the three base segmentation models share: the input check, the ``(prob, aux)`` training
interface and opt-in ImageNet weights for the backbone.

Constructors never download anything. ImageNet weights are loaded only by
:func:`init_imagenet_backbone` (or ``pretrained=True``), through torch's hub cache.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torchvision.models import WeightsEnum

from data_utils.errors import InputError

log = logging.getLogger("patchrefinenet")

# What a failed download raises inside torch.hub (URLError, HTTPError, socket and SSL errors
# are OSErrors; a hash mismatch is a RuntimeError; a truncated transfer fails to unpickle).
_FETCH_ERRORS = (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError)


class BaseSegmentationModel(nn.Module):
    """A base segmentation network: ``forward(x)`` maps a normalised image batch (B, C, H, W)
    to foreground probabilities (B, 1, H, W) in (0, 1).

    Subclasses set ``display_name``, ``input_multiple`` (H and W must be multiples of it) and,
    when they have an ImageNet backbone, ``imagenet_weights`` (the torchvision weights) and
    ``imagenet_prefixes`` (torchvision state_dict prefix → our prefix).
    """

    display_name: ClassVar[str] = "base model"
    input_multiple: ClassVar[int] = 1
    imagenet_weights: ClassVar[WeightsEnum | None] = None
    backbone_name: ClassVar[str] = ""
    imagenet_prefixes: ClassVar[dict[str, str]] = {}

    in_channels: int = 3

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` unless ``x`` is a float (B, in_channels, H, W) batch whose H
        and W are positive multiples of ``input_multiple``."""
        name, c, m = self.display_name, self.in_channels, self.input_multiple
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{name} expects a torch.Tensor of shape (B, {c}, H, W), got {type(x).__name__}")
        if x.dim() != 4:
            raise InputError(f"{name} expects a 4-D batch (B, {c}, H, W), got shape {tuple(x.shape)}; "
                             "add the batch axis with x[None] for a single image")
        if x.shape[1] != c:
            raise InputError(f"{name} expects {c} channels first (B, {c}, H, W), got shape {tuple(x.shape)}; "
                             "an HWC image needs x.permute(0, 3, 1, 2)")
        if not x.is_floating_point():
            raise InputError(f"{name} expects a normalised floating-point image, got dtype {x.dtype}; "
                             "convert with x.float() and normalise as the dataset config says")
        h, w = x.shape[-2:]
        if h % m or w % m or h == 0 or w == 0:
            valid_h, valid_w = max(m, -(-h // m) * m), max(m, -(-w // m) * m)
            raise InputError(f"{name} needs H and W divisible by {m}, got {h}×{w}; "
                             f"resize or pad to {valid_h}×{valid_w}")

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities (B, 1, H, W), auxiliary training term (scalar)) — the term is 0 here;
        PFANet returns its channel-attention regulariser, which the training objective adds."""
        return self(x), x.new_zeros(())


def imagenet_cache_path(weights: WeightsEnum) -> Path:
    """Where torch's hub cache keeps (or expects) the file of ``weights``:
    ``torch.hub.get_dir()/checkpoints/<file>`` (the root follows ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def init_imagenet_backbone(model: BaseSegmentationModel, progress: bool = True) -> BaseSegmentationModel:
    """Load the torchvision ImageNet-1k weights into ``model``'s backbone (in place) and return it.

    D-LinkNet34 gets ResNet-34 ``IMAGENET1K_V1`` (``resnet34-b627a593.pth``), PFANet VGG-16
    ``IMAGENET1K_V1`` (``vgg16-397923af.pth``); ResUNet++ has no backbone, so this only logs.
    The file is read from torch's hub cache and downloaded there when missing. Offline, an
    :class:`InputError` says where to place the file or to pass ``--no-pretrained``.
    """
    weights = model.imagenet_weights
    if weights is None:
        log.info("%s has no ImageNet backbone (the authors train it from scratch); nothing to load",
                 model.display_name)
        return model
    url = weights.url
    cached = imagenet_cache_path(weights)
    was_cached = cached.is_file()
    try:
        source = torch.hub.load_state_dict_from_url(
            url, model_dir=str(cached.parent), map_location="cpu", progress=progress,
            check_hash=True, file_name=cached.name, weights_only=True)
    except (Exception if was_cached else _FETCH_ERRORS) as exc:  # a damaged file fails in many ways
        what = f"the ImageNet weights of {model.display_name}'s {model.backbone_name} backbone"
        if was_cached:
            raise InputError(f"cannot read {what} from {cached} ({type(exc).__name__}: {exc}); delete the "
                             f"file to download it again, replace it with a good copy of {url}, or pass "
                             "--no-pretrained to start from random weights") from exc
        raise InputError(f"cannot download {what} from {url} ({type(exc).__name__}: {exc}). Without network "
                         f"access place that file at {cached} (torch's hub cache; its root follows "
                         "$TORCH_HOME), or pass --no-pretrained to start from random weights") from exc
    _load_backbone(model, source, cached)
    log.info("loaded ImageNet weights (%s) into %s's %s backbone from %s",
             weights, model.display_name, model.backbone_name, cached)
    return model


def _load_backbone(model: BaseSegmentationModel, source: dict, path: Path) -> None:
    """Rename torchvision keys to ours and load them, insisting on a complete, well-shaped backbone."""
    renamed = {}
    for key, value in source.items():
        for src, dst in model.imagenet_prefixes.items():
            if key.startswith(src):
                renamed[dst + key[len(src):]] = value
    own = model.state_dict()
    prefixes = tuple(model.imagenet_prefixes.values())
    # Old torchvision files predate BatchNorm's num_batches_tracked; its absence is harmless.
    expected = [k for k in own if k.startswith(prefixes) and not k.endswith("num_batches_tracked")]
    missing = [k for k in expected if k not in renamed]
    unexpected = [k for k in renamed if k not in own]
    wrong_shape = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in renamed.items()
                   if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong_shape:
        raise InputError(f"{path} does not hold {model.backbone_name} ImageNet weights: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shapes {wrong_shape[:5]}; delete it so the right "
                         "file is downloaded, or pass --no-pretrained")
    model.load_state_dict(renamed, strict=False)
