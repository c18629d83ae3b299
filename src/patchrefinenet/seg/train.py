"""Train a base segmentation model with the authors' per-dataset recipe (docs/authors-seg.md §S3): the
base-model family of the one training engine (:mod:`patchrefinenet.engine`, docs/DESIGN.md "One
training engine"), with its settings in :class:`~patchrefinenet.seg.config.SegTrainConfig`.

The recipe comes from ``spec.train`` (``src/<ds>/dataset.toml``): loss, Adam lr / weight decay,
batch size, max epochs, the monitored quantity (``val_loss`` or ``val_mae``) and the plateau rule
(reload the best weights and divide the lr after ``decay_after`` epochs without improvement, stop
after ``stop_after``; :class:`~patchrefinenet.training.PlateauSchedule`). Differences from the
authors' scripts, all deliberate:

* validation runs on the **non-augmented** val split in CSV order (the authors validated
  DeepGlobe and Kvasir on augmented, shuffled batches, a noisy stopping criterion, docs/authors-seg.md §S8.22);
* everything is seeded from one ``seed``: shuffling uses a generator derived from (seed, epoch)
  and augmentation one derived from (seed, epoch, index), so an interrupted run resumed from
  ``<model>_last.th`` ends with the same weights as an uninterrupted one (bitwise on CPU);
* ImageNet initialisation of the backbone is a flag (the authors downloaded it at every model
  construction, even before loading a checkpoint) and is skipped when weights are loaded.

Weak supervision (rloss, Tang et al. 2018; docs/rloss.md §L1.3–§L1.4): with
``Supervision(mode="scribbles")`` the training objective is partial cross-entropy on the scribbled
pixels plus ``reg_weight`` × a regulariser on all pixels (DenseCRF by default;
:class:`~patchrefinenet.rloss.RegularizedLoss`), from the scribble PNGs that
``generate_scribbles.py`` writes. ``pce_epochs = K`` gives the two-phase Caffe recipe: the first K
epochs use pCE only, then the best pCE weights are reloaded and the regulariser joins (a plateau
stop during the pCE phase ends that phase early instead of the run); K = 0 (default) is rloss's
single-phase PyTorch recipe. Validation always uses the full val masks (as rloss), and the plateau
rule and model selection watch the val pooled IoU at 0.5 (monitor ``val_iou``, as rloss's
best-mIoU checkpoint) instead of the recipe's ``val_loss``/``val_mae``: scribble-trained models are
badly calibrated away from the scribbles, so their full-mask loss can grow by orders of magnitude
while their IoU improves (measured on the demo polyps: the val-loss-selected pCE model had val IoU
0.02, its best epoch 0.21). The train IoU in the logs is measured against the full train masks for
monitoring only — they never enter the loss.

Files, under ``output_root`` (the dataset's ``src/<ds>/seg-models``): best weights
``checkpoints/<model>/<model>_weights.th`` (our format; its config rebuilds the model), the resume
file ``checkpoints/<model>/<model>_last.th``, and in ``logs/<model>/`` the run log
``<model>_log_<YYYYmmdd-HHMMSS>.log``, ``<model>_train_history.jsonl`` (one line per epoch) and
``<model>_train_config.json``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from data_utils.datasets import SegmentationSplit
from data_utils.errors import InputError
from data_utils.io import write_text_atomic
from data_utils.layout import RunFolders
from data_utils.spec import DatasetSpec
from patchrefinenet.checkpoint import load_checkpoint, load_weights_strict
from patchrefinenet.engine import (Engine, Family, Recipe, StepOutput, full_precision, read_resume_file,
                                   refuse_changes, refuse_overwrite, remove_leftovers, setting_changes)
from patchrefinenet.models import BASE_MODELS, build_base_model, init_imagenet_backbone
from patchrefinenet.rloss import REGULARIZERS, RegularizedLoss, default_weight
from patchrefinenet.seg.config import RUN_FIELDS, SUPERVISION_MODES, SegTrainConfig
from patchrefinenet.seg.generate import checkpoint_model_kwargs, find_base_checkpoint, read_base_checkpoint
from patchrefinenet.seg_losses import build_seg_loss
from patchrefinenet.training import (Decision, DistInfo, cleanup_distributed, init_distributed, log_to_file,
                                     resolve_device, seed_everything)

log = logging.getLogger("patchrefinenet")


class BaseRunPaths(RunFolders):
    """Where a base-model run of ``model`` writes, under ``root`` (the dataset's seg-models folder):
    :class:`data_utils.layout.RunFolders` with the base model's name."""

    @property
    def model(self) -> str:
        return self.name

    def train_log(self, stamp: str) -> Path:
        return self.log_dir / f"{self.name}_log_{stamp}.log"  # the base scripts' name


def base_run_status(output_root: str | os.PathLike, model_name: str) -> str | None:
    """How the base-model run under ``output_root`` stands: None (no epoch completed), ``"interrupted"``
    (continue it with ``resume=True``) or ``"finished"`` (it stopped, or ran all its epochs)."""
    paths = BaseRunPaths(Path(output_root), model_name)
    if not paths.last.is_file():
        return None
    ck = load_checkpoint(paths.last)
    state, config = ck.training_state or {}, ck.config or {}
    max_epochs = config.get("dataset", {}).get("train", {}).get("max_epochs")
    done = state.get("stopped") is not None or (max_epochs is not None and state.get("epoch", 0) >= max_epochs)
    return "finished" if done else "interrupted"


# --------------------------------------------------------------------------- the objective

@dataclass(frozen=True)
class Supervision:
    """How the base model is supervised (primitives only; stored in every checkpoint's config).

    ``mode``: ``"full"`` (masks, the authors' loss) or ``"scribbles"`` (pCE + ``reg_weight`` ×
    ``reg_loss``). ``reg_weight`` None → :func:`~patchrefinenet.rloss.default_weight` (1.0 for the
    normalised DenseCRF loss); ``pce_epochs``: epochs of pCE alone before the regulariser joins.
    DenseCRF / normalised-cut kernel: ``sigma_rgb`` (colour, 0–255 units), ``sigma_xy`` (pixels
    of the network input; None → rloss's 100 px scaled by input_size / 512), computed at
    ``reg_scale`` × the input size (rloss: 0.5). ``size_bounds`` = (lower, upper) foreground area
    fractions, required by the ``size`` loss. ``balanced_pce``: average pCE per class, so sparse
    foreground strokes weigh as much as the background ones (docs/rloss.md §L6.1; rloss: off).
    :meth:`resolved` fills the ``None`` defaults.
    """

    mode: str = "full"
    reg_loss: str = "densecrf"
    reg_weight: float | None = None
    pce_epochs: int = 0
    sigma_rgb: float = 15.0
    sigma_xy: float | None = None
    reg_scale: float = 0.5
    size_bounds: tuple[float, float] | None = None
    balanced_pce: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.balanced_pce, bool):
            raise InputError(f"--balanced_pce must be True or False, got {self.balanced_pce!r}")
        if self.mode not in SUPERVISION_MODES:
            raise InputError(f"--supervision {self.mode!r}: choose one of {', '.join(SUPERVISION_MODES)}")
        if self.reg_loss not in REGULARIZERS:
            raise InputError(f"--reg_loss {self.reg_loss!r}: choose one of {', '.join(REGULARIZERS)}")
        if self.reg_weight is not None and not (self.reg_weight >= 0 and math.isfinite(self.reg_weight)):
            raise InputError(f"--reg_weight must be a finite number >= 0, got {self.reg_weight!r}")
        if isinstance(self.pce_epochs, bool) or not isinstance(self.pce_epochs, int) or self.pce_epochs < 0:
            raise InputError(f"--pce_epochs must be an integer >= 0, got {self.pce_epochs!r}")
        for name in ("sigma_rgb", "sigma_xy", "reg_scale"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise InputError(f"--{name} must be a finite number > 0, got {value!r}")
        if self.size_bounds is not None:
            lo, hi = self.size_bounds
            if not 0 <= lo <= hi <= 1:
                raise InputError(f"--size_bounds must be fractions 0 <= LOWER <= UPPER <= 1, got {lo} {hi}")
        if self.mode == "scribbles" and self.reg_loss == "size" and self.size_bounds is None:
            raise InputError("--reg_loss size needs --size_bounds LOWER UPPER (foreground area as fractions of the "
                             "image, e.g. 0.05 0.4)")

    def resolved(self, spec: DatasetSpec) -> "Supervision":
        """A copy with the ``None`` defaults filled in for ``spec``'s input size."""
        if self.mode == "full":
            return self
        weight = default_weight(self.reg_loss) if self.reg_weight is None else float(self.reg_weight)
        sigma_xy = 100.0 * spec.input_size / 512 if self.sigma_xy is None else float(self.sigma_xy)
        return dataclasses.replace(self, reg_weight=weight, sigma_xy=sigma_xy)

    def reg_params(self) -> dict[str, Any]:
        """Keyword parameters of the regulariser (:func:`~patchrefinenet.rloss.build_regularizer`)."""
        if self.reg_loss in ("densecrf", "ncut"):
            return {"sigma_rgb": self.sigma_rgb, "sigma_xy": self.sigma_xy, "scale": self.reg_scale}
        if self.reg_loss == "size":
            return {"lower": self.size_bounds[0], "upper": self.size_bounds[1]}
        return {}

    def to_dict(self) -> dict[str, Any]:
        """Plain primitives for checkpoint configs (read back by :meth:`from_dict`)."""
        out = dataclasses.asdict(self)
        out["size_bounds"] = None if self.size_bounds is None else list(self.size_bounds)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Supervision":
        """The settings stored by :meth:`to_dict`."""
        data = dict(data)
        if data.get("size_bounds") is not None:
            data["size_bounds"] = tuple(data["size_bounds"])
        return cls(**data)

    def describe(self) -> str:
        """One line for the logs, e.g. ``scribbles, pCE + 1 x densecrf {...}``."""
        if self.mode == "full":
            return "full masks"
        pce = "class-balanced pCE" if self.balanced_pce else "pCE"
        reg = f"{pce} only" if self.reg_loss == "none" or self.reg_weight == 0 else \
            f"{pce} + {self.reg_weight:g} x {self.reg_loss} {self.reg_params()}"
        return f"scribbles, {reg}" + (f", pCE alone for the first {self.pce_epochs} epochs" if self.pce_epochs else "")


class ForwardWithAux(nn.Module):
    """A base model whose ``forward`` is its ``forward_with_aux`` (probabilities, auxiliary loss term),
    so that DDP and torch.compile, which wrap ``forward``, see what the objectives call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_aux(x)


def _prob_and_aux(net: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, auxiliary term) from a base model or a :class:`ForwardWithAux` (maybe wrapped)."""
    return net.forward_with_aux(image) if hasattr(net, "forward_with_aux") else net(image)


class FullSupervision:
    """The authors' objective with full masks: ``loss(prob, mask) + aux`` where ``aux`` is the
    model's auxiliary term (PFANet's channel-attention regulariser, 0 for the others).

    An objective maps (net, batch dict) to a :class:`~patchrefinenet.engine.StepOutput`; ``net`` is a
    base model or, in the engine, a :class:`ForwardWithAux` (possibly wrapped by DDP / torch.compile).
    The loss runs in float32.
    """

    def __init__(self, loss_name: str):
        self.loss_fn = build_seg_loss(loss_name)

    def __call__(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        prob, aux = _prob_and_aux(net, batch["image"])
        with full_precision(prob.device):
            return StepOutput(self.loss_fn(prob.float(), batch["mask"]) + aux.float(), prob)


class ScribbleSupervision:
    """rloss's objective: ``pCE(prob, scribble) + weight · regulariser(prob, rgb, roi) + aux``.

    Reads ``batch["scribble"]`` (B, H, W) uint8 {0, 1, 255}, ``batch["rgb"]`` (B, 3, H, W) in
    [0, 255] and ``batch["roi"]`` (B, H, W) from :class:`SegmentationSplit` with ``scribbles=True``.
    ``regularize = False`` drops the regulariser (the pCE phase of the two-phase recipe).
    """

    def __init__(self, settings: Supervision):
        # check_values=False: the scribble reader already rejects labels outside {0, 1, 255}; no sync per step
        self.loss_fn = RegularizedLoss(settings.reg_loss, settings.reg_weight, class_balanced=settings.balanced_pce,
                                       check_values=False, **settings.reg_params())
        self.regularize = True

    def __call__(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        prob, aux = _prob_and_aux(net, batch["image"])
        with full_precision(prob.device):
            p = prob.float()
            if self.regularize:
                out = self.loss_fn(p, batch["scribble"], batch["rgb"], batch.get("roi"))
                loss, pce, reg = out["loss"], out["pce"], out["reg"]
            else:
                pce = self.loss_fn.partial(p, batch["scribble"])
                loss, reg = pce, pce.new_zeros(())
            return StepOutput(loss + aux.float(), prob, {"pce": pce, "reg": reg})


def build_objective(spec: DatasetSpec, supervision: str | Supervision = "full") -> FullSupervision | ScribbleSupervision:
    """The training objective: full masks with ``spec.train.loss``, or scribbles + a regulariser."""
    settings = Supervision(supervision) if isinstance(supervision, str) else supervision
    if settings.mode == "full":
        return FullSupervision(spec.train.loss)
    return ScribbleSupervision(settings.resolved(spec))


def as_batch(raw: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """A loader batch as a dict on ``device``: :class:`SegmentationSplit`'s (image, mask, index)
    tuples become ``{"image", "mask", "index"}``; dict batches pass through."""
    if not isinstance(raw, dict):
        raw = dict(zip(("image", "mask", "index"), raw))
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in raw.items()}



# --------------------------------------------------------------------------- helpers

def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffling generator of ``epoch``: a function of (seed, epoch) only, so resume is exact."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _plain_config(cfg: SegTrainConfig, model_name: str, model_kwargs: dict, spec: DatasetSpec, seed: int,
                  pretrained: bool, supervision: Supervision, previous: dict | None = None) -> dict[str, Any]:
    """The resolved configuration stored in every checkpoint (primitives only): ``supervision`` is
    the mode (``"full"`` / ``"scribbles"``), ``rloss`` the weak-supervision settings (None if full),
    ``train`` the :class:`SegTrainConfig` settings given to the run (on resume added to the
    ``previous`` ones; what a resume compares, with the recipe)."""
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in model_kwargs.items()}
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.to_dict().items() if v is not None}
    train = {**(previous or {}), **given, "seed": int(seed), "model_kwargs": kwargs}
    return {"kind": "base_model", "model": model_name, "model_kwargs": kwargs, "dataset": spec.to_dict(),
            "seed": int(seed), "pretrained": bool(pretrained), "supervision": supervision.mode,
            "rloss": supervision.to_dict() if supervision.mode == "scribbles" else None, "train": train}


