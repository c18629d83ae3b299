"""Per-application BatchNorm statistics in PRN's recurrent blocks (PRNConfig.step_bn)."""
from __future__ import annotations

import torch

from patchrefinenet.models.prn import PRN, PRNConfig
from patchrefinenet.models.prn_blocks import PatchBatchNorm2d


def test_step_bn_adds_buffers_only_to_the_recurrent_norms_and_keeps_the_authors_keys():
    plain, steps = PRN(PRNConfig(grid=2, width=4)), PRN(PRNConfig(grid=2, width=4, step_bn=True))
    extra = [k for k in steps.state_dict() if k not in plain.state_dict()]
    assert [k for k in steps.state_dict() if k in plain.state_dict()] == list(plain.state_dict())
    assert extra and all(k.endswith((".step_mean", ".step_var")) and ".RCNN." in k for k in extra)
    assert all(steps.state_dict()[k].shape[0] == 3 for k in extra)


def _train_once(model: PRN, x: torch.Tensor) -> torch.Tensor:
    for m in model.modules():
        if isinstance(m, PatchBatchNorm2d):
            m.momentum = 1.0  # running statistics := this batch's statistics
    model.train()
    with torch.no_grad():
        return model(x)[0]


def test_eval_with_step_statistics_reproduces_the_training_normalisation():
    """After one training forward with momentum 1, eval mode should normalise as that forward did.
    With one running average per BN (shared by its three applications) it cannot; with step
    statistics it does, up to the n/(n−1) of the unbiased variance (small for 8 maps of 64²)."""
    torch.manual_seed(0)
    x = torch.rand(8, 1, 64, 64)
    outs = {}
    for step_bn in (False, True):
        torch.manual_seed(1)
        model = PRN(PRNConfig(grid=0, width=4, step_bn=step_bn))
        train_out = _train_once(model, x)
        with torch.no_grad():
            outs[step_bn] = (model.eval()(x)[0] - train_out).abs().max().item()
    assert outs[True] < 0.15
    assert outs[False] > 2 * outs[True]


def test_step_rows_are_updated_per_application():
    torch.manual_seed(0)
    model = PRN(PRNConfig(grid=2, width=4, step_bn=True)).train()
    with torch.no_grad():
        model(torch.rand(2, 1, 32, 32))
    bn = model.encoding.RRCNN1.RCNN[0].conv[1]
    assert not torch.allclose(bn.step_mean[0], bn.step_mean[1])
    assert not torch.allclose(bn.step_mean[1], bn.step_mean[2])
