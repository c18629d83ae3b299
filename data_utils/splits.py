"""The authors' train/val/test split rule (docs/authors-seg.md §S2.2), without scikit-learn, and the split CSV writer.

The authors call scikit-learn's ``train_test_split(..., test_size=0.2, random_state=29)``. For a
float ``test_size`` and no ``train_size`` that function computes (``_validate_shuffle_split``)
``n_test = ceil(test_size · n)`` and ``n_train = n − n_test``, then takes the first split of
``ShuffleSplit(test_size=n_test, train_size=n_train, random_state=29)``, whose
``_iter_indices`` draws ``perm = np.random.RandomState(29).permutation(n)`` and yields
``train = perm[n_test : n_test + n_train]``, ``test = perm[:n_test]``; every array passed is
indexed with those same indices (so images and masks stay paired), in permutation order.
:func:`shuffle_split` is exactly that; it was checked equal to scikit-learn 1.9.1 for every
n from 2 to 299 and for 1246, 4015, 6226.

Per dataset (``spec.layout``):

* DeepGlobe: sorted ``train/*_sat.jpg`` and sorted ``train_labels/*_mask.png`` paired by
  position; train = 80 %, the remaining 20 % split again into val 80 % / test 20 %
  (6,226 tiles → 4,980 / 996 / 250).
* DUTS: train = all of ``DUTS-TR``; the sorted ``DUTS-TE`` pairs → val 80 % / test 20 %.
* Kvasir: train = the ids of ``train.txt``; the ids of ``test.txt`` → val 80 % / test 20 %.

Fixes: Kvasir lines are stripped and blank lines dropped (the authors' split kept a bogus entry
for a trailing newline); stray files (``desktop.ini``, hidden files, anything not matching the
layout's name pattern) are dropped *before* splitting (the authors dropped ``desktop.ini``
after, which unpaired the lists) — results differ from the authors' only when such files exist;
image and mask stems are checked to pair up. Usage::

    python -m data_utils.splits --dataset deepglobe --data_root data
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import sys
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np

from data_utils.errors import InputError
from data_utils.io import write_text_atomic
from data_utils.spec import (CSV_HEADER, DATASET_NAMES, SPLITS, DatasetSpec, dataset_spec_path, layout_dirs,
                             load_dataset_spec, repo_root, seg_models_dir, split_csv_path)

log = logging.getLogger("patchrefinenet")
T = TypeVar("T")
TEST_SIZE = 0.2
SEED = 29
Pair = tuple[str, str]
_PATTERNS = {"deepglobe": ("_sat.jpg", "_mask.png"), "duts": (".jpg", ".png")}


def shuffle_split(n: int, test_size: float = TEST_SIZE, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of ``train_test_split(range(n), test_size, random_state=seed)``."""
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    if n_test < 1 or n_train < 1:
        raise InputError(f"cannot split {n} item(s) with test_size={test_size}: both parts must be non-empty "
                         f"(need at least 2 items)")
    perm = np.random.RandomState(seed).permutation(n)
    return perm[n_test:n_test + n_train], perm[:n_test]


def split_items(items: Sequence[T], test_size: float = TEST_SIZE, seed: int = SEED) -> tuple[list[T], list[T]]:
    """(train items, test items) in the order scikit-learn's ``train_test_split`` returns them."""
    train, test = shuffle_split(len(items), test_size, seed)
    return [items[i] for i in train], [items[i] for i in test]


def _listing(folder: Path, suffix: str) -> list[str]:
    """Sorted names of the files in ``folder`` ending with ``suffix``; other entries are logged and dropped."""
    if not folder.is_dir():
        hint = ""
        if "DUTS-" in folder.name and (folder.parent.parent / folder.name).is_dir():
            hint = f" (found the singly nested {folder.parent.parent / folder.name}; the scripts use the doubly nested one, move it)"
        raise InputError(f"folder {folder} not found{hint}; download the data with `python download.py --data`")
    names = sorted(p.name for p in folder.iterdir())
    kept = [n for n in names if n.endswith(suffix) and not n.startswith(".") and (folder / n).is_file()]
    dropped = sorted(set(names) - set(kept))
    if dropped:
        log.warning("%s: ignoring %d entr%s not matching *%s: %s", folder, len(dropped),
                    "y" if len(dropped) == 1 else "ies", suffix, ", ".join(dropped[:5]))
    return kept