def _saved_supervision(config: dict) -> Supervision:
    """The :class:`Supervision` stored in a checkpoint config (older files: full masks)."""
    if config.get("supervision", "full") == "full" or not config.get("rloss"):
        return Supervision()
    return Supervision.from_dict(config["rloss"])


def _resolve_run(cfg: SegTrainConfig, spec: DatasetSpec, paths: BaseRunPaths, model_name: str, model_kwargs: dict,
                 supervision: Supervision | None):
    """The run's spec, seed, pretrained flag, model kwargs, supervision and (on resume) the resume
    checkpoint.

    A resumed run keeps the settings stored in ``<model>_last.th``: ``epochs`` may be extended,
    settings not given are the run's, and a :data:`~patchrefinenet.seg.config.RUN_FIELDS` setting
    (or, from Python, ``model_kwargs``) given with another value is refused, naming it (the
    engine's resume rule). ``supervision`` None: full masks for a new run, the stored settings on
    resume; a different one asked for on resume is ignored with a warning.
    """
    overrides = cfg.recipe_overrides()
    if not cfg.resume:
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, **overrides))
        return spec, cfg.seed, cfg.pretrained, model_kwargs, (supervision or Supervision()).resolved(spec), None
    last = read_resume_file(paths, lambda path, _: read_base_checkpoint(path, model_name))
    saved = last.config
    recipe = DatasetSpec.from_dict(saved["dataset"], source=str(paths.last)).train
    saved_kwargs = dict(saved.get("model_kwargs") or {})
    # what the run used: its config (files from before it was stored: none), the recipe, the seed
    run = {**(saved.get("train") or {}), **dataclasses.asdict(recipe), "seed": int(saved["seed"])}
    now = {k: getattr(cfg, k) for k in RUN_FIELDS if getattr(cfg, k) is not None and k in run}
    changes = setting_changes(run, now)
    if cfg.model_kwargs:
        plain = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.model_kwargs.items()}
        changes += setting_changes({"model_kwargs": saved_kwargs}, {"model_kwargs": plain})
    refuse_changes(paths.last, changes)
    if "max_epochs" in overrides:
        recipe = dataclasses.replace(recipe, max_epochs=overrides["max_epochs"])
    spec = dataclasses.replace(spec, train=recipe)
    kept = _saved_supervision(saved)
    if supervision is not None and supervision.resolved(spec) != kept:
        log.warning("--resume keeps the run's supervision (%s); ignoring the one asked for (%s)",
                    kept.describe(), supervision.resolved(spec).describe())
    return spec, int(saved["seed"]), bool(saved["pretrained"]), saved_kwargs, kept, last


