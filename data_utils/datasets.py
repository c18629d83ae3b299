"""Dataset readers for DeepGlobe, DUTS and Kvasir-SEG, reproducing the authors' preprocessing (docs/authors-seg.md §S2).

Data root = the folder holding ``<name>/seg-models/``. Split files are
``<data_root>/<name>/seg-models/{train,val,test}.csv`` with header ``img,target`` (made by
:mod:`data_utils.splits` or shipped in ``data.zip``). One :class:`~data_utils.spec.DatasetSpec`
drives everything; the two preprocessing orders are

* ``pad_to_square = false`` (DeepGlobe, Kvasir): uint8 BGR image and mask are area-resized to
  ``input_size``, augmented there, then the image is scaled (``deepglobe``: x/255·3.2−1.6,
  ``unit``: x/255) and the mask is divided by 255 (by 1 if stored as 0/1) and binarised at ≥ 0.5;
* ``pad_to_square = true`` (DUTS, PFANet's loader): image as float32, mask divided by its own
  maximum (all-black masks stay zero), augmentation at native size, black padding to a square
  (half the difference on each side, rounded down), area resize to ``input_size``, x/255 and
  ImageNet mean/std. The mask stays soft unless binarisation is requested.

Channel conversion (``channel_order = "rgb"``) happens after augmentation: every augmentation
step treats channels alike except the HSV jitter, which needs OpenCV's BGR, so this equals the
authors' convert-first order.

Scribbles (weak supervision, docs/rloss.md §L1.3). ``SegmentationSplit(..., scribbles=True)`` also
reads ``<data_root>/<name>/seg-models/scribbles/<mask file stem>.png`` (:func:`scribble_path`;
written by ``src/<ds>/seg-models/generate_scribbles.py``; values 0 = background,
1 = foreground, 255 = unlabelled, same size as the mask). A scribble takes the geometric path of
its mask — resize, the same augmentation draws, padding — but as a label map: geometric
transforms sample it at the nearest source pixel, and pixels that come from outside the image
(warp borders, rotation corners, square padding) are 255 and marked 0 in the item's ``roi``.
"""
from __future__ import annotations

import copy
import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data_utils.augment import AUGMENTATIONS, Augmentation
from data_utils.errors import InputError
from data_utils.scribbles import BACKGROUND, FOREGROUND, UNLABELLED, read_scribble
from data_utils.spec import (CSV_HEADER, SPLITS, DatasetSpec, layout_dirs, load_dataset_spec, seg_models_dir,
                             split_csv_path)

__all__ = ["DatasetSpec", "load_dataset_spec", "Sample", "SPLITS", "seg_models_dir", "split_csv_path",
           "layout_dirs", "read_split", "read_image", "read_mask", "pad_to_square", "load_sample",
           "SegmentationSplit", "to_prn_resolution", "SCRIBBLE_DIR", "scribble_dir", "scribble_path",
           "resize_scribble", "load_scribble_sample", "ScribbleSample"]

SCRIBBLE_DIR = "scribbles"

IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class Sample:
    """One image/mask pair of a split; ``id`` is the file stem (DeepGlobe: without ``_sat``)."""

    id: str
    image_path: Path
    mask_path: Path


def _missing_data_error(spec: DatasetSpec, data_root: Path) -> InputError:
    return InputError(
        f"data folder {seg_models_dir(spec, data_root)} not found; download the data with "
        f"`python download.py --data` (it unpacks into <repo>/data) or run the demo "
        f"`python demo.py`, or point --data_root at the folder holding {spec.name}/seg-models/")


