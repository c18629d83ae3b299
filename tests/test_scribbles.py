"""Scribbles from masks and their PNG format."""
import cv2
import numpy as np
import pytest
from scipy import ndimage

from data_utils.errors import InputError
from data_utils.scribbles import (
    default_margin,
    default_width,
    generate_scribbles_for_split,
    read_scribble,
    scribbles_from_mask,
    write_scribble,
)


def blobs(size=96):
    yy, xx = np.mgrid[:size, :size]
    mask = ((yy - 30) ** 2 + (xx - 30) ** 2 < 15**2) | ((yy - 65) ** 2 / 20**2 + (xx - 60) ** 2 / 10**2 < 1)
    return mask.astype(np.uint8)


def roads(size=96):
    mask = np.zeros((size, size), np.uint8)
    mask[40:43, :] = 1  # a 3-px horizontal road
    cv2.line(mask, (5, 90), (90, 5), 1, 2)  # a 2-px diagonal road
    return mask


@pytest.mark.parametrize("make", [blobs, roads])
def test_scribbles_lie_inside_their_class_and_off_the_boundary_band(make):
    mask = make()
    margin = default_margin(mask.shape)
    for seed in range(3):
        s = scribbles_from_mask(mask, seed=seed)
        assert s.dtype == np.uint8 and set(np.unique(s)) == {0, 1, 255}
        assert mask[s == 1].all()  # foreground labels inside the mask
        distance_to_fg = ndimage.distance_transform_edt(mask == 0)
        assert (distance_to_fg[s == 0] >= margin).all()  # background labels off the margin band
        labelled = (s != 255).mean()
        assert 0.005 < labelled < 0.1  # thin strokes, never the masks themselves
        assert (s == 1).sum() < 0.5 * mask.sum()


def test_every_component_gets_a_stroke_and_thin_roads_are_covered():
    mask = np.zeros((96, 96), np.uint8)
    mask[20:23, 5:90] = 1  # two separate thin roads, 3 px and 2 px wide
    mask[40:92, 60:62] = 1
    s = scribbles_from_mask(mask, seed=0)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    assert n == 2 and all((s[labels == k] == 1).sum() >= 10 for k in (1, 2))  # along the road, not a dot
    b = blobs()
    sb = scribbles_from_mask(b, seed=0)
    labels, n = ndimage.label(b)
    assert n == 2 and all((sb[labels == k] == 1).sum() >= 3 for k in (1, 2))  # a stroke, not a dot


def test_reproducible_from_the_seed():
    mask = blobs()
    same = scribbles_from_mask(mask, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(scribbles_from_mask(mask, seed=4), same)
    assert (scribbles_from_mask(mask, seed=4) != scribbles_from_mask(mask, seed=5)).any()


def test_empty_and_full_masks():
    empty = scribbles_from_mask(np.zeros((32, 32), np.uint8), seed=0)
    assert set(np.unique(empty)) == {0, 255}
    full = scribbles_from_mask(np.ones((32, 32), np.uint8), seed=0)
    assert set(np.unique(full)) == {1, 255}


def test_width_scales_with_image_size():
    assert default_width((512, 512)) == 3 and default_width((64, 64)) == 1 and default_width((1024, 768)) == 6


def test_png_round_trip_is_atomic(tmp_path):
    s = scribbles_from_mask(blobs(), seed=0)
    path = write_scribble(tmp_path / "a.png", s)
    np.testing.assert_array_equal(read_scribble(path), s)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_bad_scribbles_are_input_errors(tmp_path):
    bad = np.full((8, 8), 255, np.uint8)
    bad[0, :2] = [2, 7]
    cv2.imwrite(str(tmp_path / "bad.png"), bad)
    with pytest.raises(InputError, match=r"bad\.png.*\[2, 7\]"):
        read_scribble(tmp_path / "bad.png")
    with pytest.raises(InputError, match=r"\[2, 7\]"):
        write_scribble(tmp_path / "out.png", bad)
    with pytest.raises(InputError, match="PNG"):
        write_scribble(tmp_path / "out.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="not found"):
        read_scribble(tmp_path / "missing.png")
    with pytest.raises(InputError, match="0 and 1"):
        scribbles_from_mask(np.full((8, 8), 2))
    with pytest.raises(InputError, match=r"\(H, W\)"):
        scribbles_from_mask(np.zeros((8, 8, 3)))


def test_generate_for_split_names_files_by_mask_and_ignores_order(tmp_path):
    paths = []
    for name, mask in (("one.png", blobs()), ("two.jpg", roads())):
        cv2.imwrite(str(tmp_path / name), mask * 255)
        paths.append(tmp_path / name)
    out = generate_scribbles_for_split(paths, tmp_path / "s1", seed=3, progress=False)
    assert [p.name for p in out] == ["one.png", "two.png"]
    generate_scribbles_for_split(paths[::-1], tmp_path / "s2", seed=3, progress=False)
    for name in ("one.png", "two.png"):
        np.testing.assert_array_equal(read_scribble(tmp_path / "s1" / name), read_scribble(tmp_path / "s2" / name))
    assert (read_scribble(tmp_path / "s1" / "two.png")[roads() == 0] != 1).all()  # JPEG mask binarised
