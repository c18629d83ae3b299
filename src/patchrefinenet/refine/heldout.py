"""Held-out selection for the PRN engine: the fit/selection split, per-epoch scoring, the final rule.

Used by :func:`patchrefinenet.refine.train.train_prn` for every PRN it trains — from the
per-dataset ``train.py`` (maps in ``val_pred.npy``) and from :meth:`Refiner.fit` (arrays, lists,
folders) alike — so the selection exists once. What it decides and why: docs/refiner.md.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

from data_utils.errors import InputError
from data_utils.pseudo_labels import patch_pseudo_labels
from patchrefinenet.maps import MapSource, aligned_masks, as_source, batches, check_same_size, stack
from patchrefinenet.models.prn import padded_size
from patchrefinenet.refine.data import EpochMaps
from patchrefinenet.selection import Rule, RuleScores, Selection, ThresholdSweep, apply_rule, choose_rule
from patchrefinenet.training import autocast_context


def cell_size(h: int, w: int, grid: int) -> int:
    """Side of the pseudo-label patches that line up with a grid-``grid`` PRN's cells on an h×w map
    (the model pads to multiples of 8·G, so a cell is padded_h / G pixels); the map side for G = 0."""
    if grid == 0:
        return max(h, w)
    return padded_size(h, w, grid)[0] // grid


class PairDataset(EpochMaps):
    """Training items ``{"input", "pseudo", "gt", "index"}`` ((1, H, W) float32) from paired sources.

    Pseudo-labels are computed per map when it is read (the authors' patch-wise optimal threshold,
    docs/authors-refine.md §R11, with patches aligned to the PRN's cells), so nothing is
    precomputed, cached or stale. The augmentation is the engine's (seeded per epoch and map, §R8).
    """

    def __init__(self, probs: MapSource, masks: MapSource, indices: list[int], grid: int, *,
                 augment: bool, seed: int) -> None:
        self.probs, self.masks, self.indices, self.grid = probs, masks, list(indices), grid
        self.augment, self.seed, self.epoch = augment, seed, 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        i = self.indices[k]
        check_same_size(self.probs, self.masks, i)
        prob, gt = self.probs[i], self.masks[i]
        pseudo = patch_pseudo_labels(prob, gt, cell_size(*prob.shape, self.grid)).labels.astype(np.float32)
        maps = [prob, pseudo, gt]
        maps = self.augmented(maps, i)
        return {"input": torch.from_numpy(maps[0])[None], "pseudo": torch.from_numpy(maps[1])[None],
                "gt": torch.from_numpy(maps[2])[None], "index": i}


class EpochSubset(Subset):
    """``torch.utils.data.Subset`` that passes ``set_epoch`` on (the engine's datasets augment per epoch)."""

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def split_for_selection(n: int, select: float, seed: int) -> tuple[list[int], list[int]]:
    """(fit indices, selection indices): ``round(select·n)`` maps (at least 1) drawn with ``seed``."""
    if isinstance(select, bool) or not isinstance(select, (int, float)) or not 0 < select < 1:
        raise InputError(f"select={select!r}: give the held-out share in (0, 1) (e.g. 0.2), or 0 for none")
    k = max(1, round(select * n))
    if n - k < 1:
        raise InputError(f"select={select}: {n} map(s) cannot be split into a fit and a selection part; "
                         "give more maps, an explicit selection set, or select 0")
    order = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in order[k:]), sorted(int(i) for i in order[:k])


def halves(held_out: tuple[MapSource, MapSource, list[int]], seed: int
           ) -> tuple[tuple[MapSource, MapSource, list[int]], tuple[MapSource, MapSource, list[int]] | None]:
    """Split held-out maps into a *choose* half (the epoch, the rule and its threshold are picked
    there) and a *judge* half (PRN is compared with the base map there, on maps that took no part in
    choosing: the best of many candidates looks better on the maps it was picked on than it is).
    With fewer than 2 maps there is no judge half (None): the same maps do both."""
    probs, masks, indices = held_out
    if len(indices) < 2:
        return held_out, None
    order = np.random.default_rng((seed, 1)).permutation(len(indices))
    k = len(indices) // 2
    judge = sorted(indices[i] for i in order[:k])
    choose = sorted(indices[i] for i in order[k:])
    return (probs, masks, choose), (probs, masks, judge)


def selection_sources(select_probs: Any, select_masks: Any) -> tuple[MapSource, MapSource]:
    """An explicit selection set as paired sources."""
    probs = as_source(select_probs, "probs", "select probs")
    return probs, aligned_masks(probs, as_source(select_masks, "masks", "select masks"))


def score_rules(model: torch.nn.Module, probs: MapSource, masks: MapSource, indices: list[int],
                device: torch.device, metric: str, bf16: bool = False, progress: bool = False) -> RuleScores:
    """Every candidate rule's score on maps ``indices`` (the model in eval mode, as at inference)."""
    scores = RuleScores(model.config.grid > 0, metric)
    model.eval()
    for run in tqdm(list(batches(probs, indices, 4)), desc="selection", unit="batch", disable=not progress,
                    leave=False):
        for i in run:
            check_same_size(probs, masks, i)
        x, gt = stack(probs, run).to(device), stack(masks, run).to(device)
        with torch.inference_mode(), autocast_context(device, bf16 and device.type == "cuda"):
            g, loc = model(x)
        scores.update(x, g.float(), None if loc is None else loc.float(), gt)
    return scores


def make_selector(probs: MapSource, masks: MapSource, indices: list[int], device: torch.device, metric: str,
                  bf16: bool) -> Callable[[torch.nn.Module], tuple[float, dict]]:
    """The engine's per-epoch selector: the best PRN rule's score on the selection maps."""

    def selector(model: torch.nn.Module) -> tuple[float, dict]:
        rule, score = score_rules(model, probs, masks, indices, device, metric, bf16).best_prn()
        return score, {"best": rule.name}

    return selector


def per_map_counts(model: torch.nn.Module, rules: tuple[Rule, Rule], probs: MapSource, masks: MapSource,
                   indices: list[int], device: torch.device, bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-map (TP, FP, FN) of two rules on maps ``indices``: two (n, 3) int64 arrays."""
    out: tuple[list, list] = ([], [])
    model.eval()
    for run in batches(probs, indices, 4):
        x, gt = stack(probs, run).to(device), stack(masks, run).to(device) > 0.5
        with torch.inference_mode(), autocast_context(device, bf16 and device.type == "cuda"):
            g, loc = model(x)
            g, loc = g.float(), None if loc is None else loc.float()
            for rule, counts in zip(rules, out):
                mask = apply_rule(rule, x, g, loc)[1]
                c = torch.stack([(mask & gt).sum((1, 2, 3)), (mask & ~gt).sum((1, 2, 3)), (~mask & gt).sum((1, 2, 3))], 1)
                counts.append(c.cpu().numpy())
    return np.concatenate(out[0]).astype(np.int64), np.concatenate(out[1]).astype(np.int64)


def final_selection(model: torch.nn.Module, choose: tuple[MapSource, MapSource, list[int]],
                    judge: tuple[MapSource, MapSource, list[int]] | None,
                    fit: tuple[MapSource, MapSource, list[int]], device: torch.device, *, metric: str,
                    margin: float, force_prn: bool, confidence: float = 0.9, bf16: bool = False,
                    progress: bool = False) -> Selection:
    """Choose the output rule on the ``choose`` maps, then judge it on the ``judge`` maps (the
    do-no-harm guard, docs/refiner.md).

    The best PRN rule (and its threshold) and the base map's best global threshold are picked on
    ``choose``; PRN is kept only if, on ``judge``, it beats that base rule by ``margin`` and,
    resampling those maps, with ``confidence`` (:func:`~patchrefinenet.selection.bootstrap_gain_lower`).
    Without judge maps, ``choose`` serves both. The fallback threshold of the base map is tuned on
    every labelled map: the base model never saw them, so all may inform its one number.
    """
    scores = score_rules(model, *choose, device, metric, bf16, progress)
    judged = judge if judge is not None else choose
    base = ThresholdSweep()
    for probs, masks, indices in (fit, judged):
        for run in batches(probs, indices, 8):
            base.update(stack(probs, run), stack(masks, run))
    base.merge(scores.sweeps["base"])
    prn_rule, _ = scores.best_prn()
    base_rule = Rule("base", scores.sweeps["base"].best(metric)[0])
    per_map = per_map_counts(model, (prn_rule, base_rule), *judged, device, bf16)
    return choose_rule(scores, margin=margin, force_prn=force_prn, fallback_threshold=base.best(metric)[0],
                       n_maps=len(choose[2]) + (0 if judge is None else len(judge[2])), per_map=per_map,
                       confidence=confidence, n_judge=0 if judge is None else len(judge[2]))


__all__ = ["EpochSubset", "PairDataset", "cell_size", "final_selection", "halves", "make_selector", "per_map_counts",
           "score_rules", "selection_sources", "split_for_selection"]
