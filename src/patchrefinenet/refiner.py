"""``Refiner``: PatchRefineNet on any model's probability maps, in memory.

    refiner = Refiner.fit(val_probs, val_masks, patch_size=64)   # trains PRN, selects on held-out maps
    refiner.save("prn.pt")
    refiner = Refiner.load("prn.pt")        # also the authors' p0/p4/p64_weights.th
    out = refiner.refine(test_probs)        # no ground truth needed
    out.prob, out.mask, out.thresholds

Inputs are anything :func:`patchrefinenet.maps.as_source` reads: arrays or tensors (N, H, W),
(N, H, W, 1) or (N, 1, H, W), lists of maps of different sizes, or folders. Maps are read, refined
and returned one batch at a time (:meth:`Refiner.refine_iter`), so large splits stream.

``fit`` trains with the shared PRN engine (:func:`patchrefinenet.refine.train.train_prn`) on a
fit part of the maps and keeps a held-out selection part: after every epoch the engine scores
the model there, the best epoch's weights are kept, and the output rule (the authors'
combination, one head, the mean of both, at 0.5 or a tuned threshold) is chosen on the same
maps. If no PRN rule beats the base map at its best global threshold by ``margin``, the refiner
says so and returns the base map at that threshold (docs/refiner.md).
"""
from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from data_utils.errors import InputError
from data_utils.pseudo_labels import patch_grid_shape, patch_pseudo_labels
from patchrefinenet.checkpoint import save_checkpoint
from patchrefinenet.maps import MapSource, aligned_masks, as_source, batches, check_same_size, stack
from patchrefinenet.metrics import CalibrationMeter, SegmentationMeter
from patchrefinenet.models.prn import PRN, GridChoice, load_prn
from patchrefinenet.refine.config import OWN_FIELDS
from patchrefinenet.refine.heldout import cell_size, selection_sources
from patchrefinenet.selection import Rule, Selection, apply_rule
from patchrefinenet.training import autocast_context, resolve_device

log = logging.getLogger("patchrefinenet")


# --------------------------------------------------------------------------- geometry


def grid_for(patch_size: int | None, aux_model: str | None, sizes: list[tuple[int, int]]) -> GridChoice:
    """The patch grid of a refiner for maps of ``sizes``: from ``aux_model`` (``pN``, N patches, N = 0
    or a perfect square) or ``patch_size`` (pixels: G = round(typical side / patch_size), and G = 0 —
    global decoder only — when a patch covers the map). Both given must agree."""
    side = int(np.median([max(h, w) for h, w in sizes]))
    grids = []
    if aux_model is not None:
        m = re.fullmatch(r"p(\d+)", str(aux_model).strip().lower())
        n = int(m.group(1)) if m else -1
        if n < 0 or math.isqrt(n) ** 2 != n:
            raise InputError(f"aux_model={aux_model!r}: expected pN with N patches, 0 or a perfect square (p0, p4, p16, p64)")
        grids.append(math.isqrt(n))
    if patch_size is not None:
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise InputError(f"patch_size={patch_size!r}: must be a positive int (pixels)")
        grids.append(0 if patch_size >= side else max(1, round(side / patch_size)))
    if not grids:
        raise InputError("give patch_size (pixels, e.g. 64) or aux_model ('p0', 'p16', 'p64', ...)")
    if len(set(grids)) > 1:
        raise InputError(f"aux_model={aux_model!r} means a {grids[0]}×{grids[0]} grid but patch_size={patch_size} gives "
                         f"{grids[1]}×{grids[1]} on {side}-px maps; give one of them")
    g = grids[0]
    what = "one patch per map (global decoder only)" if g == 0 else f"{g}×{g} grid of ~{math.ceil(side / g)}-px patches"
    return GridChoice(g, side if g == 0 else math.ceil(side / g), g * g, f"p{g * g}", f"p{g * g}: {what} on {side}-px maps")


# --------------------------------------------------------------------------- results


@dataclass
class RefinedMap:
    """One refined map: ``prob`` (H, W) float32, ``mask`` (H, W) uint8 {0, 1}, ``thresholds``
    (gh, gw) float32 — per patch, the threshold on the base map that best reproduces ``mask``."""

    name: str
    prob: np.ndarray
    mask: np.ndarray
    thresholds: np.ndarray | None


