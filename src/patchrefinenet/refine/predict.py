"""PRN inference on the test arrays and the authors' head combination (docs/authors-refine.md §R9).

For every test map the PRN's outputs become a mask by an output rule (docs/refiner.md): the
rule chosen on held-out maps when the PRN was trained (stored in its checkpoint), or ``--rule``,
or ``--combine``: ``upstream`` (the default for grid > 0 without a stored rule) is the authors'
final = G>0.5 ∪ dilate₃ₓ₃(G>0.5 ∩ L>0.5); ``global`` / ``local`` use one head alone. Metrics are streamed with
:class:`~patchrefinenet.metrics.SegmentationMeter` for the final mask, for each head alone and for
the base model's input at 0.5, so the gain of refinement is read off one JSON file.

BatchNorm: by default the model runs in eval mode (running statistics). ``batch_stats=True`` is
the authors' inference, which never called ``model.eval()``: every BatchNorm uses the current
call's statistics, per patch in the local decoder (docs/authors-refine.md §R4) — needed to reproduce their numbers.
The test pseudo-labels the authors loaded (and never used) are not needed.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from data_utils.errors import InputError
from data_utils.io import atomic_path, open_memmap_atomic, remove_stale_temporaries, staged_folder, write_text_atomic
from patchrefinenet.metrics import SegmentationMeter
from patchrefinenet.selection import Rule, apply_rule, authors_combination
from patchrefinenet.models.prn import PRN, load_prn, resolve_grid
from patchrefinenet.refine.data import (
    TEST_GT, TEST_INPUTS, NpyMaps, RefineDataset, RefineOutputs, generator_hint, require_arrays,
)
from patchrefinenet.training import autocast_context, log_to_file, resolve_device

log = logging.getLogger("patchrefinenet")

COMBINE_MODES = ("upstream", "global", "local")


def combine_heads(global_prob: torch.Tensor, local_prob: torch.Tensor | None, mode: str = "upstream",
                  threshold: float = 0.5) -> torch.Tensor:
    """Final binary mask (B, 1, H, W) uint8 from the head probabilities (B, 1, H, W).

    G = global > threshold, L = local > threshold (strict, as the authors).
    ``upstream``: G ∪ dilate(G ∩ L) with a 3×3 all-ones structuring element, per image; pixels
    outside the image do not contribute (max-pooling pads with −inf). ``global``: G. ``local``: L.
    """
    if mode not in COMBINE_MODES:
        raise InputError(f"--combine {mode!r}: choose one of {', '.join(COMBINE_MODES)}")
    g = global_prob > threshold
    if mode == "global":
        return g.to(torch.uint8)
    if local_prob is None:
        raise InputError(f"--combine {mode}: this PRN has no local head (grid 0, p0); use --combine global")
    if mode == "local":
        return (local_prob > threshold).to(torch.uint8)
    return authors_combination(global_prob, local_prob, threshold).to(torch.uint8)


@dataclass(frozen=True)
class RefinePredictConfig:
    """Settings of a PRN evaluation run (primitives only).

    data_dir holds ``test_input.npy`` and ``test_orig_gt.npy``; results go to
    ``<output_root>/logs/<aux>/`` (log, metrics JSON) and ``<output_root>/outputs/<aux>/`` (masks,
    probabilities, figure). ``checkpoint_path`` defaults to ours,
    ``<output_root>/checkpoints/<aux>/<aux>_weights.th``, else the released
    ``checkpoints/released/<aux>_weights.th``; it may be ours or the authors' bare p0/p4/p64 file.
    ``combine`` None = ``upstream`` for grid > 0, ``global`` for grid 0. ``figure`` = number of example
    rows in the figure (0: none).
    """

    data_dir: str
    output_root: str
    aux_model: str | None = None
    patch_size: int | None = None
    checkpoint_path: str | None = None
    batch_stats: bool = False
    row7_quirk: bool | None = None  # None: on only for the authors' bare P64 file (models.prn.load_prn)
    combine: str | None = None
    rule: str | None = None
    batch_size: int = 1
    device: str = "auto"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False  # torch.compile the forward (opt-in; the first batches compile)
    save_masks: bool = False
    save_probs: bool = False
    figure: int = 4
    saliency: bool = False
    num_workers: int = 0
    dataset: str = ""
    base_model: str = ""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.combine is not None and self.combine not in COMBINE_MODES:
            raise InputError(f"--combine {self.combine!r}: choose one of {', '.join(COMBINE_MODES)}")
        if self.rule is not None:
            Rule.parse(self.rule)  # a clear error for a bad --rule now, not after loading
        if self.batch_size < 1:
            raise InputError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.figure < 0 or self.num_workers < 0:
            raise InputError(f"--figure and num_workers must be >= 0, got {self.figure}, {self.num_workers}")


def _load_model(cfg: RefinePredictConfig, grid: int, path: Path, device: torch.device) -> tuple[PRN, str, str | None]:
    """Load the checkpoint; our files must match the requested grid, the authors' files bring their own."""
    if not path.is_file():
        raise InputError(f"no PRN checkpoint at {path}; train one (refine-models/train.py with the same "
                         f"--aux_model) or pass the authors' file with --checkpoint_path")
    model, ck = load_prn(path, "cpu", requested_grid=grid, row7_quirk=cfg.row7_quirk)
    got = model.config.grid
    if got != grid:
        if ck.source == "patchrefinenet":
            raise InputError(f"{path} was trained with grid {got} (p{got * got}) but --aux_model/--patch_size asks for "
                             f"grid {grid} (p{grid * grid}); use --aux_model p{got * got} or the matching checkpoint")
        why = " (the authors' ThreshNetP4, p4_weights.th, decodes 4×4 patches, docs/authors-refine.md §R15.5)" if got == 4 else ""
        log.warning("%s is the authors' file for a %d×%d grid (p%d), not grid %d: evaluating it on its own grid%s",
                    path, got, got, got * got, grid, why)
    model.to(device)
    model.check_values = False  # RefineDataset checks every item: no host sync per batch
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model, ck.source, ((ck.config or {}).get("refiner") or {}).get("rule")


