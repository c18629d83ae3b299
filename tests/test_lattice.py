"""Permutohedral lattice vs the exact dense Gaussian filter, and the filters' autograd."""
import pytest
import torch

import patchrefinenet.rloss.lattice as lattice_mod
from data_utils.errors import InputError
from patchrefinenet.rloss.dense import DenseGaussianFilter
from patchrefinenet.rloss.lattice import PermutohedralLattice, bilateral_features, bilateral_filter, spatial_features


def _two_colour_image(batch=1, size=32, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(batch, channels, size, size)
    img[:, 0, :, : size // 2] = 200.0
    img[:, -1, :, size // 2:] = 150.0
    return img + 6.0 * torch.randn(img.shape, generator=g)


def _cosine(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.mark.parametrize("channels, low, high", [(3, 0.5, 0.7), (1, 0.7, 0.85)])
def test_lattice_matches_exact_filter_up_to_documented_scale(channels, low, high):
    img = _two_colour_image(channels=channels)
    feats = bilateral_features(img, sigma_xy=6.0, sigma_rgb=20.0)
    values = torch.rand(1, 32 * 32, 2, generator=torch.Generator().manual_seed(1))
    approx = PermutohedralLattice(feats).filter(values)
    exact = DenseGaussianFilter(feats).filter(values)
    assert _cosine(approx, exact) > 0.99
    assert low < float(approx.sum() / exact.sum()) < high


def test_degree_matches_rloss_measurements_on_photos():
    """docs/rloss.md §L1.2.7: mean lattice degree W·1 of 840–985 per pixel for skimage's astronaut, coffee and
    chelsea resized to 513² and halved (nearest) to 256², σ_xy 50, σ_rgb 15 — rloss's own C++ lattice."""
    import cv2
    import torch.nn.functional as F
    from skimage import data

    degrees = []
    for photo in (data.astronaut(), data.coffee(), data.chelsea()):
        img = torch.from_numpy(cv2.resize(photo, (513, 513), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)
        small = F.interpolate(img[None].float(), scale_factor=0.5, mode="nearest")  # 256 × 256
        lat = PermutohedralLattice(bilateral_features(small, 50.0, 15.0))
        degrees.append(float(lat.filter(torch.ones(1, 256 * 256, 1)).mean()))
    assert 830 < min(degrees) < 850 and 975 < max(degrees) < 995


def test_dense_filter_equals_materialised_gaussian():
    feats = bilateral_features(_two_colour_image(size=12), 4.0, 30.0)[0].double()  # (P, 5)
    w = torch.exp(-0.5 * torch.cdist(feats, feats) ** 2)
    values = torch.rand(144, 3, dtype=torch.float64)
    out = DenseGaussianFilter(feats[None], chunk_elements=500).filter(values[None])[0]  # several chunks
    torch.testing.assert_close(out, w @ values)


def test_spatial_features_are_column_then_row_over_sigma():
    f = spatial_features(1, 2, 3, sigma_xy=2.0)[0]
    assert f.tolist() == [[0, 0], [0.5, 0], [1, 0], [0, 0.5], [0.5, 0.5], [1, 0.5]]


def test_batched_lattice_keeps_images_separate():
    img = _two_colour_image(batch=2)
    img[1] = 255.0 - img[1]
    feats = bilateral_features(img, 5.0, 15.0).double()  # float64: the sums' order may differ by batch
    values = torch.rand(2, 32 * 32, 2, dtype=torch.float64)
    both = PermutohedralLattice(feats).filter(values)
    for b in range(2):
        alone = PermutohedralLattice(feats[b:b + 1]).filter(values[b:b + 1])
        torch.testing.assert_close(both[b:b + 1], alone)


def test_overflow_fallback_gives_the_same_lattice(monkeypatch):
    feats = bilateral_features(_two_colour_image(size=20), 3.0, 10.0).double()
    values = torch.rand(1, 400, 2, dtype=torch.float64)  # float64: equal up to rounding on any CPU
    packed = PermutohedralLattice(feats)
    monkeypatch.setattr(lattice_mod, "_MAX_SPAN", 16)  # force the row-deduplication path
    rows = PermutohedralLattice(feats)
    assert rows.points == packed.points
    torch.testing.assert_close(rows.filter(values), packed.filter(values))


@pytest.mark.parametrize("transpose", [False, True])
def test_sparse_matrix_and_index_paths_agree(monkeypatch, transpose):
    feats = bilateral_features(_two_colour_image(batch=2, size=20), 4.0, 15.0).double()
    lat = PermutohedralLattice(feats)
    values = torch.rand(2, 400, 3, dtype=torch.float64)
    indexed = lat.filter(values, transpose=transpose)
    monkeypatch.setattr(lattice_mod, "_SPARSE_MIN_VERTICES", 0)
    torch.testing.assert_close(lat.filter(values, transpose=transpose), indexed)


def test_backward_is_the_exact_transpose():
    lat = PermutohedralLattice(bilateral_features(_two_colour_image(size=16), 4.0, 15.0).double())
    u, v = torch.rand(2, 1, 256, 2, dtype=torch.float64)
    lhs = (u * lat.filter(v)).sum()
    rhs = (lat.filter(u, transpose=True) * v).sum()
    torch.testing.assert_close(lhs, rhs)
    small = PermutohedralLattice(bilateral_features(_two_colour_image(size=6), 2.0, 15.0).double())
    x = torch.rand(1, 36, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(small.filter, (x,))
    assert torch.autograd.gradgradcheck(small.filter, (x,))


def test_dense_filter_gradcheck():
    filt = DenseGaussianFilter(bilateral_features(_two_colour_image(size=5), 2.0, 30.0).double())
    x = torch.rand(1, 25, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(filt.filter, (x,))


def test_any_channel_count_and_output_shape():
    for channels in (1, 2, 4):
        img = _two_colour_image(size=16, channels=channels)
        out = bilateral_filter(torch.ones(1, 1, 16, 16), img, sigma_xy=5.0, sigma_rgb=20.0)
        assert out.shape == (1, 1, 16, 16) and torch.isfinite(out).all() and (out > 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    feats = bilateral_features(_two_colour_image(size=24), 5.0, 15.0)
    values = torch.rand(1, 576, 2)
    cpu = PermutohedralLattice(feats).filter(values)
    gpu = PermutohedralLattice(feats.cuda()).filter(values.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sigma_xy, sigma_rgb", [(0.0, 10.0), (5.0, -1.0), (float("nan"), 10.0)])
def test_non_positive_sigma_is_an_input_error(sigma_xy, sigma_rgb):
    with pytest.raises(InputError, match="sigma"):
        bilateral_features(_two_colour_image(size=8), sigma_xy, sigma_rgb)


def test_bad_shapes_are_input_errors():
    with pytest.raises(InputError, match="features"):
        PermutohedralLattice(torch.rand(10, 5))
    lat = PermutohedralLattice(torch.rand(1, 10, 3))
    with pytest.raises(InputError, match="values"):
        lat.filter(torch.rand(1, 11, 2))
    with pytest.raises(InputError, match="image"):
        bilateral_filter(torch.rand(1, 1, 8, 8), torch.rand(1, 3, 8, 9), 5.0, 10.0)
