"""DenseCRF mean-field inference: it cleans up noisy probabilities along colour edges."""
import numpy as np
import pytest
import torch

from data_utils.errors import InputError
from patchrefinenet.rloss.meanfield import densecrf_refine, densecrf_refine_batch, mean_field


def noisy_case(size=48, seed=0):
    """Two-colour image (a dark disc on a light background), its truth, and noisy probabilities."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    image = np.where(truth[..., None], [60, 40, 160], [200, 190, 120]).astype(np.uint8)
    prob = np.clip(np.where(truth, 0.6, 0.4) + rng.normal(0, 0.25, truth.shape), 0, 1).astype(np.float32)
    return image, truth, prob


def iou(pred, truth):
    return (pred & truth).sum() / (pred | truth).sum()


def test_mean_field_improves_iou_on_noisy_probabilities():
    image, truth, prob = noisy_case()
    refined = densecrf_refine(image, prob)  # default kernels (σ_xy 3 / 80, σ_rgb 13), 5 iterations
    before, after = iou(prob > 0.5, truth), iou(refined > 0.5, truth)
    assert before < 0.75 and after > 0.95
    assert refined.shape == prob.shape and refined.dtype == np.float32


def test_output_is_a_distribution_and_keeps_the_input_kind():
    image, _, prob = noisy_case(24)
    three = torch.softmax(torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(0)), 0)
    q = densecrf_refine(torch.from_numpy(image), three)
    assert isinstance(q, torch.Tensor) and q.shape == (3, 24, 24)
    torch.testing.assert_close(q.sum(0), torch.ones(24, 24))
    assert (q >= 0).all() and (q <= 1).all()
    gray = densecrf_refine(image[..., 0], prob)  # one guidance channel is fine
    assert gray.shape == (24, 24) and np.isfinite(gray).all()


def test_no_iterations_or_no_kernels_return_the_clipped_input():
    image, _, prob = noisy_case(16)
    p = np.clip(prob, 1e-5, 1 - 1e-5)  # softmax(log p) of two labels [1 − p, p] that already sum to 1
    np.testing.assert_allclose(densecrf_refine(image, p, iterations=0), p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(densecrf_refine(image, p, gaussian_weight=0, bilateral_weight=0), p,
                               rtol=1e-5, atol=1e-6)


def test_batch_helper_matches_single_calls_and_accepts_nhwc():
    cases = [noisy_case(20, seed) for seed in range(2)]
    images = np.stack([c[0] for c in cases])
    probs = np.stack([c[2] for c in cases])[..., None]  # (N, H, W, 1), the authors' layout
    out = densecrf_refine_batch(images, probs, progress=False)
    assert out.shape == (2, 20, 20) and out.dtype == np.float32
    for i in range(2):
        # 1e-6 on probabilities: batch and single calls may take the lattice's sparse or index path,
        # whose float32 sums differ in the last bits (1.8e-7 seen); mixing images would differ by far more
        np.testing.assert_allclose(out[i], densecrf_refine(images[i], probs[i, ..., 0]), rtol=0, atol=1e-6)


def test_mean_field_is_differentiable_in_the_probabilities():
    image, _, prob = noisy_case(12)
    p = torch.from_numpy(prob)[None, None].double().requires_grad_(True)
    q = mean_field(p, torch.from_numpy(image).permute(2, 0, 1)[None].double(), iterations=2)
    q[:, 1].sum().backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_bad_inputs_are_input_errors():
    image, _, prob = noisy_case(16)
    with pytest.raises(InputError, match="resize"):
        densecrf_refine(image[:15], prob)
    with pytest.raises(InputError, match="bilateral_srgb"):
        densecrf_refine(image, prob, bilateral_srgb=0)
    with pytest.raises(InputError, match="gaussian_sxy"):
        densecrf_refine(image, prob, gaussian_sxy=-3)
    with pytest.raises(InputError, match="iterations"):
        densecrf_refine(image, prob, iterations=-1)
    with pytest.raises(InputError, match="map 1"):
        densecrf_refine_batch([image, image[:15]], np.stack([prob, prob]), progress=False)
