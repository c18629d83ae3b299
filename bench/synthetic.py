"""Benchmark: writing the embedded demo datasets (data_utils.synthetic) on one core.

For each kind, writes ``n`` images of 256 × 256 (train/val/test = 80/10/10 %) into a temporary
folder with OpenCV limited to one thread, and reports wall time, CPU time (robust when the
machine is shared) and the share spent on encoding + writing the files, measured in the same run
by re-encoding the same scenes. Usage: ``python bench/synthetic.py [--n 300] [--no-record]``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb, record, table  # noqa: E402

from data_utils.synthetic import KINDS, render_scene, write_demo_dataset  # noqa: E402


def _encode_only(kind: str, n: int, size: int) -> float:
    """CPU seconds to JPEG/PNG-encode and write ``n`` pre-rendered scenes (the I/O floor)."""
    scenes = [render_scene(kind, seed=0, index=i, size=size) for i in range(n)]
    mask_ext = ".jpg" if kind == "polyps" else ".png"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.process_time()
        for i, s in enumerate(scenes):
            cv2.imwrite(f"{tmp}/{i}.jpg", cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(f"{tmp}/{i}_m{mask_ext}", s.mask * 255)
        return time.process_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="images per kind (default 300)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--no-record", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    n_val = n_test = max(1, args.n // 10)
    rows = []
    for kind in KINDS:
        with tempfile.TemporaryDirectory() as tmp:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            write_demo_dataset(tmp, kind, n_train=args.n - 2 * n_val, n_val=n_val, n_test=n_test,
                               size=args.size, seed=0, progress=False)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        io_cpu = _encode_only(kind, min(args.n, 50), args.size) * args.n / min(args.n, 50)
        rows.append([kind, args.n, f"{args.size}×{args.size}", round(wall, 1), round(cpu, 1),
                     round(1000 * cpu / args.n, 1), f"{100 * io_cpu / cpu:.0f} %"])
    body = table(["kind", "images", "size", "wall s", "CPU s", "CPU ms / image", "encode + write share"], rows)
    body += f"\n\nOne OpenCV thread; peak RSS {peak_rss_mb():.0f} MiB. Wall time includes waiting for a shared CPU."
    print(body)
    if not args.no_record:
        record("Demo data generator (bench/synthetic.py)", body)


if __name__ == "__main__":
    main()
