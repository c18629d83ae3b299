"""Base-model losses: hand-computed values, batch pooling, the empty-map guard, float32
computation, finite gradients and the registry."""
from __future__ import annotations

import math

import pytest
import torch

from data_utils.errors import InputError
from patchrefinenet.seg_losses import (SEG_LOSSES, DiceBCELoss, EdgeSaliencyLoss, build_seg_loss,
                                       laplacian_edges)


def t(rows) -> torch.Tensor:
    """A (1, 1, H, W) float32 map from nested lists."""
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def entropy(e: float) -> float:
    return -(e * math.log(e) + (1 - e) * math.log(1 - e))


# ---- dice + BCE ---------------------------------------------------------------------------

def test_dice_bce_hand_computed_2x2():
    p, y = t([[0.8, 0.2], [0.6, 0.4]]), t([[1, 0], [0, 1]])
    bce = -(math.log(0.8) + math.log(1 - 0.2) + math.log(1 - 0.6) + math.log(0.4)) / 4
    dice = 2 * (0.8 + 0.4) / (2 + 2.0)
    assert DiceBCELoss()(p, y).item() == pytest.approx(bce + 1 - dice, rel=1e-6)


def test_dice_is_pooled_over_the_batch_not_averaged_per_image():
    p = torch.full((2, 1, 1, 2), 0.5)
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(2, 1, 1, 2)
    pooled_dice = 2 * (0.5 + 1.0) / (3 + 2)  # 0.6; the per-image mean would be (0.5 + 2/3) / 2
    expected = math.log(2) + 1 - pooled_dice
    assert DiceBCELoss()(p, y).item() == pytest.approx(expected, rel=1e-6)


def test_dice_bce_empty_prediction_of_empty_target_is_zero_not_nan():
    zeros = torch.zeros(2, 1, 4, 4)
    assert DiceBCELoss()(zeros, zeros).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_bce_perfect_prediction_is_the_minimum():
    y = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    loss = DiceBCELoss()
    assert loss(y, y).item() == pytest.approx(0.0, abs=1e-6)
    for shift in (0.01, 0.2):
        assert loss((y - shift).abs(), y).item() > loss(y, y).item()


# ---- edge-saliency --------------------------------------------------------------------------

def test_laplacian_edges_hand_computed():
    edges = laplacian_edges(t([[0, 0, 0], [0, 1, 0], [0, 0, 0]]))
    # centre: 8·1; every neighbour sees the centre as one −1 → tanh < 0 → ReLU 0
    assert edges[0, 0, 1, 1].item() == pytest.approx(math.tanh(8.0))
    assert edges.sum().item() == pytest.approx(math.tanh(8.0))
    # zero padding: a constant map has edges along its border only
    ones = laplacian_edges(torch.ones(1, 1, 3, 3))
    assert ones[0, 0, 1, 1].item() == 0.0
    assert ones[0, 0, 0, 0].item() == pytest.approx(math.tanh(8.0 - 3.0))
    assert ones[0, 0, 0, 1].item() == pytest.approx(math.tanh(8.0 - 5.0))


def test_edge_saliency_hand_computed_3x3():
    p = t([[0.1, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.1]])
    y = t([[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    eps = 1e-15
    wbce = (-1.12 * math.log(0.9 + eps) - 8 * math.log(1 - 0.1 + eps)) / 9
    # prediction edges: centre 8·0.9 − 8·0.1 = 6.4; off-centre values are ≤ 0 → 0 (as the GT's)
    q, e = math.tanh(6.4), math.tanh(8.0)
    edge = -(e * math.log(q) + (1 - e) * math.log(1 - q)) / 9
    assert EdgeSaliencyLoss()(p, y).item() == pytest.approx(0.7 * wbce + 0.3 * edge, rel=1e-5)


def test_edge_saliency_perfect_prediction_is_the_minimum():
    y = torch.ones(1, 1, 3, 3)
    loss = EdgeSaliencyLoss()
    best = loss(y, y).item()
    # what is left is the entropy of the soft GT edge map: with zero padding the corners see
    # 8 − 3 = 5, the side pixels 8 − 5 = 3, the centre 0
    assert best == pytest.approx(0.3 * (4 * entropy(math.tanh(5.0)) + 4 * entropy(math.tanh(3.0))) / 9, rel=1e-3)
    g = torch.Generator().manual_seed(0)
    for target in (y, t([[0, 0, 0], [0, 1, 0], [0, 0, 0]])):
        best = loss(target, target).item()
        for scale in (0.02, 0.1, 0.3):
            noisy = (target + scale * torch.randn(target.shape, generator=g)).clamp(0.001, 0.999)
            assert loss(noisy, target).item() > best


def test_edge_saliency_weights_foreground_errors_by_1_12():
    saliency_only = EdgeSaliencyLoss(alpha=1.0)  # drop the edge term to isolate the weighting
    fg_miss = saliency_only(torch.full((1, 1, 2, 2), 0.3), torch.ones(1, 1, 2, 2))
    bg_miss = saliency_only(torch.full((1, 1, 2, 2), 0.7), torch.zeros(1, 1, 2, 2))
    assert fg_miss.item() == pytest.approx(-1.12 * math.log(0.3), rel=1e-6)
    assert bg_miss.item() == pytest.approx(-1.0 * math.log(0.3), rel=1e-6)


# ---- both -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dice_bce", "edge_saliency"])
def test_gradients_are_finite_even_at_saturated_probabilities(name):
    g = torch.Generator().manual_seed(0)
    p = torch.rand(2, 1, 8, 8, generator=g)
    p[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.0, 1.0])  # exact 0/1 against both labels
    y = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    y[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 1.0, 0.0])
    p.requires_grad_(True)
    value = build_seg_loss(name)(p, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["dice_bce", "edge_saliency"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(name, dtype):
    g = torch.Generator().manual_seed(0)
    p = torch.rand(2, 1, 8, 8, generator=g).clamp(0.01, 0.99)
    y = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).to(torch.uint8)
    loss = build_seg_loss(name)
    low = loss(p.to(dtype), y)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(loss(p.to(dtype).float(), y.float()).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["dice_bce", "edge_saliency"])
def test_mismatched_shapes_are_rejected(name):
    with pytest.raises(InputError, match="same shape"):
        build_seg_loss(name)(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5))


def test_edge_saliency_needs_one_channel_maps():
    with pytest.raises(InputError, match=r"\(B, 1, H, W\)"):
        EdgeSaliencyLoss()(torch.rand(2, 4, 4), torch.rand(2, 4, 4))


def test_registry_builds_losses_and_lists_valid_names():
    assert isinstance(build_seg_loss("dice_bce"), DiceBCELoss)
    assert isinstance(build_seg_loss("edge_saliency", alpha=0.5), EdgeSaliencyLoss)
    with pytest.raises(InputError, match="'focal'.*dice_bce, edge_saliency"):
        build_seg_loss("focal")
    with pytest.raises(KeyError, match="dice_bce, edge_saliency"):
        SEG_LOSSES["focal"]
