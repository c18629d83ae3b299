"""Score the base model on the test split from its saved probability maps (docs/authors-seg.md §S4).

The authors' number for DeepGlobe and DUTS is one IoU pooled over every test pixel at
prob > 0.5 with +1 smoothing; for Kvasir their script (through a name clash) logged the mean
per-image IoU at the best threshold chosen **with the test ground truth** (docs/authors-seg.md §S4, §S8.17). We
report the pooled IoU at 0.5 for every dataset (the same metric PRN is scored with), next to
the per-image mean IoU, Dice, precision, recall, MAE, max F for saliency (DUTS), and the oracle
number, labelled as such.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from tqdm.auto import tqdm

from data_utils.layout import RunFolders
from data_utils.arrays import check_binary, check_probabilities, check_same_shape, open_maps
from data_utils.datasets import seg_models_dir
from data_utils.errors import InputError
from data_utils.io import write_text_atomic
from data_utils.spec import DatasetSpec
from patchrefinenet.metrics import SegmentationMeter, oracle_image_iou
from patchrefinenet.seg.generate import ARRAY_NAMES, refine_arrays_dir
from patchrefinenet.training import log_to_file

log = logging.getLogger("patchrefinenet")

CHUNK = 8  # images scored at a time: memory stays flat whatever N


def base_test_arrays(spec: DatasetSpec, data_root: str | os.PathLike, model_name: str) -> tuple[Path, Path]:
    """(test_input.npy, test_orig_gt.npy): ours in ``refine-models/<model>/`` when present, else the
    authors' copies in ``<data_root>/<ds>/seg-models/`` (from ``data.zip``)."""
    pred_name, gt_name = ARRAY_NAMES["test"]
    folders = [refine_arrays_dir(spec, data_root, model_name), seg_models_dir(spec, data_root)]
    for folder in folders:
        if (folder / pred_name).is_file() and (folder / gt_name).is_file():
            return folder / pred_name, folder / gt_name
    looked = " and ".join(str(f) for f in folders)
    raise InputError(f"no {pred_name} + {gt_name} for {model_name} in {looked}; make them with "
                     f"`python src/{spec.name}/seg-models/generate_aux_training_data.py --model {model_name}`, "
                     f"download data.zip (`python download.py --data`) or run `python demo.py`")


def score_base_predictions(pred_path: str | os.PathLike, gt_path: str | os.PathLike, *, saliency: bool = False,
                           progress: bool = True) -> dict:
    """Metrics of the probability maps in ``pred_path`` against ``gt_path``, streamed ``CHUNK`` images at a time.

    Returns the :class:`~patchrefinenet.metrics.SegmentationMeter` metrics (``pooled_iou`` at
    > 0.5, ``mean_iou``, ``dice``, ``precision``, ``recall``, ``mae``, ``n_images``, ``max_f``
    when ``saliency``) plus ``oracle_mean_iou`` (per-image best threshold, uses the ground truth).
    """
    pred, gt = open_maps(pred_path, "test_input"), open_maps(gt_path, "test_orig_gt")
    check_same_shape(pred, f"{pred_path} (as N×H×W)", gt, f"{gt_path} (as N×H×W)")
    meter = SegmentationMeter(threshold=0.5, smooth=1.0, saliency=saliency)
    oracle_sum, n = 0.0, pred.shape[0]
    bar = tqdm(range(0, n, CHUNK), desc="scoring", unit="chunk", disable=not progress)
    for start in bar:
        p, g = pred[start:start + CHUNK], gt[start:start + CHUNK]
        check_probabilities(p, str(pred_path), start=start)  # errors name the file and the image index
        check_binary(g, str(gt_path), start=start)
        meter.update(p, g)
        oracle_sum += oracle_image_iou(p, g) * p.shape[0]
    metrics = meter.compute()
    metrics["oracle_mean_iou"] = oracle_sum / n
    return metrics


def calculate_base_iou(spec: DatasetSpec, model_name: str, *, data_root: str | os.PathLike,
                       output_root: str | os.PathLike, progress: bool = True) -> dict:
    """Score ``model_name``'s test predictions (:func:`base_test_arrays`) and record the result.

    Appends ``Base Test mIoU before Refinement = <pooled IoU>`` to
    ``<output_root>/logs/<model>/<model>_miou_log.log`` (the authors' line and file) and writes
    every metric to ``<model>_base_metrics.json`` next to it. Returns the metrics with the input
    paths.
    """
    pred_path, gt_path = base_test_arrays(spec, data_root, model_name)
    run = RunFolders(Path(output_root), model_name)
    with log_to_file(run.base_score_log):
        log.info("Calculating base test metrics of %s on %s from %s", model_name, spec.name, pred_path)
        metrics = score_base_predictions(pred_path, gt_path, saliency=spec.layout == "duts", progress=progress)
        log.info("Base Test mIoU before Refinement = %f", metrics["pooled_iou"])
        details = ", ".join(f"{k} {metrics[k]:.6f}" for k in ("mean_iou", "dice", "precision", "recall", "mae", "max_f")
                            if k in metrics)
        log.info("%d test images: %s", metrics["n_images"], details)
        log.info("oracle (uses test ground truth) mean per-image IoU at the best of 20 thresholds = %f "
                 "(the authors' Kvasir 'base mIoU'; not comparable with the pooled IoU)", metrics["oracle_mean_iou"])
    result = {"model": model_name, "dataset": spec.name, "pred": str(pred_path), "gt": str(gt_path), **metrics}
    write_text_atomic(run.base_metrics, json.dumps(result, indent=2) + "\n")
    return result