# --------------------------------------------------------------------------- the family

class _BaseRun(Family):
    """The base-model family of the training engine (:mod:`patchrefinenet.engine`): the objective
    (full masks or scribbles), validation on the non-augmented val split, the monitored value
    (``val_loss``/``val_mae`` minimised, ``val_iou`` maximised) and the two-phase scribble recipe
    as hooks (the pCE phase, then the best pCE weights + the regulariser)."""

    mae = True

    def __init__(self, spec: DatasetSpec, model_name: str, paths: BaseRunPaths, model: nn.Module, config: dict,
                 supervision: Supervision, train_set: SegmentationSplit, val_set: SegmentationSplit, seed: int,
                 num_workers: int, recipe: Recipe, device: torch.device) -> None:
        self.spec, self.name, self.paths, self.model, self.config = spec, model_name, paths, model, config
        self.supervision, self.train_set, self.seed, self.num_workers = supervision, train_set, seed, num_workers
        self.recipe, self.device = recipe, device
        self.monitor_key = "val_iou" if supervision.mode == "scribbles" else spec.train.monitor  # module docstring
        self.sign = -1.0 if self.monitor_key == "val_iou" else 1.0
        self.train_objective = build_objective(spec, supervision)
        self.val_objective = FullSupervision(spec.train.loss)  # full val masks, whatever the training signal
        self.scribbles = supervision.mode == "scribbles"
        self.two_phase = self.scribbles and supervision.reg_loss != "none" and supervision.reg_weight > 0
        self.pin = device.type == "cuda"  # page-locked batches: the non_blocking copies overlap compute
        self.val_loader = DataLoader(val_set, batch_size=spec.train.batch_size, shuffle=False,
                                     num_workers=num_workers, pin_memory=self.pin)

    def forward_module(self) -> nn.Module:
        return ForwardWithAux(self.model)

    def prepare(self, raw: Any, device: torch.device) -> dict:
        return as_batch(raw, device)

    def train_batches(self, epoch: int, info: DistInfo) -> DataLoader:
        self.train_set.set_epoch(epoch)
        shuffle: dict[str, Any] = {"shuffle": True, "generator": _epoch_generator(self.seed, epoch)}
        if info.distributed:  # each rank its share of the (seed, epoch) permutation
            sampler = DistributedSampler(self.train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                         seed=self.seed)
            sampler.set_epoch(epoch)
            shuffle = {"sampler": sampler}
        return DataLoader(self.train_set, batch_size=self.spec.train.batch_size, pin_memory=self.pin,
                          num_workers=self.num_workers, **shuffle)

    def objective(self, net: nn.Module, batch: dict) -> StepOutput:
        return self.train_objective(net, batch)

    def on_epoch_start(self, engine: Engine, epoch: int) -> None:
        if self.scribbles:
            self.train_objective.regularize = epoch >= self.reg_start(engine)

    def reg_start(self, engine: Engine) -> int:
        """First epoch (0-based) whose objective includes the regulariser (scribbles)."""
        return int(engine.progress.extra.setdefault("reg_start", self.supervision.pce_epochs))

    def evaluate(self, engine: Engine, epoch: int) -> dict:
        """The val pass on every rank (full val split, not reduced), against the full masks."""
        return engine.run_pass(engine.eval_net, self.val_loader, self.val_objective, train=False,
                               desc=f"val {epoch + 1}", epoch=epoch)

    def monitor(self, train: dict, evaluated: dict) -> float:
        values = {"val_loss": evaluated["loss"], "val_mae": evaluated["mae"], "val_iou": evaluated["iou"]}
        return values[self.monitor_key]

    def after_decision(self, engine: Engine, epoch: int, decision: Decision, actions: list[str]) -> Decision:
        """The pCE phase of the two-phase recipe: a plateau stop ends the phase, not the run; at its end
        the best pCE weights are reloaded and the regularised phase gets the full patience."""
        if not (self.two_phase and epoch < self.reg_start(engine)):
            return decision
        if decision.stop:
            decision = dataclasses.replace(decision, stop=False)
            engine.progress.extra["reg_start"] = epoch + 1
            actions.append("pCE phase ended by the plateau rule")
        if epoch + 1 == self.reg_start(engine):
            best = engine.progress.best_epoch
            if best is not None:
                engine.reload_best()
            engine.schedule.counter = 0
            actions.append(f"{self.supervision.reg_loss} regulariser on from epoch {epoch + 2}"
                           + (f" (best pCE weights of epoch {best} reloaded)" if best else ""))
        return decision

    def record(self, engine: Engine, epoch: int, lr: float, train: dict, evaluated: dict, decision: Decision,
               actions: list[str], seconds: float) -> dict:
        row = {"epoch": epoch, "lr": lr, "train_loss": train["loss"], "train_iou": train["iou"],
               "val_loss": evaluated["loss"], "val_iou": evaluated["iou"], "val_mae": evaluated["mae"],
               "improved": decision.improved, "seconds": seconds}
        if self.scribbles:
            row.update(train_pce=train["pce"], train_reg=train["reg"], regularized=self.train_objective.regularize)
        row["action"] = ", ".join(actions)
        return row

    def log_epoch(self, engine: Engine, row: dict, train: dict, evaluated: dict, decision: Decision) -> None:
        parts = f" (pce {train['pce']:.5f} reg {train['reg']:.5f})" if self.scribbles else ""
        log.info("epoch %d/%d  train loss %.5f%s iou %.4f | val loss %.5f iou %.4f mae %.5f | lr %.3g  %s",
                 row["epoch"], self.recipe.max_epochs, row["train_loss"], parts, row["train_iou"], row["val_loss"],
                 row["val_iou"], row["val_mae"], row["lr"], row["action"])

    def best_meta(self, engine: Engine, epoch: int, value: float, train: dict, evaluated: dict) -> dict:
        return {"epoch": epoch, "monitor": self.monitor_key, "value": value, "val_loss": evaluated["loss"],
                "val_iou": evaluated["iou"], "val_mae": evaluated["mae"]}


