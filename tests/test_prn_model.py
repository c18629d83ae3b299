"""PRN: shapes for any grid and size, the folded local path against a plain per-patch loop,
batch-statistics BatchNorm, the row-7 quirk, gradients, config and grid naming."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from data_utils.errors import InputError
from patchrefinenet.models.prn import PRN, PRNConfig, batch_statistics, resolve_grid
from patchrefinenet.models.prn_blocks import PatchBatchNorm2d


def make(grid: int, width: int = 4, seed: int = 0, **kw) -> PRN:
    torch.manual_seed(seed)
    model = PRN(PRNConfig(grid=grid, width=width, **kw))
    # Non-trivial running stats and affine params, so eval mode differs from batch statistics.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, PatchBatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def loop_forward(model: PRN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' forward: one encoder pass, the global path, then one local-decoder call per
    patch, stitched row by row (docs/authors-refine.md §R3.3–§R3.4). ``x`` must be a multiple of 8·G (no padding)."""
    G = model.config.grid
    x0, x1, x2, center = model.encoding(x)
    d = model.decode3_global(x2, center)
    d = model.decode2_global(x1, d)
    global_prob = model.out_global(model.decode1_global(x0, d))

    def cell(t: torch.Tensor, r: int, c: int) -> torch.Tensor:
        h, w = t.shape[-2] // G, t.shape[-1] // G
        return t[:, :, r * h:(r + 1) * h, c * w:(c + 1) * w]

    rows = []
    for r in range(G):
        r_x1 = 2 if (model.config.row7_quirk and r == 6) else r
        patches = []
        for c in range(G):
            t = model.decode3_local(cell(x2, r, c), cell(center, r, c))
            t = model.decode2_local(cell(x1, r_x1, c), t)
            t = model.decode1_local(cell(x0, r, c), t)
            patches.append(model.out_local(t))
        rows.append(torch.cat(patches, dim=3))
    return global_prob, torch.cat(rows, dim=2)


@pytest.mark.parametrize("width", [4, 8])
@pytest.mark.parametrize("grid", [0, 2, 4, 8])
@pytest.mark.parametrize("size", [(40, 56), (64, 64), (96, 80)])
def test_output_shapes_and_ranges(grid, size, width):
    model = make(grid, width).eval()
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        g, l = model(x)
    assert g.shape == (2, 1, *size)
    assert ((g > 0) & (g < 1)).all()
    if grid == 0:
        assert l is None
    else:
        assert l.shape == (2, 1, *size)
        assert ((l > 0) & (l < 1)).all()


def test_width_8_and_padded_size():
    model = make(4, width=8).eval()
    assert model.padded_size(40, 56) == (64, 64)
    assert model.padded_size(64, 96) == (64, 96)
    assert make(0).padded_size(41, 8) == (48, 8)
    with torch.no_grad():
        g, l = model(torch.rand(1, 1, 40, 56))
    assert g.shape == l.shape == (1, 1, 40, 56)


