"""Pseudo-labels on a device: data_utils.pseudo_labels_torch on a whole split (DUTS val: 4,015 maps of
512² at p = 64), checked against the numpy reference on a subset.

Usage:
    python bench/pseudo_labels_gpu.py --quick                 # seconds, any machine: checks the script
    python bench/pseudo_labels_gpu.py --device cuda --record  # the goal: ≤ 10 s for 4,015 maps on a GPU

The maps are generated on the device (base-model-like: GT rectangles, probabilities = 0.35·GT +
0.65·uniform noise), so the timing is the search alone: from maps in device memory to labels,
thresholds and IoUs in device memory, values validated (one sync per chunk) or not. The numpy
reference (data_utils.pseudo_labels) runs on the first ``--check`` maps copied to the host, and
its labels, thresholds and IoUs must be identical; its time per map is printed for scale.
Rows also go as JSON lines to ``--out`` (default ``$OUT/pseudo_labels_gpu.jsonl`` when ``$OUT`` is set).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, record, table  # noqa: E402

from data_utils.pseudo_labels import patch_pseudo_labels  # noqa: E402
from data_utils.pseudo_labels_torch import patch_pseudo_labels_torch  # noqa: E402


def make_maps(n: int, size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, size, size) float32 probabilities and uint8 GT, generated on ``device`` in slices."""
    g = torch.Generator(device=device).manual_seed(seed)
    prob = torch.empty((n, size, size), dtype=torch.float32, device=device)
    gt = torch.zeros((n, size, size), dtype=torch.uint8, device=device)
    yy = torch.arange(size, device=device)[:, None]
    xx = torch.arange(size, device=device)[None, :]
    for s in range(0, n, 256):
        e = min(s + 256, n)
        corners = torch.randint(0, size // 2, (e - s, 4), generator=g, device=device)
        r0, c0 = corners[:, 0, None, None], corners[:, 1, None, None]
        r1, c1 = r0 + size // 8 + corners[:, 2, None, None], c0 + size // 8 + corners[:, 3, None, None]
        gt[s:e] = ((yy >= r0) & (yy < r1) & (xx >= c0) & (xx < c1)).to(torch.uint8)
        noise = torch.rand((e - s, size, size), generator=g, device=device)
        prob[s:e] = (0.35 * gt[s:e] + 0.65 * noise).clamp_(0, 1)
    return prob, gt


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--n", type=int, default=4015, help="maps (default 4015, DUTS val)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--patch", type=int, nargs="+", default=[64], help="patch sizes (default 64)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--check", type=int, default=32, help="maps compared with the numpy reference (default 32)")
    p.add_argument("--quick", action="store_true", help="32 maps of 128², p = 32, 1 repeat: checks the script")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--record", action="store_true", help="write bench/RESULTS.md (GPU runs only)")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.size, args.patch, args.repeats, args.check = 32, 128, [32], 1, 8
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.out is None and os.environ.get("OUT"):
        args.out = Path(os.environ["OUT"]) / "pseudo_labels_gpu.jsonl"
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    t0 = time.perf_counter()
    prob, gt = make_maps(args.n, args.size, device)
    sync()
    print(f"{args.n} maps of {args.size}² made on {device} in {time.perf_counter() - t0:.1f} s", flush=True)
    results, rows = [], []
    for patch in args.patch:
        ref_t0 = time.perf_counter()
        ref = patch_pseudo_labels(prob[:args.check].cpu().numpy(), gt[:args.check].cpu().numpy(), patch)
        ref_ms = (time.perf_counter() - ref_t0) / args.check * 1e3
        for validate in (True, False):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            patch_pseudo_labels_torch(prob[:2], gt[:2], patch, validate=validate)  # warm-up: kernels, allocator
            times = []
            for _ in range(args.repeats):
                sync()
                start = time.perf_counter()
                out = patch_pseudo_labels_torch(prob, gt, patch, validate=validate)
                sync()
                times.append(time.perf_counter() - start)
            same = all(np.array_equal(a, b[:args.check].cpu().numpy())
                       for a, b in ((ref.labels, out.labels), (ref.thresholds, out.thresholds), (ref.ious, out.ious)))
            sec = statistics.median(times)
            row = {"n": args.n, "size": args.size, "patch": patch, "validate": validate, "device": str(device),
                   "seconds": sec, "maps_per_s": args.n / sec, "numpy_ms_per_map": ref_ms,
                   "numpy_extrapolated_s": ref_ms * args.n / 1e3, "identical_to_numpy": same,
                   "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}
            results.append(row)
            rows.append([args.n, f"{args.size}²", patch, validate, sec, args.n / sec, ref_ms, ref_ms * args.n / 1e3,
                         same, "" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"])
            print(rows[-1], flush=True)
            if args.out is not None:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            del out
    headers = ["maps", "size", "p", "validated", "seconds", "maps/s", "numpy ms/map", "numpy s (extrap.)",
               "identical", "peak MiB"]
    text = table(headers, rows)
    print("\n" + text)
    if not all(r["identical_to_numpy"] for r in results):
        raise SystemExit("the device labels differ from the numpy reference")
    if args.record and cuda and not args.quick:
        body = "\n".join([
            f"`python bench/pseudo_labels_gpu.py --device cuda` — maps generated in device memory; the search "
            f"alone (maps in device memory → labels, thresholds, IoUs in device memory), median of {args.repeats}. "
            f"numpy: the reference on {args.check} maps on this machine's CPU (extrapolated to {args.n}); "
            f"identical = labels, thresholds and IoUs equal on those maps. {machine()}.",
            "", text, "", "- Goal: 4,015 maps of 512² at p = 64 in ≤ 10 s on the GPU.",
        ])
        record(f"Pseudo-labels on the GPU (bench/pseudo_labels_gpu.py) — {torch.cuda.get_device_name(device)}", body)
    return results


if __name__ == "__main__":
    main()
