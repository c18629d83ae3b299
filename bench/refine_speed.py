"""Refiner.refine against the per-dataset predict script on the same maps (issue: not slower).

Usage:
    python bench/refine_speed.py                  # 100 maps of 512², P64, width 32 (the authors' model)
    python bench/refine_speed.py --n 20 --repeats 3

One PRN P64 (width 32, random weights: speed does not depend on them) is saved as a checkpoint;
``--n`` random probability maps are written as ``test_input.npy`` / ``test_orig_gt.npy``. Timed, in
this process, alternating, ``--repeats`` times each (median reported):

- ``Refiner.refine``: the in-memory API on the (N, 512, 512) array, batch ``--batch_size``, with the
  per-patch threshold maps (``thresholds=True``, its default) and without;
- ``predict_prn``: the engine behind ``src/<ds>/refine-models/predict.py`` on the ``.npy`` files
  (batch ``--batch_size``, no figure, no saved masks), i.e. reading, the model, the head combination
  and the metrics.

Both run the model in eval mode on the CPU with the same threads. Recorded in bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb, record, table  # noqa: E402

from data_utils.io import save_npy_atomic  # noqa: E402
from patchrefinenet.checkpoint import save_checkpoint  # noqa: E402
from patchrefinenet.models.prn import PRN, PRNConfig  # noqa: E402
from patchrefinenet.refine.predict import RefinePredictConfig, predict_prn  # noqa: E402
from patchrefinenet.refiner import Refiner  # noqa: E402
from patchrefinenet.selection import Rule  # noqa: E402

SECTION = "Refiner.refine vs predict.py (bench/refine_speed.py)"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100, help="maps (default 100)")
    p.add_argument("--size", type=int, default=512, help="map side (default 512)")
    p.add_argument("--width", type=int, default=32, help="PRN width (default 32, the paper's)")
    p.add_argument("--batch_size", type=int, default=4, help="maps per forward for both (default 4)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each (default 3; median reported)")
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    maps = rng.random((args.n, args.size, args.size), dtype=np.float32)
    gt = (rng.random((args.n, args.size, args.size)) < 0.2).astype(np.float32)
    times: dict[str, list[float]] = {"Refiner.refine (with thresholds)": [], "Refiner.refine (masks only)": [],
                                     "predict_prn (predict.py engine)": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = PRN(PRNConfig(grid=8, width=args.width, step_bn=True)).eval()
        ckpt = root / "out" / "checkpoints" / "p64" / "p64_weights.th"
        save_checkpoint(ckpt, model.state_dict(), {"model": model.config.to_dict()}, {})
        save_npy_atomic(root / "data" / "test_input.npy", maps[..., None])
        save_npy_atomic(root / "data" / "test_orig_gt.npy", gt[..., None])
        refiner = Refiner(model, Rule("authors"), device="cpu")
        cfg = RefinePredictConfig(data_dir=str(root / "data"), output_root=str(root / "out"), aux_model="p64",
                                  checkpoint_path=str(ckpt), batch_size=args.batch_size, device="cpu", figure=0,
                                  combine="upstream", progress=False)
        runs = {
            "Refiner.refine (with thresholds)": lambda: refiner.refine(maps, batch_size=args.batch_size),
            "Refiner.refine (masks only)": lambda: refiner.refine(maps, batch_size=args.batch_size, thresholds=False),
            "predict_prn (predict.py engine)": lambda: predict_prn(cfg),
        }
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["predict_prn (predict.py engine)"]
    rows = [[k, f"{v:.2f}", f"{1000 * v / args.n:.0f}", f"{ref / v:.2f}×"] for k, v in med.items()]
    body = table(["path", f"median s for {args.n} maps", "ms / map", "speed vs predict_prn"], rows)
    body += (f"\n\n{args.n} random maps of {args.size}², PRN P64 width {args.width} (step_bn), batch {args.batch_size}, "
             f"CPU with {torch.get_num_threads()} torch threads, median of {args.repeats} alternating runs; "
             f"peak RSS {peak_rss_mb():.0f} MiB.")
    print(body)
    if not args.no_record:
        record(SECTION, body)
    return med


if __name__ == "__main__":
    main()