@pytest.mark.parametrize("grid,quirk", [(2, False), (4, False), (8, False), (8, True)])
def test_folded_local_path_equals_per_patch_loop(grid, quirk):
    model = make(grid, row7_quirk=quirk).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        _, local = model(x)
        expected = loop_forward(model, x)[1]
    torch.testing.assert_close(local, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stats", [False, True])
def test_channels_last_gives_the_same_outputs(stats):
    # float64: batch statistics over tiny patch groups amplify float32 rounding of the two conv layouts
    model = make(4).double().eval().set_batch_statistics(stats)
    x = torch.rand(2, 1, 64, 48, dtype=torch.float64)
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.no_grad():
        for a, b in zip(model(x), fast(x.to(memory_format=torch.channels_last))):
            torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


def test_batch_statistics_equals_per_patch_batchnorm_in_loop():
    """Eval mode + batch statistics == the authors' inference: train-mode BN, one call per patch.
    float64: per-patch statistics over tiny groups amplify float32 rounding, which differs by CPU."""
    model = make(4).double().eval()
    reference = copy.deepcopy(model).train()  # plain train-mode BN: per-call (= per-patch) statistics
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad(), batch_statistics(model):
        g, l = model(x)
    with torch.no_grad():
        g_ref, l_ref = loop_forward(reference, x)
        g_eval, l_eval = model(x)  # switch restored: running stats again
    torch.testing.assert_close(g, g_ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(l, l_ref, atol=1e-9, rtol=0)
    assert (l - l_eval).abs().max() > 1e-3  # the mode matters
    for k, v in model.state_dict().items():  # eval + batch statistics never touches running stats
        assert torch.equal(v, before[k]), k


def test_batch_statistics_in_train_mode_replicates_per_patch_training():
    """Train mode + switch: same outputs as the loop and the same G² sequential running-stat updates (float64)."""
    model = make(2).double().train()
    reference = copy.deepcopy(model)
    x = torch.rand(2, 1, 32, 48, dtype=torch.float64)
    model.set_batch_statistics(True)
    with torch.no_grad():
        g, l = model(x)
        g_ref, l_ref = loop_forward(reference, x)
    torch.testing.assert_close(g, g_ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(l, l_ref, atol=1e-9, rtol=0)
    ours, ref = model.state_dict(), reference.state_dict()
    assert ours["decode1_local.Up.up.2.num_batches_tracked"] == 4  # one update per patch
    assert ours["decode1_local.Up_Conv.RCNN.0.conv.1.num_batches_tracked"] == 12  # 3 applications × 4 patches
    for k in ours:
        torch.testing.assert_close(ours[k], ref[k], atol=1e-9, rtol=1e-9, msg=k)


def test_batch_statistics_gradients_equal_the_per_patch_loop():
    """Backward through the grouped BatchNorm (float64: exact up to rounding)."""
    model = make(2).double().train().set_batch_statistics(True)
    reference = copy.deepcopy(model).set_batch_statistics(False)
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    w = torch.rand(2, 1, 32, 32, dtype=torch.float64)  # a loss that weights pixels differently
    for net, fwd in ((model, model), (reference, lambda t: loop_forward(reference, t))):
        g, l = fwd(x)
        ((g * w).sum() + (l * w.flip(-1)).sum()).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-9, rtol=1e-7, msg=name)


def test_default_train_mode_pools_statistics_over_all_patches():
    model = make(2).train()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        pooled = model(x)[1]
        grouped = copy.deepcopy(model).set_batch_statistics(True)(x)[1]
    assert (pooled - grouped).abs().max() > 1e-3
    assert model.state_dict()["decode1_local.Up.up.2.num_batches_tracked"] == 1


def test_row7_quirk_changes_only_patch_row_6():
    plain = make(8).eval()
    quirk = make(8, row7_quirk=True).eval()
    quirk.load_state_dict(plain.state_dict())
    x = torch.rand(1, 1, 64, 64)  # 8-px patches: patch row 6 = rows 48..55
    with torch.no_grad():
        g0, l0 = plain(x)
        g1, l1 = quirk(x)
    assert torch.equal(g0, g1)
    diff = (l0 - l1).abs()[0, 0].amax(dim=1)  # per output row
    assert diff[48:56].min() > 0
    assert diff[:48].max() == 0 and diff[56:].max() == 0


def test_batch_of_two_equals_two_singles():
    model = make(4).double().eval()  # float64: conv kernels may be chosen per batch size
    x = torch.rand(2, 1, 40, 56, dtype=torch.float64)
    with torch.no_grad():
        g, l = model(x)
        for i in range(2):
            gi, li = model(x[i:i + 1])
            torch.testing.assert_close(g[i:i + 1], gi, atol=1e-12, rtol=0)
            torch.testing.assert_close(l[i:i + 1], li, atol=1e-12, rtol=0)


def test_padding_is_bottom_right_edge_replication():
    model = make(2).double().eval()  # float64: equal up to rounding on any CPU
    x = torch.rand(1, 1, 27, 30, dtype=torch.float64)
    padded = F.pad(x, (0, 2, 0, 5), mode="replicate")  # 27×30 -> 32×32 (multiple of 16)
    with torch.no_grad():
        g, l = model(x)
        gp, lp = model(padded)
    torch.testing.assert_close(g, gp[:, :, :27, :30], atol=1e-12, rtol=0)
    torch.testing.assert_close(l, lp[:, :, :27, :30], atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_parameter_gets_a_gradient(mode):
    torch.manual_seed(0)
    model = PRN(PRNConfig(grid=4, width=4)).train(mode == "train")
    x = torch.rand(2, 1, 32, 32)
    target = (torch.rand(2, 1, 32, 32) > 0.5).float()
    g, l = model(x)
    (F.binary_cross_entropy(g, target) + F.binary_cross_entropy(l, target)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # In train mode a conv bias right before a BatchNorm has an exactly-zero gradient (the BN
        # subtracts the batch mean); with running stats every parameter must move the loss.
        if mode == "eval":
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("grid", [0, 4])
def test_residual_prn_starts_as_the_base_map_and_learns_a_logit_offset(grid):
    """residual=True: untrained heads return the input; one step on a shifted target moves both heads."""
    torch.manual_seed(0)
    model = PRN(PRNConfig(grid=grid, width=4, residual=True))
    x = torch.rand(2, 1, 32, 32) * 0.98 + 0.01
    g, l = model(x)
    torch.testing.assert_close(g, x, atol=1e-6, rtol=0)
    if grid:
        torch.testing.assert_close(l, x, atol=1e-6, rtol=0)
    # the best threshold is 0.7: the target is x > 0.7, so the heads must lower every logit
    target = (x > 0.7).float()
    before = {k: v.clone() for k, v in model.decode1_global.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        g, l = model(x)
        loss = F.binary_cross_entropy(g, target) + (F.binary_cross_entropy(l, target) if grid else 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # train-mode BatchNorm, as in training (eval-mode stats are a separate matter)
        g, l = model(x)
    assert ((g > 0.5) == (x > 0.7)).float().mean() > ((x > 0.5) == (x > 0.7)).float().mean() + 0.05
    # the decoders learn too (gradients reach them once the zero-initialised head has moved)
    assert any(not torch.equal(v, before[k]) for k, v in model.decode1_global.named_parameters())


def test_residual_heads_keep_the_authors_keys_and_round_trip():
    plain, res = PRN(PRNConfig(grid=8, width=4)), PRN(PRNConfig(grid=8, width=4, residual=True))
    assert list(plain.state_dict()) == list(res.state_dict())
    assert PRNConfig.from_dict(res.config.to_dict()).residual is True
    assert PRNConfig.from_dict({"grid": 8}).residual is False  # checkpoints from before the option
    assert res.out_global[0].weight.abs().sum() == 0 and res.out_local[0].bias.abs().sum() == 0


@pytest.mark.parametrize(
    "x,fragment",
    [
        (torch.rand(1, 32, 32), "add the channel axis"),
        (torch.rand(1, 2, 32, 32), "(B, 1, H, W)"),
        (torch.randint(0, 2, (1, 1, 32, 32)), "dtype"),
        (torch.full((1, 1, 32, 32), float("nan")), "NaN"),
        ("an image", "got a str"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(x, fragment):
    with pytest.raises(InputError, match="PRN input") as e:
        make(2)(x)
    assert fragment in str(e.value)


def test_config_round_trip_and_derived_head_kernel():
    c = PRNConfig(grid=8, width=8, row7_quirk=True)
    assert c.global_head_kernel == 3 and PRNConfig(grid=0).global_head_kernel == 1
    assert PRNConfig.from_dict(c.to_dict()) == c
    model = PRN.from_config(c.to_dict())
    assert model.config == c and model.out_global[0].kernel_size == (3, 3)
    assert PRN.from_config({"grid": 0}).out_global[0].kernel_size == (1, 1)


@pytest.mark.parametrize(
    "kw,fragment",
    [
        ({"grid": -1}, "grid"),
        ({"grid": 2, "width": 5}, "even"),
        ({"grid": 4, "row7_quirk": True}, "8×8"),
        ({"grid": 2, "global_head_kernel": 2}, "odd"),
        ({"grid": 2, "residual": 1}, "True or False"),
    ],
)
def test_invalid_config(kw, fragment):
    with pytest.raises(InputError, match=fragment):
        PRNConfig(**kw)
    with pytest.raises(InputError, match="unknown keys"):
        PRNConfig.from_dict({"grid": 2, "widht": 8})


@pytest.mark.parametrize(
    "args,grid,patch,name",
    [
        ({"aux_model": "p0"}, 0, 512, "p0"),
        ({"aux_model": "P4"}, 2, 256, "p4"),
        ({"aux_model": "p16"}, 4, 128, "p16"),
        ({"aux_model": "p64"}, 8, 64, "p64"),
        ({"aux_model": "p256"}, 16, 32, "p256"),
        ({"patch_size": 64}, 8, 64, "p64"),
        ({"patch_size": 512}, 0, 512, "p0"),
        ({"patch_size": 1024}, 0, 512, "p0"),
        ({"patch_size": 32, "image_size": 128}, 4, 32, "p16"),
        ({"aux_model": "p64", "patch_size": 64}, 8, 64, "p64"),
    ],
)
def test_resolve_grid(args, grid, patch, name):
    choice = resolve_grid(**args)
    assert (choice.grid, choice.patch_size, choice.n_patches, choice.aux_name) == (grid, patch, grid * grid, name)


def test_resolve_grid_describes_both_readings_of_p4():
    text = resolve_grid("p4").description
    assert "2×2 grid of 256-px patches" in text and "4×4 grid of 128-px patches" in text


@pytest.mark.parametrize(
    "args,fragment",
    [
        ({"aux_model": "p8"}, "perfect square"),
        ({"aux_model": "px"}, "p0, p1, p4"),
        ({"patch_size": 100}, "does not divide"),
        ({"aux_model": "p9"}, "multiples of 8"),
        ({"aux_model": "p4", "patch_size": 64}, "give one of them"),
        ({}, "--aux_model"),
    ],
)
def test_resolve_grid_errors(args, fragment):
    with pytest.raises(InputError, match=fragment):
        resolve_grid(**args)
