"""PRN data: base probabilities, pseudo-labels and ground truth, read one image at a time.

The authors load whole splits into RAM (10+ GB for DUTS). Here every array stays on disk: the
``.npy`` header is parsed once and each item reads exactly one H×W map with ``os.pread``, so the
process' resident memory does not grow with N (a memory map would, as its pages are touched).

Augmentation is the authors' (docs/authors-refine.md §R8): horizontal flip, vertical flip, rotation by 90°
counter-clockwise, each with p = 0.5, in that order, identical on all arrays of an item. The
draws come from ``numpy.random.default_rng((seed, epoch, index))``, so an epoch's augmentations
do not depend on the worker count, the visiting order or an interruption: a resumed run sees
exactly the batches an uninterrupted run would. The rotation is applied only to square maps
(for H ≠ W it would change the shape); the flips keep the patch grid of a pseudo-label aligned
for any H×W, and on a square map whose side is a multiple of the patch size so does the rotation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data_utils.arrays import as_maps, check_binary, check_probabilities, open_npy
from data_utils.errors import InputError
from data_utils.layout import ARRAYS, RunFolders, pseudo_label_paths


class NpyMaps:
    """Read-only access to image ``i`` of an H×W / N×H×W / N×H×W×1 ``.npy`` file, one map at a time.

    ``len()`` is N, ``.shape`` is (N, H, W), ``[i]`` returns a fresh (H, W) array in the file's
    dtype. Picklable (it re-opens lazily), so it can cross into DataLoader worker processes.
    """

    def __init__(self, path: str | os.PathLike, name: str) -> None:
        self.path, self.name = Path(path), name
        arr = open_npy(self.path, name)  # clear errors: missing file, not a .npy, .npz
        maps = as_maps(arr, f"{name} ({self.path})")  # checks layout, dtype, emptiness
        self.shape: tuple[int, int, int] = tuple(int(s) for s in maps.shape)  # type: ignore[assignment]
        self.dtype = arr.dtype
        # Plain C-ordered files are read with pread at a byte offset; anything else via the memmap.
        self._offset = arr.offset if (arr.flags.c_contiguous and hasattr(os, "pread")) else None
        del arr, maps
        self._fd: int | None = None
        self._mm: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        n, h, w = self.shape
        if not -n <= i < n:
            raise IndexError(f"{self.name}: index {i} out of range for {n} images")
        i %= n
        if self._offset is None:
            if self._mm is None:
                self._mm = as_maps(open_npy(self.path, self.name), self.name)  # a view, never a copy
            return np.array(self._mm[i])
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((h, w), dtype=self.dtype)
        offset = self._offset + i * out.nbytes
        if hasattr(os, "preadv"):  # straight into the array, no intermediate bytes object
            got = os.preadv(self._fd, [memoryview(out).cast("B")], offset)
        else:
            buf = os.pread(self._fd, out.nbytes, offset)
            got = len(buf)
            out.reshape(-1).view(np.uint8)[:got] = np.frombuffer(buf, dtype=np.uint8)
        if got != out.nbytes:
            raise InputError(f"{self.name} ({self.path}): the file is truncated (image {i} is incomplete)")
        return out

    def close(self) -> None:
        """Release the file handle (re-opened on the next read)."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._mm = None, None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fd"], state["_mm"] = None, None  # every process opens its own handle
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


@dataclass(frozen=True)
class Augmentation:
    """Which of the authors' transforms an item gets (applied in field order)."""

    hflip: bool
    vflip: bool
    rot90: bool


def draw_augmentation(seed: int, epoch: int, index: int) -> Augmentation:
    """The transforms of item ``index`` in ``epoch``: three independent p = 0.5 draws."""
    u = np.random.default_rng((int(seed), int(epoch), int(index))).random(3)
    return Augmentation(bool(u[0] < 0.5), bool(u[1] < 0.5), bool(u[2] < 0.5))


def apply_augmentation(maps: list[np.ndarray], aug: Augmentation) -> list[np.ndarray]:
    """Apply ``aug`` identically to every (H, W) map; the rotation only when H == W.

    rot90 is counter-clockwise: ``out[i, j] = in[j, W - 1 - i]`` (``np.rot90(a, 1)``).
    """
    out = []
    for m in maps:
        if aug.hflip:
            m = m[:, ::-1]
        if aug.vflip:
            m = m[::-1, :]
        if aug.rot90 and m.shape[0] == m.shape[1]:
            m = np.rot90(m, 1)
        out.append(np.ascontiguousarray(m))
    return out


