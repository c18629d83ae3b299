"""Dataset specs, readers and preprocessing (docs/authors-seg.md §S2.3) on tiny datasets written in the real layouts."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data_utils.augment import hsv_jitter, rotate_expand
from data_utils.datasets import (Sample, SegmentationSplit, load_sample, pad_to_square, read_split,
                                 to_prn_resolution)
from data_utils.errors import InputError
from data_utils.spec import DATASET_NAMES, DatasetSpec, dataset_spec_path, load_dataset_spec

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def write_exact(path: Path, array: np.ndarray) -> Path:
    """Write PNG bytes whatever the extension: cv2.imread decodes by content, so pixels stay exact
    even for the layouts' ``.jpg`` names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", array)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def small_spec(name: str, **overrides) -> DatasetSpec:
    return dataclasses.replace(load_dataset_spec(dataset_spec_path(name)), **overrides)


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "img,target") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows))


def colour_image(h: int, w: int, bgr: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(bgr, np.uint8), (h, w, 3)).copy()


@pytest.fixture
def deepglobe(tmp_path):
    """4 DeepGlobe tiles (64×64) with a mask whose 2×2 blocks hold 2, 1 and 3 road pixels."""
    seg = tmp_path / "deepglobe" / "seg-models"
    mask = np.zeros((64, 64), np.uint8)
    mask[0, 0:2] = 255            # block (0,0): 2 of 4 road pixels
    mask[0, 2] = 255              # block (0,1): 1 of 4
    mask[0:2, 4] = 255
    mask[0, 5] = 255              # block (0,2): 3 of 4
    ids = ["10", "11", "12", "13"]
    for i in ids:
        write_exact(seg / "train" / f"{i}_sat.jpg", colour_image(64, 64, (0, 128, 255)))
        write_exact(seg / "train_labels" / f"{i}_mask.png", mask)
    write_csv(seg / "train.csv", [(f"{i}_sat.jpg", f"{i}_mask.png") for i in ids])
    return tmp_path, small_spec("deepglobe", input_size=32, prn_size=32)


@pytest.fixture
def kvasir(tmp_path):
    """3 Kvasir images of 80 (w) × 100 (h), mask top 50 rows foreground."""
    seg = tmp_path / "kvasir" / "seg-models"
    rng = np.random.default_rng(0)
    mask = np.zeros((100, 80), np.uint8)
    mask[:50] = 255
    for i in ("a", "b", "c"):
        write_exact(seg / "train" / f"{i}.jpg", rng.integers(0, 256, (100, 80, 3), dtype=np.uint8))
        write_exact(seg / "train_labels" / f"{i}.jpg", mask)
    write_exact(seg / "train" / "flat.jpg", colour_image(100, 80, (10, 20, 30)))
    write_exact(seg / "train_labels" / "flat.jpg", mask)
    write_csv(seg / "val.csv", [(f"{i}.jpg", f"{i}.jpg") for i in ("a", "b", "c", "flat")])
    return tmp_path, small_spec("kvasir", input_size=32, prn_size=32)


