"""Every file and folder name the project reads or writes, defined once.

The names are the authors' where they had one (docs/authors-seg.md §S2.1, §S5; docs/authors-refine.md
§R7, §R9), so their data and released weights drop in unchanged:

    <data_root>/<ds>/seg-models/                      raw images, masks, split CSVs, scribbles
    <data_root>/<ds>/refine-models/<base_model>/      the arrays PRN reads (ARRAYS, pseudo-labels)
    <models_root>/checkpoints/<name>/<name>_weights.th   our best weights (<name>_last.th: resume)
    <models_root>/checkpoints/released/<file>            the authors' downloaded weights
    <models_root>/logs/<name>/                         logs, histories, configs, metrics
    <models_root>/outputs/<name>/                      masks, probabilities, figures

where ``<models_root>`` is ``src/<ds>/seg-models`` or ``src/<ds>/refine-models`` (or ``--output_root``)
and ``<name>`` a base model (``dlinknet``) or a PRN grid (``p64``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SEG_MODELS = "seg-models"
REFINE_MODELS = "refine-models"
RELEASED = "released"

#: Per split: (base probabilities, ground truth), N×H×W×1 ``.npy`` files (the authors' names).
ARRAYS = {"val": ("val_pred.npy", "val_orig_gt.npy"), "test": ("test_input.npy", "test_orig_gt.npy")}
#: Per split: the prefix of the pseudo-label files (``train_aux``: PRN trains on the val split).
LABEL_PREFIX = {"val": "train_aux", "test": "test_aux"}


def seg_models_dir(data_root: str | os.PathLike, dataset: str) -> Path:
    """``<data_root>/<ds>/seg-models``: raw images, masks and split CSVs of a dataset."""
    return Path(data_root) / dataset / SEG_MODELS


def refine_arrays_dir(data_root: str | os.PathLike, dataset: str, base_model: str) -> Path:
    """``<data_root>/<ds>/refine-models/<base_model>``: the arrays PRN reads for one base model."""
    return Path(data_root) / dataset / REFINE_MODELS / base_model


def array_paths(folder: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """(probabilities, ground truth) of ``split`` (``val`` or ``test``) in an arrays folder."""
    prob, gt = ARRAYS[split]
    return Path(folder) / prob, Path(folder) / gt


def pseudo_label_paths(folder: str | os.PathLike, split: str, patch_size: int) -> tuple[Path, Path]:
    """(labels, per-patch thresholds) of ``split`` for ``patch_size``-px patches:
    ``train_aux_gt_p_<P>.npy`` / ``train_aux_thresholds_p_<P>.npy`` for val,
    ``test_aux_gt_p_<P>.npy`` / ``test_aux_thresholds_p_<P>.npy`` for test."""
    prefix, p = LABEL_PREFIX[split], int(patch_size)
    return Path(folder) / f"{prefix}_gt_p_{p}.npy", Path(folder) / f"{prefix}_thresholds_p_{p}.npy"


def released_dir(models_root: str | os.PathLike) -> Path:
    """``<models_root>/checkpoints/released``: where ``download.py`` puts the authors' weights."""
    return Path(models_root) / "checkpoints" / RELEASED


@dataclass(frozen=True)
class RunFolders:
    """Where a run of model ``name`` writes under ``root`` (``src/<ds>/{seg,refine}-models`` or
    ``--output_root``): ``checkpoints/<name>/``, ``logs/<name>/`` and ``outputs/<name>/``."""

    root: Path
    name: str

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.root) / "checkpoints" / self.name

    @property
    def log_dir(self) -> Path:
        return Path(self.root) / "logs" / self.name

    @property
    def output_dir(self) -> Path:
        return Path(self.root) / "outputs" / self.name

    @property
    def weights(self) -> Path:
        """Best weights so far (``<name>_weights.th``, the authors' name)."""
        return self.checkpoint_dir / f"{self.name}_weights.th"

    @property
    def last(self) -> Path:
        """Resume file, rewritten after every epoch (``<name>_last.th``)."""
        return self.checkpoint_dir / f"{self.name}_last.th"

    def released(self, file_name: str | None = None) -> Path:
        """The released file ``file_name`` (default ``<name>_weights.th``) under ``checkpoints/released/``."""
        return released_dir(self.root) / (file_name or f"{self.name}_weights.th")

    @property
    def history(self) -> Path:
        return self.log_dir / f"{self.name}_train_history.jsonl"

    @property
    def train_config(self) -> Path:
        return self.log_dir / f"{self.name}_train_config.json"

    def train_log(self, stamp: str) -> Path:
        return self.log_dir / f"{self.name}_train_log_{stamp}.log"

    @property
    def predict_log(self) -> Path:
        return self.log_dir / f"{self.name}_predict_log.log"

    @property
    def predict_metrics(self) -> Path:
        return self.log_dir / f"{self.name}_predict_metrics.json"

    @property
    def base_score_log(self) -> Path:
        """The authors' base-score log (``<model>_miou_log.log``)."""
        return self.log_dir / f"{self.name}_miou_log.log"

    @property
    def base_metrics(self) -> Path:
        return self.log_dir / f"{self.name}_base_metrics.json"


__all__ = ["ARRAYS", "LABEL_PREFIX", "REFINE_MODELS", "RELEASED", "SEG_MODELS", "RunFolders", "array_paths",
           "pseudo_label_paths", "refine_arrays_dir", "released_dir", "seg_models_dir"]
