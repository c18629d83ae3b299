"""Write a generated dataset in the exact on-disk layout of the authors' ``data.zip``.

The real readers, split files and scripts then run on the demo data unchanged (layouts in
``docs/authors-seg.md`` §S2.1–§S2.2)::

    roads    <root>/deepglobe/seg-models/train/<id>_sat.jpg, train_labels/<id>_mask.png,
             {train,val,test}.csv                      (every split lives in train/)
    polyps   <root>/kvasir/seg-models/train/<id>.jpg, train_labels/<id>.jpg (JPEG mask),
             train.txt (train ids), test.txt (val + test ids), {train,val,test}.csv
    saliency <root>/DUTS/seg-models/DUTS-TR/DUTS-TR/DUTS-TR-{Image,Mask}/<id>.{jpg,png}  (train)
             <root>/DUTS/seg-models/DUTS-TE/DUTS-TE/DUTS-TE-{Image,Mask}/<id>.{jpg,png}  (val, test)
             {train,val,test}.csv

CSV files have the header ``img,target`` and no index column. Ids are ``demo00000``, ``demo00001``…
numbered across train, val and test in that order. Every file is written atomically; the manifest
``demo_manifest.json`` in the dataset folder is written first with status ``writing`` and, after
the last file, with status ``complete`` — so an interrupted run is detected (:func:`is_complete`)
and redone, and a repeated run with the same arguments on a complete dataset does nothing.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from tqdm import tqdm

from data_utils import layout
from data_utils.errors import InputError
from data_utils.io import atomic_path, write_text_atomic
from data_utils.synthetic.fields import Scene
from data_utils.synthetic.polyps import render_polyps
from data_utils.synthetic.roads import render_roads
from data_utils.synthetic.saliency import render_saliency
from data_utils.synthetic.shift import apply_shift

logger = logging.getLogger("patchrefinenet")

GENERATOR_VERSION = 2  # bump whenever a generator's output changes: old datasets are then regenerated
MANIFEST = "demo_manifest.json"
SPLITS = ("train", "val", "test")
RENDERERS: dict[str, Callable[[np.random.Generator, int], Scene]] = {
    "roads": render_roads, "polyps": render_polyps, "saliency": render_saliency,
}
DATASETS = {"roads": "deepglobe", "polyps": "kvasir", "saliency": "DUTS"}
_KIND_CODE = {"roads": 1, "polyps": 2, "saliency": 3}  # decorrelates kinds generated from one seed
_JPEG = [cv2.IMWRITE_JPEG_QUALITY, 95]


@dataclass(frozen=True)
class DemoSample:
    """Where one sample goes: paths relative to the dataset folder and its two CSV cells."""

    id: str
    split: str
    image: str
    mask: str
    img_name: str
    target_name: str


def _check_kind(kind: str) -> str:
    if kind not in RENDERERS:
        raise InputError(f"unknown demo kind {kind!r}; valid kinds: {', '.join(RENDERERS)}")
    return kind


def dataset_dir(root: str | os.PathLike, kind: str) -> Path:
    """The dataset folder a kind is written to: ``<root>/<deepglobe|kvasir|DUTS>/seg-models``."""
    return layout.seg_models_dir(root, DATASETS[_check_kind(kind)])


def sample_layout(kind: str, ident: str, split: str) -> DemoSample:
    """File locations of sample ``ident`` of ``split`` in the authors' layout for ``kind``."""
    if kind == "roads":
        return DemoSample(ident, split, f"train/{ident}_sat.jpg", f"train_labels/{ident}_mask.png",
                          f"{ident}_sat.jpg", f"{ident}_mask.png")
    if kind == "polyps":
        return DemoSample(ident, split, f"train/{ident}.jpg", f"train_labels/{ident}.jpg",
                          f"{ident}.jpg", f"{ident}.jpg")
    part = "DUTS-TR" if split == "train" else "DUTS-TE"
    folder = f"{part}/{part}/{part}"
    return DemoSample(ident, split, f"{folder}-Image/{ident}.jpg", f"{folder}-Mask/{ident}.png",
                      f"{ident}.jpg", f"{ident}.png")


def render_scene(kind: str, *, seed: int, index: int, size: int, shift: str | None = None) -> Scene:
    """Generate sample ``index`` of a kind: a pure function of (kind, seed, index, size, shift).

    ``shift`` (e.g. ``"haze"``, :mod:`data_utils.synthetic.shift`) renders the deployment version
    of the scene: same content, degraded by a shift the training scenes do not contain."""
    _check_kind(kind)
    for name, value, low in (("seed", seed, 0), ("index", index, 0), ("size", size, 32)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"render_scene: {name} must be an integer >= {low}, got {value!r}")
    rng = np.random.default_rng([int(seed), int(index), _KIND_CODE[kind]])
    scene = RENDERERS[kind](rng, int(size))
    if shift is None:
        return scene
    image, conditions = apply_shift(scene.image, np.random.default_rng([int(seed), int(index), _KIND_CODE[kind], 7]),
                                    shift)
    return Scene(image, scene.mask, {**scene.conditions, **conditions})


def read_manifest(root: str | os.PathLike, kind: str) -> dict | None:
    """The demo manifest of ``kind`` under ``root``, or None if there is none (or it is unreadable)."""
    path = dataset_dir(root, kind) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def is_complete(root: str | os.PathLike, kind: str) -> bool:
    """True if a demo dataset of ``kind`` under ``root`` was fully written and no file is missing."""
    manifest = read_manifest(root, kind)
    if manifest is None or manifest.get("status") != "complete":
        return False
    base = dataset_dir(root, kind)
    return all((base / rel).is_file() for rel in manifest.get("files", []))


