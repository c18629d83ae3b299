"""``src/<ds>/refine-models/train.py``: train PatchRefineNet on the base model's validation maps (docs/authors-refine.md §R7).

Also holds what both refine-models scripts share: the flags (``--base_model``, ``--aux_model`` /
``--patch_size``, ``--checkpoint``, ``--config``, ``--data_root``, ``--output_root``, ``--device``,
...) and their resolution from the script's own dataset folder, so the scripts run from any cwd.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from data_utils import layout
from data_utils.errors import InputError
from data_utils.spec import DatasetSpec, load_dataset_spec
from patchrefinenet.cli.common import (add_threads_argument, cli_entry, configure_cli_threads, dataset_dir_from_script,
                                       repo_root, setup_logging, str2bool)
from patchrefinenet.cli.fields import add_field_options, field_values

# The engine (torch) is imported inside the functions that need it, so that --help answers at once.


@dataclass(frozen=True)
class RefineScript:
    """What a refine-models script works on: dataset config, base model, data folder, output root."""

    spec: DatasetSpec
    base_model: str
    data_dir: Path
    output_root: Path


def refine_parser(script_file: str, description: str, examples: str) -> argparse.ArgumentParser:
    """An argument parser with the flags shared by ``src/<ds>/refine-models/{train,predict}.py``.

    ``examples`` is a template with ``{ds}`` (the dataset folder) and ``{m}`` (its base model).
    """
    ds_dir = dataset_dir_from_script(script_file)
    ds = ds_dir.name
    try:
        model = load_dataset_spec(ds_dir / "dataset.toml").base_model
    except InputError:
        model = "<base_model>"
    parser = argparse.ArgumentParser(
        prog=f"python src/{ds}/refine-models/{Path(script_file).name}", description=description,
        epilog=examples.format(ds=ds, m=model), formatter_class=argparse.RawDescriptionHelpFormatter)
    grid = parser.add_argument_group("patch grid (give one)")
    grid.add_argument("--aux_model", default=None,
                      help="pN, N = number of patches: p0 (global only), p4 (2×2), p16 (4×4), p64 (8×8), ...")
    grid.add_argument("--patch_size", type=int, default=None,
                      help="patch side in pixels instead of --aux_model (e.g. 64 = p64 on 512-px maps)")
    parser.add_argument("--base_model", default=None,
                        help="base model whose maps are refined (default: base_model of the dataset config)")
    parser.add_argument("--checkpoint", type=str2bool, nargs="?", const=True, default=False,
                        help="use checkpoints/<aux>/<aux>_weights.th, else the released "
                             "checkpoints/released/<aux>_weights.th (or --checkpoint_path); True/False")
    parser.add_argument("--checkpoint_path", type=Path, default=None,
                        help="an explicit weights file (ours, or the authors' p0/p4/p64_weights.th)")
    parser.add_argument("--config", type=Path, default=None, help=f"dataset config (default: src/{ds}/dataset.toml)")
    parser.add_argument("--data_root", type=Path, default=None,
                        help=f"folder holding {ds}/refine-models/<base_model>/ (default: <repo>/data)")
    parser.add_argument("--output_root", type=Path, default=None,
                        help=f"folder for checkpoints/, logs/, outputs/ (default: src/{ds}/refine-models)")
    parser.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda or cuda:<index>")
    parser.add_argument("--bf16", type=str2bool, nargs="?", const=True, default=False,
                        help="bf16 autocast (CUDA only; default False)")
    parser.add_argument("--channels_last", type=str2bool, nargs="?", const=True, default=False,
                        help="channels-last memory format (CUDA only; default False)")
    parser.add_argument("--num_workers", type=int, default=0, help="data-loading worker processes (default: 0)")
    parser.add_argument("--compile", type=str2bool, nargs="?", const=True, default=False,
                        help="torch.compile the PRN (opt-in, default False; the first batches compile)")
    add_threads_argument(parser)
    return parser


def resolve_refine_script(args: argparse.Namespace, script_file: str) -> RefineScript:
    """Load the dataset config and fill in the defaults of :func:`refine_parser`'s flags (and set the
    CPU threads from ``--threads``: both refine-models commands call this first)."""
    configure_cli_threads(args.threads)
    ds_dir = dataset_dir_from_script(script_file)
    spec = load_dataset_spec(args.config if args.config is not None else ds_dir / "dataset.toml")
    if args.aux_model is None and args.patch_size is None:
        raise InputError("give --aux_model (p0, p4, p16, p64, ...) or --patch_size (pixels)")
    base_model = args.base_model or spec.base_model
    from patchrefinenet.models import BASE_MODELS  # imports torch: after parsing, so --help stays instant

    if base_model not in BASE_MODELS:
        raise InputError(f"unknown base model {base_model!r} (--base_model); valid names: "
                         f"{', '.join(sorted(BASE_MODELS))}")
    data_root = Path(args.data_root if args.data_root is not None else repo_root() / "data").expanduser()
    output_root = Path(args.output_root if args.output_root is not None else ds_dir / layout.REFINE_MODELS).expanduser()
    return RefineScript(spec, base_model, layout.refine_arrays_dir(data_root, spec.name, base_model), output_root)


def default_weights(args: argparse.Namespace, run: RefineScript) -> Path:
    """The weights ``--checkpoint True`` means for the requested grid: ours,
    ``<output_root>/checkpoints/<aux>/<aux>_weights.th``, else the released
    ``checkpoints/released/<aux>_weights.th`` (InputError naming both if neither exists)."""
    import logging

    from patchrefinenet.models.prn import resolve_grid
    from patchrefinenet.refine.data import RefineOutputs

    aux = resolve_grid(args.aux_model, args.patch_size, image_size=run.spec.prn_size).aux_name
    path, kind = RefineOutputs(run.output_root, aux).weights_to_load()
    logging.getLogger("patchrefinenet").info("--checkpoint True: %s weights %s", kind, path)
    return path


_EXAMPLES = """examples:
  python src/{ds}/refine-models/train.py --base_model {m} --aux_model p64
  python src/{ds}/refine-models/train.py --aux_model p64 --resume True           # continue after Ctrl-C
  python src/{ds}/refine-models/train.py --aux_model p64 --checkpoint True       # start from p64_weights.th
  python src/{ds}/refine-models/train.py --aux_model p64 --overwrite True        # replace an earlier run
  python src/{ds}/refine-models/train.py --patch_size 128 --epochs 50 --seed 1
  torchrun --standalone --nproc_per_node=4 src/{ds}/refine-models/train.py --aux_model p64 --bf16 True

