"""The training hot path (PRN forward, PRN loss, backward, optimizer step) makes no host-device
synchronisation and no value check: values are checked where data enters (docs/DESIGN.md).

On the CPU this is shown by making every host read of a tensor value fail and counting the value
checks; on a GPU (when one is present) by torch.cuda.set_sync_debug_mode("error")."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data_utils.errors import InputError
from patchrefinenet.losses import PRNLoss, RegionSpecificLoss, RegularizationLoss
from patchrefinenet.models.prn import PRN, PRNConfig
from patchrefinenet.refine import RefineTrainConfig, train_prn


def _batch(b=2, size=32, device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, 1, size, size, generator=g)
    pseudo = (torch.rand(b, 1, size, size, generator=g) > 0.5).float()
    gt = (torch.rand(b, 1, size, size, generator=g) > 0.5).float()
    return x.to(device), pseudo.to(device), gt.to(device)


def _forward_backward(model, loss_fn, x, pseudo, gt):
    global_prob, local_prob = model(x)
    parts = loss_fn(global_prob, local_prob, pseudo, gt)
    parts["loss"].backward()
    return parts


def _steps_without_syncs(step, optimizer, n: int = 2):
    """Warm up one ``step()`` + optimizer step (lazy library initialisation may sync), then run ``n``
    more with CUDA's sync debug mode on, where any host-device sync raises. Returns the last step's value."""
    step()
    optimizer.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            out = step()
            optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return out


class _ValueReads:
    """Count the value checks, and fail on any read of a tensor value into Python, inside the block."""

    def __init__(self, monkeypatch):
        self.checks = 0
        for name in ("isfinite", "aminmax"):
            original = getattr(torch, name)

            def counted(*args, _original=original, **kwargs):
                self.checks += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(torch, name, counted)

        def refuse(self_, *args, **kwargs):
            raise AssertionError("a tensor value was read on the host in the hot path")

        for name in ("__bool__", "item", "tolist", "__float__", "__int__"):
            monkeypatch.setattr(torch.Tensor, name, refuse)


@pytest.mark.parametrize("grid,step_bn", [(0, False), (2, False), (2, True)])
def test_training_step_reads_no_values_when_checks_are_off(monkeypatch, grid, step_bn):
    torch.manual_seed(0)
    model = PRN(PRNConfig(grid=grid, width=4, step_bn=step_bn), check_values=False).set_batch_statistics(True)
    loss_fn = PRNLoss(check_values=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = _batch()
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        reads = _ValueReads(monkeypatch)
        _forward_backward(model, loss_fn, *batch)
        monkeypatch.undo()
        assert reads.checks == 0
        optimizer.step()  # Adam reads its step count, a CPU tensor, also for CUDA params: no sync


def test_default_checks_cpu_inputs_and_explicit_false_skips_them():
    x = torch.full((1, 1, 32, 32), float("nan"))
    with pytest.raises(InputError, match="NaN"):
        PRN(PRNConfig(grid=2, width=4))(x)  # a user's CPU call still gets the clear error
    g, l = PRN(PRNConfig(grid=2, width=4), check_values=False)(x)
    assert g.shape == l.shape == (1, 1, 32, 32)
    bad = torch.rand(1, 1, 8, 8) * 3
    for loss in (RegionSpecificLoss(), RegularizationLoss()):
        with pytest.raises(InputError, match="prediction must be"):
            loss(bad, torch.rand(1, 1, 8, 8))
    for loss in (RegionSpecificLoss(check_values=False), RegularizationLoss(check_values=False)):
        loss(bad.clamp(0, 1), torch.rand(1, 1, 8, 8))  # runs: nothing is read back
    with pytest.raises(InputError, match="same shape"):  # shape checks stay on: they are free
        RegularizationLoss(check_values=False)(bad, torch.rand(1, 1, 8, 4))


def test_default_skips_value_checks_off_the_cpu():
    """Meta tensors stand in for CUDA ones: any value read raises, so a finished forward shows
    that the default (None) makes no check off the CPU, and the error with True that it does."""
    model = PRN(PRNConfig(grid=2, width=4)).to("meta")
    x = torch.empty(2, 1, 32, 32, device="meta")
    g, l = model(x)
    assert g.device.type == "meta" and l.shape == (2, 1, 32, 32)
    model.check_values = True
    with pytest.raises((RuntimeError, NotImplementedError)):
        model(x)


def test_engine_training_makes_no_value_checks_in_the_step(monkeypatch, tmp_path):
    """The PRN engine turns the checks off (its dataset checks each item with numpy)."""
    rng = np.random.default_rng(0)
    gt = (rng.random((4, 32, 32, 1)) > 0.5).astype(np.float32)
    np.save(tmp_path / "val_pred.npy", rng.random(gt.shape).astype(np.float32))
    np.save(tmp_path / "val_orig_gt.npy", gt)
    calls = {"n": 0}
    for name in ("isfinite", "aminmax"):
        original = getattr(torch, name)

        def counted(*args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, counted)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = train_prn(RefineTrainConfig(data_dir=str(tmp_path), output_root=str(tmp_path / "out"), aux_model="p4",
                                          width=4, epochs=1, batch_size=2, device="cpu", progress=False))
    finally:
        torch.set_num_threads(n)
    assert res["epochs_run"] == 1 and calls["n"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("bf16,step_bn", [(False, False), (True, False), (False, True)])
def test_cuda_training_step_is_sync_free(bf16, step_bn):
    """PRN P64 + PRNLoss + Adam on CUDA with the defaults: any host-device sync raises."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = PRN(PRNConfig(grid=8, width=4, step_bn=step_bn)).set_batch_statistics(True).to(device)
    loss_fn = PRNLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, pseudo, gt = _batch(b=2, size=64, device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            g, l = model(x)
        parts = loss_fn(g.float(), l.float(), pseudo, gt)
        parts["loss"].backward()
        return parts["loss"]

    assert torch.isfinite(_steps_without_syncs(step, optimizer)).item()


BASE_CASES = [("resunetplusplus", {"filters": [4, 8, 16, 32, 64]}, "dice_bce"), ("pfanet", {}, "edge_saliency"),
              ("dlinknet", {}, "dice_bce")]


def _base_step(name, kwargs, loss_name, device):
    """One base-model training step as the engine's objective runs it: (step closure, optimizer)."""
    from patchrefinenet.models import build_base_model
    from patchrefinenet.seg_losses import build_seg_loss

    torch.manual_seed(0)
    model = build_base_model(name, **kwargs).to(device).train()
    loss_fn = build_seg_loss(loss_name)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 64, 64, generator=g).to(device)
    mask = (torch.rand(2, 1, 64, 64, generator=g) > 0.5).float().to(device)

    def forward_backward():
        prob, aux = model.forward_with_aux(image)
        loss = loss_fn(prob, mask) + aux
        loss.backward()
        return loss

    return forward_backward, optimizer


@pytest.mark.parametrize("name,kwargs,loss_name", BASE_CASES[:2])
def test_base_model_training_step_reads_no_values(monkeypatch, name, kwargs, loss_name):
    forward_backward, optimizer = _base_step(name, kwargs, loss_name, "cpu")
    reads = _ValueReads(monkeypatch)
    forward_backward()
    monkeypatch.undo()
    assert reads.checks == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name,kwargs,loss_name", BASE_CASES)
def test_cuda_base_model_training_step_is_sync_free(name, kwargs, loss_name):
    forward_backward, optimizer = _base_step(name, kwargs, loss_name, torch.device("cuda"))
    assert torch.isfinite(_steps_without_syncs(forward_backward, optimizer)).item()
