"""``src/<ds>/seg-models/train.py``: train the dataset's base segmentation model (docs/authors-seg.md §S3), from the
full masks (default) or from scribbles with a regularised loss (``--supervision scribbles``, rloss).

Also holds the arguments every seg-models script shares (``--model``, ``--config``,
``--data_root``, ``--output_root``, ``--device``) and their resolution from the script's own
dataset folder, so the scripts run from any working directory. The seg-models CLIs import torch
only after parsing, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from data_utils import layout
from data_utils.errors import InputError
from data_utils.spec import DatasetSpec, load_dataset_spec
from patchrefinenet.cli.common import (add_threads_argument, cli_entry, configure_cli_threads, dataset_dir_from_script,
                                       repo_root, setup_logging, str2bool)

# = patchrefinenet.seg.train.SUPERVISION_MODES and the keys of patchrefinenet.rloss.REGULARIZERS
# (repeated here so that --help answers without importing torch; a test keeps them equal).
SUPERVISION_MODES = ("full", "scribbles")
REG_LOSSES = ("densecrf", "ncut", "size", "none")


@dataclass(frozen=True)
class SegScript:
    """What a seg-models script works on: the dataset config, the model and the two roots."""

    spec: DatasetSpec
    model: str
    data_root: Path
    output_root: Path


def seg_parser(script_file: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags shared by every ``src/<ds>/seg-models`` script."""
    ds_dir = dataset_dir_from_script(script_file)
    parser = argparse.ArgumentParser(
        prog=f"python src/{ds_dir.name}/seg-models/{Path(script_file).name}", description=description)
    parser.add_argument("--model", default=None,
                        help="base model: dlinknet (DeepGlobe), pfanet (DUTS) or resunetplusplus (Kvasir); "
                             "default: base_model of the dataset config")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"dataset config (default: src/{ds_dir.name}/dataset.toml)")
    parser.add_argument("--data_root", type=Path, default=None,
                        help=f"folder holding {ds_dir.name}/seg-models and {ds_dir.name}/refine-models (default: <repo>/data)")
    parser.add_argument("--output_root", type=Path, default=None,
                        help=f"folder for checkpoints/ and logs/ (default: src/{ds_dir.name}/seg-models)")
    parser.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda or cuda:<index>")
    parser.add_argument("--progress", type=str2bool, default=True, help="show progress bars (default: True)")
    add_threads_argument(parser)
    return parser


def resolve_seg_script(args: argparse.Namespace, script_file: str) -> SegScript:
    """Load the dataset config, check ``--model`` and fill in the defaults of :func:`seg_parser`'s flags
    (and set the CPU threads from ``--threads``: every seg-models command calls this first)."""
    configure_cli_threads(args.threads)
    from patchrefinenet.models import BASE_MODELS  # imports torch: after parsing, so --help stays instant

    ds_dir = dataset_dir_from_script(script_file)
    spec = load_dataset_spec(args.config if args.config is not None else ds_dir / "dataset.toml")
    model = args.model or spec.base_model
    if model not in BASE_MODELS:
        raise InputError(f"unknown base model {model!r} (--model); valid names: {', '.join(sorted(BASE_MODELS))}")
    data_root = args.data_root if args.data_root is not None else repo_root() / "data"
    output_root = args.output_root if args.output_root is not None else ds_dir / layout.SEG_MODELS
    return SegScript(spec, model, Path(data_root).expanduser(), Path(output_root).expanduser())


def width_kwargs(model: str, width: int | None) -> dict:
    """``--model_width W`` → ResUNet++ ``filters`` (W, 2W, 4W, 8W, 16W); the authors' model is W = 32."""
    if width is None:
        return {}
    if model != "resunetplusplus":
        raise InputError(f"--model_width applies to resunetplusplus only (got --model {model}); "
                         "D-LinkNet and PFANet have fixed ImageNet backbones")
    if width < 1:
        raise InputError(f"--model_width must be >= 1, got {width}")
    return {"filters": [width * 2**i for i in range(5)]}