@pytest.fixture
def duts(tmp_path):
    """DUTS-TE with a 32×64 red image (pads to 64×64) and an 48×40 random one."""
    base = tmp_path / "DUTS" / "seg-models" / "DUTS-TE" / "DUTS-TE"
    write_exact(base / "DUTS-TE-Image" / "wide.jpg", colour_image(32, 64, (0, 0, 255)))
    write_exact(base / "DUTS-TE-Mask" / "wide.png", np.full((32, 64), 200, np.uint8))
    rng = np.random.default_rng(1)
    write_exact(base / "DUTS-TE-Image" / "tall.jpg", rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
    tall_mask = np.zeros((48, 40), np.uint8)
    tall_mask[10:30, 5:25] = 255
    write_exact(base / "DUTS-TE-Mask" / "tall.png", tall_mask)
    write_csv(tmp_path / "DUTS" / "seg-models" / "test.csv", [("wide.jpg", "wide.png"), ("tall.jpg", "tall.png")])
    return tmp_path, small_spec("DUTS", input_size=32, prn_size=64)


# --- specs -------------------------------------------------------------------------------------

def test_the_three_spec_files_load_with_the_authors_values():
    specs = {n: load_dataset_spec(dataset_spec_path(n)) for n in DATASET_NAMES}
    dg, duts, kv = specs["deepglobe"], specs["DUTS"], specs["kvasir"]
    assert (dg.base_model, dg.input_size, dg.channel_order, dg.normalisation) == ("dlinknet", 512, "bgr", "deepglobe")
    assert (duts.base_model, duts.input_size, duts.prn_size, duts.weights_key) == ("pfanet", 256, 512, "model")
    assert duts.pad_to_square and duts.mask_mode == "soft_max" and duts.channel_order == "rgb"
    assert (kv.normalisation, kv.train.batch_size, kv.refine.batch_size, kv.refine.shuffle) == ("unit", 2, 2, False)
    assert (dg.train.factor, dg.train.decay_after, dg.train.stop_after) == (2.0, 3, 6)
    assert kv.train.min_lr == 5e-8 and duts.train.monitor == "val_mae"
    for spec in specs.values():
        assert DatasetSpec.from_dict(spec.to_dict()) == spec
        assert spec.refine.checkpoint == "p64_weights.th"


def _spec_text() -> str:
    return dataset_spec_path("deepglobe").read_text()


@pytest.mark.parametrize("edit, needle", [
    (lambda t: "colour = 1\n" + t, "'colour'"),
    (lambda t: t.replace("prn_size = 512\n", ""), "'prn_size'"),
    (lambda t: t.replace("lr = 2e-4\n", ""), "'train.lr'"),
    (lambda t: t.replace("batch_size = 1\n", "batch_size = 1\nworkers = 2\n"), "'refine.workers'"),
    (lambda t: t.replace("input_size = 512", 'input_size = "512"'), "'input_size'"),
    (lambda t: t.replace('normalisation = "deepglobe"', 'normalisation = "zscore"'), "normalisation"),
    (lambda t: t.replace("[train]", "[train"), "TOML"),
])
def test_bad_spec_files_name_the_file_and_key(tmp_path, edit, needle):
    path = tmp_path / "dataset.toml"
    path.write_text(edit(_spec_text()))
    with pytest.raises(InputError) as info:
        load_dataset_spec(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_replace_validates_and_missing_spec_file_is_clear(tmp_path):
    spec = load_dataset_spec(dataset_spec_path("kvasir"))
    assert dataclasses.replace(spec, input_size=64).input_size == 64
    with pytest.raises(InputError, match="input_size"):
        dataclasses.replace(spec, input_size=0)
    with pytest.raises(InputError, match="nope.toml"):
        load_dataset_spec(tmp_path / "nope.toml")


# --- preprocessing -----------------------------------------------------------------------------

def test_deepglobe_sample_bgr_scaling_and_two_of_four_mask_rule(deepglobe):
    root, spec = deepglobe
    samples = read_split(spec, root, "train")
    assert [s.id for s in samples] == ["10", "11", "12", "13"]
    assert samples[0].mask_path.name == "10_mask.png"
    image, mask, rgb = load_sample(spec, samples[0])
    assert image.shape == (3, 32, 32) and image.dtype == np.float32
    # BGR kept: channel 0 is blue = 0, channel 2 red = 255; x/255*3.2-1.6
    np.testing.assert_allclose(image[:, 5, 5], [-1.6, 128 / 255 * 3.2 - 1.6, 1.6], atol=1e-6)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8 and tuple(rgb[5, 5]) == (255, 128, 0)
    assert mask.shape == (32, 32) and mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
    # 2×2 area average: 2 of 4 road pixels -> 128/255 >= 0.5 -> road; 1 of 4 -> background; 3 of 4 -> road
    assert (mask[0, 0], mask[0, 1], mask[0, 2]) == (1.0, 0.0, 1.0)
    assert mask.sum() == 2


def test_kvasir_sample_unit_scaling_keeps_bgr_and_resizes_without_aspect(kvasir):
    root, spec = kvasir
    samples = read_split(spec, root, "val")
    image, mask, rgb = load_sample(spec, samples[3])
    assert image.shape == (3, 32, 32)
    np.testing.assert_allclose(image[:, 7, 9], np.array([10, 20, 30], np.float32) / 255, atol=1e-7)
    assert tuple(rgb[7, 9]) == (30, 20, 10)
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert mask[:16].min() == 1 and mask[16:].max() == 0  # top half of 100 rows -> top 16 of 32


def test_duts_pad_to_square_geometry_and_imagenet_normalisation(duts):
    root, spec = duts
    wide = read_split(spec, root, "test")[0]
    image, mask, rgb = load_sample(spec, wide)
    # 32×64 padded with 16 black rows above and below -> 64×64 -> area 2× down to 32×32
    pad = (0 - MEAN) / STD
    red = (np.array([1.0, 0.0, 0.0], np.float32) - MEAN) / STD
    for rows in (slice(0, 8), slice(24, 32)):
        np.testing.assert_allclose(image[:, rows], np.broadcast_to(pad[:, None, None], (3, 8, 32)), atol=1e-5)
        assert mask[rows].max() == 0
    np.testing.assert_allclose(image[:, 8:24], np.broadcast_to(red[:, None, None], (3, 16, 32)), atol=1e-5)
    assert mask[8:24].min() == 1.0            # 200 / max(200): soft mask, not /255
    assert tuple(rgb[10, 3]) == (255, 0, 0) and tuple(rgb[2, 3]) == (0, 0, 0)
    from torchvision.transforms import Normalize                        # the authors' normalisation
    reference = Normalize(MEAN.tolist(), STD.tolist())(torch.from_numpy(rgb.transpose(2, 0, 1) / np.float32(255)))
    np.testing.assert_array_equal(image, reference.numpy())
    assert pad_to_square(np.zeros((33, 64, 3), np.uint8)).shape == (63, 64, 3)  # odd difference: 1 short
    assert pad_to_square(np.zeros((64, 40), np.float32)).shape == (64, 64)


def test_duts_soft_mask_half_pixels_binary_vs_prn_rounding(tmp_path):
    base = tmp_path / "DUTS" / "seg-models" / "DUTS-TE" / "DUTS-TE"
    write_exact(base / "DUTS-TE-Image" / "x.jpg", colour_image(8, 8, (5, 5, 5)))
    m = np.zeros((8, 8), np.uint8)
    m[0:2, 0] = 100                      # one 2×2 block half covered; the mask's max is 100
    write_exact(base / "DUTS-TE-Mask" / "x.png", m)
    spec = small_spec("DUTS", input_size=4, prn_size=8)
    sample = Sample("x", base / "DUTS-TE-Image" / "x.jpg", base / "DUTS-TE-Mask" / "x.png")
    soft = load_sample(spec, sample)[1]
    assert soft[0, 0] == 0.5 and soft.sum() == 0.5
    assert load_sample(spec, sample, binary_mask=True)[1][0, 0] == 1.0   # >= 0.5
    prob = np.full((4, 4), 0.25, np.float32)
    _, gt = to_prn_resolution(prob, soft, spec)
    assert gt.max() == 0.0                                               # authors: round half to even


def test_duts_all_black_mask_gives_zeros_without_warnings(tmp_path):
    img = write_exact(tmp_path / "i.jpg", colour_image(16, 16, (1, 2, 3)))
    msk = write_exact(tmp_path / "m.png", np.zeros((16, 16), np.uint8))
    spec = small_spec("DUTS", input_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for augment in (False, True):
            _, mask, _ = load_sample(spec, Sample("i", img, msk), augment=augment, rng=np.random.default_rng(0))
            assert mask.shape == (8, 8) and not mask.any()


# --- augmentation ------------------------------------------------------------------------------

@pytest.mark.parametrize("fixture, split, index", [("deepglobe", "train", 0), ("kvasir", "val", 0), ("duts", "test", 1)])
def test_augmentation_is_determined_by_the_seed(request, fixture, split, index):
    root, spec = request.getfixturevalue(fixture)
    if fixture == "deepglobe":   # textured image so that the colour jitter and flips show
        path = read_split(spec, root, split)[index].image_path
        write_exact(path, np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    sample = read_split(spec, root, split)[index]
    outputs = []
    for seed in range(8):
        a = load_sample(spec, sample, augment=True, rng=np.random.default_rng(seed))
        b = load_sample(spec, sample, augment=True, rng=np.random.default_rng(seed))
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        assert a[0].shape == (3, 32, 32) and a[1].shape == (32, 32)
        if spec.mask_mode == "binary":
            assert set(np.unique(a[1])) <= {0.0, 1.0}
        outputs.append(a[0].tobytes())
    assert len(set(outputs)) > 1


def test_kvasir_augmentation_is_a_vertical_flip_only(kvasir):
    root, spec = kvasir
    sample = read_split(spec, root, "val")[0]
    plain_img, plain_mask, _ = load_sample(spec, sample)
    flipped = []
    for seed in range(10):
        img, mask, _ = load_sample(spec, sample, augment=True, rng=np.random.default_rng(seed))
        is_flip = np.array_equal(img, plain_img[:, ::-1]) and np.array_equal(mask, plain_mask[::-1])
        assert is_flip or (np.array_equal(img, plain_img) and np.array_equal(mask, plain_mask))
        flipped.append(is_flip)
    assert any(flipped) and not all(flipped)


def test_hsv_jitter_wraps_hue_modulo_180_and_saturates_value():
    hues = np.array([0, 5, 90, 170, 175, 179], np.uint8)
    hsv = np.stack([hues, np.full(6, 255, np.uint8), np.full(6, 255, np.uint8)], axis=-1)[None]
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    for shift in (-30, -10, 10, 30):
        out_h = cv2.cvtColor(hsv_jitter(bgr, shift, 0.0, 0.0), cv2.COLOR_BGR2HSV)[0, :, 0].astype(int)
        expected = (hues.astype(int) + shift) % 180
        circular = np.minimum(abs(out_h - expected), 180 - abs(out_h - expected))
        assert circular.max() <= 1, (shift, out_h, expected)
    dark = colour_image(2, 2, (10, 10, 10))
    assert not hsv_jitter(dark, 0, 0.0, -15.0).any()                       # V 10 - 15 -> 0
    assert (hsv_jitter(colour_image(2, 2, (250, 250, 250)), 0, 0.0, 14.6) == 255).all()  # rounded, saturated


def test_rotation_enlarges_the_canvas():
    img, mask = np.ones((20, 40, 3), np.float32), np.ones((20, 40), np.float32)
    r_img, r_mask = rotate_expand(img, mask, 90)
    assert r_img.shape == (40, 20, 3) and r_mask.shape == (40, 20)
    assert rotate_expand(img, mask, 20)[1].shape == (int(20 * np.cos(np.radians(20)) + 40 * np.sin(np.radians(20))),
                                                     int(20 * np.sin(np.radians(20)) + 40 * np.cos(np.radians(20))))


# --- torch dataset -----------------------------------------------------------------------------

def test_segmentation_split_tensors_and_reproducible_epochs(deepglobe):
    root, spec = deepglobe
    plain = SegmentationSplit(spec, root, "train")
    image, mask, index = plain[2]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert mask.shape == (1, 32, 32) and mask.dtype == torch.float32 and index == 2
    loader = torch.utils.data.DataLoader(plain, batch_size=2)
    images, masks, indices = next(iter(loader))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 1, 32, 32) and indices.tolist() == [0, 1]

    aug = SegmentationSplit(spec, root, "train", augment=True, seed=3)
    first = [aug[i][1] for i in range(4)]
    assert all(torch.equal(a, aug[i][1]) for i, a in enumerate(first))       # same epoch: same result
    aug.set_epoch(1)
    second = [aug[i][1] for i in range(4)]
    assert any(not torch.equal(a, b) for a, b in zip(first, second))          # new epoch: new draws


# --- PRN resolution ----------------------------------------------------------------------------

def test_to_prn_resolution_identity_replication_and_general_resize(deepglobe):
    rng = np.random.default_rng(0)
    _, dg = deepglobe
    prob = rng.random((32, 32), dtype=np.float32)
    mask = (rng.random((32, 32)) > 0.5).astype(np.float32)
    p, g = to_prn_resolution(prob, mask[..., None], dg)
    np.testing.assert_array_equal(p, prob)
    np.testing.assert_array_equal(g, mask)

    duts = small_spec("DUTS", input_size=32, prn_size=64)
    soft = rng.random((32, 32)).astype(np.float32)
    p, g = to_prn_resolution(prob, soft, duts)
    replicated = prob.repeat(2, axis=0).repeat(2, axis=1)
    np.testing.assert_array_equal(p, replicated)
    np.testing.assert_array_equal(p, cv2.resize(prob, (64, 64), interpolation=cv2.INTER_AREA))  # the authors' call
    np.testing.assert_array_equal(g, np.rint(soft).repeat(2, axis=0).repeat(2, axis=1))
    assert p.dtype == g.dtype == np.float32 and set(np.unique(g)) <= {0.0, 1.0}

    p, g = to_prn_resolution(prob[:24, :24], mask[:24, :24], dataclasses.replace(dg, prn_size=40))
    assert p.shape == g.shape == (40, 40) and set(np.unique(g)) <= {0.0, 1.0}
    with pytest.raises(InputError, match="prob"):
        to_prn_resolution(np.zeros((2, 3, 4)), np.zeros((3, 4)), dg)


# --- errors ------------------------------------------------------------------------------------

def test_missing_data_folder_says_how_to_get_the_data(tmp_path):
    spec = small_spec("deepglobe")
    with pytest.raises(InputError) as info:
        read_split(spec, tmp_path, "train")
    msg = str(info.value)
    assert str(tmp_path / "deepglobe" / "seg-models") in msg
    assert "python download.py --data" in msg and "python demo.py" in msg


def test_missing_split_csv_says_how_to_make_it(deepglobe):
    root, spec = deepglobe
    with pytest.raises(InputError) as info:
        read_split(spec, root, "val")
    assert str(root / "deepglobe" / "seg-models" / "val.csv") in str(info.value)
    assert "python -m data_utils.splits" in str(info.value)


def test_bad_csv_header_and_bad_names_are_reported(deepglobe):
    root, spec = deepglobe
    csv_path = root / "deepglobe" / "seg-models" / "train.csv"
    write_csv(csv_path, [("10_sat.jpg", "10_mask.png")], header="image,mask")
    with pytest.raises(InputError, match="img,target") as info:
        read_split(spec, root, "train")
    assert str(csv_path) in str(info.value)
    write_csv(csv_path, [("10_sat.jpg", "10_mask.png"), ("10.jpg", "10_mask.png")])
    with pytest.raises(InputError, match="line 3.*_sat.jpg"):
        read_split(spec, root, "train")
    write_csv(csv_path, [])
    with pytest.raises(InputError, match="no samples"):
        read_split(spec, root, "train")


def test_listed_file_missing_is_named(deepglobe):
    root, spec = deepglobe
    (root / "deepglobe" / "seg-models" / "train_labels" / "12_mask.png").unlink()
    with pytest.raises(InputError, match="12_mask.png"):
        read_split(spec, root, "train")


def test_unreadable_image_and_mask_are_named(deepglobe):
    root, spec = deepglobe
    sample = read_split(spec, root, "train")[1]
    sample.image_path.write_bytes(b"not an image")
    with pytest.raises(InputError, match=str(sample.image_path)):
        load_sample(spec, sample)
    sample = read_split(spec, root, "train")[2]
    sample.mask_path.write_bytes(b"")
    with pytest.raises(InputError, match=str(sample.mask_path)):
        load_sample(spec, sample)


def test_image_mask_size_disagreement_names_both_files(deepglobe):
    root, spec = deepglobe
    sample = read_split(spec, root, "train")[0]
    write_exact(sample.mask_path, np.zeros((48, 64), np.uint8))
    with pytest.raises(InputError) as info:
        load_sample(spec, sample)
    msg = str(info.value)
    assert str(sample.image_path) in msg and str(sample.mask_path) in msg
    assert "64x64" in msg and "64x48" in msg


def test_augment_without_rng_is_refused(deepglobe):
    root, spec = deepglobe
    with pytest.raises(InputError, match="rng"):
        load_sample(spec, read_split(spec, root, "train")[0], augment=True)


def test_masks_stored_as_zero_one_are_read_as_binary_and_said_once(deepglobe, log_messages):
    root, spec = deepglobe
    samples = read_split(spec, root, "train")
    expected = load_sample(spec, samples[0])[1]  # from the 0/255 files
    assert expected.any()
    for s in samples:  # the same masks stored as 0/1
        write_exact(s.mask_path, (cv2.imread(str(s.mask_path), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8))
    got, messages = log_messages(lambda: [load_sample(spec, s)[1] for s in samples])
    np.testing.assert_array_equal(got[0], expected)
    said = [m for m in messages if "0/1" in m]
    assert len(said) == 1 and str(samples[0].mask_path.parent) in said[0]


def test_truncated_jpeg_image_or_mask_is_refused_with_its_name(deepglobe):
    root, spec = deepglobe
    sample = read_split(spec, root, "train")[0]
    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert ok
    sample.image_path.write_bytes(buf.tobytes())
    load_sample(spec, sample)  # a complete JPEG reads
    sample.image_path.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(InputError, match=f"{sample.image_path}.*truncated JPEG"):
        load_sample(spec, sample)
    sample = read_split(spec, root, "train")[1]
    ok, buf = cv2.imencode(".jpg", np.zeros((64, 64), np.uint8))
    sample.mask_path.write_bytes(buf.tobytes()[:-2])
    with pytest.raises(InputError, match=f"mask {sample.mask_path}.*truncated"):
        load_sample(spec, sample)