Writes checkpoints/<aux>/<aux>_weights.th (best), <aux>_last.th (resume) and logs/<aux>/ under
--output_root; an earlier run's files there are kept unless --resume True or --overwrite True.
--checkpoint True starts from our <aux>_weights.th, else the released checkpoints/released/ file.
Missing or stale pseudo-labels train_aux_gt_p_<P>.npy are generated from val_pred.npy.
"""


# RefineTrainConfig fields the script sets itself rather than taking as flags.
_SCRIPT_FIELDS = {"data_dir", "output_root", "dataset", "base_model", "init_checkpoint"}


def _parser(script_file: str) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser and the names of the RefineTrainConfig fields it fills (every training setting is
    an option generated from its field: docs/DESIGN.md, one source per setting)."""
    from patchrefinenet.refine.config import RefineTrainConfig  # torch-free

    parser = refine_parser(
        script_file, "Train PatchRefineNet on the base model's validation probability maps with the authors' "
                     "recipe (Adam 8e-4; plateau rule: after 5 epochs without improvement reload the best "
                     "weights and lr/1.1, stop after 9), holding out --select of the maps to choose the epoch "
                     "and the output rule (docs/refiner.md).",
        _EXAMPLES)
    names = add_field_options(parser, RefineTrainConfig, exclude=_SCRIPT_FIELDS, title="training",
                              defaults={"batch_size": (None, "the dataset config's"),
                                        "shuffle": (None, "the dataset config's")})
    return parser, names


@cli_entry
def main(script_file: str, argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` and train; returns :func:`~patchrefinenet.refine.train.train_prn`'s result."""
    parser, names = _parser(script_file)
    args = parser.parse_args(argv)
    from patchrefinenet.refine.train import RefineTrainConfig, train_prn

    rank = int(os.environ.get("RANK", "0"))
    setup_logging(rank=rank)
    run = resolve_refine_script(args, script_file)
    if args.checkpoint_path is not None and not args.checkpoint:
        raise InputError("--checkpoint_path is used with --checkpoint True; add it or drop --checkpoint_path")
    init = None
    if args.checkpoint:
        init = Path(args.checkpoint_path) if args.checkpoint_path is not None else default_weights(args, run)
        if not init.is_file():
            raise InputError(f"--checkpoint_path: no weights at {init}; train without --checkpoint first, "
                             f"or pass an existing file")
    settings = field_values(args, names)
    settings.update(  # what the dataset config and the script's folder decide
        batch_size=run.spec.refine.batch_size if args.batch_size is None else args.batch_size,
        shuffle=run.spec.refine.shuffle if args.shuffle is None else args.shuffle,
        data_dir=str(run.data_dir), output_root=str(run.output_root), dataset=run.spec.name,
        base_model=run.base_model, init_checkpoint=None if init is None else str(init))
    cfg = RefineTrainConfig(**settings)
    result = train_prn(cfg, dataset_spec=run.spec.to_dict())
    if rank == 0:
        summary = {k: v for k, v in result.items() if k not in ("history", "model", "selection")}
        if result.get("selection") is not None:
            summary["selection"] = result["selection"].message()
        print(json.dumps(summary, indent=2))
    return result
