"""PRN losses (docs/authors-refine.md §R6): hand-computed values, the combination, float32 under autocast, a training step,
and the authors' swapped argument order with its non-finite gradients."""
from __future__ import annotations

import math

import pytest
import torch

from data_utils.errors import InputError
from patchrefinenet.losses import PRNLoss, RegionSpecificLoss, RegularizationLoss, laplacian_edges
from patchrefinenet.models.prn import PRN, PRNConfig

LN_EPS = math.log(1e-15)  # -34.5388


def bce(u: float, v: float) -> float:
    return -(v * math.log(u) + (1 - v) * math.log(1 - u))


def test_laplacian_edges_by_hand():
    z = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    e = laplacian_edges(z)[0, 0]
    # (0,0): 8·1 = 8 -> tanh 8; other pixels: −1 (neighbour of the 1) -> ReLU(tanh(−1)) = 0
    assert e[0, 0].item() == pytest.approx(math.tanh(8.0), abs=1e-6)
    assert e[0, 1] == e[1, 0] == e[1, 1] == 0


def test_region_specific_loss_by_hand():
    pred = torch.full((1, 1, 2, 2), 0.5)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # focal: BCE = ln 2 everywhere, p_t = 0.5 -> 0.75·0.25·ln 2
    focal = 0.75 * 0.25 * math.log(2)
    # edges: pred: 8·0.5 − 3·0.5 = 2.5 at every pixel (3 neighbours inside a 2×2 image)
    u = math.tanh(2.5)
    edge = (bce(u, math.tanh(8.0)) + 3 * bce(u, 0.0)) / 4
    loss = RegionSpecificLoss()
    f, e = loss.terms(pred, target)
    assert f.item() == pytest.approx(focal, rel=1e-5)
    assert e.item() == pytest.approx(edge, rel=1e-5)
    assert loss(pred, target).item() == pytest.approx(0.7 * focal + 0.3 * edge, rel=1e-5)


