"""The demo's weakly-supervised branch (rloss): base models trained from scribbles, then PRN on the best.

On the demo's training distribution (the ``data`` stage's train / val / test splits), :func:`run_weak`

1. draws scribbles for the train split (:func:`~patchrefinenet.cli.generate_scribbles.draw_scribbles`:
   a stroke along each object and a few background strokes, about 3 % of the pixels labelled);
2. trains the demo's base model from them with partial cross-entropy alone (the pCE phase of
   rloss's two-phase recipe, docs/rloss.md §L1.3), ``base_epochs`` epochs;
3. fine-tunes that model for ``weak_epochs`` epochs (fresh optimizer, the second phase) once per
   regulariser and weight of the grid ``weak_losses`` × ``weak_weights``, and once with weight 0
   (pCE alone); the default run's fully-supervised base model gets the same extra epochs with its
   full masks, so every row has had the same training (``base_epochs`` + ``weak_epochs``);
4. keeps, per regulariser, the weight with the best pooled IoU on the val split (full val masks,
   as rloss selects its models), the same rule for every loss;
5. scores each kept model on the test split at threshold 0.5, with the share of the pCE → full
   gap each closes;
6. fits a refiner (:meth:`patchrefinenet.Refiner.fit`, the demo's PRN settings with at most
   ``weak_prn_epochs`` epochs, held-out selection and guard) on the val maps of the best
   weakly-supervised base and scores it on the same test maps.

Everything lives under ``<demo root>/weak/``: one folder per trained model (``seg-models`` layout:
checkpoints, logs, history) with its probability maps in ``arrays/``, ``prn.pt`` and
``grid.json`` (every candidate's val and test scores). Work whose outputs exist is skipped.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from data_utils import layout
from data_utils.arrays import open_maps
from data_utils.datasets import read_split, scribble_path
from data_utils.errors import InputError
from data_utils.io import write_text_atomic
from data_utils.scribbles import UNLABELLED, read_scribble
from data_utils.spec import load_dataset_spec
from patchrefinenet.cli.generate_scribbles import draw_scribbles, scribbles_current
from patchrefinenet.demo.config import DemoConfig, DemoPaths, base_model_kwargs, prn_fit_options
from patchrefinenet.metrics import SegmentationMeter

log = logging.getLogger("patchrefinenet")

METRICS = ("pooled_iou", "mean_iou", "dice")
LABELS = {"densecrf": "DenseCRF loss", "ncut": "normalised cut"}


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One scribble-supervised model: its folder name, regulariser (``none`` for pCE) and weight."""

    reg_loss: str
    weight: float

    @property
    def name(self) -> str:
        return {"full": "full", "none": "pce"}.get(self.reg_loss, f"{self.reg_loss}-w{self.weight:g}")


FULL = Candidate("full", 0.0)  # the default run's base model, fine-tuned with full masks for the same epochs
PCE = Candidate("none", 0.0)  # the pCE model, fine-tuned with pCE alone for the same epochs


def labelled_fraction(spec, data_root: Path) -> float:
    """Fraction of the train pixels (at native size) that carry a scribble label."""
    labelled = total = 0
    for sample in read_split(spec, data_root, "train"):
        s = read_scribble(scribble_path(spec, data_root, sample))
        labelled += int((s != UNLABELLED).sum())
        total += s.size
    return labelled / max(total, 1)


def _scores(arrays: Path, split: str) -> dict[str, float]:
    """Metrics of the base probabilities of ``split`` in ``arrays`` at threshold 0.5, streamed in chunks."""
    prob_path, gt_path = layout.array_paths(arrays, split)
    prob = open_maps(prob_path, f"weak base {split} probabilities")
    gt = open_maps(gt_path, f"{split} ground truth")
    meter = SegmentationMeter()
    for lo in range(0, len(prob), 16):
        meter.update((np.asarray(prob[lo:lo + 16]) > 0.5).astype(np.float32), np.asarray(gt[lo:lo + 16]))
    return {k: float(v) for k, v in meter.compute().items() if k in METRICS}


