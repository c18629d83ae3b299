"""D-LinkNet34: the DeepGlobe road-extraction base model (docs/authors-seg.md §S1.1).

A ResNet-34 encoder, a centre of cascaded dilated convolutions summed with their input, and a
LinkNet decoder whose blocks add the encoder feature of the same scale. Attribute names
reproduce the authors' state_dict (314 entries), so ``dlinknet_weights.th`` loads strictly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet34_Weights, resnet34

from patchrefinenet.models.base import BaseSegmentationModel, init_imagenet_backbone


class DilatedCentre(nn.Module):
    """Four cascaded 3×3 convolutions (dilation 1, 2, 4, 8) whose outputs are summed with the
    input: (B, C, h, w) → (B, C, h, w). The authors' ``Dblock``; biases start at zero."""

    def __init__(self, channels: int):
        super().__init__()
        for i, dilation in enumerate((1, 2, 4, 8), start=1):
            conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
            nn.init.zeros_(conv.bias)
            setattr(self, f"dilate{i}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = F.relu(self.dilate1(x), inplace=True)
        d2 = F.relu(self.dilate2(d1), inplace=True)
        d3 = F.relu(self.dilate3(d2), inplace=True)
        d4 = F.relu(self.dilate4(d3), inplace=True)
        return x + d1 + d2 + d3 + d4


class DecoderBlock(nn.Module):
    """1×1 reduce to in/4 → 3×3 transposed conv (×2 upsampling) → 1×1 to ``out_channels``,
    each followed by BN + ReLU: (B, in, h, w) → (B, out, 2h, 2w)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = in_channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 1)
        self.norm1 = nn.BatchNorm2d(mid)
        self.deconv2 = nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1)
        self.norm3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)), inplace=True)
        x = F.relu(self.norm2(self.deconv2(x)), inplace=True)
        return F.relu(self.norm3(self.conv3(x)), inplace=True)


class DLinkNet34(BaseSegmentationModel):
    """D-LinkNet34 (the authors' ``DinkNet34``): (B, 3, H, W) → (B, 1, H, W) probabilities.

    Input: BGR image scaled to [−1.6, 1.6] (pixel / 255 × 3.2 − 1.6), H and W multiples of 32.
    The ResNet-34 encoder is built without weights; ``pretrained=True`` (or
    :func:`init_imagenet_backbone`) loads torchvision's ImageNet weights from the hub cache.
    """

    display_name = "D-LinkNet34"
    input_multiple = 32
    imagenet_weights = ResNet34_Weights.IMAGENET1K_V1
    backbone_name = "ResNet-34"
    imagenet_prefixes = {"conv1.": "firstconv.", "bn1.": "firstbn.", "layer1.": "encoder1.",
                         "layer2.": "encoder2.", "layer3.": "encoder3.", "layer4.": "encoder4."}

    def __init__(self, pretrained: bool = False):
        super().__init__()
        resnet = resnet34(weights=None)
        self.firstconv = resnet.conv1
        self.firstbn = resnet.bn1
        self.firstrelu = resnet.relu
        self.firstmaxpool = resnet.maxpool
        self.encoder1 = resnet.layer1
        self.encoder2 = resnet.layer2
        self.encoder3 = resnet.layer3
        self.encoder4 = resnet.layer4
        self.dblock = DilatedCentre(512)
        self.decoder4 = DecoderBlock(512, 256)
        self.decoder3 = DecoderBlock(256, 128)
        self.decoder2 = DecoderBlock(128, 64)
        self.decoder1 = DecoderBlock(64, 64)
        self.finaldeconv1 = nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)
        self.finalconv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.finalconv3 = nn.Conv2d(32, 1, 3, padding=1)
        if pretrained:
            init_imagenet_backbone(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.firstmaxpool(self.firstrelu(self.firstbn(self.firstconv(x))))  # (B, 64, H/4, W/4)
        e1 = self.encoder1(x)  # (B, 64, H/4, W/4)
        e2 = self.encoder2(e1)  # (B, 128, H/8, W/8)
        e3 = self.encoder3(e2)  # (B, 256, H/16, W/16)
        e4 = self.dblock(self.encoder4(e3))  # (B, 512, H/32, W/32)
        d4 = self.decoder4(e4) + e3  # (B, 256, H/16, W/16)
        d3 = self.decoder3(d4) + e2  # (B, 128, H/8, W/8)
        d2 = self.decoder2(d3) + e1  # (B, 64, H/4, W/4)
        d1 = self.decoder1(d2)  # (B, 64, H/2, W/2), no skip
        out = F.relu(self.finaldeconv1(d1), inplace=True)  # (B, 32, H, W)
        out = F.relu(self.finalconv2(out), inplace=True)
        return torch.sigmoid(self.finalconv3(out))  # (B, 1, H, W)
