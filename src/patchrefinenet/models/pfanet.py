"""PFANet: the DUTS saliency base model (docs/authors-seg.md §S1.3; "Pyramid Feature Attention Network", CVPR 2019).

VGG-16 features feed two paths: context-aware pyramid features (CPFE) on conv3_3/4_3/5_3,
re-weighted by channel attention, give the high-level map H; conv1_2/conv2_2 give the low-level
map L, re-weighted by a spatial attention computed from H. Attribute names reproduce the
state_dict of the released checkpoint (115 entries).

The five VGG taps are taken by walking the ``vgg16`` Sequential inside ``forward`` (no hooks,
no globals), so concurrent forwards of different instances cannot interfere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VGG16_Weights

from patchrefinenet.models.base import BaseSegmentationModel, init_imagenet_backbone

# VGG-16 "D" configuration: channels of each 3×3 conv, "M" for a 2×2 max-pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# Indices of the ReLUs after conv1_2, conv2_2, conv3_3, conv4_3, conv5_3 in the 31-slot Sequential.
_TAPS = (3, 8, 15, 22, 29)


def vgg16_features() -> nn.Sequential:
    """torchvision's VGG-16 ``features`` layout (31 slots, in-place ReLUs), randomly initialised
    like torchvision (Kaiming-normal fan-out convs, zero biases)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in _VGG16_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        conv = nn.Conv2d(in_ch, item, 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
        in_ch = item
    return nn.Sequential(*layers)


class CPFE(nn.Module):
    """Context-aware pyramid feature extraction: a 1×1 and three dilated 3×3 convs (rates 3, 5,
    7), 32 channels each, concatenated → BN → ReLU: (B, C, h, w) → (B, 128, h, w)."""

    def __init__(self, in_channels: int, branch_channels: int = 32):
        super().__init__()
        self.conv_1_1 = nn.Conv2d(in_channels, branch_channels, 1, bias=False)
        self.conv_dil_3 = nn.Conv2d(in_channels, branch_channels, 3, padding=3, dilation=3, bias=False)
        self.conv_dil_5 = nn.Conv2d(in_channels, branch_channels, 3, padding=5, dilation=5, bias=False)
        self.conv_dil_7 = nn.Conv2d(in_channels, branch_channels, 3, padding=7, dilation=7, bias=False)
        self.bn = nn.BatchNorm2d(4 * branch_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.conv_1_1(x), self.conv_dil_3(x), self.conv_dil_5(x), self.conv_dil_7(x)]
        return F.relu(self.bn(torch.cat(branches, dim=1)))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation style weights: (B, C, h, w) → (weights (B, C, 1, 1) in (0, 1),
    their mean as a scalar activity regulariser that the training objective adds)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.linear_1 = nn.Linear(channels, channels // reduction)
        self.linear_2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, C)
        weights = torch.sigmoid(self.linear_2(F.relu(self.linear_1(weights))))  # (B, C)
        return weights[:, :, None, None], weights.mean()


class SpatialAttention(nn.Module):
    """Two separable k×1 / 1×k branches, summed → sigmoid: (B, C, h, w) → (B, 1, h, w).

    Both branches end in ReLU (as the authors), so the attention never drops below 0.5.
    """

    def __init__(self, in_channels: int, kernel_size: int = 9, mid_channels: int = 32):
        super().__init__()
        pad = kernel_size // 2
        self.grp1_conv1k = nn.Conv2d(in_channels, mid_channels, (1, kernel_size), padding=(0, pad))
        self.grp1_bn1 = nn.BatchNorm2d(mid_channels)
        self.grp1_convk1 = nn.Conv2d(mid_channels, 1, (kernel_size, 1), padding=(pad, 0))
        self.grp1_bn2 = nn.BatchNorm2d(1)
        self.grp2_convk1 = nn.Conv2d(in_channels, mid_channels, (kernel_size, 1), padding=(pad, 0))
        self.grp2_bn1 = nn.BatchNorm2d(mid_channels)
        self.grp2_conv1k = nn.Conv2d(mid_channels, 1, (1, kernel_size), padding=(0, pad))
        self.grp2_bn2 = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g1 = F.relu(self.grp1_bn1(self.grp1_conv1k(x)))
        g1 = F.relu(self.grp1_bn2(self.grp1_convk1(g1)))
        g2 = F.relu(self.grp2_bn1(self.grp2_convk1(x)))
        g2 = F.relu(self.grp2_bn2(self.grp2_conv1k(g2)))
        return torch.sigmoid(g1 + g2)


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class PFANet(BaseSegmentationModel):
    """PFANet (the authors' ``SODModel``): (B, 3, H, W) → (B, 1, H, W) saliency probabilities.

    Input: RGB / 255 normalised with the ImageNet mean and std, 256×256 for the released
    checkpoint; H and W multiples of 16. ``forward`` returns the probability map only;
    :meth:`forward_with_aux` also returns the channel-attention regulariser for training.
    The VGG-16 backbone is built without weights; ``pretrained=True`` (or
    :func:`init_imagenet_backbone`) loads torchvision's ImageNet weights from the hub cache.
    """

    display_name = "PFANet"
    input_multiple = 16
    imagenet_weights = VGG16_Weights.IMAGENET1K_V1
    backbone_name = "VGG-16"
    imagenet_prefixes = {"features.": "vgg16."}

    def __init__(self, pretrained: bool = False):
        super().__init__()
        self.vgg16 = vgg16_features()
        self.cpfe_conv3_3 = CPFE(256)
        self.cpfe_conv4_3 = CPFE(512)
        self.cpfe_conv5_3 = CPFE(512)
        self.cha_att = ChannelAttention(3 * 128)
        self.hl_conv1 = nn.Conv2d(3 * 128, 64, 3, padding=1)
        self.hl_bn1 = nn.BatchNorm2d(64)
        self.ll_conv_1 = nn.Conv2d(64, 64, 3, padding=1)
        self.ll_bn_1 = nn.BatchNorm2d(64)
        self.ll_conv_2 = nn.Conv2d(128, 64, 3, padding=1)
        self.ll_bn_2 = nn.BatchNorm2d(64)
        self.ll_conv_3 = nn.Conv2d(128, 64, 3, padding=1)
        self.ll_bn_3 = nn.BatchNorm2d(64)
        self.spa_att = SpatialAttention(64)
        self.ff_conv_1 = nn.Conv2d(128, 1, 3, padding=1)
        if pretrained:
            init_imagenet_backbone(self)

    def _vgg_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Post-ReLU outputs of conv1_2, conv2_2, conv3_3, conv4_3, conv5_3 (strides 1…16)."""
        taps = []
        for index, layer in enumerate(self.vgg16):
            x = layer(x)
            if index in _TAPS:
                taps.append(x)
                if index == _TAPS[-1]:
                    break  # the final max-pool's output is never used
        return taps

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities (B, 1, H, W), channel-attention regulariser (scalar))."""
        self.check_input(x)
        h, w = x.shape[-2:]
        full, quarter = (h, w), (h // 4, w // 4)
        c1, c2, c3, c4, c5 = self._vgg_taps(x)  # 64@1, 128@1/2, 256@1/4, 512@1/8, 512@1/16

        high = torch.cat([self.cpfe_conv3_3(c3),
                          _upsample(self.cpfe_conv4_3(c4), quarter),
                          _upsample(self.cpfe_conv5_3(c5), quarter)], dim=1)  # (B, 384, H/4, W/4)
        weights, regulariser = self.cha_att(high)
        high = F.relu(self.hl_bn1(self.hl_conv1(high * weights)))  # (B, 64, H/4, W/4)
        high = _upsample(high, full)  # (B, 64, H, W)

        low1 = F.relu(self.ll_bn_1(self.ll_conv_1(c1)))  # (B, 64, H, W)
        low2 = _upsample(F.relu(self.ll_bn_2(self.ll_conv_2(c2))), full)  # (B, 64, H, W)
        low = F.relu(self.ll_bn_3(self.ll_conv_3(torch.cat([low1, low2], dim=1))))  # (B, 64, H, W)
        low = low * self.spa_att(high)

        prob = torch.sigmoid(self.ff_conv_1(torch.cat([low, high], dim=1)))  # (B, 1, H, W)
        return prob, regulariser

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]
