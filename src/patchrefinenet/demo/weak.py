"""The demo's weakly-supervised branch: base models trained from scribbles (rloss), then PRN on top.

On the dataset the pipeline's ``data`` stage wrote, :func:`run_weak`

1. draws scribbles for the train split (``generate_scribbles.py``; a few % of the pixels labelled);
2. trains the base model from them twice with ``train.py --supervision scribbles`` — partial
   cross-entropy alone, and pCE + the DenseCRF loss (docs/rloss.md §L1.3–§L1.4) — with the demo's sizes,
   epochs and seed; validation (model selection, early stopping) uses the full val masks, as rloss;
3. for each, writes the base probability maps and scores them (``generate_aux_training_data.py``,
   ``calculate_base_iou.py``), and for the DenseCRF base also makes p64 pseudo-labels and trains
   and evaluates PRN p64 (``generate_rst.py``, ``refine-models/{train,predict}.py``).

Every step is the command a user runs. Each variant lives in ``<demo root>/weak-<name>/``:
``seg-models/`` and ``refine-models/`` (checkpoints, logs) and ``data/``, whose
``<ds>/seg-models`` is a symbolic link to the demo's real data folder (images, masks, splits,
scribbles), so the variant's arrays land in its own ``data/<ds>/refine-models/<model>/`` without
copying the images (symlinks: Linux and macOS; on Windows they need developer mode).
PRN is still trained on RST pseudo-labels computed from the *full val masks* — only the base model
is weakly supervised.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_utils import layout
from data_utils.arrays import open_maps
from data_utils.datasets import read_split, scribble_dir, scribble_path
from data_utils.errors import InputError
from data_utils.scribbles import UNLABELLED, read_scribble
from data_utils.spec import load_dataset_spec
from patchrefinenet.cli import (calculate_base_iou, generate_aux, generate_rst, generate_scribbles, refine_predict,
                                refine_train, seg_train)
from patchrefinenet.demo.config import PRN_PREDICT_ARGS, DemoPaths, patch_size_for, prn_train_args, script_args
from patchrefinenet.metrics import SegmentationMeter

log = logging.getLogger("patchrefinenet")

PRN_GRID = "p64"
METRICS = ("pooled_iou", "mean_iou", "dice")


@dataclass(frozen=True)
class WeakVariant:
    """One scribble-supervised base model: its folder name, table label and ``train.py`` flags."""

    name: str
    row_id: str
    label: str
    train_flags: tuple[str, ...]
    with_prn: bool = False


VARIANTS = (
    WeakVariant("pce", "pce", "Base from scribbles, pCE only", ("--supervision", "scribbles", "--reg_loss", "none")),
    WeakVariant("crf", "pce_densecrf", "Base from scribbles, pCE + DenseCRF loss",
                ("--supervision", "scribbles", "--reg_loss", "densecrf"), with_prn=True),
)


# A weak variant's folder has the same shape as the demo root: ``<root>/weak-<name>/{data,seg-models,refine-models}``.
WeakPaths = DemoPaths


def link_data(source_data_root: Path, weak: WeakPaths) -> Path:
    """Make ``<weak data root>/<ds>/seg-models`` a symbolic link to the demo's real data folder."""
    target = layout.seg_models_dir(source_data_root, weak.dataset).resolve()
    link = layout.seg_models_dir(weak.data_root, weak.dataset)
    if link.is_symlink():
        if link.resolve() == target:
            return link
        link.unlink()  # the demo root moved: point at the current data
    elif link.exists():
        raise InputError(f"{link} exists and is not a link to {target}; remove it (it belongs to the demo's weak runs)")
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(target, target_is_directory=True)
    except OSError as exc:
        raise InputError(f"cannot create the symbolic link {link} -> {target} ({exc}); the weak-supervision demo "
                         f"needs symlinks (on Windows: enable developer mode)") from None
    return link


def _scribbles_current(spec, data_root: Path, seed: int) -> bool:
    """True when every train sample has a scribble drawn with ``seed`` (per generate_scribbles.json)."""
    info_path = scribble_dir(spec, data_root) / generate_scribbles.INFO_FILE
    if not info_path.is_file():
        return False
    train = json.loads(info_path.read_text()).get("train", {})
    samples = read_split(spec, data_root, "train")
    return train.get("seed") == seed and all(scribble_path(spec, data_root, s).is_file() for s in samples)


def labelled_fraction(spec, data_root: Path) -> float:
    """Fraction of the train pixels (at native size) that carry a scribble label."""
    labelled = total = 0
    for sample in read_split(spec, data_root, "train"):
        s = read_scribble(scribble_path(spec, data_root, sample))
        labelled += int((s != UNLABELLED).sum())
        total += s.size
    return labelled / max(total, 1)


