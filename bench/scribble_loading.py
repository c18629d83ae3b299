"""Why are scribble-supervised epochs slower? Time one training sample's loading, full masks vs scribbles.

Usage:
    python bench/scribble_loading.py                     # kvasir-like demo data, 128 px, 40 samples
    python bench/scribble_loading.py --kind roads --no-record

On a small demo dataset (written under ``--root``, scribbles drawn for its train split) it times,
in this process and alternating, the median per-sample cost of:

- ``SegmentationSplit(augment=True)[i]``: the full-mask item (read, augment, resize, normalise);
- the same split with ``scribbles=True``: also reads the scribble PNG, checks its values and
  carries it through the same augmentation (``_follow_geometry`` replays the augmentation's draws
  on a map of source coordinates);
- and, separately, the parts of the scribble path: ``read_scribble`` and ``_follow_geometry``.

The DenseCRF loss's own cost is measured by ``bench/densecrf.py``. Recorded in bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, table  # noqa: E402

from data_utils.augment import AUGMENTATIONS  # noqa: E402
from data_utils.datasets import (SegmentationSplit, _follow_geometry, read_image, resize_scribble,  # noqa: E402
                                 scribble_path)
from data_utils.scribbles import read_scribble  # noqa: E402
from data_utils.synthetic import DATASETS, write_demo_dataset  # noqa: E402
from patchrefinenet.demo.config import DemoConfig, demo_spec  # noqa: E402

SECTION = "Scribble loading (bench/scribble_loading.py)"
REPO = Path(__file__).resolve().parents[1]


def per_item(fn, n: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean seconds per call of ``fn(i)`` for i < n."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        runs.append((time.perf_counter() - t0) / n)
    return statistics.median(runs)


def scribbled_dataset(kind: str, n: int, root: Path):
    """A demo dataset of ``n`` train samples (``kind`` scenes, the demo's sizes) under ``root``, with
    scribbles drawn for its train split; returns (spec, data root)."""
    from data_utils.spec import spec_to_toml
    from patchrefinenet.cli import generate_scribbles

    cfg = DemoConfig(kind=kind)
    dataset = DATASETS[kind]
    spec = demo_spec(cfg, dataset)
    data_root = root / "data"
    write_demo_dataset(data_root, kind, n_train=n, n_val=1, n_test=1, size=cfg.image_size, progress=False)
    config = root / f"{dataset}.toml"
    config.write_text(spec_to_toml(spec))
    generate_scribbles.main(str(REPO / "src" / dataset / "seg-models" / "generate_scribbles.py"),
                            ["--config", str(config), "--data_root", str(data_root), "--splits", "train",
                             "--progress", "False"])
    return spec, data_root


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=sorted(DATASETS), default="polyps")
    p.add_argument("--n", type=int, default=40, help="train samples (default 40)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--root", type=Path, default=REPO / "runs" / "bench_scribbles")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    cfg = DemoConfig(kind=args.kind)
    spec, data_root = scribbled_dataset(args.kind, args.n, args.root)
    full = SegmentationSplit(spec, data_root, "train", augment=True)
    weak = SegmentationSplit(spec, data_root, "train", augment=True, scribbles=True)
    paths = [scribble_path(spec, data_root, s) for s in weak.samples]
    augmentation = AUGMENTATIONS[spec.train.augmentation]
    size = (spec.input_size, spec.input_size)
    images, scribbles = [], []
    for s, q in zip(weak.samples, paths):  # as _prepare hands them to the augmentation
        image, scribble = read_image(s.image_path), read_scribble(q)
        if spec.pad_to_square:
            images.append(image.astype(np.float32))
        else:
            images.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            scribble = resize_scribble(scribble, size)
        scribbles.append(scribble)

    def follow(i: int) -> None:
        rng = np.random.default_rng((0, 0, i))
        _follow_geometry(augmentation, images[i], scribbles[i], copy.deepcopy(rng))

    times = {"full-mask item": per_item(lambda i: full[i], args.n, args.repeats),
             "scribble item": per_item(lambda i: weak[i], args.n, args.repeats),
             "  of which read_scribble": per_item(lambda i: read_scribble(paths[i]), args.n, args.repeats),
             "  of which _follow_geometry": per_item(follow, args.n, args.repeats)}
    ref = times["full-mask item"]
    body = table(["per sample", "ms", "× full-mask item"],
                 [[k, f"{1000 * v:.2f}", f"{v / ref:.2f}"] for k, v in times.items()])
    body += (f"\n\n{args.kind} demo data ({cfg.image_size}-px images, {cfg.input_size}-px inputs), {args.n} train "
             f"samples with augmentation, median of {args.repeats} passes, one process.")
    print(body)
    if not args.no_record:
        record(SECTION, body)
    return times


if __name__ == "__main__":
    main()