# --------------------------------------------------------------------------- the entry point

def train_base(cfg: SegTrainConfig, spec: DatasetSpec) -> dict[str, Any]:
    """Train ``cfg.model`` (default: ``spec``'s base model) on ``spec``'s train split, validating on
    its val split (docs/authors-seg.md §S3), with the settings of ``cfg`` (:class:`SegTrainConfig`).

    ``epochs`` / ``batch_size`` / ``lr`` override the recipe; ``pretrained`` loads ImageNet weights
    into the backbone of a fresh model (D-LinkNet, PFANet; offline it raises an InputError that
    says where to put the file); ``resume`` continues from ``<model>_last.th`` with the settings
    stored there (``epochs`` may extend it; another value of a setting is refused, naming it);
    ``checkpoint`` starts from saved weights like the authors' ``--checkpoint`` (the model's default
    weights file, or ``checkpoint_path``) with a fresh optimizer and schedule;
    ``max_batches_per_epoch`` caps train and val batches (smoke tests); ``model_width`` (or, from
    Python, ``model_kwargs``) goes to the constructor (with ``checkpoint`` it defaults to the
    file's); ``supervision`` (None = full masks, or on resume the run's own) selects the objective
    (:func:`build_objective`); scribbles need ``generate_scribbles.py`` to have run on the train
    split. A new run (no ``resume``) refuses to replace the weights of an earlier one unless
    ``overwrite``. Under ``torchrun`` every rank calls this; rank 0 writes the files.

    Returns ``{"best_epoch", "best_value", "monitor", "epochs_run", "stopped", "checkpoint",
    "last", "history", "log_file"}``; ``stopped`` is ``max_epochs``, ``no_improvement`` or
    ``lr_below_min``; ``monitor`` is the recipe's (minimised) or, for scribbles, ``val_iou`` (maximised).
    """
    model_name = cfg.model or spec.base_model
    if model_name not in BASE_MODELS:
        raise InputError(f"unknown base model {model_name!r} (--model); valid names: {', '.join(sorted(BASE_MODELS))}")
    settings = cfg.supervision_settings()
    supervision = None if settings is None else Supervision(**settings)
    model_kwargs = _width_kwargs(model_name, cfg.model_width) or dict(cfg.model_kwargs or {})
    paths = BaseRunPaths(Path(cfg.output_root), model_name)
    refuse_overwrite(paths, cfg.resume, cfg.overwrite)
    dev = resolve_device(cfg.device)
    spec, seed, pretrained, model_kwargs, supervision, last = _resolve_run(cfg, spec, paths, model_name, model_kwargs,
                                                                          supervision)

    # Every input is checked (data, weights to start from) before anything is written or downloaded.
    train_set = SegmentationSplit(spec, cfg.data_root, "train", augment=True, seed=seed,
                                  scribbles=supervision.mode == "scribbles")
    val_set = SegmentationSplit(spec, cfg.data_root, "val", augment=False)
    for split in (train_set, val_set):
        if len(split) == 0:
            raise InputError(f"the {split.split} split of {spec.name} under {cfg.data_root} is empty; "
                             f"check its CSV file")
    init_source = None
    if cfg.checkpoint:
        init_source = Path(cfg.checkpoint_path) if cfg.checkpoint_path else find_base_checkpoint(spec, model_name,
                                                                                                  paths.root)
        init = read_base_checkpoint(init_source, model_name)
        model_kwargs = model_kwargs or checkpoint_model_kwargs(init, model_name)  # e.g. a narrow ResUNet++
    config = _plain_config(cfg, model_name, model_kwargs, spec, seed, pretrained, supervision,
                           None if last is None else last.config.get("train"))
    seed_everything(seed)
    model = build_base_model(model_name, **model_kwargs)
    if init_source is not None:
        load_weights_strict(model, init.state_dict, f"checkpoint {init_source}")
    elif pretrained and last is None:
        init_imagenet_backbone(model, progress=cfg.progress)
    model.to(dev)
    r = spec.train
    recipe = Recipe(lr=r.lr, max_epochs=r.max_epochs, decay_after=r.decay_after, stop_after=r.stop_after,
                    factor=r.factor, min_lr=r.min_lr, weight_decay=r.weight_decay,
                    max_batches=cfg.max_batches_per_epoch, bf16=cfg.bf16 and dev.type == "cuda", compile=cfg.compile, progress=cfg.progress)
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(dev)
    try:
        family = _BaseRun(spec, model_name, paths, model, config, supervision, train_set, val_set, seed,
                          cfg.num_workers, recipe, info.device)
        if cfg.bf16 and not recipe.bf16:
            log.warning("--bf16 applies on CUDA only; ignored on %s", dev)
        return _run(family, Engine(family, info, last), info, init_source, len(val_set))
    finally:
        if owns_group and info.distributed:
            cleanup_distributed()


