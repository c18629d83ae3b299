"""ResUNet++: the Kvasir-SEG polyp base model (docs/authors-seg.md §S1.4), trained from scratch.

Residual encoder blocks with squeeze-and-excitation, an ASPP bridge, attention-gated decoder
skips and an ASPP head. With the default ``filters`` the attribute names and shapes reproduce
the authors' state_dict (254 entries), so ``resunetplusplus_weights.th`` loads strictly;
narrower ``filters`` give small models for CPU demos and tests.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from data_utils.errors import InputError
from patchrefinenet.models.base import BaseSegmentationModel, init_imagenet_backbone

DEFAULT_FILTERS = (32, 64, 128, 256, 512)


class ResidualConv(nn.Module):
    """Pre-activation residual block: [BN, ReLU, conv3×3 (stride), BN, ReLU, conv3×3] plus a
    conv3×3 (stride) + BN shortcut: (B, in, h, w) → (B, out, h/stride, w/stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.BatchNorm2d(out_channels), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.conv_skip = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class SqueezeExcite(nn.Module):
    """Channel re-weighting: global average pool → Linear C→C/r → ReLU → Linear → sigmoid,
    both linears without bias: (B, C, h, w) → (B, C, h, w). The hidden width is at least 1."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))  # (B, C)
        return x * weights[:, :, None, None]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: three 3×3 convs (dilation 6, 12, 18), each conv → ReLU
    → BN (the authors' order), concatenated → 1×1 conv: (B, in, h, w) → (B, out, h, w)."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (6, 12, 18)):
        super().__init__()
        for i, rate in enumerate(rates, start=1):
            setattr(self, f"aspp_block{i}", nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate),
                nn.ReLU(inplace=True), nn.BatchNorm2d(out_channels)))
        self.output = nn.Conv2d(len(rates) * out_channels, out_channels, 1)
        self.num_blocks = len(rates)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = [getattr(self, f"aspp_block{i}")(x) for i in range(1, self.num_blocks + 1)]
        return self.output(torch.cat(blocks, dim=1))


class AttentionBlock(nn.Module):
    """Attention gate: encoder feature (B, enc, 2h, 2w) and decoder feature (B, dec, h, w) →
    a raw (un-squashed, as the authors) one-channel map that multiplies the decoder feature."""

    def __init__(self, encoder_channels: int, decoder_channels: int, out_channels: int):
        super().__init__()
        self.conv_encoder = nn.Sequential(
            nn.BatchNorm2d(encoder_channels), nn.ReLU(),
            nn.Conv2d(encoder_channels, out_channels, 3, padding=1), nn.MaxPool2d(2, 2))
        self.conv_decoder = nn.Sequential(
            nn.BatchNorm2d(decoder_channels), nn.ReLU(),
            nn.Conv2d(decoder_channels, out_channels, 3, padding=1))
        self.conv_attn = nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Conv2d(out_channels, 1, 1))

    def forward(self, encoder: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
        attn = self.conv_attn(self.conv_encoder(encoder) + self.conv_decoder(decoder))  # (B, 1, h, w)
        return attn * decoder


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class ResUNetPlusPlus(BaseSegmentationModel):
    """ResUNet++ (the authors' ``ResUnetPlusPlus``): (B, C, H, W) → (B, 1, H, W) probabilities.

    Input: BGR image / 255 (no mean/std), 512×512 for the released checkpoint; H and W
    multiples of 8. ``filters`` are the widths of the five levels (authors: 32…512; e.g.
    (8, 16, 32, 64, 128) trains on a CPU). There is no pretrained backbone: ``pretrained=True``
    only logs that.
    """

    display_name = "ResUNet++"
    input_multiple = 8

    def __init__(self, in_channels: int = 3, filters: Sequence[int] = DEFAULT_FILTERS, pretrained: bool = False):
        super().__init__()
        filters = tuple(filters)
        if len(filters) != 5 or not all(isinstance(f, int) and f > 0 for f in filters):
            raise InputError(f"ResUNet++ filters must be 5 positive ints (the authors use {DEFAULT_FILTERS}), "
                             f"got {filters}")
        if not (isinstance(in_channels, int) and in_channels > 0):
            raise InputError(f"ResUNet++ in_channels must be a positive int, got {in_channels!r}")
        self.in_channels = in_channels
        self.filters = filters
        f0, f1, f2, f3, f4 = filters
        self.input_layer = nn.Sequential(
            nn.Conv2d(in_channels, f0, 3, padding=1), nn.BatchNorm2d(f0), nn.ReLU(),
            nn.Conv2d(f0, f0, 3, padding=1))
        self.input_skip = nn.Sequential(nn.Conv2d(in_channels, f0, 3, padding=1))

        self.squeeze_excite1 = SqueezeExcite(f0)
        self.residual_conv1 = ResidualConv(f0, f1, stride=2)
        self.squeeze_excite2 = SqueezeExcite(f1)
        self.residual_conv2 = ResidualConv(f1, f2, stride=2)
        self.squeeze_excite3 = SqueezeExcite(f2)
        self.residual_conv3 = ResidualConv(f2, f3, stride=2)
        self.aspp_bridge = ASPP(f3, f4)

        self.attn1 = AttentionBlock(f2, f4, f4)
        self.up_residual_conv1 = ResidualConv(f4 + f2, f3)
        self.attn2 = AttentionBlock(f1, f3, f3)
        self.up_residual_conv2 = ResidualConv(f3 + f1, f2)
        self.attn3 = AttentionBlock(f0, f2, f2)
        self.up_residual_conv3 = ResidualConv(f2 + f0, f1)
        self.aspp_out = ASPP(f1, f0)
        self.output_layer = nn.Sequential(nn.Conv2d(f0, 1, 1), nn.Sigmoid())
        if pretrained:
            init_imagenet_backbone(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x1 = self.input_layer(x) + self.input_skip(x)  # (B, f0, H, W)
        x2 = self.residual_conv1(self.squeeze_excite1(x1))  # (B, f1, H/2, W/2)
        x3 = self.residual_conv2(self.squeeze_excite2(x2))  # (B, f2, H/4, W/4)
        x4 = self.residual_conv3(self.squeeze_excite3(x3))  # (B, f3, H/8, W/8)
        x5 = self.aspp_bridge(x4)  # (B, f4, H/8, W/8)
        x6 = self.up_residual_conv1(torch.cat([_upsample2(self.attn1(x3, x5)), x3], dim=1))  # (B, f3, H/4, W/4)
        x7 = self.up_residual_conv2(torch.cat([_upsample2(self.attn2(x2, x6)), x2], dim=1))  # (B, f2, H/2, W/2)
        x8 = self.up_residual_conv3(torch.cat([_upsample2(self.attn3(x1, x7)), x1], dim=1))  # (B, f1, H, W)
        return self.output_layer(self.aspp_out(x8))  # (B, 1, H, W)
