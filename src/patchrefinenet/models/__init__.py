"""Networks: the base segmentation models (a name → constructor registry) and PRN (:mod:`.prn`).

Every base model maps a normalised image batch (B, 3, H, W) to probabilities (B, 1, H, W),
exposes ``input_multiple`` (H and W must be multiples of it) and ``forward_with_aux`` (adds
the auxiliary training term: PFANet's channel-attention regulariser, 0 for the others).
Constructors never download; ImageNet backbones are loaded on request by
:func:`init_imagenet_backbone` or ``pretrained=True``.
"""
from __future__ import annotations

import inspect

from torch import nn

from data_utils.errors import InputError
from patchrefinenet.models.base import BaseSegmentationModel, imagenet_cache_path, init_imagenet_backbone
from patchrefinenet.models.dlinknet import DLinkNet34
from patchrefinenet.models.pfanet import PFANet
from patchrefinenet.models.prn import PRN, PRNConfig
from patchrefinenet.models.resunetplusplus import ResUNetPlusPlus


class _Registry(dict):
    """A dict whose KeyError for an unknown name lists the valid names."""

    def __missing__(self, name):
        raise KeyError(f"unknown base model {name!r}; valid names: {', '.join(sorted(self))}")


BASE_MODELS: dict[str, type[BaseSegmentationModel]] = _Registry({
    "dlinknet": DLinkNet34,
    "pfanet": PFANet,
    "resunetplusplus": ResUNetPlusPlus,
})


def build_base_model(name: str, **kwargs) -> nn.Module:
    """Construct the base model registered as ``name`` (``dlinknet``, ``pfanet``,
    ``resunetplusplus``) with constructor ``kwargs`` (e.g. ``pretrained=True``, or
    ``filters=(8, 16, 32, 64, 128)`` for ResUNet++). Nothing is downloaded unless asked."""
    if name not in BASE_MODELS:
        raise InputError(f"unknown base model {name!r} (--model / --base_model); valid names: "
                         f"{', '.join(sorted(BASE_MODELS))}")
    cls = BASE_MODELS[name]
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InputError(f"base model {name!r} does not take {unknown}; it accepts {list(accepted)}")
    return cls(**kwargs)


__all__ = ["BASE_MODELS", "BaseSegmentationModel", "DLinkNet34", "PFANet", "PRN", "PRNConfig", "ResUNetPlusPlus",
           "build_base_model", "imagenet_cache_path", "init_imagenet_backbone"]
