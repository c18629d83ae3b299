"""data_utils.arrays: layouts, value checks and .npy opening, with errors that name what is wrong."""
import re

import numpy as np
import pytest
import torch

from data_utils.arrays import as_maps, check_binary, check_probabilities, check_same_shape, open_maps
from data_utils.errors import InputError


@pytest.mark.parametrize("shape, expected", [((5, 7), (1, 5, 7)), ((3, 5, 7), (3, 5, 7)), ((3, 5, 7, 1), (3, 5, 7))])
def test_as_maps_accepts_the_three_layouts_as_views(shape, expected):
    a = np.zeros(shape, np.float32)
    maps = as_maps(a, "prob")
    assert maps.shape == expected
    assert np.shares_memory(maps, a)


def test_as_maps_accepts_tensors_including_half_precision():
    t = torch.rand(2, 4, 6, 1, dtype=torch.bfloat16, requires_grad=True)
    maps = as_maps(t, "prob")
    assert maps.shape == (2, 4, 6) and maps.dtype == np.float32


@pytest.mark.parametrize("shape", [(5,), (2, 5, 7, 3), (1, 2, 5, 7, 1)])
def test_as_maps_rejects_other_layouts_naming_the_array_and_shape(shape):
    with pytest.raises(InputError, match=r"val_pred.*" + re.escape(str(shape))):
        as_maps(np.zeros(shape), "val_pred")


def test_as_maps_rejects_an_empty_dataset():
    with pytest.raises(InputError, match="prob.*empty"):
        as_maps(np.zeros((0, 8, 8, 1), np.float32), "prob")


def test_as_maps_rejects_non_numeric_data():
    with pytest.raises(InputError, match="gt.*dtype"):
        as_maps(np.array([["a", "b"], ["c", "d"]]), "gt")


def test_check_probabilities_accepts_probabilities_and_binary_predictions():
    check_probabilities(np.array([[0.0, 0.5], [1.0, 0.25]], np.float32), "prob")
    check_probabilities(np.array([[0, 1], [1, 0]], np.uint8), "prob")


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_check_probabilities_names_the_first_non_finite_image(bad, word):
    maps = np.full((4, 3, 3), 0.5, np.float32)
    maps[2, 1, 1] = bad
    maps[3, 0, 0] = bad
    with pytest.raises(InputError, match=f"prob: image 12 contains {word}"):
        check_probabilities(maps, "prob", start=10)


def test_check_probabilities_out_of_range_suggests_a_sigmoid():
    maps = np.full((3, 3, 3), 0.5, np.float32)
    maps[1] = np.linspace(-2.5, 3.0, 9).reshape(3, 3)
    with pytest.raises(InputError) as err:
        check_probabilities(maps, "val_pred", start=0)
    msg = str(err.value)
    assert "image 1" in msg and "-2.5" in msg and "[-2.5, 3]" in msg and "sigmoid" in msg


def test_check_binary_accepts_bool_uint8_and_float_masks():
    for dtype in (bool, np.uint8, np.float32, np.float64):
        check_binary(np.array([[0, 1], [1, 0]], dtype), "gt")


def test_check_binary_255_masks_suggest_dividing_by_255():
    gt = np.zeros((3, 4, 4), np.uint8)
    gt[2, :2] = 255
    with pytest.raises(InputError, match=r"gt: image 7 is not binary: it contains 255.*divide by 255"):
        check_binary(gt, "gt", start=5)


def test_check_binary_soft_masks_name_the_values():
    gt = np.zeros((2, 4, 4), np.float32)
    gt[0, 0, :3] = [0.5, 0.25, 1.0]
    with pytest.raises(InputError, match=r"image 0 .* 0.25, 0.5 .*binarised"):
        check_binary(gt, "gt")


def test_check_binary_rejects_nan_and_negative_labels():
    gt = np.zeros((2, 2, 2), np.float64)
    gt[1, 0, 0] = np.nan
    with pytest.raises(InputError, match="image 1.*nan"):
        check_binary(gt, "gt")
    with pytest.raises(InputError, match="-1"):
        check_binary(np.array([[0, -1]]), "gt")


def test_check_same_shape_names_both_arrays():
    with pytest.raises(InputError, match=r"prob has shape \(2, 4, 4\) but gt has shape \(3, 4, 4\)"):
        check_same_shape(np.zeros((2, 4, 4)), "prob", np.zeros((3, 4, 4)), "gt")
    check_same_shape(np.zeros((2, 4)), "a", np.ones((2, 4)), "b")


def test_open_maps_gives_a_read_only_memmap_view(tmp_path):
    path = tmp_path / "val_pred.npy"
    np.save(path, np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5, 1) / 30)
    maps = open_maps(path, "prob")
    assert maps.shape == (2, 3, 5) and isinstance(maps, np.memmap) and not maps.flags.writeable
    assert maps[1, 2, 4] == np.float32(29 / 30)


def test_open_maps_errors_name_the_path(tmp_path):
    with pytest.raises(InputError, match=r"prob: file not found: .*missing\.npy"):
        open_maps(tmp_path / "missing.npy", "prob")
    text = tmp_path / "notes.npy"
    text.write_text("not an array")
    with pytest.raises(InputError, match=r"prob: cannot read .*notes\.npy"):
        open_maps(text, "prob")
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.zeros(3))
    with pytest.raises(InputError, match=r"arrays\.npz is an \.npz"):
        open_maps(npz, "gt")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 3, 4, 5)))
    with pytest.raises(InputError, match=r"gt \(.*wrong\.npy\).*\(2, 3, 4, 5\)"):
        open_maps(wrong, "gt")



def test_uint8_probabilities_in_0_255_are_told_to_divide_by_255():
    maps = np.full((2, 8, 8), 200, np.uint8)
    with pytest.raises(InputError, match="divide by 255") as info:
        check_probabilities(maps, "val_pred.npy")
    assert "sigmoid" not in str(info.value)
