"""PRN training throughput: images/s of one training step (forward, PRNLoss, backward, Adam step).

Usage:
    python bench/train_speed.py --quick                     # seconds, any machine: checks the script works
    python bench/train_speed.py --device cuda --record      # the GPU set (bench/gpu_suite.sh runs it)

Cases: P0 and P64 at 512², width 32, batch 1 and 8, in the folded PRN with per-patch BatchNorm
statistics (the engine's default) under fp32, bf16 autocast, channels_last, both, and
torch.compile (its compilation happens in the warm-up steps, excluded from the timings), against
the anchor measured in the same run: the authors' per-patch loop (bench/prn_speed.py's
``loop_forward``, train-mode BN on each patch call) in fp32. Each row: the median over
``--repeats`` blocks of ``--steps`` steps (one device sync per block, as a training loop that
does not read values back), images/s, the ratio to the loop at the same batch, and on CUDA the
peak memory allocated by that row. Every row is also written as one JSON line to ``--out``
(default ``$OUT/train_speed.jsonl`` when ``$OUT`` is set). ``--budget_s`` caps the whole run:
rows left when it is spent are listed as skipped.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, record, table  # noqa: E402
from prn_speed import loop_forward  # noqa: E402

from patchrefinenet.losses import PRNLoss  # noqa: E402
from patchrefinenet.models.prn import PRN, PRNConfig  # noqa: E402

VARIANTS = {  # name -> (bf16, channels_last, compile)
    "fp32": (False, False, False),
    "bf16": (True, False, False),
    "channels_last": (False, True, False),
    "bf16+channels_last": (True, True, False),
    "compile": (False, False, True),
    "compile+bf16": (True, False, True),
}


def make_step(grid: int, width: int, batch: int, size: int, variant: str, impl: str, device: torch.device):
    """A closure running one training step on fixed random data, and the model it trains."""
    bf16, channels_last, compiled = VARIANTS[variant]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = PRN(PRNConfig(grid=grid, width=width), check_values=False).to(device, memory_format=fmt)
    model.train().set_batch_statistics(impl == "folded")  # the loop: BN statistics of each patch call
    net = torch.compile(model) if compiled else model
    forward = net if impl == "folded" else (lambda t: loop_forward(model, t))
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.rand(batch, 1, size, size, generator=g).to(device).contiguous(memory_format=fmt)
    pseudo = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float().to(device)
    gt = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float().to(device)
    loss_fn = PRNLoss(check_values=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with amp():
            global_prob, local_prob = forward(x)
        loss = loss_fn(global_prob.float(), None if local_prob is None else local_prob.float(), pseudo, gt)["loss"]
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def measure(step, steps: int, repeats: int, warmup: int, device: torch.device) -> tuple[float, float, float]:
    """(median seconds per step, warm-up seconds, peak MiB on CUDA else nan)."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(warmup):
        loss = step()
    sync()
    warm = time.perf_counter() - t0
    if not torch.isfinite(loss).item():
        raise FloatingPointError(f"the loss is {loss.item()} after the warm-up")
    per_step = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        per_step.append((time.perf_counter() - t0) / steps)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    return statistics.median(per_step), warm, peak