def _sample_from_row(spec: DatasetSpec, row: dict[str, str], image_dir: Path, mask_dir: Path,
                     csv_path: Path, line: int) -> Sample:
    img, target = (row.get("img") or "").strip(), (row.get("target") or "").strip()
    if not img or not target:
        raise InputError(f"{csv_path}, line {line}: empty img or target; regenerate the file with "
                         f"`python -m data_utils.splits --dataset {spec.name}`")
    if spec.layout == "deepglobe":
        # The authors recover the id by dropping "_sat.jpg" and derive the mask name from it.
        if not img.endswith("_sat.jpg"):
            raise InputError(f"{csv_path}, line {line}: img {img!r} does not end with '_sat.jpg' "
                             f"(DeepGlobe layout); regenerate the split files")
        sample_id = img[: -len("_sat.jpg")]
        return Sample(sample_id, image_dir / img, mask_dir / f"{sample_id}_mask.png")
    if spec.layout == "kvasir":
        if not img.endswith(".jpg"):
            raise InputError(f"{csv_path}, line {line}: img {img!r} does not end with '.jpg' "
                             f"(Kvasir layout); regenerate the split files")
        return Sample(img[: -len(".jpg")], image_dir / img, mask_dir / img)
    return Sample(Path(img).stem, image_dir / img, mask_dir / target)