# The authors' --combine modes as output rules (docs/refiner.md).
_COMBINE_RULES = {"upstream": Rule("authors"), "global": Rule("global"), "local": Rule("local")}


def _choose_rule(cfg: RefinePredictConfig, grid: int, stored: str | None) -> tuple[Rule, str]:
    """The output rule and where it came from: --rule, else --combine, else the rule chosen on held-out
    maps at training time (stored in the checkpoint), else the authors' default for the grid."""
    if cfg.rule is not None:
        rule, why = Rule.parse(cfg.rule), "--rule"
    elif cfg.combine is not None:
        rule, why = _COMBINE_RULES[cfg.combine], "--combine"
    elif stored:
        rule, why = Rule.parse(stored), "chosen on held-out maps at training time"
    else:
        rule, why = (Rule("authors") if grid > 0 else Rule("global")), "the authors' default"
    if rule.uses_local and grid == 0:
        raise InputError(f"rule {rule.name}: this PRN has no local head (grid 0, p0); use --combine global")
    return rule, why


def predict_prn(cfg: RefinePredictConfig) -> dict[str, Any]:
    """Evaluate a PRN on the test arrays; write the log, metrics JSON and optional outputs.

    Returns ``{"miou": final pooled IoU, "refined": {...}, "base": {...}, "global": {...},
    ["local": {...}], "combine", "batch_stats", "grid", "aux", "checkpoint", ...}`` where every
    metrics dict is :meth:`SegmentationMeter.compute` (pooled_iou, mean_iou, dice, precision,
    recall, mae, n_images[, max_f]).
    """
    device = resolve_device(cfg.device)
    data = Path(cfg.data_dir)
    inputs, gt_path = data / TEST_INPUTS, data / TEST_GT
    require_arrays({"test inputs": inputs, "test ground truth": gt_path},
                   generator_hint(cfg.dataset, cfg.base_model, test=True))
    n, h, w = NpyMaps(inputs, "test inputs").shape
    choice = resolve_grid(cfg.aux_model, cfg.patch_size, image_size=h)
    out = RefineOutputs(Path(cfg.output_root), choice.aux_name)
    for path in remove_stale_temporaries(out.output_dir, out.output_dir / "masks", out.log_dir):
        log.info("removed %s (left by a run that was killed)", path)
    ckpt, kind = (Path(cfg.checkpoint_path), "--checkpoint_path") if cfg.checkpoint_path else out.weights_to_load()
    with log_to_file(out.predict_log, mode="a"):
        log.info("PRN weights: %s (%s)", ckpt, kind)
        model, source, stored = _load_model(cfg, choice.grid, ckpt, device)
        grid = model.config.grid
        rule, why = _choose_rule(cfg, grid, stored)
        combine = next((k for k, r in _COMBINE_RULES.items() if r == rule), rule.name)
        model.eval().set_batch_statistics(cfg.batch_stats)
        if cfg.batch_stats and cfg.batch_size > 1:
            log.warning("--batch_stats with --batch_size %d pools BatchNorm statistics over %d images; the authors "
                        "used batch 1", cfg.batch_size, cfg.batch_size)
        bf16 = cfg.bf16 and device.type == "cuda"
        log.info("PRN prediction (%s): %s; checkpoint %s (%s); %d test maps of %d×%d; BatchNorm %s; rule %s (%s)",
                 cfg.dataset or data, choice.description, ckpt, source, n, h, w,
                 "batch statistics (authors)" if cfg.batch_stats else "running statistics (eval)", rule.name, why)
        with staged_folder(out.output_dir) as stage:  # a failed run leaves the earlier outputs as they were
            result = _evaluate(cfg, model, RefineDataset(inputs, gt_path), out, rule, device, bf16, stage)
        result.update(combine=combine, rule=rule.name, rule_source=why, batch_stats=cfg.batch_stats, grid=grid, aux=choice.aux_name,
                      checkpoint=str(ckpt), checkpoint_source=source, data_dir=str(data), config=asdict(cfg))
        log.info("Total mIoU after Refinement = %f", result["miou"])
        log.info("base model (input > 0.5): pooled IoU %.6f; global head alone %.6f%s", result["base"]["pooled_iou"],
                 result["global"]["pooled_iou"],
                 f"; local head alone {result['local']['pooled_iou']:.6f}" if "local" in result else "")
        write_text_atomic(out.predict_metrics, json.dumps(result, indent=2, sort_keys=True) + "\n")
        log.info("metrics written to %s", out.predict_metrics)
    return result