def _paired_listing(image_dir: Path, mask_dir: Path, image_suffix: str, mask_suffix: str) -> list[Pair]:
    """Sorted image and mask listings paired by position; their stems must agree."""
    images, masks = _listing(image_dir, image_suffix), _listing(mask_dir, mask_suffix)
    image_ids = [n[: -len(image_suffix)] for n in images]
    mask_ids = [n[: -len(mask_suffix)] for n in masks]
    if image_ids != mask_ids:
        unmatched = sorted(set(image_ids) ^ set(mask_ids))
        raise InputError(f"{image_dir} has {len(images)} *{image_suffix} and {mask_dir} has {len(masks)} "
                         f"*{mask_suffix} files whose ids do not pair up (e.g. {', '.join(unmatched[:3])}); "
                         f"every image needs a mask with the same id")
    if not images:
        raise InputError(f"{image_dir} holds no *{image_suffix} images; download the data with `python download.py --data`")
    return list(zip(images, masks))


def _kvasir_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"Kvasir id list {path} not found; it ships in data.zip (`python download.py --data`)")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    ids = [i for i in ids if i and i != "desktop.ini"]
    if not ids:
        raise InputError(f"{path} lists no image ids; it must hold one id (file name without .jpg) per line")
    return ids


def _kvasir_pairs(spec: DatasetSpec, data_root: Path, list_path: Path) -> list[Pair]:
    image_dir, mask_dir = layout_dirs(spec, data_root, "train")
    names = [f"{i}.jpg" for i in _kvasir_ids(list_path)]
    missing = [d / n for n in names for d in (image_dir, mask_dir) if not (d / n).is_file()]
    if missing:
        raise InputError(f"{list_path}: {len(missing)} listed file(s) do not exist, e.g. "
                         f"{', '.join(str(p) for p in missing[:3])}; fix the id list or the data folder")
    return [(n, n) for n in names]


def make_splits(spec: DatasetSpec, data_root: str | Path) -> dict[str, list[Pair]]:
    """The (img, target) file-name pairs of train/val/test for ``spec.layout`` (rule in the module docstring)."""
    data_root = Path(data_root)
    root = seg_models_dir(spec, data_root)
    if not root.is_dir():
        raise InputError(f"data folder {root} not found; download the data with `python download.py --data` "
                         f"or run the demo `python demo.py`")
    if spec.layout == "deepglobe":
        pairs = _paired_listing(*layout_dirs(spec, data_root, "train"), *_PATTERNS["deepglobe"])
        train, rest = split_items(pairs)
        val, test = split_items(rest)
    elif spec.layout == "duts":
        train = _paired_listing(*layout_dirs(spec, data_root, "train"), *_PATTERNS["duts"])
        val, test = split_items(_paired_listing(*layout_dirs(spec, data_root, "test"), *_PATTERNS["duts"]))
    else:
        train = _kvasir_pairs(spec, data_root, root / "train.txt")
        val, test = split_items(_kvasir_pairs(spec, data_root, root / "test.txt"))
    return {"train": train, "val": val, "test": test}


def format_split_csv(pairs: Sequence[Pair]) -> str:
    """CSV text with header ``img,target`` and one row per pair (as pandas ``to_csv(index=False)``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(pairs)
    return buf.getvalue()


def write_splits(spec: DatasetSpec, data_root: str | Path) -> dict[str, int]:
    """Write ``<data_root>/<name>/seg-models/{train,val,test}.csv`` atomically; returns the row counts."""
    splits = make_splits(spec, data_root)
    for split in SPLITS:
        write_text_atomic(split_csv_path(spec, data_root, split), format_split_csv(splits[split]))
    return {split: len(splits[split]) for split in SPLITS}


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m data_utils.splits --dataset NAME [--data_root DIR] [--config TOML]``."""
    parser = argparse.ArgumentParser(
        prog="python -m data_utils.splits",
        description="Write the authors' train/val/test split CSVs (img,target) for one dataset into "
                    "<data_root>/<dataset>/seg-models/. data.zip already ships them; use this for "
                    "regenerated or custom data.")
    parser.add_argument("--dataset", help=f"one of {', '.join(DATASET_NAMES)} (or give --config)")
    parser.add_argument("--data_root", type=Path, default=repo_root() / "data",
                        help="folder holding <dataset>/seg-models/ (default: <repo>/data)")
    parser.add_argument("--config", type=Path, default=None,
                        help="dataset.toml to use instead of src/<dataset>/dataset.toml")
    args = parser.parse_args(argv)
    if not args.dataset and not args.config:
        parser.error("give --dataset (or --config)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        spec = load_dataset_spec(args.config or dataset_spec_path(args.dataset))
        counts = write_splits(spec, args.data_root)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for split, count in counts.items():
        log.info("%s: %d rows -> %s", split, count, split_csv_path(spec, args.data_root, split))


if __name__ == "__main__":
    main()