def _width_kwargs(model: str, width: int | None) -> dict:
    """``--model_width W`` → ResUNet++ ``filters`` (W, 2W, 4W, 8W, 16W); the authors' model is W = 32."""
    if width is None:
        return {}
    if model != "resunetplusplus":
        raise InputError(f"--model_width applies to resunetplusplus only (got --model {model}); "
                         "D-LinkNet and PFANet have fixed ImageNet backbones")
    return {"filters": [width * 2**i for i in range(5)]}


def train_base_model(spec: DatasetSpec, model_name: str, *, data_root: str | os.PathLike,
                     output_root: str | os.PathLike, init_weights: str | os.PathLike | bool | None = None,
                     supervision: str | Supervision | None = None, device: str | torch.device = "auto",
                     **settings: Any) -> dict[str, Any]:
    """:func:`train_base` with keyword arguments (the earlier signature): any :class:`SegTrainConfig`
    field (``seed``, ``epochs``, ``batch_size``, ``lr``, ``pretrained``, ``resume``, ``overwrite``,
    ``max_batches_per_epoch``, ``num_workers``, ``model_kwargs``, ``progress``, ``compile``, ...),
    ``init_weights`` (True: the model's default weights file, or a path; the authors'
    ``--checkpoint``) and ``supervision`` (``"full"``, ``"scribbles"`` or a :class:`Supervision`)."""
    if isinstance(supervision, Supervision):
        fields_ = {k: v for k, v in supervision.to_dict().items() if supervision.mode == "scribbles" or k == "mode"}
        settings.update(supervision=fields_.pop("mode"), **fields_)
    elif supervision is not None:
        settings["supervision"] = supervision
    if init_weights:
        settings.update(checkpoint=True, checkpoint_path=None if init_weights is True else str(init_weights))
    cfg = SegTrainConfig(data_root=str(data_root), output_root=str(output_root), model=model_name, device=str(device),
                         **settings)
    return train_base(cfg, spec)