class _WeakRun:
    """Trains and scores the candidates of one demo root (see the module docstring)."""

    def __init__(self, cfg: DemoConfig, paths: DemoPaths, force: bool, progress: bool):
        self.cfg, self.paths, self.force, self.progress = cfg, paths, force, progress
        self.spec = load_dataset_spec(paths.config)
        self.root = paths.root / "weak"

    def folder(self, candidate: Candidate | str) -> Path:
        return self.root / (candidate if isinstance(candidate, str) else candidate.name)

    def weights(self, name: str) -> Path:
        return layout.RunFolders(self.folder(name), self.cfg.base_model).weights

    def train(self, name: str, supervision, init_weights: Path | None = None, epochs: int | None = None) -> None:
        """Train ``name`` (skipped when finished, continued when interrupted, redone with ``force``)."""
        from patchrefinenet.seg.train import base_run_status, train_base_model

        status = None if self.force else base_run_status(self.folder(name), self.cfg.base_model)
        if status == "finished":
            log.info("demo (weak): %s already trained (%s)", name, self.weights(name))
            return
        cfg = self.cfg
        start = {"resume": True} if status == "interrupted" else {"init_weights": init_weights, "overwrite": True}
        train_base_model(self.spec, cfg.base_model, data_root=self.paths.data_root, output_root=self.folder(name),
                         seed=cfg.seed, device=cfg.device, pretrained=False, model_kwargs=base_model_kwargs(cfg),
                         supervision=supervision, progress=self.progress, epochs=epochs, **start)

    def arrays(self, name: str) -> Path:
        """The model's val and test probability maps (written once), in the layout's file names."""
        from patchrefinenet.seg.generate import generate_aux_arrays

        out = self.folder(name) / "arrays"
        if self.force or not all(p.is_file() for split in ("val", "test") for p in layout.array_paths(out, split)):
            generate_aux_arrays(self.spec, self.cfg.base_model, data_root=self.paths.data_root,
                                checkpoint=self.weights(name), device=self.cfg.device, progress=self.progress,
                                out_dir=out)
        return out

    def candidate(self, candidate: Candidate) -> dict:
        """Fine-tune for ``weak_epochs`` with ``candidate``'s objective (fresh optimizer) — from the pCE
        model, or for :data:`FULL` from the default run's base model with full masks; its val and test scores."""
        from patchrefinenet.seg.train import Supervision

        cfg = self.cfg
        if candidate == FULL:
            supervision, start = Supervision("full"), layout.RunFolders(self.paths.seg_root, cfg.base_model).weights
        else:
            supervision = Supervision("scribbles", reg_loss=candidate.reg_loss, reg_weight=candidate.weight,
                                      sigma_xy=cfg.weak_sigma_xy, sigma_rgb=cfg.weak_sigma_rgb,
                                      balanced_pce=cfg.weak_balanced_pce)
            start = self.weights("pce-phase")
        self.train(candidate.name, supervision, init_weights=start, epochs=cfg.weak_epochs)
        arrays = self.arrays(candidate.name)
        return {"name": candidate.name, "reg_loss": candidate.reg_loss, "weight": candidate.weight,
                "val": _scores(arrays, "val"), "test": _scores(arrays, "test"), "arrays": str(arrays)}

    def prn(self, arrays: Path) -> dict[str, float]:
        """A refiner fitted on ``arrays``' val maps with the demo's settings, scored on its test maps."""
        from patchrefinenet.refiner import Refiner

        cfg, target = self.cfg, self.root / "prn.pt"
        val_prob, val_gt = (open_maps(p, "weak val maps") for p in layout.array_paths(arrays, "val"))
        test_prob, test_gt = (np.asarray(open_maps(p, "weak test maps")) for p in layout.array_paths(arrays, "test"))
        if self.force or not target.is_file():
            refiner = Refiner.fit(val_prob, val_gt, epochs=cfg.weak_prn_epochs, progress=self.progress,
                                  **prn_fit_options(cfg))
            refiner.save(target, overwrite=True)  # the demo's own file under its root
        refiner = Refiner.load(target, device="cpu")
        scores = {k: float(v) for k, v in refiner.evaluate(test_prob, test_gt)["refined"].items() if k in METRICS}
        fell_back = refiner.selection is not None and refiner.selection.fell_back
        return {**scores, "note": f"rule {refiner.rule.name}" + (" (guard: base map at its best global threshold)"
                                                                  if fell_back else "")}


