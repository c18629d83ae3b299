"""Train a base segmentation model with the authors' per-dataset recipe (docs/authors-seg.md §S3).

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
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from data_utils.datasets import SegmentationSplit
from data_utils.errors import InputError
from data_utils.io import remove_stale_temporaries, write_text_atomic
from data_utils.spec import DatasetSpec
from data_utils.layout import RunFolders
from patchrefinenet.checkpoint import load_checkpoint, load_weights_strict, save_checkpoint
from patchrefinenet.models import BASE_MODELS, build_base_model, init_imagenet_backbone
from patchrefinenet.rloss import REGULARIZERS, RegularizedLoss, default_weight, partial_cross_entropy
from patchrefinenet.seg.generate import checkpoint_model_kwargs, find_base_checkpoint, read_base_checkpoint
from patchrefinenet.seg_losses import build_seg_loss
from patchrefinenet.training import (PlateauSchedule, capture_rng_state, log_to_file, resolve_device,
                                     restore_rng_state, seed_everything)

log = logging.getLogger("patchrefinenet")


class BaseRunPaths(RunFolders):
    """Where a base-model run of ``model`` writes, under ``root`` (the dataset's seg-models folder):
    :class:`data_utils.layout.RunFolders` with the base model's name."""

    @property
    def model(self) -> str:
        return self.name

    def train_log(self, stamp: str) -> Path:
        return self.log_dir / f"{self.name}_log_{stamp}.log"  # the base scripts' name


# --------------------------------------------------------------------------- the objective

class StepOutput(NamedTuple):
    """One forward pass: the scalar to minimise, the probabilities (B, 1, H, W) it came from and
    optional named parts of the loss (e.g. ``pce``, ``reg``) for the logs."""

    loss: torch.Tensor
    prob: torch.Tensor
    terms: dict | None = None


SUPERVISION_MODES = ("full", "scribbles")


@dataclass(frozen=True)
class Supervision:
    """How the base model is supervised (primitives only; stored in every checkpoint's config).

    ``mode``: ``"full"`` (masks, the authors' loss) or ``"scribbles"`` (pCE + ``reg_weight`` ×
    ``reg_loss``). ``reg_weight`` None → :func:`~patchrefinenet.rloss.default_weight` (1.0 for the
    normalised DenseCRF loss); ``pce_epochs``: epochs of pCE alone before the regulariser joins.
    DenseCRF / normalised-cut kernel: ``sigma_rgb`` (colour, 0–255 units), ``sigma_xy`` (pixels
    of the network input; None → rloss's 100 px scaled by input_size / 512), computed at
    ``reg_scale`` × the input size (rloss: 0.5). ``size_bounds`` = (lower, upper) foreground area
    fractions, required by the ``size`` loss. :meth:`resolved` fills the ``None`` defaults.
    """

    mode: str = "full"
    reg_loss: str = "densecrf"
    reg_weight: float | None = None
    pce_epochs: int = 0
    sigma_rgb: float = 15.0
    sigma_xy: float | None = None
    reg_scale: float = 0.5
    size_bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
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
        reg = "pCE only" if self.reg_loss == "none" or self.reg_weight == 0 else \
            f"pCE + {self.reg_weight:g} x {self.reg_loss} {self.reg_params()}"
        return f"scribbles, {reg}" + (f", pCE alone for the first {self.pce_epochs} epochs" if self.pce_epochs else "")


class FullSupervision:
    """The authors' objective with full masks: ``loss(prob, mask) + aux`` where ``aux`` is the
    model's auxiliary term (PFANet's channel-attention regulariser, 0 for the others).

    An objective maps (model, batch dict) to a :class:`StepOutput`.
    """

    def __init__(self, loss_name: str):
        self.loss_fn = build_seg_loss(loss_name)

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        prob, aux = model.forward_with_aux(batch["image"])
        return StepOutput(self.loss_fn(prob, batch["mask"]) + aux, prob)


class ScribbleSupervision:
    """rloss's objective: ``pCE(prob, scribble) + weight · regulariser(prob, rgb, roi) + aux``.

    Reads ``batch["scribble"]`` (B, H, W) uint8 {0, 1, 255}, ``batch["rgb"]`` (B, 3, H, W) in
    [0, 255] and ``batch["roi"]`` (B, H, W) from :class:`SegmentationSplit` with ``scribbles=True``.
    ``regularize = False`` drops the regulariser (the pCE phase of the two-phase recipe).
    """

    def __init__(self, settings: Supervision):
        self.loss_fn = RegularizedLoss(settings.reg_loss, settings.reg_weight, **settings.reg_params())
        self.regularize = True

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        prob, aux = model.forward_with_aux(batch["image"])
        if self.regularize:
            out = self.loss_fn(prob, batch["scribble"], batch["rgb"], batch.get("roi"))
            loss, pce, reg = out["loss"], out["pce"], out["reg"]
        else:
            pce = partial_cross_entropy(prob, batch["scribble"])
            loss, reg = pce, pce.new_zeros(())
        return StepOutput(loss + aux, prob, {"pce": pce, "reg": reg})


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


# --------------------------------------------------------------------------- metrics

class _Tally:
    """Running sums on the device (no host sync per batch): loss, pooled IoU counts at > 0.5
    (ground truth at ≥ 0.5, for DUTS's soft masks) and absolute error against the mask."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss·B, inter, union, Σ|p−y|
        self.terms: dict[str, torch.Tensor] = {}  # name -> Σ term·B
        self.images = 0
        self.pixels = 0

    @torch.no_grad()
    def update(self, out: StepOutput, masks: torch.Tensor) -> None:
        prob, batch = out.prob, out.prob.shape[0]
        pred, gt = prob > 0.5, masks >= 0.5
        inter = (pred & gt).sum()
        self.sums += torch.stack([out.loss.detach().double() * batch, inter.double(),
                                  (pred.sum() + gt.sum() - inter).double(),
                                  (prob.detach().double() - masks.double()).abs().sum()])
        for name, value in (out.terms or {}).items():
            self.terms[name] = self.terms.get(name, 0) + value.detach().double() * batch
        self.images += batch
        self.pixels += prob.numel()

    def result(self) -> dict[str, float]:
        loss, inter, union, abs_err = self.sums.tolist()
        n = max(self.images, 1)
        return {"loss": loss / n, "iou": (inter + 1) / (union + 1), "mae": abs_err / max(self.pixels, 1),
                **{name: float(total) / n for name, total in self.terms.items()}}


# --------------------------------------------------------------------------- helpers

def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffling generator of ``epoch``: a function of (seed, epoch) only, so resume is exact."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _plain_config(model_name: str, model_kwargs: dict, spec: DatasetSpec, seed: int, pretrained: bool,
                  supervision: Supervision) -> dict[str, Any]:
    """The resolved configuration stored in every checkpoint (primitives only): ``supervision`` is
    the mode (``"full"`` / ``"scribbles"``), ``rloss`` the weak-supervision settings (None if full)."""
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in model_kwargs.items()}
    return {"kind": "base_model", "model": model_name, "model_kwargs": kwargs, "dataset": spec.to_dict(),
            "seed": int(seed), "pretrained": bool(pretrained), "supervision": supervision.mode,
            "rloss": supervision.to_dict() if supervision.mode == "scribbles" else None}


def _saved_supervision(config: dict) -> Supervision:
    """The :class:`Supervision` stored in a checkpoint config (older files: full masks)."""
    if config.get("supervision", "full") == "full" or not config.get("rloss"):
        return Supervision()
    return Supervision.from_dict(config["rloss"])


def _run_epoch(model: nn.Module, loader: DataLoader, objective, device: torch.device,
               optimizer: torch.optim.Optimizer | None, max_batches: int | None, desc: str, progress: bool) -> dict:
    """One pass over ``loader``; trains when ``optimizer`` is given, else evaluates under no_grad."""
    training = optimizer is not None
    model.train(training)
    tally = _Tally(device)
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    bar = tqdm(loader, total=total, desc=desc, unit="batch", leave=False, disable=not progress)
    with torch.set_grad_enabled(training):
        for step, raw in enumerate(bar):
            if step >= total:
                break
            batch = as_batch(raw, device)
            out = objective(model, batch)
            if training:
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
            tally.update(out, batch["mask"])
            if step % 10 == 0 or step == total - 1:  # the only host syncs of the loop
                r = tally.result()
                if not math.isfinite(r["loss"]):
                    raise FloatingPointError(f"{desc}: the loss became {r['loss']} by batch {step + 1}; lower "
                                             f"--lr or check the data (the best weights saved so far are intact)")
                bar.set_postfix(loss=f"{r['loss']:.4f}", iou=f"{r['iou']:.4f}")
    bar.close()
    return tally.result()


def _write_history(path: Path, history: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in history))


# --------------------------------------------------------------------------- the trainer

@dataclass
class _Progress:
    """Where a run stands after ``epoch`` completed epochs (stored in the resume file)."""

    lr: float
    epoch: int = 0
    history: list = dataclasses.field(default_factory=list)
    stopped: str | None = None
    best_epoch: int | None = None
    reg_start: int = 0  # first epoch (0-based) whose objective includes the regulariser (scribbles)


def _resolve_run(spec: DatasetSpec, paths: BaseRunPaths, model_name: str, resume: bool, overrides: dict,
                 seed: int, pretrained: bool, model_kwargs: dict, supervision: Supervision | None):
    """The run's spec, seed, pretrained flag, model kwargs, supervision and (on resume) the resume
    checkpoint.

    A resumed run keeps everything stored in ``<model>_last.th`` except ``max_epochs``, which may
    be extended. ``supervision`` None: full masks for a new run, the stored settings on resume.
    """
    if not resume:
        recipe = dataclasses.replace(spec.train, **overrides)
        spec = dataclasses.replace(spec, train=recipe)
        return spec, seed, pretrained, model_kwargs, (supervision or Supervision()).resolved(spec), None
    if not paths.last.is_file():
        raise InputError(f"--resume: no resume file {paths.last}; start without --resume")
    last = read_base_checkpoint(paths.last, model_name)
    if not last.training_state or "optimizer" not in last.training_state or not last.config:
        raise InputError(f"--resume: {paths.last} holds no training state; start without --resume")
    saved = last.config
    recipe = DatasetSpec.from_dict(saved["dataset"], source=str(paths.last)).train
    ignored = {k: v for k, v in overrides.items() if k != "max_epochs" and v != getattr(recipe, k)}
    if ignored:
        log.warning("--resume keeps the run's %s; ignoring %s",
                    ", ".join(f"{k}={getattr(recipe, k)}" for k in ignored), ignored)
    if "max_epochs" in overrides:
        recipe = dataclasses.replace(recipe, max_epochs=overrides["max_epochs"])
    spec = dataclasses.replace(spec, train=recipe)
    kept = _saved_supervision(saved)
    if supervision is not None and supervision.resolved(spec) != kept:
        log.warning("--resume keeps the run's supervision (%s); ignoring the one asked for (%s)",
                    kept.describe(), supervision.resolved(spec).describe())
    return (spec, int(saved["seed"]), bool(saved["pretrained"]), dict(saved.get("model_kwargs") or {}), kept, last)


def train_base_model(
    spec: DatasetSpec,
    model_name: str,
    *,
    data_root: str | os.PathLike,
    output_root: str | os.PathLike,
    seed: int = 0,
    device: str | torch.device = "auto",
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    pretrained: bool = True,
    resume: bool = False,
    init_weights: str | os.PathLike | bool | None = None,
    max_batches_per_epoch: int | None = None,
    num_workers: int = 0,
    model_kwargs: dict | None = None,
    supervision: str | Supervision | None = None,
    progress: bool = True,
    compile: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``model_name`` on ``spec``'s train split, validating on its val split (docs/authors-seg.md §S3).

    ``epochs`` / ``batch_size`` / ``lr`` override the recipe; ``pretrained`` loads ImageNet weights
    into the backbone of a fresh model (D-LinkNet, PFANet; offline it raises an InputError that
    says where to put the file); ``resume`` continues from ``<model>_last.th`` with the settings
    stored there (``epochs`` may extend it); ``init_weights`` starts from saved weights like the
    authors' ``--checkpoint`` (True: the model's default weights file, or a path) with a fresh
    optimizer and schedule; ``max_batches_per_epoch`` caps train and val batches (smoke tests;
    pass the same value when resuming); ``model_kwargs`` go to the constructor (e.g. narrow
    ResUNet++ ``filters``; with ``init_weights`` they default to the checkpoint's);
    ``supervision`` (``"full"``, ``"scribbles"`` or a :class:`Supervision`; None = full masks, or
    on resume the run's own) selects the objective (:func:`build_objective`); scribbles need
    ``generate_scribbles.py`` to have run on the train split. ``compile`` runs the model's forward
    through ``torch.compile`` (opt-in; the first batches of each input shape compile). A new run
    (no ``resume``) refuses to replace the weights of an earlier one unless ``overwrite``.

    Returns ``{"best_epoch", "best_value", "monitor", "epochs_run", "stopped", "checkpoint",
    "last", "history", "log_file"}``; ``stopped`` is ``max_epochs``, ``no_improvement`` or
    ``lr_below_min``; ``monitor`` is the recipe's (minimised) or, for scribbles, ``val_iou`` (maximised).
    """
    if model_name not in BASE_MODELS:
        raise InputError(f"unknown base model {model_name!r} (--model); valid names: {', '.join(sorted(BASE_MODELS))}")
    if resume and init_weights:
        raise InputError("--resume continues an interrupted run and --checkpoint starts from saved weights; give one")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("max_batches_per_epoch", max_batches_per_epoch)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InputError(f"--{name} must be a positive integer, got {value!r}")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"--lr must be a positive number, got {lr!r}")
    paths = BaseRunPaths(Path(output_root), model_name)
    existing = [p for p in (paths.weights, paths.last) if p.is_file()]
    if existing and not (resume or overwrite):
        raise InputError(f"{existing[0]} exists (an earlier run's weights); continue it with --resume True, "
                         f"replace it with --overwrite True, or write elsewhere with --output_root")
    dev = resolve_device(device)
    overrides = {k: v for k, v in (("max_epochs", epochs), ("batch_size", batch_size), ("lr", lr)) if v is not None}
    if isinstance(supervision, str):
        supervision = Supervision(supervision)
    spec, seed, pretrained, model_kwargs, supervision, last = _resolve_run(
        spec, paths, model_name, resume, overrides, seed, pretrained, dict(model_kwargs or {}), supervision)
    recipe = spec.train
    monitor = "val_iou" if supervision.mode == "scribbles" else recipe.monitor  # see the module docstring
    sign = -1.0 if monitor == "val_iou" else 1.0  # the plateau rule minimises sign · value
    objective = build_objective(spec, supervision)
    val_objective = FullSupervision(recipe.loss)  # validation: full val masks, whatever the training signal
    scribbles = supervision.mode == "scribbles"
    two_phase = scribbles and supervision.reg_loss != "none" and supervision.reg_weight > 0

    # Every input is checked (data, weights to start from) before anything is written or downloaded.
    train_set = SegmentationSplit(spec, data_root, "train", augment=True, seed=seed, scribbles=scribbles)
    val_set = SegmentationSplit(spec, data_root, "val", augment=False)
    for split in (train_set, val_set):
        if len(split) == 0:
            raise InputError(f"the {split.split} split of {spec.name} under {data_root} is empty; check its CSV file")
    init_source = None
    if init_weights:
        init_source = find_base_checkpoint(spec, model_name, paths.root) if init_weights is True else Path(init_weights)
        init = read_base_checkpoint(init_source, model_name)
        init_state = init.state_dict
        model_kwargs = model_kwargs or checkpoint_model_kwargs(init, model_name)  # e.g. a narrow ResUNet++
    config = _plain_config(model_name, model_kwargs, spec, seed, pretrained, supervision)
    seed_everything(seed)
    model = build_base_model(model_name, **model_kwargs)
    if init_source is not None:
        load_weights_strict(model, init_state, f"checkpoint {init_source}")
    elif pretrained and last is None:
        init_imagenet_backbone(model, progress=progress)
    model.to(dev)
    if compile:  # the objectives call forward_with_aux; the saved state_dict is the plain module's
        model.forward_with_aux = torch.compile(model.forward_with_aux)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = PlateauSchedule(recipe.decay_after, recipe.stop_after, recipe.factor, recipe.min_lr)
    run = _Progress(lr=recipe.lr, reg_start=supervision.pce_epochs)
    if last is not None:
        state = last.training_state
        load_weights_strict(model, last.state_dict, f"resume file {paths.last}")
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        run = _Progress(float(state["lr"]), int(state["epoch"]), list(state["history"]), state.get("stopped"),
                        state.get("best_epoch"), int(state.get("reg_start", supervision.pce_epochs)))
        restore_rng_state(state["rng"])
    pin = dev.type == "cuda"  # page-locked batches: the non_blocking copies in as_batch overlap compute
    val_loader = DataLoader(val_set, batch_size=recipe.batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=pin)

    for path in remove_stale_temporaries(paths.checkpoint_dir, paths.log_dir):
        log.info("removed %s (left by a run that was killed)", path)
    log_file = paths.train_log(time.strftime("%Y%m%d-%H%M%S"))
    with log_to_file(log_file):
        log.info("training %s on %s (%s): %s", model_name, spec.name, dev, json.dumps(config["dataset"]["train"]))
        write_text_atomic(paths.train_config, json.dumps(config, indent=2) + "\n")
        if init_source is not None:
            log.info("started from the weights in %s (fresh optimizer and schedule)", init_source)
        if last is not None:
            log.info("resumed after epoch %d from %s", run.epoch, paths.last)
        elif paths.last.is_file():
            log.warning("starting a new run: %s (the previous run's resume file) will be replaced; "
                        "use --resume True to continue that run instead", paths.last)
        log.info("%d train / %d val images, batch %d, lr %g, up to %d epochs, monitor %s; supervision: %s",
                 len(train_set), len(val_set), recipe.batch_size, run.lr, recipe.max_epochs, monitor,
                 supervision.describe())
        if two_phase and run.reg_start >= recipe.max_epochs:
            log.warning("--pce_epochs %d >= %d epochs: the %s regulariser is never used", run.reg_start,
                        recipe.max_epochs, supervision.reg_loss)
        if run.stopped is not None:
            log.info("this run already stopped (%s) after epoch %d; nothing to resume", run.stopped, run.epoch)
        epochs_left = range(run.epoch, recipe.max_epochs) if run.stopped is None else range(0)
        epoch_bar = tqdm(epochs_left, initial=run.epoch, total=recipe.max_epochs, desc=f"{model_name} epochs",
                         unit="epoch", disable=not progress)
        for epoch in epoch_bar:
            started = time.time()
            train_set.set_epoch(epoch)
            if scribbles:
                objective.regularize = epoch >= run.reg_start
            train_loader = DataLoader(train_set, batch_size=recipe.batch_size, shuffle=True, pin_memory=pin,
                                      num_workers=num_workers, generator=_epoch_generator(seed, epoch))
            train = _run_epoch(model, train_loader, objective, dev, optimizer, max_batches_per_epoch,
                               f"train {epoch + 1}", progress)
            val = _run_epoch(model, val_loader, val_objective, dev, None, max_batches_per_epoch,
                             f"val {epoch + 1}", progress)
            value = {"val_loss": val["loss"], "val_mae": val["mae"], "val_iou": val["iou"]}[monitor]
            decision = schedule.step(sign * value, run.lr)
            actions = []
            if decision.improved:
                run.best_epoch = epoch + 1
                save_checkpoint(paths.weights, model.state_dict(), config,
                                {"epoch": epoch + 1, "monitor": monitor, "value": value,
                                 "val_loss": val["loss"], "val_iou": val["iou"], "val_mae": val["mae"]})
                actions.append("saved")
            row = {"epoch": epoch + 1, "lr": run.lr, "train_loss": train["loss"], "train_iou": train["iou"],
                   "val_loss": val["loss"], "val_iou": val["iou"], "val_mae": val["mae"],
                   "improved": decision.improved, "seconds": round(time.time() - started, 3)}
            if scribbles:
                row.update(train_pce=train["pce"], train_reg=train["reg"], regularized=epoch >= run.reg_start)
            if two_phase and epoch < run.reg_start:  # the pCE phase of the two-phase recipe
                if decision.stop:  # the plateau rule ends the pCE phase, not the run
                    decision = dataclasses.replace(decision, stop=False)
                    run.reg_start = epoch + 1
                    actions.append("pCE phase ended by the plateau rule")
                if epoch + 1 == run.reg_start:
                    if run.best_epoch is not None:
                        load_weights_strict(model, load_checkpoint(paths.weights).state_dict,
                                            f"best weights {paths.weights}")
                    schedule.counter = 0  # the regularised phase gets the full patience
                    actions.append(f"{supervision.reg_loss} regulariser on from epoch {epoch + 2}"
                                   + (f" (best pCE weights of epoch {run.best_epoch} reloaded)" if run.best_epoch else ""))
            if decision.stop:
                run.stopped = "no_improvement" if schedule.counter > recipe.stop_after else "lr_below_min"
                actions.append(f"stop ({run.stopped})")
            elif decision.reload_best:  # as the authors: weights only, the Adam state is kept
                load_weights_strict(model, load_checkpoint(paths.weights).state_dict, f"best weights {paths.weights}")
                run.lr = decision.new_lr
                _set_lr(optimizer, run.lr)
                actions.append(f"reloaded best, lr -> {run.lr:.3g}")
            row["action"] = ", ".join(actions)
            run.history.append(row)
            run.epoch = epoch + 1
            parts = f" (pce {train['pce']:.5f} reg {train['reg']:.5f})" if scribbles else ""
            log.info("epoch %d/%d  train loss %.5f%s iou %.4f | val loss %.5f iou %.4f mae %.5f | lr %.3g  %s",
                     epoch + 1, recipe.max_epochs, train["loss"], parts, train["iou"], val["loss"], val["iou"],
                     val["mae"], row["lr"], row["action"])
            state = {**dataclasses.asdict(run), "optimizer": optimizer.state_dict(),
                     "schedule": schedule.state_dict(), "rng": capture_rng_state()}
            save_checkpoint(paths.last, model.state_dict(), config, {"epoch": run.epoch}, training_state=state)
            _write_history(paths.history, run.history)
            epoch_bar.set_postfix(**{monitor: f"{value:.5f}", "best": f"{sign * schedule.best:.5f}"})
            if run.stopped is not None:
                break
        epoch_bar.close()
        stopped = run.stopped or ("max_epochs" if run.epoch >= recipe.max_epochs else None)
        log.info("finished after %d epochs (%s); best %s %.6f at epoch %s -> %s", run.epoch, stopped,
                 monitor, sign * schedule.best, run.best_epoch, paths.weights)
    return {"best_epoch": run.best_epoch, "best_value": sign * schedule.best, "monitor": monitor,
            "epochs_run": run.epoch, "stopped": stopped, "checkpoint": str(paths.weights), "last": str(paths.last),
            "history": str(paths.history), "log_file": str(log_file)}
