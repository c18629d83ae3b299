"""``--compile``: torch.compile captures PRN (batch-statistics BatchNorm with its queued running-stat
updates included) without changing what it computes, and the engines compile when asked."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from patchrefinenet.losses import PRNLoss
from patchrefinenet.models.prn import PRN, PRNConfig
from patchrefinenet.refine import RefinePredictConfig, RefineTrainConfig, predict_prn, train_prn


def test_compiled_prn_training_step_equals_eager():
    """float64, so the comparison is not drowned by float32 rounding (PRN's gradients at this tiny
    size are ill-conditioned: float32 and float64 eager differ by percents). ``aot_eager`` runs
    dynamo's capture and AOT autograd without generating C++ (inductor needs ~1 min on 2 cores).
    step_bn=True, the engine's default: per-application BN statistics are state dynamo must keep."""
    torch.manual_seed(0)
    eager = PRN(PRNConfig(grid=2, width=4, step_bn=True), check_values=False).set_batch_statistics(True).double()
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, backend="aot_eager")
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    target = (torch.rand(2, 1, 32, 32) > 0.5).double()
    loss_fn = PRNLoss(check_values=False)
    out_e, out_c = eager(x), compiled(x)
    loss_fn(*out_e, target, target)["loss"].backward()
    loss_fn(*out_c, target, target)["loss"].backward()
    for a, b in zip(out_e, out_c):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    for (name, p), q in zip(eager.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-7, atol=1e-9, msg=name)
    for (name, u), v in zip(eager.named_buffers(), twin.named_buffers()):  # per-patch running stats
        torch.testing.assert_close(v[1], u, msg=name)


@pytest.fixture
def compile_calls(monkeypatch):
    """Replace torch.compile by a recorder that returns the module unchanged (wiring only)."""
    calls = []

    def fake_compile(model, *args, **kwargs):
        calls.append(type(model).__name__)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


def test_engines_compile_only_when_asked(tmp_path, compile_calls):
    rng = np.random.default_rng(0)
    for inputs, gt in (("val_pred.npy", "val_orig_gt.npy"), ("test_input.npy", "test_orig_gt.npy")):
        mask = (rng.random((2, 32, 32, 1)) > 0.5).astype(np.float32)
        np.save(tmp_path / inputs, rng.random(mask.shape).astype(np.float32))
        np.save(tmp_path / gt, mask)
    common = dict(data_dir=str(tmp_path), output_root=str(tmp_path / "out"), aux_model="p4", device="cpu",
                  progress=False)
    train_prn(RefineTrainConfig(**{**common, "output_root": str(tmp_path / "eager")}, width=4, epochs=1))
    assert compile_calls == []
    train_prn(RefineTrainConfig(**common, width=4, epochs=1, compile=True))
    assert compile_calls == ["PRN"]
    predict_prn(RefinePredictConfig(**common, figure=0, compile=True))
    assert compile_calls == ["PRN", "PRN"]
