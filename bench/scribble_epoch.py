"""What does a scribble-supervised training epoch cost against a full-mask one, and where does it go?

Usage:
    python bench/scribble_epoch.py                 # the demo's base model and sizes, 40 polyp samples
    python bench/scribble_epoch.py --no-record

On a small demo dataset with scribbles (``bench/scribble_loading.py``'s fixture), with the demo's
base model (D-LinkNet34 from scratch, 128-px inputs, batch 4), it times one training epoch —
loader, forward, loss, backward, Adam step — for each objective, in turn and repeated in this
process (medians):

- ``full``: full masks with the dataset's loss (the reference);
- ``pce``: scribbles, partial cross-entropy alone (the pCE phase of rloss's recipe);
- ``pce + densecrf`` / ``pce + ncut``: the regularised phase.

and, separately, the regulariser's own forward + backward on the same batches, so the issue's
budget — a scribble epoch ≤ 1.3 × a full-mask epoch plus the regulariser's own cost — can be read
off one table. Recorded in bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, table  # noqa: E402
from scribble_loading import scribbled_dataset  # noqa: E402

from data_utils.datasets import SegmentationSplit  # noqa: E402
from data_utils.synthetic import DATASETS  # noqa: E402
from patchrefinenet.models import build_base_model  # noqa: E402
from patchrefinenet.rloss import build_regularizer  # noqa: E402
from patchrefinenet.seg.train import Supervision, as_batch, build_objective  # noqa: E402

SECTION = "Scribble-supervised epochs (bench/scribble_epoch.py)"
REPO = Path(__file__).resolve().parents[1]
OBJECTIVES = {"full": Supervision("full"),
              "pce": Supervision("scribbles", reg_loss="none"),
              "pce + densecrf": Supervision("scribbles", reg_loss="densecrf"),
              "pce + ncut": Supervision("scribbles", reg_loss="ncut")}


def epoch_seconds(spec, data_root: Path, supervision: Supervision, model_name: str, batch_size: int) -> float:
    """Wall time of one training epoch (fresh loader over the augmented train split) with ``supervision``."""
    split = SegmentationSplit(spec, data_root, "train", augment=True, scribbles=supervision.mode == "scribbles")
    torch.manual_seed(0)
    model = build_base_model(model_name).train()
    objective = build_objective(spec, supervision)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loader = DataLoader(split, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    for raw in loader:
        out = objective(model, as_batch(raw, torch.device("cpu")))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
    return time.perf_counter() - t0


def regulariser_seconds(spec, data_root: Path, supervision: Supervision, batch_size: int) -> float:
    """The regulariser alone, forward + backward, over one epoch of batches (probabilities as a leaf)."""
    settings = supervision.resolved(spec)
    reg = build_regularizer(settings.reg_loss, **settings.reg_params())
    split = SegmentationSplit(spec, data_root, "train", augment=False, scribbles=True)
    batches = [as_batch(raw, torch.device("cpu")) for raw in DataLoader(split, batch_size=batch_size)]
    t0 = time.perf_counter()
    for batch in batches:
        prob = torch.rand(batch["mask"].shape, generator=torch.Generator().manual_seed(0)).requires_grad_()
        reg(prob, batch["rgb"], batch["roi"]).backward()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=sorted(DATASETS), default="polyps")
    p.add_argument("--n", type=int, default=40, help="train samples (default 40)")
    p.add_argument("--model", default="dlinknet", help="base model (default: dlinknet, the demo's)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--root", type=Path, default=REPO / "runs" / "bench_scribbles")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    spec, data_root = scribbled_dataset(args.kind, args.n, args.root)
    epoch_seconds(spec, data_root, OBJECTIVES["full"], args.model, args.batch_size)  # warm-up (allocator, caches)
    runs: dict[str, list[float]] = {name: [] for name in OBJECTIVES}
    for _ in range(args.repeats):  # interleaved, so a change in machine load hits every objective alike
        for name, supervision in OBJECTIVES.items():
            runs[name].append(epoch_seconds(spec, data_root, supervision, args.model, args.batch_size))
    epochs = {name: statistics.median(v) for name, v in runs.items()}
    regs = {name: statistics.median(regulariser_seconds(spec, data_root, s, args.batch_size)
                                    for _ in range(args.repeats))
            for name, s in OBJECTIVES.items() if s.mode == "scribbles" and s.reg_loss != "none"}
    ref = epochs["full"]
    rows = []
    for name, seconds in epochs.items():
        reg = regs.get(name, 0.0)
        rows.append([name, f"{seconds:.2f}", f"{seconds / ref:.2f}", f"{reg:.2f}" if reg else "–",
                     f"{(seconds - reg) / ref:.2f}"])
    body = table(["objective", "epoch s", "× full", "regulariser alone s", "(epoch − regulariser) × full"], rows)
    body += (f"\n\n{args.kind} demo data, {args.n} train samples, {spec.input_size}-px inputs, batch "
             f"{args.batch_size}, {args.model} from scratch, medians of {args.repeats} interleaved epochs.")
    print(body)
    if not args.no_record:
        record(SECTION, body)
    return {"epochs": epochs, "regularisers": regs}


if __name__ == "__main__":
    main()