@dataclass
class RefineResult:
    """What :meth:`Refiner.refine` returns: stacked arrays when every map has the same size
    ((N, H, W) / (N, gh, gw)), lists otherwise; ``names`` in input order; ``rule`` applied."""

    prob: np.ndarray | list[np.ndarray]
    mask: np.ndarray | list[np.ndarray]
    thresholds: np.ndarray | list[np.ndarray] | None
    names: list[str]
    rule: str


# --------------------------------------------------------------------------- the refiner


class Refiner:
    """A trained PRN plus the rule that turns its outputs into masks (see the module docstring)."""

    def __init__(self, model: PRN | None, rule: Rule, *, selection: Selection | None = None,
                 batch_stats: bool = False, device: str | torch.device = "auto", bf16: bool = False,
                 train_config: dict | None = None) -> None:
        if model is None and rule.head != "base":
            raise InputError(f"rule {rule.name} needs a PRN model")
        self.device = resolve_device(device)
        self.model = None if model is None else model.to(self.device).eval()
        self.rule, self.selection, self.batch_stats, self.bf16 = rule, selection, bool(batch_stats), bool(bf16)
        self.train_config = train_config
        if self.model is not None:
            self.model.set_batch_statistics(self.batch_stats)
            if rule.uses_local and self.model.config.grid == 0:
                raise InputError(f"rule {rule.name} needs a local head, but this PRN has grid 0 (p0)")

    @property
    def grid(self) -> int:
        return 0 if self.model is None else self.model.config.grid

    def __repr__(self) -> str:
        what = "no PRN" if self.model is None else f"PRN grid {self.grid}, width {self.model.config.width}"
        return f"Refiner({what}, rule {self.rule.name}, device {self.device})"

    # ------------------------------------------------------------------ fit

    @classmethod
    def fit(cls, probs: Any, masks: Any, *, patch_size: int | None = None, aux_model: str | None = None,
            select: float | tuple[Any, Any] | None = 0.2, select_metric: str = "pooled_iou", margin: float = 0.005,
            force_prn: bool = False, work_dir: str | os.PathLike | None = None, progress: bool = True,
            **train: Any) -> "Refiner":
        """Train a PRN on ``probs`` (base probabilities) and ``masks`` (ground truth) and choose its rule.

        patch_size / aux_model: the patch grid (pixels, or ``pN`` with N patches; ``p0`` = global only).
        select: the share of the maps held out for selection (default 0.2, split with ``seed``),
            an explicit ``(probs, masks)`` selection set, or None/0 for the authors' behaviour
            (best weights by training loss, the authors' combination, no check against the base).
        select_metric: ``pooled_iou`` or ``dice``; margin: the gain over the base map's best global
            threshold that PRN must show on the held-out maps (0.005 = half a point);
            force_prn: use the best PRN rule even if it loses.
        work_dir: where checkpoints and logs go (a temporary folder by default); pass one to be
            able to ``resume=True``.
        train: any :class:`~patchrefinenet.refine.train.RefineTrainConfig` field — epochs, width,
            lr, batch_size, residual, seed, device, bf16, resume, augment, ... (authors' defaults).
        """
        from patchrefinenet.refine.train import RefineTrainConfig, TrainSource, train_prn

        valid = sorted(f.name for f in fields(RefineTrainConfig) if f.name not in OWN_FIELDS)
        unknown = sorted(set(train) - set(valid))
        if unknown:
            raise InputError(f"Refiner.fit: unknown option(s) {unknown}; training options are {valid}")
        probs = as_source(probs, "probs")
        masks = aligned_masks(probs, as_source(masks, "masks"))
        explicit = isinstance(select, tuple)
        if explicit:
            if len(select) != 2:
                raise InputError("select: an explicit selection set is a (probs, masks) pair")
            sel_probs, sel_masks = selection_sources(*select)
        elif select is not None and (isinstance(select, bool) or not isinstance(select, (int, float))):
            raise InputError(f"select={select!r}: give the held-out share in (0, 1) (e.g. 0.2), a (probs, masks) "
                             "selection set, or None")
        sizes = [probs.size(i) for i in range(len(probs))]
        choice = grid_for(patch_size, aux_model, sizes)
        if train.get("batch_size", 1) > 1 and len(set(sizes)) > 1:
            raise InputError("Refiner.fit: the maps have different sizes, so batch_size must be 1 "
                             "(or resize the maps to one size)")
        tmp = None
        if work_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="prn-fit-")
            work_dir = tmp.name
        try:
            cfg = RefineTrainConfig(data_dir="", output_root=str(work_dir), aux_model=choice.aux_name,
                                    progress=progress, select=0.0 if explicit or not select else float(select),
                                    select_metric=select_metric, margin=margin, force_prn=force_prn, **train)
            size = (int(np.median([s[0] for s in sizes])), int(np.median([s[1] for s in sizes])))
            source = TrainSource(probs, masks, choice, size, f"{len(probs)} maps of {probs.description}",
                                 *((sel_probs, sel_masks) if explicit else ()))
            log.info("Refiner.fit: %s", choice.description)
            result = train_prn(cfg, source=source)
            refiner = cls.load(result["checkpoint"], device=cfg.device, bf16=cfg.bf16)
        finally:
            if tmp is not None:
                tmp.cleanup()
        if refiner.selection is None:
            log.warning("Refiner.fit without held-out maps (select=%r): using %s, unchecked against the base map",
                        select, refiner.rule.name)
        return refiner

    # ------------------------------------------------------------------ save / load

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the PRN weights, its config, the rule and the selection scores (one atomic file)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise InputError(f"{path} exists; pass overwrite=True (--overwrite True) or another path")
        if self.model is None:
            raise InputError("this refiner has no PRN model to save")
        config = {"model": self.model.config.to_dict(),
                  "refiner": {"rule": self.rule.name, "batch_stats": self.batch_stats,
                              "selection": None if self.selection is None else self.selection.to_dict()},
                  "train": self.train_config}
        return save_checkpoint(path, self.model.state_dict(), config, {"kind": "refiner"})

    @classmethod
    def load(cls, path: str | os.PathLike, *, rule: str | None = None, batch_stats: bool | None = None,
             device: str | torch.device = "auto", bf16: bool = False) -> "Refiner":
        """A refiner from :meth:`save`'s file, a PRN training checkpoint, or the authors' bare
        ``p0/p4/p64_weights.th`` (their combination; BatchNorm with per-map statistics, as they
        evaluated). ``rule`` (e.g. ``"global@0.45"``, ``"authors"``) overrides the stored rule."""
        model, ck = load_prn(path, "cpu")
        stored = (ck.config or {}).get("refiner") or {}
        selection = Selection.from_dict(stored["selection"]) if stored.get("selection") else None
        if rule is not None:
            chosen = Rule.parse(rule)
        elif stored.get("rule"):
            chosen = Rule.parse(stored["rule"])
        else:
            chosen = Rule("authors") if model.config.grid > 0 else Rule("global")
        if batch_stats is None:
            batch_stats = bool(stored.get("batch_stats", ck.source != "patchrefinenet"))
        if ck.source != "patchrefinenet":
            log.info("%s: the authors' weights (%s): rule %s, BatchNorm %s", path, ck.source, chosen.name,
                     "per-map statistics (as they evaluated)" if batch_stats else "running statistics")
        return cls(model, chosen, selection=selection, batch_stats=batch_stats, device=device, bf16=bf16,
                   train_config=(ck.config or {}).get("train"))

    # ------------------------------------------------------------------ refine

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.model is None or self.rule.head == "base":
            return None, None
        if self.batch_stats and x.shape[0] > 1:  # per-map statistics: one map per call
            outs = [self._forward(x[i:i + 1]) for i in range(x.shape[0])]
            g = torch.cat([o[0] for o in outs])
            loc = None if outs[0][1] is None else torch.cat([o[1] for o in outs])
            return g, loc
        with torch.inference_mode(), autocast_context(self.device, self.bf16 and self.device.type == "cuda"):
            g, loc = self.model(x)
            return g.float().clamp_(0, 1), None if loc is None else loc.float().clamp_(0, 1)

    def refine_iter(self, probs: Any, *, batch_size: int = 4, thresholds: bool = True,
                    progress: bool = False) -> Iterator[RefinedMap]:
        """Refine maps one batch at a time, yielding a :class:`RefinedMap` per input map, in order."""
        for _, out in self._refine_with_base(as_source(probs, "probs"), batch_size, thresholds, progress):
            yield out

    def _refine_with_base(self, source: MapSource, batch_size: int, thresholds: bool,
                          progress: bool) -> Iterator[tuple[np.ndarray, RefinedMap]]:
        """(base map (H, W), its :class:`RefinedMap`) per map of ``source``: each map is read once."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        bar = tqdm(total=len(source), desc="refine", unit="map", disable=not progress)
        try:
            for run in batches(source, list(range(len(source))), batch_size):
                x = stack(source, run)
                g, loc = self._forward(x.to(self.device, non_blocking=True))
                prob, mask = apply_rule(self.rule, x, None if g is None else g.cpu(), None if loc is None else loc.cpu())
                prob, mask = prob[:, 0].numpy(), mask[:, 0].numpy().astype(np.uint8)
                for j, i in enumerate(run):
                    base = x[j, 0].numpy()
                    t = self._thresholds(base, mask[j]) if thresholds else None
                    yield base, RefinedMap(source.names[i], np.ascontiguousarray(prob[j], dtype=np.float32), mask[j], t)
                bar.update(len(run))
        finally:
            bar.close()

    def _thresholds(self, base: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Per patch, the threshold on the base map that best reproduces ``mask`` (the pseudo-label search)."""
        h, w = base.shape
        if self.rule.head == "base":
            p = cell_size(h, w, self.grid)
            return np.full(patch_grid_shape(h, w, p), self.rule.threshold, np.float32)
        return patch_pseudo_labels(base, mask, cell_size(h, w, self.grid)).thresholds

    def refine(self, probs: Any, *, batch_size: int = 4, thresholds: bool = True,
               progress: bool = False) -> RefineResult:
        """Refine every map of ``probs`` and return them together (use :meth:`refine_iter` to stream)."""
        maps = list(self.refine_iter(probs, batch_size=batch_size, thresholds=thresholds, progress=progress))
        same = len({m.prob.shape for m in maps}) == 1

        def pack(items: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
            return np.stack(items) if same else items

        return RefineResult(pack([m.prob for m in maps]), pack([m.mask for m in maps]),
                            pack([m.thresholds for m in maps]) if thresholds else None,
                            [m.name for m in maps], self.rule.name)

    # ------------------------------------------------------------------ evaluate

    def evaluate(self, probs: Any, masks: Any, *, batch_size: int = 4, saliency: bool = False,
                 progress: bool = False, on_map: Any = None) -> dict[str, Any]:
        """Refine ``probs`` and score base (at 0.5) and refined maps against ``masks``: pooled IoU,
        mean IoU, Dice, precision, recall, MAE, and calibration (ECE, Brier) of the probabilities.
        ``on_map(RefinedMap)`` is called for every refined map (e.g. to write it)."""
        probs = as_source(probs, "probs")
        masks = aligned_masks(probs, as_source(masks, "masks"))
        meters = {k: SegmentationMeter(saliency=saliency) for k in ("base", "refined")}
        calib = {k: CalibrationMeter() for k in ("base", "refined")}
        for i, (base, out) in enumerate(self._refine_with_base(probs, batch_size, on_map is not None, progress)):
            check_same_size(probs, masks, i)
            gt = masks[i]
            meters["base"].update(base, gt)
            meters["refined"].update(out.mask, gt)
            calib["base"].update(base, gt)
            calib["refined"].update(out.prob, gt)
            if on_map is not None:
                on_map(out)
        result: dict[str, Any] = {k: {**meters[k].compute(), **calib[k].compute()} for k in meters}
        result["rule"] = self.rule.name
        result["gain_pooled_iou"] = result["refined"]["pooled_iou"] - result["base"]["pooled_iou"]
        if self.selection is not None:
            result["selection"] = self.selection.to_dict()
        return result


__all__ = ["RefineResult", "RefinedMap", "Refiner", "grid_for"]
