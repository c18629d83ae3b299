"""``src/<ds>/seg-models/calculate_base_iou.py`` (Kvasir also ``calculate_base_miou.py``): score the
base model's test predictions (docs/authors-seg.md §S4).

Reads ``test_input.npy`` + ``test_orig_gt.npy`` from ``data/<ds>/refine-models/<model>/`` (or the
authors' copies in ``data/<ds>/seg-models/``), logs ``Base Test mIoU before Refinement = ...``
(pooled IoU at > 0.5) to ``logs/<model>/<model>_miou_log.log`` and writes every metric to
``logs/<model>/<model>_base_metrics.json``.
"""
from __future__ import annotations

import json
from typing import Sequence

from patchrefinenet.cli.common import cli_entry, setup_logging
from patchrefinenet.cli.seg_train import resolve_seg_script, seg_parser


@cli_entry
def main(script_file: str, argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv``, score the base predictions and return the metrics."""
    parser = seg_parser(script_file, "Score the base model on the test split from its saved predictions: pooled "
                                     "IoU at 0.5 (the authors' 'mIoU'), per-image mean IoU, Dice, precision, "
                                     "recall, MAE (+ max F for DUTS) and the ground-truth-oracle mean IoU.")
    args = parser.parse_args(argv)
    setup_logging()
    run = resolve_seg_script(args, script_file)
    from patchrefinenet.seg.evaluate import calculate_base_iou  # torch: after parsing, --help stays instant
    metrics = calculate_base_iou(run.spec, run.model, data_root=run.data_root, output_root=run.output_root,
                                 progress=args.progress)
    print(json.dumps(metrics, indent=2))
    return metrics