def _score_arrays(arrays: Path) -> dict:
    """Metrics of the base test probabilities at 0.5 (the demo table's definition), streamed in chunks."""
    prob_path, gt_path = layout.array_paths(arrays, "test")
    prob = open_maps(prob_path, "weak base test probabilities")
    gt = open_maps(gt_path, "test ground truth")
    meter = SegmentationMeter()
    for lo in range(0, len(prob), 16):
        meter.update(np.asarray(prob[lo:lo + 16]), np.asarray(gt[lo:lo + 16]))
    return meter.compute()


def run_weak(cfg, paths, *, force: bool = False, progress: bool = True) -> list[dict]:
    """Run the weak-supervision branch on the demo dataset; returns the table rows.

    ``cfg``/``paths`` are the pipeline's ``DemoConfig``/``DemoPaths`` (the ``data`` stage must have
    run and ``paths.config`` exist). Work whose outputs exist is skipped unless ``force``.
    Rows: ``{"method", "pooled_iou", "mean_iou", "dice", "note"}`` on the test split, for the pCE-only
    base, the pCE + DenseCRF base and PRN p64 on the latter.
    """
    if not paths.config.is_file() or not layout.seg_models_dir(paths.data_root, paths.dataset).is_dir():
        raise InputError(f"the weak-supervision demo needs the demo dataset under {paths.data_root} and its config "
                         f"{paths.config}; run the data stage first (python demo.py --stages data)")
    spec = load_dataset_spec(paths.config)
    if force or not _scribbles_current(spec, paths.data_root, cfg.seed):
        generate_scribbles.main(paths.script("seg", "generate_scribbles.py"),
                                ["--config", str(paths.config), "--data_root", str(paths.data_root),
                                 "--seed", str(cfg.seed), "--splits", "train", "--progress", str(progress)])
    fraction = labelled_fraction(spec, paths.data_root)
    log.info("demo (weak): %.2f%% of the train pixels carry a scribble label", 100 * fraction)

    rows = []
    model = cfg.base_model
    for variant in VARIANTS:
        weak = WeakPaths(paths.root / f"weak-{variant.name}", paths.dataset)
        link_data(paths.data_root, weak)
        seg = ["--model", model, *script_args(weak, "seg", progress, config=paths.config)]
        weights = layout.RunFolders(weak.seg_root, model).weights
        if force or not weights.is_file():
            width = ["--model_width", str(cfg.base_width)] if model == "resunetplusplus" else []
            seg_train.main(paths.script("seg", "train.py"),
                           [*seg, *variant.train_flags, "--no-pretrained", "--seed", str(cfg.seed), *width])
        arrays = weak.arrays(model)
        if force or not all(p.is_file() for split in ("val", "test") for p in layout.array_paths(arrays, split)):
            generate_aux.main(paths.script("seg", "generate_aux_training_data.py"), seg)
        calculate_base_iou.main(paths.script("seg", "calculate_base_iou.py"), seg)
        note = f"{100 * fraction:.1f}% of train pixels labelled; model selected on the full val masks"
        rows.append({"id": variant.row_id, "method": variant.label,
                     **{k: float(v) for k, v in _score_arrays(arrays).items() if k in METRICS}, "note": note})
        if not variant.with_prn:
            continue
        generate_rst.main(paths.script("seg", "generate_rst.py"),
                          [*seg, "--patch_size", str(patch_size_for(PRN_GRID, cfg.input_size))])
        refine = ["--base_model", model, "--aux_model", PRN_GRID,
                  *script_args(weak, "refine", progress, config=paths.config)]
        prn_weights = layout.RunFolders(weak.refine_root, PRN_GRID).weights
        if force or not prn_weights.is_file():
            refine_train.main(paths.script("refine", "train.py"), [*refine, *prn_train_args(cfg)])
        result = refine_predict.main(paths.script("refine", "predict.py"),
                                     [*refine, *PRN_PREDICT_ARGS])
        rows.append({"id": "prn_on_pce_densecrf", "method": f"PRN {PRN_GRID} on the pCE + DenseCRF base",
                     **{k: float(result["refined"][k]) for k in METRICS},
                     "note": "PRN trained on RST pseudo-labels from the full val masks"})
    for row in rows:
        log.info("demo (weak): %-45s pooled IoU %.4f  mean IoU %.4f  Dice %.4f", row["method"], row["pooled_iou"],
                 row["mean_iou"], row["dice"])
    return rows