class EpochMaps(Dataset):
    """Base of the engine's map datasets: ``augment``, ``seed`` and the current ``epoch``.

    :meth:`set_epoch` selects an epoch's augmentation draws and :meth:`augmented` applies them
    to an item's maps (docs/authors-refine.md §R8); subclasses set the three attributes in ``__init__``.
    """

    augment: bool
    seed: int
    epoch: int

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch``."""
        self.epoch = int(epoch)

    def augmented(self, maps: list[np.ndarray], index: int) -> list[np.ndarray]:
        """``maps`` of image ``index`` as this epoch sees them: augmented if ``augment`` is on, else as given."""
        if not self.augment:
            return maps
        return apply_augmentation(maps, draw_augmentation(self.seed, self.epoch, index))


class RefineDataset(EpochMaps):
    """Items of PRN training/evaluation: ``{"input", "gt"[, "pseudo"], "index"}``.

    input: (1, H, W) float32 base probabilities; gt, pseudo: (1, H, W) float32 in {0, 1};
    index: the image index in the files. Values are checked per item (a bad image raises
    :class:`InputError` naming the file and index). Call :meth:`set_epoch` before each epoch
    when augmenting (the DataLoader must not use persistent workers, so each epoch's workers
    see the new epoch).
    """

    def __init__(self, inputs: str | os.PathLike, gt: str | os.PathLike, pseudo: str | os.PathLike | None = None,
                 *, augment: bool = False, seed: int = 0) -> None:
        self.inputs = NpyMaps(inputs, "inputs")
        self.gt = NpyMaps(gt, "ground truth")
        self.pseudo = NpyMaps(pseudo, "pseudo-labels") if pseudo is not None else None
        for other in (self.gt, self.pseudo):
            if other is not None and other.shape != self.inputs.shape:
                raise InputError(
                    f"{other.name} ({other.path}) holds {other.shape[0]} maps of {other.shape[1]}×{other.shape[2]} "
                    f"but inputs ({self.inputs.path}) hold {self.inputs.shape[0]} maps of "
                    f"{self.inputs.shape[1]}×{self.inputs.shape[2]}; they must come from the same split and size "
                    f"(regenerate the mismatched file)")
        if int(seed) < 0:
            raise InputError(f"seed must be >= 0, got {seed}")
        self.augment, self.seed, self.epoch = bool(augment), int(seed), 0

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every map."""
        return self.inputs.shape[1], self.inputs.shape[2]

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict:
        x = self.inputs[index]
        check_probabilities(x, f"inputs ({self.inputs.path})", start=index)
        maps = [x.astype(np.float32, copy=False)]
        for arr in (self.pseudo, self.gt):
            if arr is not None:
                m = arr[index]
                check_binary(m, f"{arr.name} ({arr.path})", start=index)
                maps.append(m.astype(np.float32, copy=False))
        maps = self.augmented(maps, index)
        item = {"input": torch.from_numpy(maps[0])[None], "gt": torch.from_numpy(maps[-1])[None], "index": index}
        if self.pseudo is not None:
            item["pseudo"] = torch.from_numpy(maps[1])[None]
        return item


# --------------------------------------------------------------------------- file locations

(TRAIN_INPUTS, TRAIN_GT), (TEST_INPUTS, TEST_GT) = ARRAYS["val"], ARRAYS["test"]


def pseudo_label_name(patch_size: int) -> str:
    """``train_aux_gt_p_<P>.npy``: the authors' name for the pseudo-labels made with P-px patches."""
    return pseudo_label_paths(".", "val", patch_size)[0].name


class RefineOutputs(RunFolders):
    """Where a PRN run writes, under ``<output_root>`` (:class:`data_utils.layout.RunFolders` with
    ``name`` = the grid, e.g. ``p64``). The authors' downloaded files are read from
    ``checkpoints/released/`` and never written."""

    @property
    def aux(self) -> str:
        return self.name

    @property
    def released_weights(self) -> Path:
        """The authors' file for this name where ``download.py`` puts it: ``checkpoints/released/<aux>_weights.th``."""
        return self.released()

    def weights_to_load(self) -> tuple[Path, str]:
        """(path, ``"trained"`` or ``"released"``): ours if it exists, else the released file; InputError if neither."""
        for path, kind in ((self.weights, "trained"), (self.released_weights, "released")):
            if path.is_file():
                return path, kind
        raise InputError(f"no {self.aux} weights: neither {self.weights} (train.py --aux_model {self.aux} writes it) "
                         f"nor {self.released_weights} (`python download.py`) exists; or pass --checkpoint_path FILE")


def require_arrays(paths: dict[str, Path], how_to_make: str) -> None:
    """Raise one :class:`InputError` listing every missing file of ``paths`` and ``how_to_make`` them."""
    missing = [f"{name}: {p}" for name, p in paths.items() if not Path(p).is_file()]
    if missing:
        raise InputError("missing PRN input array(s):\n  " + "\n  ".join(missing) + f"\n{how_to_make}")


def generator_hint(dataset: str, base_model: str, *, test: bool = False) -> str:
    """How to produce the PRN arrays of ``dataset`` / ``base_model`` (for error messages)."""
    ds = dataset or "<dataset>"
    model = base_model or "<base_model>"
    what = "the test arrays (test_input.npy, test_orig_gt.npy)" if test else "val_pred.npy and val_orig_gt.npy"
    return (f"Generate {what} with `python src/{ds}/seg-models/generate_aux_training_data.py --model {model}` "
            f"(needs the base model's weights and the raw data), or run the demo for small synthetic data "
            f"(see the README); --data_root points at another data folder.")
