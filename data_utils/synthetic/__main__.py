"""``python -m data_utils.synthetic``: write a demo dataset in the authors' on-disk layout."""
from __future__ import annotations

import argparse
import logging
import sys

import cv2

from data_utils.errors import InputError
from data_utils.io import atomic_path
from data_utils.synthetic.preview import preview_montage
from data_utils.synthetic.writer import DATASETS, RENDERERS, write_demo_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_utils.synthetic",
        description="Generate a small synthetic dataset (roads ~ DeepGlobe, polyps ~ Kvasir-SEG, saliency ~ DUTS) "
                    "in the exact layout of the authors' data.zip, under <root>/<deepglobe|kvasir|DUTS>/seg-models/. "
                    "Re-running with the same arguments on a complete dataset does nothing.")
    parser.add_argument("--kind", choices=list(RENDERERS), default="roads",
                        help="which dataset to imitate: " + ", ".join(f"{k} -> {v}" for k, v in DATASETS.items()))
    parser.add_argument("--root", required=True, help="data root, e.g. runs/demo/data (the folder that will hold "
                                                      "deepglobe/, kvasir/ or DUTS/)")
    parser.add_argument("--n_train", type=int, default=200, help="training images (default 200)")
    parser.add_argument("--n_val", type=int, default=50, help="validation images (default 50)")
    parser.add_argument("--n_test", type=int, default=50, help="test images (default 50)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--preview", metavar="PNG", help="also save a montage of the first 4 samples to this PNG")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad arguments end with ``error: ...`` and exit status 2."""
    args = build_parser().parse_args(argv)
    logger = logging.getLogger("patchrefinenet")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        result = write_demo_dataset(args.root, args.kind, n_train=args.n_train, n_val=args.n_val,
                                    n_test=args.n_test, size=args.size, seed=args.seed,
                                    progress=not args.no_progress)
        if args.preview:
            montage = preview_montage(args.kind, n=4, size=args.size, seed=args.seed)
            with atomic_path(args.preview, suffix=".png") as tmp:
                if not cv2.imwrite(str(tmp), cv2.cvtColor(montage, cv2.COLOR_RGB2BGR)):
                    raise InputError(f"--preview: cannot write a PNG to {args.preview}")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result["dataset_dir"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
