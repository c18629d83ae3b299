"""DenseCRF / normalised-cut / size losses, partial cross-entropy, RegularizedLoss and the
visualisation script."""
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_utils.errors import InputError
from data_utils.scribbles import scribbles_from_mask
from patchrefinenet.rloss import (
    DenseCRFLoss,
    NormalizedCutLoss,
    RegularizedLoss,
    SizeLoss,
    build_regularizer,
    partial_cross_entropy,
)
from patchrefinenet.rloss.lattice import bilateral_features

REPO = Path(__file__).resolve().parents[1]


def two_colour(size=16, batch=1, dtype=torch.float32):
    """Left half red, right half green (B, 3, S, S) in [0, 255]."""
    img = torch.zeros(batch, 3, size, size, dtype=dtype)
    img[:, 0, :, : size // 2] = 200.0
    img[:, 1, :, size // 2:] = 150.0
    return img


def follow_and_cross(size=16):
    follow = torch.full((1, 1, size, size), 0.05)
    follow[..., size // 2:] = 0.95  # foreground = the green half: follows the colour edge
    cross = torch.full((1, 1, size, size), 0.05)
    cross[..., size // 2:, :] = 0.95  # foreground = the bottom half: cuts across both colours
    return follow, cross


def exact_raw_value(prob2, image, sigma_xy, sigma_rgb, roi=None):
    """−Σ_k S̃_kᵀ W S̃_k / B with W materialised (reference for the raw mode at scale 1)."""
    B, K, H, W = prob2.shape
    roi = torch.ones(B, H, W, dtype=prob2.dtype) if roi is None else roi.to(prob2.dtype)
    total = 0.0
    for b in range(B):
        f = bilateral_features(image[b:b + 1], sigma_xy, sigma_rgb)[0].to(prob2.dtype)
        w = torch.exp(-0.5 * torch.cdist(f, f) ** 2)
        s = (prob2[b] * roi[b]).reshape(K, -1)
        total = total + (s @ w * s).sum()
    return -total / B


# --- DenseCRF loss ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["normalized", "raw"])
@pytest.mark.parametrize("backend", ["lattice", "exact"])
def test_following_the_colour_edge_costs_less_than_cutting_across(mode, backend):
    follow, cross = follow_and_cross()
    loss = DenseCRFLoss(sigma_rgb=15, sigma_xy=5, scale=1.0, mode=mode, backend=backend)
    assert loss(follow, two_colour()) < loss(cross, two_colour())


def test_raw_exact_value_matches_materialised_affinity():
    g = torch.Generator().manual_seed(0)
    prob = torch.softmax(torch.randn(2, 3, 10, 10, generator=g, dtype=torch.float64), 1)
    image = 255 * torch.rand(2, 3, 10, 10, generator=g, dtype=torch.float64)
    roi = torch.rand(2, 10, 10, generator=g) > 0.3
    loss = DenseCRFLoss(sigma_rgb=40, sigma_xy=4, scale=1.0, mode="raw", backend="exact")
    torch.testing.assert_close(loss(prob, image, roi), exact_raw_value(prob, image, 4, 40, roi))


def test_scale_resizes_like_rloss_and_scales_sigma_xy():
    g = torch.Generator().manual_seed(1)
    prob = torch.softmax(torch.randn(1, 2, 12, 12, generator=g, dtype=torch.float64), 1)
    image = 255 * torch.rand(1, 3, 12, 12, generator=g, dtype=torch.float64)
    small_p = F.interpolate(prob, scale_factor=0.5, mode="bilinear", align_corners=False)
    small_i = F.interpolate(image, scale_factor=0.5, mode="nearest")
    loss = DenseCRFLoss(sigma_rgb=30, sigma_xy=8, scale=0.5, mode="raw", backend="exact")
    torch.testing.assert_close(loss(prob, image), exact_raw_value(small_p, small_i, 4, 30))


def test_normalized_values_by_hand():
    img = two_colour()
    loss = DenseCRFLoss(sigma_rgb=15, sigma_xy=5, scale=1.0)
    half = torch.full((1, 1, 16, 16), 0.5)  # Σ_k S_ik S_jk = ½ for every pair → exactly ½
    assert loss(half, img).item() == pytest.approx(0.5, abs=1e-6)
    assert loss(torch.ones(1, 1, 16, 16), img).item() == pytest.approx(0.0, abs=1e-6)
    follow, cross = follow_and_cross()
    assert 0.0 <= loss(follow, img).item() <= loss(cross, img).item() <= 1.0


def test_normalized_is_invariant_to_a_constant_colour_shift():
    g = torch.Generator().manual_seed(2)
    img = torch.randint(0, 150, (2, 3, 24, 24), generator=g).float()
    prob = torch.rand(2, 1, 24, 24, generator=g)
    loss = DenseCRFLoss(sigma_rgb=15, sigma_xy=10, scale=1.0)
    torch.testing.assert_close(loss(prob, img + 37.0), loss(prob, img), rtol=1e-6, atol=1e-7)
    assert abs(loss(prob, img).item() - loss(prob, img * 1.5).item()) > 1e-4  # but not to a contrast change


def test_binary_map_equals_two_class_probabilities():
    p = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    loss = DenseCRFLoss(sigma_rgb=15, sigma_xy=5, scale=0.5)
    torch.testing.assert_close(loss(p, two_colour()), loss(torch.cat([1 - p, p], 1), two_colour()))
    torch.testing.assert_close(loss(p[:, 0], two_colour()), loss(p, two_colour()))


@pytest.mark.parametrize("mode, backend, scale", [("normalized", "lattice", 1.0), ("raw", "lattice", 0.5),
                                                  ("normalized", "exact", 0.5), ("raw", "exact", 1.0)])
def test_gradcheck_wrt_segmentation(mode, backend, scale):
    g = torch.Generator().manual_seed(4)
    prob = torch.softmax(torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64), 1).requires_grad_(True)
    image = two_colour(4, dtype=torch.float64) + 20 * torch.rand(1, 3, 4, 4, generator=g, dtype=torch.float64)
    roi = torch.ones(1, 4, 4)
    roi[:, :, 0] = 0
    loss = DenseCRFLoss(sigma_rgb=20, sigma_xy=3, scale=scale, mode=mode, backend=backend)
    assert torch.autograd.gradcheck(lambda p: loss(p, image, roi), (prob,))


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_pixels_outside_roi_get_zero_gradient(scale):
    prob = torch.rand(2, 2, 16, 16, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    roi = torch.zeros(2, 16, 16)
    roi[:, 2:12, 4:14] = 1  # aligned to 2×2 blocks, so the ×0.5 bilinear resize cannot mix across it
    for mode in ("normalized", "raw"):
        prob.grad = None
        DenseCRFLoss(sigma_rgb=15, sigma_xy=5, scale=scale, mode=mode)(prob, two_colour(batch=2), roi).backward()
        outside = prob.grad.abs().sum(1)[roi == 0]
        inside = prob.grad.abs().sum(1)[roi == 1]
        assert outside.max() == 0 and inside.max() > 0


def test_empty_roi_gives_zero_not_nan():
    prob = torch.rand(1, 1, 8, 8, requires_grad=True)
    value = DenseCRFLoss(scale=1.0)(prob, two_colour(8), torch.zeros(1, 8, 8))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(prob.grad).all()


def test_any_channel_count_is_accepted():
    prob = torch.rand(1, 1, 16, 16)
    gray = two_colour()[:, :1]
    for image in (gray, gray[:, 0], torch.cat([two_colour(), gray], 1), two_colour().to(torch.uint8)):
        assert torch.isfinite(DenseCRFLoss(scale=1.0)(prob, image))


def test_bad_inputs_are_input_errors():
    loss = DenseCRFLoss(scale=1.0)
    with pytest.raises(InputError, match="same batch size"):
        loss(torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 15))
    with pytest.raises(InputError, match="roi"):
        loss(torch.rand(1, 1, 16, 16), two_colour(), torch.ones(1, 8, 8))
    for kw in ({"sigma_rgb": 0}, {"sigma_xy": -1}, {"scale": 0}, {"mode": "potts"}, {"backend": "cuda"}):
        with pytest.raises(InputError):
            DenseCRFLoss(**kw)


# --- normalised cut and size -----------------------------------------------------------------

def test_normalized_cut_by_hand_and_edge_preference():
    img = two_colour()
    ncut = NormalizedCutLoss(sigma_rgb=15, sigma_xy=5, scale=1.0, backend="exact")
    assert ncut(torch.ones(1, 1, 16, 16), img).item() == pytest.approx(0.0, abs=1e-6)
    follow, cross = follow_and_cross()
    assert ncut(follow, img) < ncut(cross, img)
    # reference: Σ_k S_kᵀ W (1 − S_k) / (dᵀ S_k) with W materialised
    p = torch.cat([1 - cross, cross], 1).double()[0].reshape(2, -1)
    f = bilateral_features(img, 5, 15)[0].double()
    w = torch.exp(-0.5 * torch.cdist(f, f) ** 2)
    d = w.sum(1)
    expected = sum((p[k] @ w @ (1 - p[k])) / (d @ p[k]) for k in range(2))
    assert ncut(cross.double(), img.double()).item() == pytest.approx(expected.item(), rel=1e-6)


def test_size_loss_by_hand():
    half = torch.full((1, 1, 4, 4), 0.5)  # soft foreground size 8 of 16 px
    assert SizeLoss(0.0, 0.25)(half).item() == pytest.approx((8 - 4) ** 2 / 16)
    assert SizeLoss(0.75, 1.0)(half).item() == pytest.approx((12 - 8) ** 2 / 16)
    assert SizeLoss(0.25, 0.75)(half).item() == 0.0
    roi = torch.zeros(1, 4, 4)
    roi[:, :2] = 1  # area 8, soft size 4
    assert SizeLoss(0.0, 0.25)(half, roi=roi).item() == pytest.approx((4 - 2) ** 2 / 8)
    per_image = torch.tensor([[[0.6, 0.7]]])
    assert SizeLoss(0.0, 1.0)(half, bounds=per_image).item() == pytest.approx((9.6 - 8) ** 2 / 16)
    with pytest.raises(InputError):
        SizeLoss(0.5, 0.2)


# --- partial cross-entropy and the combined loss ---------------------------------------------

def test_partial_cross_entropy_by_hand():
    prob = torch.full((1, 1, 2, 2), 0.8)
    scribble = torch.tensor([[[1, 0], [255, 255]]])
    expected = -(math.log(0.8) + math.log(0.2)) / 2
    assert partial_cross_entropy(prob, scribble).item() == pytest.approx(expected, rel=1e-6)
    assert partial_cross_entropy(prob.repeat(2, 1, 1, 1), scribble.repeat(2, 1, 1), batch_average=True).item() \
        == pytest.approx(expected / 2, rel=1e-6)
    three = torch.tensor([0.2, 0.3, 0.5]).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    assert partial_cross_entropy(three, torch.tensor([[[2, 255]]])).item() == pytest.approx(-math.log(0.5), rel=1e-6)


def test_partial_cross_entropy_rejects_unknown_labels_unless_told_not_to_look():
    prob = torch.full((1, 1, 2, 2), 0.8)
    wrong = torch.tensor([[[1, 3], [255, 7]]])  # binary: only 0, 1 and 255 (unlabelled) are labels
    with pytest.raises(InputError, match=r"\[3, 7\] outside 0\.\.1"):
        partial_cross_entropy(prob, wrong)  # CPU labels: checked by default
    with pytest.raises(InputError, match="outside"):
        RegularizedLoss("none", 0.0).partial(prob, wrong)
    # check_values=False (a training engine whose reader validated the scribbles): no look, no host sync
    assert math.isfinite(partial_cross_entropy(prob, wrong, check_values=False).item())
    assert math.isfinite(RegularizedLoss("none", 0.0, check_values=False).partial(prob, wrong).item())


def test_class_balanced_partial_cross_entropy_averages_the_per_class_means():
    """Three background pixels and one foreground pixel: balanced weighs the two classes alike."""
    prob = torch.tensor([[[[0.9, 0.6], [0.3, 0.2]]]])
    scribble = torch.tensor([[[1, 0], [0, 0]]])
    background = -(math.log(0.4) + math.log(0.7) + math.log(0.8)) / 3
    balanced = partial_cross_entropy(prob, scribble, class_balanced=True).item()
    assert balanced == pytest.approx((-math.log(0.9) + background) / 2, rel=1e-6)
    assert partial_cross_entropy(prob, scribble).item() == pytest.approx((-math.log(0.9) + 3 * background) / 4, rel=1e-6)
    # one class labelled: its mean, as the plain loss; none labelled: 0 with a zero gradient
    only_fg = torch.tensor([[[1, 255], [255, 1]]])
    assert partial_cross_entropy(prob, only_fg, class_balanced=True).item() == pytest.approx(
        partial_cross_entropy(prob, only_fg).item(), rel=1e-6)
    leaf = prob.clone().requires_grad_()
    value = partial_cross_entropy(leaf, torch.full((1, 2, 2), 255), class_balanced=True)
    value.backward()
    assert value.item() == 0.0 and leaf.grad.abs().max() == 0
    combined = RegularizedLoss("none", class_balanced=True)(prob, scribble, None)
    assert combined["pce"].item() == pytest.approx(balanced, rel=1e-6)


def test_partial_cross_entropy_without_labels_is_zero_with_finite_gradient():
    prob = torch.rand(2, 1, 4, 4, requires_grad=True)
    value = partial_cross_entropy(prob, torch.full((2, 4, 4), 255))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(prob.grad).all() and prob.grad.abs().max() == 0


def test_partial_cross_entropy_rejects_bad_labels():
    with pytest.raises(InputError, match=r"\[2, 7\]"):
        partial_cross_entropy(torch.rand(1, 1, 2, 2), torch.tensor([[[0, 2], [7, 255]]]))
    with pytest.raises(InputError, match="scribble"):
        partial_cross_entropy(torch.rand(1, 1, 2, 2), torch.zeros(1, 3, 3, dtype=torch.long))


def test_regularized_loss_combines_terms_and_registry_errors():
    prob = torch.rand(1, 1, 16, 16)
    scribble = torch.full((1, 16, 16), 255)
    scribble[0, 4, 2] = 0
    scribble[0, 4, 12] = 1
    out = RegularizedLoss("densecrf", weight=0.3, sigma_xy=5, scale=1.0)(prob, scribble, two_colour())
    assert set(out) == {"loss", "pce", "reg"}
    torch.testing.assert_close(out["loss"], out["pce"] + 0.3 * out["reg"])
    assert RegularizedLoss("none")(prob, scribble, None)["reg"].item() == 0.0
    assert RegularizedLoss("densecrf", mode="raw").weight == 2e-9
    assert RegularizedLoss("size", lower=0.1, upper=0.2)(prob, scribble, None)["reg"] > 0
    with pytest.raises(InputError, match="densecrf, ncut, size, none"):
        build_regularizer("potts")
    with pytest.raises(InputError, match="ncut"):
        build_regularizer("ncut", mode="raw")


def test_tiny_scribble_supervised_training_lowers_the_loss():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images, masks, scribbles = [], [], []
    for i in range(3):
        yy, xx = np.mgrid[:32, :32]
        mask = ((yy - 10 - 5 * i) ** 2 + (xx - 16) ** 2 < (7 + i) ** 2).astype(np.uint8)
        image = np.where(mask[..., None], [200, 60, 50], [40, 120, 60]) + rng.normal(0, 8, (32, 32, 3))
        images.append(image.clip(0, 255).transpose(2, 0, 1))
        masks.append(mask)
        scribbles.append(scribbles_from_mask(mask, seed=i, width=1, margin=2, background_strokes=2))
    image = torch.tensor(np.stack(images), dtype=torch.float32)
    scribble = torch.tensor(np.stack(scribbles)).long()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1))
    criterion = RegularizedLoss("densecrf", weight=1.0, sigma_rgb=15, sigma_xy=8, scale=1.0)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        out = criterion(torch.sigmoid(net(image / 127.5 - 1)), scribble, image)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert np.mean(losses[-5:]) < 0.2 * np.mean(losses[:5])
    pred = torch.sigmoid(net(image / 127.5 - 1))[:, 0].detach().numpy() > 0.5
    gt = np.stack(masks).astype(bool)
    assert (pred & gt).sum() / (pred | gt).sum() > 0.9  # the unlabelled pixels were learned too


# --- the visualisation script ----------------------------------------------------------------

def test_visualize_script_help_and_run(tmp_path):
    script = REPO / "tools" / "visualize_densecrf_gradient.py"
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--image" in res.stdout
    from patchrefinenet.cli.visualize_densecrf_gradient import main

    image = tmp_path / "two.png"
    cv2.imwrite(str(image), two_colour(32)[0].permute(1, 2, 0).numpy().astype(np.uint8))
    out = main(["--image", str(image), "--sigma_xy", "8", "--output", str(tmp_path / "fig.png")])
    assert out.is_file() and cv2.imread(str(out)) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "two.png"]  # no temporary left
    np.save(tmp_path / "p.npy", np.zeros((31, 32), np.float32))
    with pytest.raises(SystemExit) as err:
        main(["--image", str(image), "--prob", str(tmp_path / "p.npy")])
    assert err.value.code == 2