def test_regularization_loss_by_hand_and_saturated_predictions():
    pred = torch.tensor([[[[0.2, 0.9], [0.0, 1.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    expected = (-1.12 * math.log(0.2) - math.log(0.1)) / 4  # the exact 0/1 pixels are right: loss 0
    assert RegularizationLoss()(pred, target).item() == pytest.approx(expected, rel=1e-5)
    wrong = torch.tensor([[[[1.0, 0.0]]]])  # saturated and wrong: ln ε, never ln 0
    value = RegularizationLoss()(wrong, torch.tensor([[[[0.0, 1.0]]]]))
    assert value.item() == pytest.approx(-(LN_EPS + 1.12 * LN_EPS) / 2, rel=1e-5)


def test_prn_loss_combination():
    torch.manual_seed(0)
    pg, pl = torch.rand(2, 2, 1, 8, 8)
    y1, y2 = (torch.rand(2, 2, 1, 8, 8) > 0.5).float()
    rs, reg = RegionSpecificLoss(), RegularizationLoss()
    out = PRNLoss()(pg, pl, y1, y2)
    rs_mix = 0.5 * rs(pg, y1) + 0.5 * rs(pl, y1)
    reg_mix = 0.5 * reg(pg, y2) + 0.5 * reg(pl, y2)
    torch.testing.assert_close(out["loss"], 0.7 * rs_mix + 0.3 * reg_mix)
    torch.testing.assert_close(out["rs"], rs_mix)
    torch.testing.assert_close(out["reg_local"], reg(pl, y2))
    single = PRNLoss()(pg, None, y1, y2)
    torch.testing.assert_close(single["loss"], 0.7 * rs(pg, y1) + 0.3 * reg(pg, y2))
    assert "rs_local" not in single and not single["rs"].requires_grad


def test_losses_compute_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    p = torch.rand(1, 1, 16, 16).to(torch.bfloat16)
    y = (torch.rand(1, 1, 16, 16) > 0.5).to(torch.bfloat16)
    reference = PRNLoss()(p.float(), p.float().flip(-1), y.float(), y.float())["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = PRNLoss()(p, p.flip(-1), y, y)["loss"]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference)
    assert RegularizationLoss()(p.double(), y.double()).dtype == torch.float64


@pytest.mark.parametrize(
    "pred,target,fragment",
    [
        (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 4), "same shape"),
        (torch.rand(1, 8, 8), torch.rand(1, 8, 8), "(B, 1, H, W)"),
        (torch.rand(1, 1, 8, 8) * 3, torch.rand(1, 1, 8, 8), "prediction must be"),
        (torch.rand(1, 1, 8, 8), torch.full((1, 1, 8, 8), 255.0), "target must be"),
    ],
)
def test_bad_inputs(pred, target, fragment):
    for loss in (RegionSpecificLoss(), RegularizationLoss()):
        with pytest.raises(InputError) as e:
            loss(pred, target)
        assert fragment in str(e.value)


def _toy_batch():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    blob = (((yy - 14) ** 2 + (xx - 18) ** 2) < 80).float()[None, None].repeat(2, 1, 1, 1)
    return x, blob, blob.roll(2, dims=-1)


def _shift(params: list[torch.Tensor], direction: list[torch.Tensor], t: float) -> None:
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(d, alpha=t)


def _loss_along(model, criterion, batch, direction, t: float) -> float:
    """The loss at θ + t·direction (θ restored afterwards)."""
    params = list(model.parameters())
    _shift(params, direction, t)
    with torch.no_grad():
        value = criterion(*model(batch[0]), *batch[1:])["loss"].item()
    _shift(params, direction, -t)
    return value


def _float64_setup(edge_weight: bool):
    torch.manual_seed(0)
    model = PRN(PRNConfig(grid=2, width=4)).double().train()
    batch = tuple(t.double() for t in _toy_batch())
    criterion = PRNLoss()
    if not edge_weight:  # α_rst = 1 drops the edge BCE, whose log clamp at ReLU kinks makes the loss jump
        criterion.rs.alpha_rst = 1.0
    loss = criterion(*model(batch[0]), *batch[1:])["loss"]
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    return model, criterion, batch, loss.item(), grads


def test_prn_loss_gradient_matches_a_finite_difference():
    """On the smooth part of the objective (focal + weighted BCE), backward is the true gradient:
    the central difference along −g equals −‖g‖². float64, so no CPU or BLAS can change the verdict."""
    model, criterion, batch, _, grads = _float64_setup(edge_weight=False)
    descent = [-g for g in grads]
    sq_norm = sum(float((g * g).sum()) for g in grads)
    eps = 1e-8 / sq_norm ** 0.5  # a parameter change of norm 1e-8: too short to cross a ReLU kink
    slope = (_loss_along(model, criterion, batch, descent, eps)
             - _loss_along(model, criterion, batch, descent, -eps)) / (2 * eps)
    assert slope == pytest.approx(-sq_norm, rel=1e-3)


def test_full_prn_loss_has_finite_gradients_and_a_short_step_along_minus_grad_lowers_it():
    """Every parameter gets a finite gradient, and backtracking along −g (Armijo, halving
    from a parameter change of norm 0.1) finds a lower loss. A fixed step (SGD at lr 0.05) need
    not lower it: the edge term jumps where ReLU(tanh(·)) leaves 0, and float32 rounding differs
    between CPUs, so the old fixed-step test passed on some machines only."""
    model, criterion, batch, before, grads = _float64_setup(edge_weight=True)
    assert all(torch.isfinite(g).all() for g in grads)
    descent = [-g for g in grads]
    norm = sum(float((g * g).sum()) for g in grads) ** 0.5
    steps = [0.1 / norm / 2 ** k for k in range(30)]
    assert any(_loss_along(model, criterion, batch, descent, t) < before for t in steps)


def test_upstream_order_gives_l1_like_values_and_non_finite_gradients():
    """The authors' call order (docs/authors-refine.md §R6.2–§R6.3): finite forward, ±inf/NaN backward."""
    _, y1, y2 = _toy_batch()
    p = torch.rand(2, 1, 32, 32, requires_grad=True)
    out = PRNLoss(upstream_order=True)(p, None, y1, y2)
    assert torch.isfinite(out["loss"])
    d = (y1 - p).abs().detach()
    focal = (0.75 * (1 - torch.exp(-100 * d)) ** 2 * 100 * d).mean()  # BCE(y, p) = 100·|y − p|
    assert RegionSpecificLoss().terms(y1, p)[0].item() == pytest.approx(focal.item(), rel=1e-4)
    reg = torch.where(y2 == 1, -LN_EPS * (1 - p), -1.12 * LN_EPS * p).mean()
    assert out["reg"].item() == pytest.approx(reg.item(), rel=1e-4)
    out["loss"].backward()
    assert not torch.isfinite(p.grad).any()

    model = PRN(PRNConfig(grid=0, width=4)).train()
    x, _, _ = _toy_batch()
    PRNLoss(upstream_order=True)(*model(x), y1, y2)["loss"].backward()
    assert all(not torch.isfinite(q.grad).all() for q in model.parameters())  # every tensor (126 in P0)