def _parser(script_file: str) -> argparse.ArgumentParser:
    parser = seg_parser(script_file, "Train the base segmentation model with the authors' recipe from the "
                                     "dataset config (loss, Adam, batch, epochs, plateau rule); validation "
                                     "runs on the non-augmented val split.")
    parser.add_argument("--checkpoint", type=str2bool, nargs="?", const=True, default=False,
                        help="start from saved weights (<model>_weights.th or --checkpoint_path) with a fresh "
                             "optimizer, as the authors' --checkpoint")
    parser.add_argument("--checkpoint_path", type=Path, default=None,
                        help="weights file for --checkpoint True")
    parser.add_argument("--compile", type=str2bool, nargs="?", const=True, default=False,
                        help="torch.compile the model (opt-in, default False; the first batches compile)")
    parser.add_argument("--resume", type=str2bool, nargs="?", const=True, default=False,
                        help="continue an interrupted run from checkpoints/<model>/<model>_last.th")
    parser.add_argument("--overwrite", type=str2bool, nargs="?", const=True, default=False,
                        help="replace the weights of an earlier run under checkpoints/<model>/ (default False: refuse)")
    parser.add_argument("--seed", type=int, default=0, help="seeds initialisation, shuffling and augmentation (default: 0)")
    parser.add_argument("--epochs", type=int, default=None, help="max epochs (default: the recipe's)")
    parser.add_argument("--batch_size", type=int, default=None, help="batch size (default: the recipe's)")
    parser.add_argument("--lr", type=float, default=None, help="initial learning rate (default: the recipe's)")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                        help="start the backbone from random weights instead of ImageNet")
    parser.add_argument("--model_width", type=int, default=None,
                        help="ResUNet++ only: width of the first level (authors: 32; 8 trains on a CPU)")
    parser.add_argument("--max_batches_per_epoch", type=int, default=None,
                        help="cap on train and val batches per epoch (smoke tests)")
    parser.add_argument("--num_workers", type=int, default=0, help="data-loading worker processes (default: 0)")
    weak = parser.add_argument_group(
        "weak supervision (rloss)",
        "--supervision scribbles trains from data/<ds>/seg-models/scribbles/*.png (make them with "
        "generate_scribbles.py): partial cross-entropy on the scribbled pixels + REG_WEIGHT x a regulariser on "
        "all pixels. Validation uses the full val masks. The other flags of this group need --supervision "
        "scribbles; --resume keeps the settings the run started with.")
    weak.add_argument("--supervision", choices=SUPERVISION_MODES, default=None,
                      help="full: the masks and the dataset's loss (default; on --resume: the run's own); "
                           "scribbles: pCE + regulariser")
    weak.add_argument("--reg_loss", "--reg-loss", dest="reg_loss", choices=REG_LOSSES, default=None,
                      help="regulariser: densecrf (default; normalised DenseCRF/Potts energy), ncut "
                           "(normalised cut), size (area bounds, needs --size_bounds), none (pCE only)")
    weak.add_argument("--reg_weight", "--reg-weight", dest="reg_weight", type=float, default=None,
                      help="weight of the regulariser (default: densecrf 1.0, ncut 1.0, size 0.01)")
    weak.add_argument("--pce_epochs", "--pce-epochs", dest="pce_epochs", type=int, default=None,
                      help="first K epochs with pCE alone, then the best pCE weights + the regulariser (rloss's "
                           "two-phase Caffe recipe); default 0 = both from the start (rloss's PyTorch recipe)")
    weak.add_argument("--sigma_rgb", type=float, default=None,
                      help="DenseCRF/ncut colour bandwidth, RGB 0-255 units (default: 15, rloss)")
    weak.add_argument("--sigma_xy", type=float, default=None,
                      help="DenseCRF/ncut spatial bandwidth in input pixels (default: 100 x input_size / 512, "
                           "rloss's 100 px at 513-px crops)")
    weak.add_argument("--reg_scale", type=float, default=None,
                      help="the regulariser runs at this fraction of the input size (default: 0.5, rloss)")
    weak.add_argument("--size_bounds", type=float, nargs=2, default=None, metavar=("LOWER", "UPPER"),
                      help="--reg_loss size: foreground area bounds as fractions of the image")
    return parser


def supervision_settings(args: argparse.Namespace) -> dict | None:
    """The :class:`~patchrefinenet.seg.train.Supervision` fields given on the command line, None
    when ``--supervision`` is not given (scribble-only flags without ``--supervision scribbles`` are refused)."""
    given = {k: getattr(args, k) for k in ("reg_loss", "reg_weight", "pce_epochs", "sigma_rgb", "sigma_xy",
                                           "reg_scale", "size_bounds") if getattr(args, k) is not None}
    if args.supervision != "scribbles" and given:
        flags = ", ".join(f"--{k}" for k in given)
        raise InputError(f"{flags} apply to --supervision scribbles; add it or drop them")
    if args.supervision is None:
        return None
    if "size_bounds" in given:
        given["size_bounds"] = tuple(given["size_bounds"])
    return {"mode": args.supervision, **given}


@cli_entry
def main(script_file: str, argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` and train; returns :func:`~patchrefinenet.seg.train_base_model`'s result."""
    args = _parser(script_file).parse_args(argv)
    setup_logging()
    run = resolve_seg_script(args, script_file)
    if args.checkpoint_path is not None and not args.checkpoint:
        raise InputError("--checkpoint_path is used with --checkpoint True; add it or drop --checkpoint_path")
    settings = supervision_settings(args)
    from patchrefinenet.seg.train import Supervision, train_base_model  # torch: only once the arguments are fine
    supervision = None if settings is None else Supervision(**settings)
    result = train_base_model(
        run.spec, run.model, data_root=run.data_root, output_root=run.output_root, seed=args.seed,
        device=args.device, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        pretrained=args.pretrained, resume=args.resume, overwrite=args.overwrite,
        init_weights=(args.checkpoint_path or True) if args.checkpoint else None,
        max_batches_per_epoch=args.max_batches_per_epoch, num_workers=args.num_workers,
        model_kwargs=width_kwargs(run.model, args.model_width), supervision=supervision, progress=args.progress,
        compile=args.compile)
    print(json.dumps(result, indent=2))
    return result
