"""``src/<ds>/seg-models/generate_scribbles.py``: synthetic scribbles for weak supervision (docs/rloss.md §L1.3).

For every sample of the chosen splits, writes ``<data_root>/<ds>/seg-models/scribbles/<mask file
stem>.png`` (0 = background, 1 = foreground, 255 = unlabelled; the mask's size) with
:func:`data_utils.scribbles.generate_scribbles_for_split`. A file's strokes depend only on
``--seed`` and the mask's file name, so reruns and subsets reproduce the same scribbles. The
settings of each split's last run are recorded in ``scribbles/generate_scribbles.json``.
Train on them with ``train.py --supervision scribbles``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

from data_utils.errors import InputError
from data_utils.spec import load_dataset_spec
from patchrefinenet.cli.common import cli_entry, dataset_dir_from_script, repo_root, setup_logging, str2bool

INFO_FILE = "generate_scribbles.json"


def _parser(script_file: str) -> argparse.ArgumentParser:
    ds = dataset_dir_from_script(script_file).name
    parser = argparse.ArgumentParser(
        prog=f"python src/{ds}/seg-models/{Path(script_file).name}",
        description="Draw synthetic scribbles from the ground-truth masks for scribble-supervised training\n"
                    "(train.py --supervision scribbles): strokes along the middle of each foreground component\n"
                    "and a few background strokes away from it, a few % of the pixels labelled. Written to\n"
                    f"<data_root>/{ds}/seg-models/scribbles/<mask file stem>.png (0 = background,\n"
                    "1 = foreground, 255 = unlabelled).",
        epilog=f"examples:\n  python src/{ds}/seg-models/generate_scribbles.py\n"
               f"  python src/{ds}/seg-models/generate_scribbles.py --splits train val --seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help=f"dataset config (default: src/{ds}/dataset.toml)")
    parser.add_argument("--data_root", type=Path, default=None,
                        help=f"folder holding {ds}/seg-models (default: <repo>/data)")
    parser.add_argument("--splits", nargs="+", choices=("train", "val", "test"), default=["train"],
                        help="splits to draw scribbles for (default: train; validation uses the full masks)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the strokes, per file (default: 0)")
    parser.add_argument("--width", type=int, default=None,
                        help="stroke width in px (default: 3 at 512 px, scaled with the image size)")
    parser.add_argument("--margin", type=int, default=None,
                        help="min distance of background strokes from the foreground in px (default: 8 at 512 px)")
    parser.add_argument("--background_strokes", type=int, default=5, help="background strokes per image (default: 5)")
    parser.add_argument("--progress", type=str2bool, default=True, help="show a progress bar (default: True)")
    return parser


def draw_scribbles(spec, data_root: str | Path, splits: Sequence[str] = ("train",), seed: int = 0, *,
                   progress: bool = True, **params) -> dict:
    """Write the scribbles of ``splits`` (module docstring) and record them in ``INFO_FILE``.

    ``params``: ``width``, ``margin``, ``background_strokes`` of
    :func:`data_utils.scribbles.scribbles_from_mask`. Returns ``{"dir", "seed", "splits": {split:
    n_files}, "params"}``. The Python entry point of this script (the demo's weak branch calls it).
    """
    from data_utils.datasets import read_split, scribble_dir  # OpenCV/scikit-image: only when drawing
    from data_utils.io import write_text_atomic
    from data_utils.scribbles import generate_scribbles_for_split

    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    data_root = Path(data_root)
    masks = {split: [s.mask_path for s in read_split(spec, data_root, split)] for split in dict.fromkeys(splits)}
    owner: dict[str, Path] = {}  # scribble file name -> mask: two masks must not share one scribble file
    for path in (p for paths in masks.values() for p in paths):
        other = owner.setdefault(path.stem, path)
        if other != path:
            raise InputError(f"masks {other} and {path} share the file stem {path.stem!r}, so their scribbles "
                             f"would overwrite each other in {scribble_dir(spec, data_root)}; rename one of them")
    out_dir = scribble_dir(spec, data_root)
    info_path = out_dir / INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    counts = {}
    for split, paths in masks.items():
        written = generate_scribbles_for_split(paths, out_dir, seed, progress=progress, **params)
        counts[split] = len(written)
        info[split] = {"seed": seed, "params": params, "n_files": len(written),
                       "written": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_text_atomic(info_path, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return {"dir": str(out_dir), "seed": seed, "splits": counts, "params": params}


def scribbles_current(spec, data_root: str | Path, seed: int, split: str = "train", **params) -> bool:
    """True when every sample of ``split`` has a scribble drawn with ``seed`` and ``params`` (per ``INFO_FILE``)."""
    from data_utils.datasets import read_split, scribble_dir, scribble_path

    info_path = scribble_dir(spec, data_root) / INFO_FILE
    if not info_path.is_file():
        return False
    entry = json.loads(info_path.read_text()).get(split, {})
    samples = read_split(spec, data_root, split)
    return (entry.get("seed") == seed and entry.get("params", {}) == params
            and all(scribble_path(spec, data_root, s).is_file() for s in samples))


@cli_entry
def main(script_file: str, argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` and write the scribbles; returns :func:`draw_scribbles`' result."""
    args = _parser(script_file).parse_args(argv)
    setup_logging()
    ds_dir = dataset_dir_from_script(script_file)
    spec = load_dataset_spec(args.config if args.config is not None else ds_dir / "dataset.toml")
    data_root = Path(args.data_root if args.data_root is not None else repo_root() / "data").expanduser()
    params = {k: v for k, v in (("width", args.width), ("margin", args.margin),
                                ("background_strokes", args.background_strokes)) if v is not None}
    result = draw_scribbles(spec, data_root, args.splits, args.seed, progress=args.progress, **params)
    print(json.dumps(result, indent=2))
    return result
