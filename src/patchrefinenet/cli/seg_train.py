"""``src/<ds>/seg-models/train.py``: train the dataset's base segmentation model (docs/authors-seg.md §S3), from the
full masks (default) or from scribbles with a regularised loss (``--supervision scribbles``, rloss). Its
training options are generated from :class:`~patchrefinenet.seg.config.SegTrainConfig`'s fields.

Also holds the arguments every seg-models script shares (``--model``, ``--config``,
``--data_root``, ``--output_root``, ``--device``) and their resolution from the script's own
dataset folder, so the scripts run from any working directory. The seg-models CLIs import torch
only after parsing, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

from data_utils import layout
from data_utils.errors import InputError
from data_utils.spec import DatasetSpec, load_dataset_spec
from patchrefinenet.cli.common import (add_threads_argument, cli_entry, configure_cli_threads, dataset_dir_from_script,
                                       repo_root, setup_logging, str2bool)
from patchrefinenet.cli.fields import add_field_options, field_values
from patchrefinenet.seg.config import REG_LOSSES, SCRIBBLE_FIELDS, SUPERVISION_MODES, SegTrainConfig  # torch-free


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


_TRAIN_HELP = ("Train the base segmentation model with the authors' recipe from the dataset config (loss, Adam, "
               "batch, epochs, plateau rule); validation runs on the non-augmented val split.")
_WEAK_HELP = ("--supervision scribbles trains from data/<ds>/seg-models/scribbles/*.png (make them with "
              "generate_scribbles.py): partial cross-entropy on the scribbled pixels + REG_WEIGHT x a regulariser on "
              "all pixels. Validation uses the full val masks. The other flags of this group need --supervision "
              "scribbles; --resume keeps the settings the run started with.")
# SegTrainConfig fields the script sets itself (the shared flags above fill data_root and output_root).
_SCRIPT_FIELDS = {"data_root", "output_root", "model_kwargs"}


def _parser(script_file: str) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser and the names of the SegTrainConfig fields it fills: every training setting is an
    option generated from its field (docs/DESIGN.md, "One source per setting")."""
    parser = seg_parser(script_file, _TRAIN_HELP)
    weak = set(SCRIBBLE_FIELDS) | {"supervision"}
    names = add_field_options(parser, SegTrainConfig, exclude=_SCRIPT_FIELDS | weak, title="training")
    group = parser.add_argument_group("weak supervision (rloss)", _WEAK_HELP)
    names += add_field_options(group, SegTrainConfig, exclude={f.name for f in fields(SegTrainConfig)} - weak)
    return parser, names


@cli_entry
def main(script_file: str, argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` and train; returns :func:`~patchrefinenet.seg.train.train_base`'s result."""
    parser, names = _parser(script_file)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))  # under torchrun every rank runs this; rank 0 reports
    setup_logging(rank=rank)
    run = resolve_seg_script(args, script_file)
    settings = field_values(args, names)
    settings.update(model=run.model, data_root=str(run.data_root), output_root=str(run.output_root))
    cfg = SegTrainConfig(**settings)
    from patchrefinenet.seg.train import train_base  # torch: only once the arguments are fine

    result = train_base(cfg, run.spec)
    if rank == 0:
        print(json.dumps(result, indent=2))
    return result


# REG_LOSSES and SUPERVISION_MODES are the config's, named here for the scripts (a test keeps them
# equal to the engine's).
__all__ = ["REG_LOSSES", "SUPERVISION_MODES", "SegScript", "main", "resolve_seg_script", "seg_parser"]