def run_weak(cfg: DemoConfig, paths: DemoPaths, *, force: bool = False, progress: bool = True) -> dict:
    """Run the weak-supervision branch on the demo dataset (module docstring).

    ``cfg``/``paths`` are the pipeline's; its ``data`` and ``arrays`` stages must have run (the
    ``full`` row is the default run's base model). Returns ``{"rows", "grid", "labelled_fraction"}``:
    rows with ids ``full``, ``pce``, ``pce_<loss>`` and ``prn_on_weak`` (test split, threshold 0.5,
    ``gap_closed`` = share of the pCE → full gap), and every grid candidate's val/test scores.
    """
    from patchrefinenet.seg.train import Supervision

    full_arrays = paths.arrays(cfg.base_model, "control")
    if not paths.config.is_file() or not layout.array_paths(full_arrays, "test")[0].is_file():
        raise InputError(f"the weak-supervision demo needs a finished default run under {paths.root} (its dataset, "
                         f"config and base maps); run python demo.py first, then python demo.py --weak --stages report")
    run = _WeakRun(cfg, paths, force, progress)
    if force or not scribbles_current(run.spec, paths.data_root, cfg.seed):
        draw_scribbles(run.spec, paths.data_root, ["train"], cfg.seed, progress=progress)
    fraction = labelled_fraction(run.spec, paths.data_root)
    log.info("demo (weak): %.2f%% of the train pixels carry a scribble label", 100 * fraction)

    # phase 1: pCE alone; phase 2: every candidate fine-tunes from its best weights for weak_epochs
    run.train("pce-phase", Supervision("scribbles", reg_loss="none", balanced_pce=cfg.weak_balanced_pce))
    full, pce = run.candidate(FULL), run.candidate(PCE)
    grid = [pce]
    for loss in cfg.weak_losses:
        grid += [run.candidate(Candidate(loss, float(w))) for w in cfg.weak_weights]
    write_text_atomic(run.root / "grid.json", json.dumps([full, *grid], indent=2) + "\n")

    budget = f"{cfg.base_epochs} + {cfg.weak_epochs} epochs"
    note = f"{100 * fraction:.1f} % of train pixels labelled; {budget}"
    rows = [{"id": "full", "method": "Base from full masks", **full["test"],
             "note": f"the default run's base model (test pooled IoU {_scores(full_arrays, 'test')['pooled_iou']:.4f} "
                     f"after {cfg.base_epochs} epochs) fine-tuned with the full masks: {budget}, as every row here"},
            {"id": "pce", "method": "Base from scribbles, pCE only", **pce["test"], "note": note + " of pCE"}]
    best = pce
    for loss in cfg.weak_losses:
        tried = [c for c in grid if c["reg_loss"] == loss]
        chosen = max(tried, key=lambda c: c["val"]["pooled_iou"])
        weights = ", ".join(f"{c['weight']:g}: {c['val']['pooled_iou']:.4f}" for c in tried)
        rows.append({"id": f"pce_{loss}", "method": f"Base from scribbles, pCE + {LABELS.get(loss, loss)}",
                     **chosen["test"], "weight": chosen["weight"],
                     "note": f"{note} with weight {chosen['weight']:g}, chosen on val (val pooled IoU by weight: "
                             f"{weights})"})
        if chosen["val"]["pooled_iou"] > best["val"]["pooled_iou"]:
            best = chosen
    gap = full["test"]["pooled_iou"] - pce["test"]["pooled_iou"]
    for row in rows[1:]:
        row["gap_closed"] = (row["pooled_iou"] - pce["test"]["pooled_iou"]) / gap if gap > 0 else None
    prn = run.prn(Path(best["arrays"]))
    rows.append({"id": "prn_on_weak", "method": f"PRN on the best weak base ({best['name']}, by val IoU)",
                 **{k: prn[k] for k in METRICS}, "note": prn["note"] + "; fitted on the val maps with their full masks"})
    for row in rows:
        log.info("demo (weak): %-55s pooled IoU %.4f  mean IoU %.4f  Dice %.4f", row["method"], row["pooled_iou"],
                 row["mean_iou"], row["dice"])
    return {"rows": rows, "grid": grid, "labelled_fraction": fraction}