def read_split(spec: DatasetSpec, data_root: str | Path, split: str) -> list[Sample]:
    """The samples of ``split`` in CSV row order, with image/mask paths checked to exist."""
    data_root = Path(data_root)
    csv_path = split_csv_path(spec, data_root, split)
    if not seg_models_dir(spec, data_root).is_dir():
        raise _missing_data_error(spec, data_root)
    if not csv_path.is_file():
        raise InputError(f"split file {csv_path} not found; make the split files with "
                         f"`python -m data_utils.splits --dataset {spec.name} --data_root {data_root}` "
                         f"(data_utils.splits.write_splits)")
    text = csv_path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = tuple(h.strip() for h in (reader.fieldnames or ()))
    if not set(CSV_HEADER) <= set(header):
        raise InputError(f"{csv_path}: header {','.join(header) or '(empty)'} lacks the columns "
                         f"{','.join(CSV_HEADER)}; the first line must be 'img,target' — regenerate it with "
                         f"`python -m data_utils.splits --dataset {spec.name}`")
    reader.fieldnames = list(header)
    image_dir, mask_dir = layout_dirs(spec, data_root, split)
    samples = [_sample_from_row(spec, row, image_dir, mask_dir, csv_path, reader.line_num) for row in reader]
    if not samples:
        raise InputError(f"{csv_path} lists no samples; regenerate it with "
                         f"`python -m data_utils.splits --dataset {spec.name}`")
    missing = [p for s in samples for p in (s.image_path, s.mask_path) if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise InputError(f"{csv_path}: {len(missing)} listed file(s) do not exist, e.g. {shown}; check "
                         f"the data folder (re-download with `python download.py --data`) or regenerate "
                         f"the split files")
    return samples


def _check_complete_jpeg(path: Path, what: str) -> None:
    """Refuse a truncated JPEG: libjpeg decodes it anyway and fills the missing rows with grey."""
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":  # not a JPEG, whatever its name (decoded by content)
            return
        f.seek(0, io.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        tail = f.read().rstrip(b"\x00\r\n\t ")  # some writers pad after the end marker
    if not tail.endswith(b"\xff\xd9"):
        raise InputError(f"{what} {path} is a truncated JPEG (no end-of-image marker); download or copy "
                         f"the file again, or remove it from the split CSV")


def _read(path: Path, flag: int, what: str) -> np.ndarray:
    """``cv2.imread`` with ``flag``; unreadable or truncated files raise :class:`InputError` naming ``what``."""
    array = cv2.imread(str(path), flag)
    if array is None:
        raise InputError(f"cannot read {what} {path} (missing, empty or not an image); replace the "
                         f"file or remove it from the split CSV")
    _check_complete_jpeg(path, what)
    return array


def read_image(path: Path) -> np.ndarray:
    """An H×W×3 uint8 image in OpenCV's BGR order; unreadable or truncated files raise :class:`InputError`."""
    return _read(path, cv2.IMREAD_COLOR, "image")


def read_mask(path: Path) -> np.ndarray:
    """An H×W uint8 mask read as grayscale; unreadable or truncated files raise :class:`InputError`."""
    return _read(path, cv2.IMREAD_GRAYSCALE, "mask")


_ZERO_ONE_MASK_DIRS: set[Path] = set()  # folders already reported as holding 0/1 masks


def mask_scale(mask: np.ndarray, path: Path, mode: str) -> float:
    """What a raw uint8 mask is divided by to reach [0, 1].

    ``soft_max`` masks: their own maximum (all-black stays zero). Otherwise 255, except for masks
    stored as 0/1 (maximum 1), which are read as binary — said once per folder in the log.
    """
    mask_max = float(mask.max())
    if mode == "soft_max":
        return mask_max if mask_max > 0 else 1.0
    if mask_max == 1.0:
        folder = Path(path).parent
        if folder not in _ZERO_ONE_MASK_DIRS:
            _ZERO_ONE_MASK_DIRS.add(folder)
            logging.getLogger("patchrefinenet").info(
                "masks in %s hold 0/1 values (e.g. %s): read as binary, 1 = foreground", folder, Path(path).name)
        return 1.0
    return 255.0


def pad_to_square(image: np.ndarray, value: float = 0) -> np.ndarray:
    """Pad with ``value`` (black) to (nearly) square as PFANet's loader: ``(max(h, w) − side) // 2``
    on each side of the short axis, so an odd difference leaves the result one pixel short of square."""
    h, w = image.shape[:2]
    size = max(h, w)
    pad_h, pad_w = (size - h) // 2, (size - w) // 2
    return cv2.copyMakeBorder(image, pad_h, pad_h, pad_w, pad_w, cv2.BORDER_CONSTANT, value=(value,) * 3)


def _normalise(image_hwc: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """HWC image (0–255, channel order of the spec) → CHW float32 scaled as the spec says.

    Same float32 operations, in the same order, as the authors (in place, on the contiguous HWC
    copy, then one transposing copy)."""
    x = image_hwc.astype(np.float32)            # always a fresh copy
    x /= 255.0
    if spec.normalisation == "deepglobe":
        x *= 3.2
        x -= 1.6
    elif spec.normalisation == "imagenet":      # statistics are given in RGB order
        mean, std = IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
        if spec.channel_order == "bgr":
            mean, std = mean[::-1], std[::-1]
        x -= mean
        x /= std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def load_sample(spec: DatasetSpec, sample: Sample, *, augment: bool = False,
                rng: np.random.Generator | None = None,
                binary_mask: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read and preprocess one sample exactly as the authors' loaders (see the module docstring).

    Returns ``(image, mask, rgb)``: image 3×S×S float32 normalised, mask S×S float32, rgb S×S×3
    uint8 (the final, pre-normalisation image in RGB order, for plotting), S = ``input_size``.
    ``augment`` applies ``spec.train.augmentation`` with randomness drawn only from ``rng``.
    ``binary_mask``: None follows ``spec.mask_mode``; True binarises (≥ 0.5) the final mask;
    False keeps it soft (mask/255 or mask/max, after resizing).
    """
    out = _prepare(spec, sample, augment=augment, rng=rng, binary_mask=binary_mask, scribble=None)
    return out.image, out.mask, out.rgb


@dataclass(frozen=True)
class ScribbleSample:
    """One preprocessed sample with its scribble; S = ``input_size``.

    ``image`` 3×S×S float32 normalised, ``mask`` S×S float32, ``rgb`` S×S×3 uint8 (RGB order,
    what the DenseCRF loss needs), ``scribble`` S×S uint8 {0, 1, 255}, ``roi`` S×S uint8: 1 where
    the pixel comes from the image, 0 on padding and augmentation borders.
    """

    image: np.ndarray
    mask: np.ndarray
    rgb: np.ndarray
    scribble: np.ndarray | None = None
    roi: np.ndarray | None = None


def load_scribble_sample(spec: DatasetSpec, sample: Sample, scribble: np.ndarray, *, augment: bool = False,
                         rng: np.random.Generator | None = None, binary_mask: bool | None = None) -> ScribbleSample:
    """:func:`load_sample` plus the sample's scribble map (H×W uint8 {0, 1, 255} at the mask's size).

    Image and mask are exactly what :func:`load_sample` returns for the same ``rng``; the
    scribble and ROI follow the same geometry (module docstring).
    """
    return _prepare(spec, sample, augment=augment, rng=rng, binary_mask=binary_mask, scribble=scribble)


def resize_scribble(scribble: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an H×W scribble map to ``size`` = (height, width) as a label map.

    Nearest neighbour when no side shrinks. When shrinking, nearest neighbour would drop thin
    strokes (a 3-px stroke survives an 8× reduction with probability 3/8), so an output pixel
    takes the class with the larger labelled area in its footprint (area weights) and stays 255
    when its footprint holds no label or a tie.
    """
    h, w = scribble.shape
    height, width = size
    if (h, w) == (height, width):
        return scribble
    if height >= h and width >= w:
        return cv2.resize(scribble, (width, height), interpolation=cv2.INTER_NEAREST)
    fg = cv2.resize((scribble == FOREGROUND).astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    bg = cv2.resize((scribble == BACKGROUND).astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    out = np.full((height, width), UNLABELLED, dtype=np.uint8)
    out[fg > bg] = FOREGROUND
    out[bg > fg] = BACKGROUND
    return out


def _follow_geometry(augmentation: Augmentation, image: np.ndarray, labels: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``augmentation``'s geometry (the draws of ``rng``) to a label map, nearest-neighbour.

    The augmentation is run on a map of source coordinates (x, y, 1) in place of the mask: its
    bilinear warps are exact on that linear field, so each output pixel learns which source pixel
    it comes from. The third channel is the fraction of the sample inside the source image; ≥ 0.5
    means the nearest source pixel is inside (else: border → 255, ROI 0). Returns (labels, roi).
    """
    h, w = labels.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    coords = np.stack([xs, ys, np.ones_like(xs)], axis=2)  # (H, W, 3)
    _, moved = augmentation(image.copy(), coords, rng)  # same draws as the image/mask call
    inside = moved[..., 2] >= 0.5
    weight = np.where(inside, moved[..., 2], 1.0)
    x = np.clip(np.rint(moved[..., 0] / weight), 0, w - 1).astype(np.intp)
    y = np.clip(np.rint(moved[..., 1] / weight), 0, h - 1).astype(np.intp)
    out = np.where(inside, labels[y, x], UNLABELLED).astype(np.uint8)
    return np.ascontiguousarray(out), inside.astype(np.uint8)


def _prepare(spec: DatasetSpec, sample: Sample, *, augment: bool, rng: np.random.Generator | None,
             binary_mask: bool | None, scribble: np.ndarray | None) -> ScribbleSample:
    """The preprocessing of :func:`load_sample`, optionally carrying a scribble map along."""
    if augment and rng is None:
        raise InputError("load_sample(augment=True) needs rng=np.random.Generator (e.g. np.random.default_rng(seed))")
    image, mask = read_image(sample.image_path), read_mask(sample.mask_path)
    if image.shape[:2] != mask.shape:
        raise InputError(f"image {sample.image_path} is {image.shape[1]}x{image.shape[0]} (w x h) but mask "
                         f"{sample.mask_path} is {mask.shape[1]}x{mask.shape[0]}; they must have the same size")
    roi = None
    if scribble is not None:
        if scribble.shape != mask.shape:
            raise InputError(f"the scribble of {sample.mask_path} is {scribble.shape[1]}x{scribble.shape[0]} (w x h) "
                             f"but the mask is {mask.shape[1]}x{mask.shape[0]}; regenerate the scribbles with "
                             f"`python src/{spec.name}/seg-models/generate_scribbles.py`")
        roi = np.ones(mask.shape, dtype=np.uint8)
    scale = mask_scale(mask, sample.mask_path, spec.mask_mode)
    size = (spec.input_size, spec.input_size)
    augmentation = AUGMENTATIONS[spec.train.augmentation]
    replay = copy.deepcopy(rng) if augment and scribble is not None else None  # the same draws, for the scribble
    if spec.pad_to_square:
        image = image.astype(np.float32)
        mask = mask.astype(np.float32) / np.float32(scale)
        if augment:
            source = image
            image, mask = augmentation(image, mask, rng)
            if scribble is not None:
                scribble, roi = _follow_geometry(augmentation, source, scribble, replay)
        image = cv2.resize(pad_to_square(image), size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(pad_to_square(mask), size, interpolation=cv2.INTER_AREA)
        if scribble is not None:  # ROI: pixels at least half inside the image; no labels outside it
            roi = cv2.resize(pad_to_square(roi).astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5
            scribble = np.where(roi, resize_scribble(pad_to_square(scribble, UNLABELLED), size), UNLABELLED)
            scribble, roi = scribble.astype(np.uint8), roi.astype(np.uint8)
    else:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
        if scribble is not None:
            scribble, roi = resize_scribble(scribble, size), np.ones(size, dtype=np.uint8)
        if augment:
            source = image
            image, mask = augmentation(image, mask, rng)
            if scribble is not None:
                scribble, roi = _follow_geometry(augmentation, source, scribble, replay)
        mask = mask.astype(np.float32) / np.float32(scale)
    if spec.channel_order == "rgb":
        image = np.ascontiguousarray(image[..., ::-1])
    binarise = spec.mask_mode == "binary" if binary_mask is None else binary_mask
    if binarise:
        mask = (mask >= 0.5).astype(np.float32)
    rgb_plot = image if spec.channel_order == "rgb" else image[..., ::-1]
    if rgb_plot.dtype != np.uint8:
        rgb_plot = np.clip(np.rint(rgb_plot), 0, 255).astype(np.uint8)
    rgb_plot = np.ascontiguousarray(rgb_plot)
    return ScribbleSample(_normalise(image, spec), np.ascontiguousarray(mask, dtype=np.float32), rgb_plot,
                          scribble, roi)


def scribble_dir(spec: DatasetSpec, data_root: str | Path) -> Path:
    """``<data_root>/<name>/seg-models/scribbles``: one scribble PNG per mask, for every split."""
    return seg_models_dir(spec, data_root) / SCRIBBLE_DIR


def scribble_path(spec: DatasetSpec, data_root: str | Path, sample: Sample) -> Path:
    """``scribbles/<mask file stem>.png`` — the name :func:`data_utils.scribbles.generate_scribbles_for_split` writes."""
    return scribble_dir(spec, data_root) / f"{sample.mask_path.stem}.png"


def _check_scribbles(spec: DatasetSpec, data_root: Path, split: str, paths: list[Path]) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(paths)} scribble files of the {split} split are missing, e.g. "
                         f"{missing[0]}; make them with `python src/{spec.name}/seg-models/generate_scribbles.py "
                         f"--data_root {data_root} --splits {split}` (add --config FILE if you train with one)")


class SegmentationSplit(Dataset):
    """A split as a torch ``Dataset``: item ``i`` → (image 3×S×S float32, mask 1×S×S float32, i).

    With ``scribbles=True`` items are dicts for scribble supervision: ``{"image", "mask"`` as
    above, ``"scribble"`` S×S uint8 {0, 1, 255}, ``"rgb"`` 3×S×S float32 RGB in [0, 255] (for the
    DenseCRF loss), ``"roi"`` S×S uint8 (0 on padding/augmentation borders), ``"index"}``; the
    scribble files must exist (:func:`scribble_path`).

    With ``augment=True`` item ``i`` of epoch ``e`` uses ``np.random.default_rng((seed, e, i))``, so
    a run is reproducible whatever the worker count or order; call :meth:`set_epoch` before each
    epoch's iterator is created (DataLoader workers copy the dataset when iteration starts, so
    ``persistent_workers`` must stay off for the epoch to reach them).
    """

    def __init__(self, spec: DatasetSpec, data_root: str | Path, split: str, *, augment: bool = False,
                 seed: int = 0, binary_mask: bool | None = None, samples: list[Sample] | None = None,
                 scribbles: bool = False):
        if seed < 0:
            raise InputError(f"seed must be >= 0, got {seed}")
        self.spec = spec
        self.split = split
        self.augment = augment
        self.seed = seed
        self.binary_mask = binary_mask
        self.samples = list(samples) if samples is not None else read_split(spec, data_root, split)
        self.scribble_paths = None
        if scribbles:
            self.scribble_paths = [scribble_path(spec, data_root, s) for s in self.samples]
            _check_scribbles(spec, Path(data_root), split, self.scribble_paths)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (>= 0)."""
        if epoch < 0:
            raise InputError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int] | dict:
        rng = np.random.default_rng((self.seed, self.epoch, int(index))) if self.augment else None
        if self.scribble_paths is None:
            image, mask, _ = load_sample(self.spec, self.samples[index], augment=self.augment, rng=rng,
                                         binary_mask=self.binary_mask)
            return torch.from_numpy(image), torch.from_numpy(mask)[None], int(index)
        out = load_scribble_sample(self.spec, self.samples[index], read_scribble(self.scribble_paths[index]),
                                   augment=self.augment, rng=rng, binary_mask=self.binary_mask)
        rgb = torch.from_numpy(np.ascontiguousarray(out.rgb.transpose(2, 0, 1))).float()  # (3, S, S) in [0, 255]
        return {"image": torch.from_numpy(out.image), "mask": torch.from_numpy(out.mask)[None],
                "scribble": torch.from_numpy(out.scribble), "rgb": rgb, "roi": torch.from_numpy(out.roi),
                "index": int(index)}


def _as_hw(array: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[-1]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:-1])
    if a.ndim != 2:
        raise InputError(f"{name} must be H×W (or 1×H×W / H×W×1), got shape {np.shape(array)}")
    return a


def to_prn_resolution(prob_hw: np.ndarray, mask_hw: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Bring a base prediction and its mask to PRN's grid: (prob P×P float32, gt P×P float32 {0,1}).

    P = ``spec.prn_size``. The probability map is area-resized (identity at P; an integer upscale
    such as DUTS 256→512 is exact k×k pixel replication, as the authors' ``INTER_AREA`` call).
    The mask is binarised at its own resolution — ``soft_max`` masks by rounding half to even
    (the authors' rounding of the replicated DUTS mask, so exactly 0.5 → 0), ``binary`` masks at
    ≥ 0.5 — then resized by nearest neighbour (replication for integer upscales).
    """
    prob = _as_hw(prob_hw, "prob").astype(np.float32, copy=False)
    mask = _as_hw(mask_hw, "mask").astype(np.float32, copy=False)
    if prob.shape != mask.shape:
        raise InputError(f"prob {prob.shape} and mask {mask.shape} must have the same H×W")
    gt = np.rint(mask) if spec.mask_mode == "soft_max" else (mask >= 0.5)
    gt = gt.astype(np.float32)
    size = (spec.prn_size, spec.prn_size)
    if prob.shape != size:
        prob = cv2.resize(prob, size, interpolation=cv2.INTER_AREA)
        gt = cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(prob, dtype=np.float32), np.ascontiguousarray(gt, dtype=np.float32)