def _params(kind: str, size: int, seed: int, counts: dict[str, int], shift: str | None = None) -> dict:
    params = {"generator": "data_utils.synthetic", "version": GENERATOR_VERSION, "kind": kind,
              "dataset": DATASETS[kind], "size": size, "seed": seed, "counts": counts}
    if shift is not None:  # only then: manifests written before shifts existed stay valid
        params["shift"] = shift
    return params


def _check_args(n_train: int, n_val: int, n_test: int, size: int, seed: int) -> None:
    for name, value, low in (("n_train", n_train, 1), ("n_val", n_val, 1), ("n_test", n_test, 1),
                             ("size", size, 32), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"write_demo_dataset: {name} must be an integer >= {low}, got {value!r}")


def _safe_relative(base: Path, rel: str) -> Path | None:
    """``base / rel`` if ``rel`` stays inside ``base`` (manifests are data: never trust them blindly)."""
    path = (base / rel).resolve()
    return path if path.is_relative_to(base.resolve()) and path != base.resolve() else None


def _write_image(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        params = _JPEG if path.suffix == ".jpg" else []
        if not cv2.imwrite(str(tmp), array, params):
            raise OSError(f"OpenCV could not write {path}")


def _csv(rows: list[DemoSample]) -> str:
    return "img,target\n" + "".join(f"{r.img_name},{r.target_name}\n" for r in rows)


def write_demo_dataset(root: str | os.PathLike, kind: str = "roads", *, n_train: int = 200, n_val: int = 50,
                       n_test: int = 50, size: int = 256, seed: int = 0, shift: str | None = None,
                       progress: bool = True) -> dict:
    """Generate a demo dataset of ``kind`` ("roads", "polyps" or "saliency") under ``root``.

    Images are ``size × size`` RGB JPEGs (quality 95), masks 0/255 (PNG; JPEG for polyps, as
    Kvasir). ``shift`` renders every scene in its deployment version (:func:`render_scene`). A complete dataset written with the same arguments and generator version is left
    as it is; otherwise everything is regenerated and files listed by an older manifest that the
    new dataset does not use are removed. A folder that holds files but no demo manifest (real
    data) is never touched: :class:`InputError`.

    Returns the manifest (parameters, ``files``, per-sample ``samples`` with their condition
    summaries) plus ``dataset_dir`` and ``skipped`` (True when nothing had to be written).
    """
    kind = _check_kind(kind)
    _check_args(n_train, n_val, n_test, size, seed)
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    params = _params(kind, int(size), int(seed), counts, shift)
    base = dataset_dir(root, kind)
    old = read_manifest(root, kind)
    if old is not None and is_complete(root, kind) and all(old.get(key) == value for key, value in params.items()):
        logger.info("demo %s dataset in %s is complete and up to date; nothing to do", kind, base)
        return {**old, "dataset_dir": str(base), "skipped": True}
    if base.exists() and not base.is_dir():
        raise InputError(f"{base} exists and is not a folder; choose another root for the demo data")
    ours = (base / MANIFEST).is_file()  # even if unreadable: only the demo generator writes that name
    if not ours and base.is_dir() and any(not p.name.startswith(".") for p in base.rglob("*") if p.is_file()):
        raise InputError(f"{base} already holds files that the demo generator did not write (no {MANIFEST}); "
                         f"refusing to overwrite them: choose another root for the demo data")

    ids = [f"demo{i:05d}" for i in range(sum(counts.values()))]
    splits = [s for s in SPLITS for _ in range(counts[s])]
    layout = [sample_layout(kind, ident, split) for ident, split in zip(ids, splits)]
    files = sorted({p for s in layout for p in (s.image, s.mask)}
                   | {f"{s}.csv" for s in SPLITS} | ({"train.txt", "test.txt"} if kind == "polyps" else set()))
    stale = sorted(set(old.get("files", [])) - set(files)) if old else []
    # Record what may exist on disk before touching it, so an interrupted run can still clean up.
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the demo data folder {base} ({exc}); choose another root") from None
    write_text_atomic(base / MANIFEST, json.dumps({**params, "status": "writing",
                                                   "files": sorted(set(files) | set(stale))}, indent=1))
    for rel in stale:
        path = _safe_relative(base, rel)
        if path is not None and path.is_file():
            path.unlink()

    t0 = time.perf_counter()
    samples = []
    for index, entry in enumerate(tqdm(layout, desc=f"demo {kind}", unit="img", disable=not progress)):
        scene = render_scene(kind, seed=seed, index=index, size=size, shift=shift)
        _write_image(base / entry.image, cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        _write_image(base / entry.mask, scene.mask * np.uint8(255))
        samples.append({"id": entry.id, "split": entry.split, "image": entry.image, "mask": entry.mask,
                        "conditions": {key: round(float(v), 4) for key, v in sorted(scene.conditions.items())}})
    for split in SPLITS:
        write_text_atomic(base / f"{split}.csv", _csv([s for s in layout if s.split == split]))
    if kind == "polyps":  # the authors' csv_generator input; no trailing newline (it would add a bogus id)
        write_text_atomic(base / "train.txt", "\n".join(s.id for s in layout if s.split == "train"))
        write_text_atomic(base / "test.txt", "\n".join(s.id for s in layout if s.split != "train"))
    manifest = {**params, "status": "complete", "files": files, "samples": samples}
    write_text_atomic(base / MANIFEST, json.dumps(manifest, indent=1))
    logger.info("wrote %d demo %s samples (%d×%d) to %s in %.1f s", len(layout), kind, size, size, base,
                time.perf_counter() - t0)
    return {**manifest, "dataset_dir": str(base), "skipped": False}
