"""Probability maps and masks from wherever a user keeps them: arrays, lists, tensors or folders.

Every entry point of the in-memory API (:class:`~patchrefinenet.refiner.Refiner`) and of the
``patchrefinenet`` command turns its input into a :class:`MapSource`: a sized, indexable sequence
of (H, W) float32 maps that reads one map at a time, so 10,000 files never sit in memory at once.

- numpy arrays / torch tensors: (N, H, W), (N, H, W, 1), (N, 1, H, W) or one (H, W) map;
- a list or tuple of (H, W) maps, possibly of different sizes;
- a folder: one file per map, paired with masks by file stem. Read: 8- and 16-bit PNG and TIFF
  (scaled to [0, 1] by 255 or 65535, said once), float ``.npy`` / ``.npz`` in [0, 1]; masks may
  be 0/1 or 0/255 (any integer mask is read as ``value > max/2`` unless its maximum is 1).

Values are checked when a map is read (the boundary where data enters), and every error names the
file or array index and the fix.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import cv2
import numpy as np

from data_utils.arrays import as_maps, check_probabilities, to_numpy
from data_utils.errors import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("patchrefinenet")

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")
SUFFIXES = IMAGE_SUFFIXES + ARRAY_SUFFIXES
_said: set[str] = set()  # messages logged once per process


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.info(message)


def _read_file(path: Path) -> np.ndarray:
    """The raw array stored in ``path`` (any supported suffix), squeezed to (H, W) where possible."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"{path}: not a readable .npy file ({exc}); save the map with numpy.save") from None
    elif suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if not keys:
                    raise InputError(f"{path}: the .npz archive holds no array; save the map with numpy.savez")
                a = z["prob"] if "prob" in keys else z["mask"] if "mask" in keys else z[keys[0]]
        except (ValueError, OSError) as exc:
            raise InputError(f"{path}: not a readable .npz file ({exc}); save the map with numpy.savez") from None
    else:
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if a is None:
            raise InputError(f"{path}: cannot be decoded as an image (truncated or not a {suffix[1:].upper()}); "
                             "re-export it")
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[-1]) and suffix in ARRAY_SUFFIXES:
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:-1])
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        what = "an RGB/multi-channel image" if a.ndim == 3 else f"an array of shape {a.shape}"
        raise InputError(f"{path}: holds {what}; a map must be one channel (H×W): save the foreground "
                         "probability (or mask) as a grayscale image or an H×W array")
    if 0 in a.shape:
        raise InputError(f"{path}: the map is empty (shape {a.shape})")
    return a


def probabilities_from(a: np.ndarray, where: str) -> np.ndarray:
    """An (H, W) array as float32 probabilities in [0, 1]; 8/16-bit integer images are scaled, floats checked."""
    if a.dtype == np.uint8 or a.dtype == np.uint16:
        scale = 255.0 if a.dtype == np.uint8 else 65535.0
        _say_once(f"reading {a.dtype.itemsize * 8}-bit probability images as value / {scale:g}")
        return a.astype(np.float32) / np.float32(scale)
    if a.dtype.kind == "b":
        return a.astype(np.float32)
    if a.dtype.kind != "f":
        raise InputError(f"{where}: probabilities of dtype {a.dtype} are not supported; store float values in [0, 1] "
                         "or 8/16-bit images")
    p = a.astype(np.float32, copy=False)
    check_probabilities(p, where)
    return p


def mask_from(a: np.ndarray, where: str) -> np.ndarray:
    """An (H, W) array as a float32 {0, 1} mask: 0/1 as it is, 0/255 (any integer mask) as value > max/2."""
    if a.dtype.kind == "b":
        return a.astype(np.float32)
    hi = float(np.max(a))
    lo = float(np.min(a))
    if not (np.isfinite(hi) and np.isfinite(lo)) or lo < 0:
        raise InputError(f"{where}: a mask must hold non-negative finite values (0/1 or 0/255), got [{lo:g}, {hi:g}]")
    if hi <= 1.0:
        if a.dtype.kind == "f" and not np.isin(a, (0.0, 1.0)).all():
            raise InputError(f"{where}: a float mask must hold only 0 and 1; threshold it first (mask > 0.5)")
        return a.astype(np.float32)
    if a.dtype.kind == "f":
        raise InputError(f"{where}: float mask values in [{lo:g}, {hi:g}]; masks must be 0/1 or integer 0/255")
    cut = np.iinfo(a.dtype).max / 2 if a.dtype.kind in "ui" else hi / 2
    _say_once("reading integer masks with values above 1 as value > half their dtype's maximum (0/255 -> 0/1)")
    return (a > cut).astype(np.float32)