def _evaluate(cfg: RefinePredictConfig, model: PRN, dataset: RefineDataset, out: RefineOutputs, rule: Rule,
              device: torch.device, bf16: bool, stage: Path) -> dict[str, Any]:
    """Stream the test set through the model; accumulate metrics; write the optional outputs into
    ``stage`` (moved to ``out.output_dir`` when the run succeeds; the result names the final paths)."""
    n, (h, w) = len(dataset), dataset.image_size
    has_local = model.config.grid > 0
    meters = {k: SegmentationMeter(saliency=cfg.saliency) for k in ("refined", "base", "global")}
    if has_local:
        meters["local"] = SegmentationMeter(saliency=cfg.saliency)
    examples: list[tuple[np.ndarray, ...]] = []
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda")
    net = torch.compile(model) if cfg.compile else model
    with contextlib.ExitStack() as stack:
        probs = {}
        if cfg.save_probs:
            heads = ("global", "local") if has_local else ("global",)
            probs = {k: stack.enter_context(open_memmap_atomic(stage / f"test_prob_{k}.npy", (n, h, w, 1)))
                     for k in heads}
        bar = tqdm(loader, desc="PRN predict", unit="batch", disable=not cfg.progress)
        with torch.inference_mode():
            for batch in bar:
                x, gt, index = batch["input"], batch["gt"], batch["index"]
                xd = x.to(device, non_blocking=True)
                if cfg.channels_last and device.type == "cuda":
                    xd = xd.contiguous(memory_format=torch.channels_last)
                with autocast_context(device, bf16):
                    global_prob, local_prob = net(xd)
                global_prob = global_prob.float().clamp_(0, 1)  # bf16 rounding may step past 1
                local_prob = None if local_prob is None else local_prob.float().clamp_(0, 1)
                final = apply_rule(rule, xd.float(), global_prob, local_prob)[1].to(torch.uint8).cpu()
                g_np = global_prob.cpu().numpy()
                l_np = None if local_prob is None else local_prob.cpu().numpy()
                meters["refined"].update(final.numpy(), gt.numpy())
                meters["base"].update(x.numpy(), gt.numpy())
                meters["global"].update(g_np, gt.numpy())
                if l_np is not None:
                    meters["local"].update(l_np, gt.numpy())
                lo, hi = int(index[0]), int(index[-1]) + 1
                if "global" in probs:
                    probs["global"][lo:hi] = g_np.transpose(0, 2, 3, 1)  # NCHW -> NHWC
                if "local" in probs:
                    probs["local"][lo:hi] = l_np.transpose(0, 2, 3, 1)
                if cfg.save_masks:
                    for i, mask in zip(index.tolist(), final[:, 0].numpy()):
                        _write_png(stage / "masks" / f"{i:05d}.png", mask * 255)
                for j in range(min(len(x), cfg.figure - len(examples))):
                    examples.append((x[j, 0].numpy(), g_np[j, 0], final[j, 0].numpy(), gt[j, 0].numpy()))
                bar.set_postfix(miou=f"{_running_iou(meters['refined']):.4f}")
        bar.close()
    result: dict[str, Any] = {k: m.compute() for k, m in meters.items()}
    result["miou"] = result["refined"]["pooled_iou"]
    result["n_images"] = n
    if cfg.save_probs:
        result["probabilities"] = {k: str(out.output_dir / f"test_prob_{k}.npy") for k in probs}
    if cfg.save_masks:
        result["masks_dir"] = str(out.output_dir / "masks")
    if examples:
        fig_name = f"{out.aux}_predict_figure.png"
        save_figure(stage / fig_name, examples, f"PRN {out.aux} ({rule.name})")
        result["figure"] = str(out.output_dir / fig_name)
    return result


def _running_iou(meter: SegmentationMeter) -> float:
    return meter.compute()["pooled_iou"] if meter.n_images else 0.0


def _write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(image, dtype=np.uint8)):
            raise OSError(f"could not write {path}")


def save_figure(path: Path, rows: list[tuple[np.ndarray, ...]], title: str,
                titles: tuple[str, ...] = ("base probability", "refined (global head)", "final mask", "ground truth"),
                ) -> None:
    """Rows of (base probability, refined probability, final mask, ground truth) as one PNG (Agg, no pyplot)."""
    from matplotlib.figure import Figure  # imported here: only needed when a figure is asked for

    fig = Figure(figsize=(4 * 2.6, len(rows) * 2.6), layout="constrained")
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for r, images in enumerate(rows):
        for c, (ax, img) in enumerate(zip(axes[r], images)):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


__all__ = ["COMBINE_MODES", "RefinePredictConfig", "combine_heads", "predict_prn"]