def cases(args) -> list[tuple[str, int, int, str, str]]:
    """(model name, grid, batch, variant, impl) in run order: the anchor first at each batch, the
    compile rows (the slowest to start) last, so a spent ``--budget_s`` skips those first."""
    out, compiled = [], []
    for batch in args.batches:
        if 8 in args.grids and not args.no_loop:
            out.append(("P64", 8, batch, "fp32", "loop"))
        for grid in args.grids:
            for variant in args.variants:
                if VARIANTS[variant][2] and (grid, batch) in args.compile_cases:
                    compiled.append((f"P{grid * grid}", grid, batch, variant, "folded"))
                elif not VARIANTS[variant][2]:
                    out.append((f"P{grid * grid}", grid, batch, variant, "folded"))
    return out + compiled


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--grids", type=int, nargs="+", default=[0, 8], help="PRN grids (0 = P0, 8 = P64)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--compile_cases", default="8:8",
                   help="grid:batch pairs that also run the compile variants, each compiling anew (default 8:8; "
                        "e.g. 8:8,0:8,8:1)")
    p.add_argument("--no_loop", action="store_true", help="skip the authors' per-patch loop anchor")
    p.add_argument("--steps", type=int, default=5, help="steps per timed block (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per row; the median is reported (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first: cuDNN autotuning, compilation (default 3)")
    p.add_argument("--budget_s", type=float, default=400.0, help="stop starting new rows after this many seconds")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (64², width 4, batch 1 and 2, 1 step × 1 block, no compile): checks the script")
    p.add_argument("--out", type=Path, default=None, help="JSON lines file (default $OUT/train_speed.jsonl if $OUT is set)")
    p.add_argument("--record", action="store_true", help="write the table into bench/RESULTS.md (GPU runs only)")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.width, args.batches, args.steps, args.repeats, args.warmup = 64, 4, [1, 2], 1, 1, 1
        args.variants = [v for v in args.variants if not VARIANTS[v][2]]
    args.compile_cases = {tuple(int(v) for v in pair.split(":")) for pair in args.compile_cases.split(",") if pair}
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.out is None and os.environ.get("OUT"):
        args.out = Path(os.environ["OUT"]) / "train_speed.jsonl"

    rows, results, anchor = [], [], {}
    start = time.perf_counter()
    for name, grid, batch, variant, impl in cases(args):
        row = {"model": name, "width": args.width, "size": args.size, "batch": batch, "variant": variant, "impl": impl}
        if time.perf_counter() - start > args.budget_s:
            row["error"] = "skipped: --budget_s spent"
        else:
            try:
                step = make_step(grid, args.width, batch, args.size, variant, impl, device)
                sec, warm, peak = measure(step, args.steps, args.repeats, args.warmup, device)
                row.update(step_s=sec, images_per_s=batch / sec, warmup_s=warm, peak_mib=peak)
            except Exception as exc:  # noqa: BLE001 - one failing row (OOM, compiler) must not end the run
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        if impl == "loop" and "step_s" in row:
            anchor[batch] = row["step_s"]
        if "step_s" in row and batch in anchor and grid == 8:  # the anchor is the P64 loop
            row["speedup_vs_loop"] = anchor[batch] / row["step_s"]
        results.append(row)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as f:
                f.write(json.dumps({**row, "device": str(device)}) + "\n")
        cells = [name, batch, variant, impl]
        if "step_s" in row:
            cells += [row["step_s"] * 1e3, row["images_per_s"], row.get("speedup_vs_loop", ""), row["warmup_s"],
                      "" if row["peak_mib"] != row["peak_mib"] else f"{row['peak_mib']:.0f}"]
        else:
            cells += [row["error"], "", "", "", ""]
        rows.append(cells)
        print(" | ".join(str(c if not isinstance(c, float) else f"{c:.4g}") for c in cells), flush=True)

    headers = ["model", "batch", "variant", "impl", "ms/step", "images/s", "× loop", "warm-up s", "peak MiB"]
    text = table(headers, rows)
    print("\n" + text)
    by = {(r["model"], r["batch"], r["variant"], r["impl"]): r.get("step_s") for r in results}
    notes = []
    for batch in args.batches:
        loop, fp32, bf16 = by.get(("P64", batch, "fp32", "loop")), by.get(("P64", batch, "fp32", "folded")), \
            by.get(("P64", batch, "bf16", "folded"))
        if loop and fp32:
            notes.append(f"P64 batch {batch}: folded fp32 step {loop / fp32:.2f}× faster than the per-patch loop "
                         "(goal ≥ 3×)")
        if fp32 and bf16:
            notes.append(f"P64 batch {batch}: bf16 {fp32 / bf16:.2f}× faster than fp32 (goal ≥ 1.5×)")
    print("\n".join(notes))
    if args.record and device.type == "cuda" and not args.quick:
        body = "\n".join([
            f"`python bench/train_speed.py --device cuda` — {args.size}², width {args.width}; PRN training step "
            "(forward, PRNLoss, backward, Adam); folded = one PRN with per-patch BN statistics; loop = the authors' "
            f"per-patch local decoder in fp32. Median of {args.repeats} blocks of {args.steps} steps after "
            f"{args.warmup} warm-up steps (compilation included there). {machine()}.",
            "", text, "", *[f"- {n}" for n in notes],
        ])
        record(f"PRN training throughput (bench/train_speed.py) — {torch.cuda.get_device_name(device)}", body)
    return results


if __name__ == "__main__":
    main()
