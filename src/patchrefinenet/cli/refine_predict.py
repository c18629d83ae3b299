"""``src/<ds>/refine-models/predict.py``: evaluate a trained PatchRefineNet on the test maps (docs/authors-refine.md §R9).

Writes ``logs/<aux>/<aux>_predict_log.log`` (appended; holds ``Total mIoU after Refinement = ...``),
``logs/<aux>/<aux>_predict_metrics.json`` and, on request, masks, probabilities and a figure under
``outputs/<aux>/``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from data_utils.errors import InputError
from patchrefinenet.cli.common import cli_entry, setup_logging, str2bool
from patchrefinenet.cli.refine_train import refine_parser, resolve_refine_script

# The engine (torch) is imported in main(), after parsing, so that --help answers at once.
_COMBINE_MODES = ("upstream", "global", "local")  # = patchrefinenet.refine.predict.COMBINE_MODES

_EXAMPLES = """examples:
  python src/{ds}/refine-models/predict.py --base_model {m} --aux_model p64 --checkpoint True
  python src/{ds}/refine-models/predict.py --aux_model p64 --checkpoint True --batch_stats True   # authors' BN
  python src/{ds}/refine-models/predict.py --aux_model p64 --checkpoint_path p64_weights.th --save_masks True
  python src/{ds}/refine-models/predict.py --aux_model p64 --checkpoint True --combine global --figure 8
  python src/{ds}/refine-models/predict.py --aux_model p64 --checkpoint True --rule global@0.4

--batch_stats True reproduces the authors' numbers (their predict.py never called model.eval(),
so BatchNorm used per-image / per-patch statistics); the default uses running statistics.
"""


def _quirk_arg(value: str) -> bool | None:
    """``--row7_quirk``: True, False or auto (None)."""
    return None if value.strip().lower() == "auto" else str2bool(value)


def _parser(script_file: str) -> argparse.ArgumentParser:
    parser = refine_parser(
        script_file, "Refine the base model's test probability maps with a trained PatchRefineNet and score "
                     "them (pooled IoU as the authors' 'mIoU', plus Dice, precision, recall, MAE) against the "
                     "base model and each head alone.",
        _EXAMPLES)
    parser.add_argument("--row7_quirk", type=_quirk_arg, default=None, metavar="{True,False,auto}",
                        help="the authors' P64 row-7 wiring (docs/authors-refine.md R3.4); auto (default): on "
                             "only for a bare file with the authors' P64 keys and shapes on the 8×8 grid")
    parser.add_argument("--batch_stats", type=str2bool, nargs="?", const=True, default=False,
                        help="BatchNorm with the current batch's statistics, per patch in the local decoder "
                             "(the authors' inference); default False = eval mode")
    parser.add_argument("--combine", choices=_COMBINE_MODES, default=None,
                        help="upstream = global ∪ dilate3x3(global ∩ local) (default for p4, p16, p64, ...); "
                             "global (default for p0); local")
    parser.add_argument("--rule", default=None,
                        help="output rule: authors, global, local, mean or base, optionally @threshold (e.g. "
                             "global@0.45); default: the rule chosen on held-out maps when the PRN was trained "
                             "(stored in the checkpoint), else --combine's default")
    parser.add_argument("--batch_size", type=int, default=1, help="maps per forward pass (default: 1, as the authors)")
    parser.add_argument("--save_masks", type=str2bool, nargs="?", const=True, default=False,
                        help="write the final masks as PNGs (0/255) to outputs/<aux>/masks/")
    parser.add_argument("--save_probs", type=str2bool, nargs="?", const=True, default=False,
                        help="write the head probabilities to outputs/<aux>/test_prob_{global,local}.npy (N×H×W×1)")
    parser.add_argument("--figure", type=int, default=4,
                        help="rows of the example figure outputs/<aux>/<aux>_predict_figure.png (0: none; default 4)")
    parser.add_argument("--progress", type=str2bool, default=True, help="show progress bars (default: True)")
    return parser


@cli_entry
def main(script_file: str, argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` and evaluate; returns :func:`~patchrefinenet.refine.predict.predict_prn`'s metrics."""
    args = _parser(script_file).parse_args(argv)
    from patchrefinenet.refine.predict import RefinePredictConfig, predict_prn

    setup_logging()
    run = resolve_refine_script(args, script_file)
    if not args.checkpoint and args.checkpoint_path is None:
        raise InputError("prediction needs trained weights: pass --checkpoint True (checkpoints/<aux>/<aux>_weights.th "
                         "under --output_root) or --checkpoint_path FILE")
    cfg = RefinePredictConfig(
        data_dir=str(run.data_dir), output_root=str(run.output_root), aux_model=args.aux_model,
        patch_size=args.patch_size, checkpoint_path=None if args.checkpoint_path is None else str(Path(args.checkpoint_path)),
        batch_stats=args.batch_stats, row7_quirk=args.row7_quirk, combine=args.combine, rule=args.rule, batch_size=args.batch_size,
        device=args.device,
        bf16=args.bf16, channels_last=args.channels_last, compile=args.compile, save_masks=args.save_masks, save_probs=args.save_probs,
        figure=args.figure, saliency=run.spec.layout == "duts", num_workers=args.num_workers,
        dataset=run.spec.name, base_model=run.base_model, progress=args.progress)
    result = predict_prn(cfg)
    print(json.dumps({k: result[k] for k in ("miou", "refined", "base") if k in result}, indent=2))
    return result