def _run(family: _BaseRun, engine: Engine, info: DistInfo, init_source: Path | None, n_val: int) -> dict[str, Any]:
    """Log the run's set-up, train the remaining epochs, return :func:`train_base`'s result."""
    paths, recipe, p = family.paths, family.spec.train, engine.progress
    if info.is_main:
        remove_leftovers(paths.checkpoint_dir, paths.log_dir)
    log_file = paths.train_log(time.strftime("%Y%m%d-%H%M%S")) if info.is_main else None
    with log_to_file(log_file):
        log.info("training %s on %s (%s): %s", family.name, family.spec.name, family.device,
                 json.dumps(family.config["dataset"]["train"]))
        if info.is_main:
            write_text_atomic(paths.train_config, json.dumps(family.config, indent=2) + "\n")
        if init_source is not None:
            log.info("started from the weights in %s (fresh optimizer and schedule)", init_source)
        if engine.resumed:
            log.info("resumed after epoch %d from %s", p.epoch, paths.last)
        elif paths.last.is_file():
            log.warning("starting a new run: %s (the previous run's resume file) will be replaced; "
                        "use --resume True to continue that run instead", paths.last)
        log.info("%d train / %d val images, batch %d, lr %g, up to %d epochs, monitor %s; supervision: %s",
                 len(family.train_set), n_val, recipe.batch_size, p.lr, recipe.max_epochs, family.monitor_key,
                 family.supervision.describe())
        reg_start = family.reg_start(engine)
        if family.two_phase and reg_start >= recipe.max_epochs:
            log.warning("--pce_epochs %d >= %d epochs: the %s regulariser is never used", reg_start,
                        recipe.max_epochs, family.supervision.reg_loss)
        if p.stopped is not None:
            log.info("this run already stopped (%s) after epoch %d; nothing to resume", p.stopped, p.epoch)
        engine.run()
        stopped = p.stopped or ("max_epochs" if p.epoch >= recipe.max_epochs else None)
        best = family.sign * engine.schedule.best
        log.info("finished after %d epochs (%s); best %s %.6f at epoch %s -> %s", p.epoch, stopped,
                 family.monitor_key, best, p.best_epoch, paths.weights)
    return {"best_epoch": p.best_epoch, "best_value": best, "monitor": family.monitor_key,
            "epochs_run": p.epoch, "stopped": stopped, "checkpoint": str(paths.weights), "last": str(paths.last),
            "history": str(paths.history), "log_file": None if log_file is None else str(log_file)}