class MapSource:
    """A sized sequence of (H, W) float32 maps read one at a time; ``names[i]`` identifies map i.

    ``kind`` is ``"probs"`` (checked to lie in [0, 1]) or ``"masks"`` (converted to {0, 1}).
    Subclasses implement :meth:`_raw` and :meth:`size`.
    """

    kind: str
    names: list[str]
    description: str

    def __len__(self) -> int:
        return len(self.names)

    def size(self, i: int) -> tuple[int, int]:
        raise NotImplementedError

    def _raw(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def where(self, i: int) -> str:
        return f"{self.description}[{i}]"

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(f"{self.description}: index {i} out of range for {len(self)} maps")
        a = self._raw(i)
        return probabilities_from(a, self.where(i)) if self.kind == "probs" else mask_from(a, self.where(i))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def subset(self, indices: Sequence[int]) -> "MapSource":
        """The maps ``indices`` of this source, in that order (no data is read)."""
        return _Subset(self, list(indices))


class _ArrayMaps(MapSource):
    def __init__(self, maps: np.ndarray, kind: str, description: str) -> None:
        self.maps, self.kind, self.description = maps, kind, description
        self.names = [f"{i:05d}" for i in range(maps.shape[0])]

    def size(self, i: int) -> tuple[int, int]:
        return int(self.maps.shape[1]), int(self.maps.shape[2])

    def _raw(self, i: int) -> np.ndarray:
        return np.array(self.maps[i])  # a copy: memory maps are read-only, and a map may be modified downstream


class _ListMaps(MapSource):
    def __init__(self, items: list[np.ndarray], kind: str, description: str) -> None:
        self.items, self.kind, self.description = items, kind, description
        self.names = [f"{i:05d}" for i in range(len(items))]

    def size(self, i: int) -> tuple[int, int]:
        return tuple(int(s) for s in self.items[i].shape)  # type: ignore[return-value]

    def _raw(self, i: int) -> np.ndarray:
        return self.items[i]


class FolderMaps(MapSource):
    """One map per file of ``folder`` (suffixes :data:`SUFFIXES`), sorted by file stem."""

    def __init__(self, folder: str | os.PathLike, kind: str) -> None:
        self.folder, self.kind = Path(folder), kind
        self.description = str(self.folder)
        flag = "--probs" if kind == "probs" else "--masks"
        if not self.folder.exists():
            raise InputError(f"{flag} {self.folder}: no such folder; pass the folder that holds the {kind} files")
        if not self.folder.is_dir():
            raise InputError(f"{flag} {self.folder}: not a folder; pass the folder that holds one file per map")
        by_stem: dict[str, Path] = {}
        for p in sorted(self.folder.iterdir()):
            if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith("."):
                if p.stem in by_stem:
                    raise InputError(f"{flag} {self.folder}: two files share the stem {p.stem!r} ({by_stem[p.stem].name}, "
                                     f"{p.name}); keep one map per name")
                by_stem[p.stem] = p
        if not by_stem:
            raise InputError(f"{flag} {self.folder}: the folder holds no map files ({', '.join(SUFFIXES)})")
        self.names = sorted(by_stem)
        self.paths = [by_stem[n] for n in self.names]
        self._sizes: dict[int, tuple[int, int]] = {}

    def where(self, i: int) -> str:
        return str(self.paths[i])

    def size(self, i: int) -> tuple[int, int]:
        if i not in self._sizes:
            self._sizes[i] = tuple(int(s) for s in self._raw(i).shape)  # type: ignore[assignment]
        return self._sizes[i]

    def _raw(self, i: int) -> np.ndarray:
        return _read_file(self.paths[i])


class _Subset(MapSource):
    def __init__(self, parent: MapSource, indices: list[int]) -> None:
        self.parent, self.indices = parent, indices
        self.kind, self.description = parent.kind, parent.description
        self.names = [parent.names[i] for i in indices]

    def where(self, i: int) -> str:
        return self.parent.where(self.indices[i])

    def size(self, i: int) -> tuple[int, int]:
        return self.parent.size(self.indices[i])

    def _raw(self, i: int) -> np.ndarray:
        return self.parent._raw(self.indices[i])


def as_source(obj: Any, kind: str = "probs", name: str | None = None) -> MapSource:
    """Wrap ``obj`` (array, tensor, list of maps, folder path or a MapSource) as a :class:`MapSource`."""
    if kind not in ("probs", "masks"):
        raise ValueError(f"kind must be 'probs' or 'masks', got {kind!r}")
    name = name or kind
    if isinstance(obj, MapSource):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return FolderMaps(obj, kind)
    if isinstance(obj, (list, tuple)):
        if not obj:
            raise InputError(f"{name}: the list is empty; pass at least one map")
        items = []
        for i, m in enumerate(obj):
            a = to_numpy(m)
            a = a.reshape(a.shape[1:]) if a.ndim == 3 and a.shape[0] == 1 else a
            a = a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a
            if a.ndim != 2 or 0 in a.shape:
                raise InputError(f"{name}[{i}]: each map must be a non-empty H×W array, got shape {tuple(a.shape)}")
            items.append(a)
        return _ListMaps(items, kind, name)
    a = to_numpy(obj)
    if a.ndim == 4 and a.shape[1] == 1 and a.shape[-1] != 1:  # (N, 1, H, W), torch layout
        a = a[:, 0]
    return _ArrayMaps(as_maps(a, name), kind, name)


def aligned_masks(probs: MapSource, masks: MapSource) -> MapSource:
    """``masks`` reordered to follow ``probs``: folders pair by file stem, arrays and lists by position.

    Raises InputError naming an unpaired file, or when the counts differ."""
    if isinstance(masks, FolderMaps) or isinstance(probs, FolderMaps):
        lonely_p = sorted(set(probs.names) - set(masks.names))
        lonely_m = sorted(set(masks.names) - set(probs.names))
        if lonely_p or lonely_m:
            parts = []
            if lonely_p:
                parts.append(f"no mask for {len(lonely_p)} probability file(s), e.g. "
                             f"{probs.where(probs.names.index(lonely_p[0]))}")
            if lonely_m:
                parts.append(f"no probability file for {len(lonely_m)} mask(s), e.g. "
                             f"{masks.where(masks.names.index(lonely_m[0]))}")
            raise InputError("; ".join(parts) + ": maps and masks pair by file stem; add or remove the unpaired files")
        index = {n: i for i, n in enumerate(masks.names)}
        return masks.subset([index[n] for n in probs.names])
    if len(probs) != len(masks):
        raise InputError(f"{probs.description} holds {len(probs)} maps but {masks.description} holds {len(masks)} masks; "
                         "pass one mask per map")
    return masks


def check_same_size(probs: MapSource, masks: MapSource, i: int) -> None:
    """Raise InputError if map ``i`` and its mask differ in size."""
    if probs.size(i) != masks.size(i):
        (h, w), (mh, mw) = probs.size(i), masks.size(i)
        raise InputError(f"{probs.where(i)} is {h}×{w} but its mask {masks.where(i)} is {mh}×{mw}; "
                         "a map and its mask must have the same size")


def batches(source: MapSource, indices: list[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive runs of ``indices`` whose maps have equal sizes, at most ``batch_size`` long."""
    run: list[int] = []
    for i in indices:
        if run and (len(run) == batch_size or source.size(i) != source.size(run[0])):
            yield run
            run = []
        run.append(i)
    if run:
        yield run


def stack(source: MapSource, run: list[int]) -> "torch.Tensor":
    """Maps ``run`` of ``source`` (equal sizes) as one (B, 1, H, W) float32 tensor."""
    import torch

    return torch.from_numpy(np.stack([source[i] for i in run]))[:, None]


__all__ = ["FolderMaps", "MapSource", "aligned_masks", "as_source", "batches", "check_same_size", "mask_from",
           "probabilities_from", "stack"]
