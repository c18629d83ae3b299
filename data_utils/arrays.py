"""Checks and views for the arrays handed between stages: probability maps and binary masks.

Every stage stores one map per image in a ``.npy`` file, N×H×W×1 (NHWC, as the authors), and
readers also accept H×W and N×H×W. :func:`as_maps` turns any of these layouts into an (N, H, W)
*view* (no copy, memmaps stay memmaps), and the ``check_*`` functions raise
:class:`~data_utils.errors.InputError` naming the array, the image index and the likely fix.
The checks work image by image on whatever slice they are given; ``start`` is the index of the
slice's first image in the whole dataset, so streaming callers report dataset-wide indices.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from data_utils.errors import InputError

_LAYOUTS = "H×W, N×H×W or N×H×W×1"


def to_numpy(a) -> np.ndarray:
    """``a`` as a numpy array: numpy arrays (and memmaps) as they are, torch tensors on any device
    (half precision as float32), other array-likes through ``np.asarray``."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor, without importing torch
        t = a.detach().cpu()
        if t.is_floating_point() and t.element_size() < 4:
            t = t.float()  # numpy has no bfloat16
        return t.numpy()
    return np.asarray(a)


def as_maps(a, name: str) -> np.ndarray:
    """View ``a`` (H×W, N×H×W or N×H×W×1; numpy, memmap or a CPU/GPU tensor) as (N, H, W).

    Numpy inputs are never copied. Raises :class:`InputError` naming ``name`` for any other
    layout, a non-numeric dtype, or an empty dataset (N, H or W equal to 0).
    """
    try:
        a = to_numpy(a)
    except (TypeError, ValueError) as exc:  # ragged lists, unsupported tensor types
        raise InputError(f"{name}: cannot be read as an array ({exc})") from None
    if a.dtype.kind not in "biuf":
        raise InputError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    if a.ndim == 2:
        maps = a[None]
    elif a.ndim == 3:
        maps = a
    elif a.ndim == 4 and a.shape[-1] == 1:
        maps = a[..., 0]
    else:
        raise InputError(f"{name}: expected one map per image as {_LAYOUTS}, got shape {tuple(a.shape)}")
    if 0 in maps.shape:
        what = "no images (N = 0)" if maps.shape[0] == 0 else "an empty image (H or W = 0)"
        raise InputError(f"{name}: the dataset is empty: {what}, shape {tuple(a.shape)}")
    return maps


def _per_image(maps: np.ndarray, reduce) -> np.ndarray:
    """Apply ``reduce`` (np.min, np.max, np.any) over each image of an (N, H, W) array."""
    return reduce(maps.reshape(maps.shape[0], -1), axis=1)


def check_probabilities(maps, name: str, start: int = 0) -> None:
    """Check that every value is finite and in [0, 1]; ``start`` offsets the reported image index.

    Accepts any layout :func:`as_maps` accepts; integer/bool arrays (binary predictions) pass
    when they hold only 0 and 1.
    """
    maps = as_maps(maps, name)
    lo, hi = _per_image(maps, np.min), _per_image(maps, np.max)  # NaN propagates through min/max
    if maps.dtype.kind == "f":
        bad = ~(np.isfinite(lo) & np.isfinite(hi))
        if bad.any():
            i = int(np.argmax(bad))
            img = maps[i]
            what = "NaN" if np.isnan(img).any() else "inf"
            raise InputError(
                f"{name}: image {start + i} contains {what} values; probabilities must be finite "
                f"(check the model output / the file for corrupted entries)"
            )
    bad = (lo < 0) | (hi > 1)
    if bad.any():
        i = int(np.argmax(bad))
        if float(lo.min()) >= 0 and float(hi.max()) <= 255:  # integer or float 0-255 values
            hint = "it looks like an 8-bit image (0-255): divide by 255"
        else:
            hint = "did you pass logits? apply a sigmoid"
        raise InputError(
            f"{name}: image {start + i} has values in [{float(lo[i]):.4g}, {float(hi[i]):.4g}], "
            f"outside [0, 1] (whole slice: [{float(lo.min()):.4g}, {float(hi.max()):.4g}]); "
            f"probabilities are expected - {hint}"
        )


def check_binary(gt, name: str, start: int = 0) -> None:
    """Check that a mask holds only 0 and 1 (bool, integer or float dtypes are all accepted)."""
    maps = as_maps(gt, name)
    if maps.dtype.kind == "b":
        return
    if maps.dtype.kind == "u" and int(maps.max()) <= 1:
        return
    bad = _per_image((maps != 0) & (maps != 1), np.any)
    if not bad.any():
        return
    i = int(np.argmax(bad))
    values = np.unique(maps[i])  # sorted, NaN last; only on the error path
    odd = values[(values != 0) & (values != 1)]
    shown = ", ".join(f"{v:g}" for v in odd[:5].tolist()) + (", ..." if odd.size > 5 else "")
    if set(values.tolist()) <= {0, 255}:
        hint = "the mask looks like 0/255: divide by 255"
    elif ((odd > 1) | (odd < 0)).any():
        hint = "binarise it, e.g. mask > 127 for 8-bit masks, or map the label values to {0, 1}"
    elif np.isnan(odd).any():
        hint = "the mask contains NaN: check the file for corrupted entries"
    else:
        hint = "soft or resized masks must be binarised, e.g. (mask > 0.5)"
    raise InputError(f"{name}: image {start + i} is not binary: it contains {shown} (expected only 0 and 1); {hint}")


def check_same_shape(a, name_a: str, b, name_b: str) -> None:
    """Raise :class:`InputError` unless ``a`` and ``b`` have the same shape."""
    if tuple(a.shape) != tuple(b.shape):
        raise InputError(
            f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; "
            f"they must match (one map per image, same number of images and the same H×W)"
        )


def open_npy(path: str | os.PathLike, name: str) -> np.ndarray:
    """Open a ``.npy`` file read-only as a memmap, with a clear error if it is missing or not a ``.npy``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{name}: file not found: {path}")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # np.load raises ValueError/OSError/EOFError/... depending on the content
        raise InputError(f"{name}: cannot read {path} as a .npy array ({type(exc).__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise InputError(f"{name}: {path} is an .npz archive; expected a single .npy array")
    return arr


def open_maps(path: str | os.PathLike, name: str) -> np.ndarray:
    """Open a ``.npy`` file of maps read-only, viewed as (N, H, W) (see :func:`as_maps`)."""
    return as_maps(open_npy(path, name), f"{name} ({path})")
