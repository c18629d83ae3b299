"""PRN training (docs/authors-refine.md §R7): the PRN family of the one training engine
(:mod:`patchrefinenet.engine`, docs/DESIGN.md "One training engine"), which brings Adam, the
authors' plateau rule (on the training loss, or with held-out selection on the held-out score,
docs/refiner.md), atomic checkpoints, bit-exact resume and ``torchrun`` data parallelism.

One epoch = one pass over the validation-split arrays of the base model (``val_pred.npy``), with
pseudo-labels ``train_aux_gt_p_<P>.npy`` (made on demand) and ground truth ``val_orig_gt.npy``.
After each epoch the mean batch loss drives :class:`~patchrefinenet.training.PlateauSchedule`
(improvement → save ``<aux>_weights.th``; 5th–8th non-improving epoch → reload those weights and
lr ÷ 1.1, Adam moments kept as the authors; 9th → stop). ``<aux>_last.th`` is rewritten after every
epoch with everything needed to continue (optimizer, schedule, history, RNG, lr), so a resumed run
ends with the weights an uninterrupted one would have (bit for bit on CPU; on CUDA up to the
nondeterminism of cuDNN kernels).

Deliberate differences from the authors: the loss takes (prediction, target) (docs/authors-refine.md §R6.3, their order
is ``upstream_order=True``); the epoch loss is the mean of per-batch float losses (not a
graph-carrying sum divided by floor(N/B), docs/authors-refine.md §R15.14); a seed drives initialisation, shuffling and
augmentation. As the authors, the local decoder's BatchNorm uses per-patch statistics in training
(``patch_bn_stats``, docs/authors-refine.md §R4 / §R15.4).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from data_utils.arrays import open_maps
from data_utils.errors import InputError
from data_utils.io import write_text_atomic
from data_utils.provenance import changed_inputs, fingerprint, read_provenance
from data_utils.pseudo_labels import generate_pseudo_label_file, pseudo_label_staleness
from patchrefinenet.checkpoint import load_checkpoint, load_weights_strict, save_checkpoint
from patchrefinenet.engine import (Engine, Family, Recipe, StepOutput, full_precision, read_resume_file,
                                   refuse_changes, refuse_overwrite, remove_leftovers, setting_changes)
from patchrefinenet.losses import PRNLoss
from patchrefinenet.maps import MapSource, as_source
from patchrefinenet.models.prn import PRN, GridChoice, PRNConfig, load_prn, resolve_grid
from patchrefinenet.refine.config import DEFAULTS, RUN_FIELDS, RefineTrainConfig
from patchrefinenet.refine.data import (
    TRAIN_GT, TRAIN_INPUTS, NpyMaps, RefineDataset, RefineOutputs, generator_hint, pseudo_label_name, require_arrays,
)
from patchrefinenet.refine.heldout import (EpochSubset, PairDataset, final_selection, halves, make_selector,
                                           split_for_selection)
from patchrefinenet.selection import Selection
from patchrefinenet.training import (Decision, DistInfo, barrier, cleanup_distributed, init_distributed, log_to_file,
                                     resolve_device, seed_everything)

log = logging.getLogger("patchrefinenet")


@dataclass
class TrainSource:
    """In-memory training data for the engine, instead of the ``val_pred.npy`` files (used by
    :meth:`patchrefinenet.refiner.Refiner.fit`): paired probability maps and masks (any sizes; the
    pseudo-labels are computed per map), the grid, a typical map size and a description for the
    logs; optionally an explicit selection set, used instead of holding out ``cfg.select``."""

    probs: MapSource
    masks: MapSource
    choice: GridChoice
    image_size: tuple[int, int]
    description: str
    select_probs: MapSource | None = None
    select_masks: MapSource | None = None



def train_prn(cfg: RefineTrainConfig, dataset_spec: dict | None = None, *, source: TrainSource | None = None) -> dict:
    """Train a PRN as configured; returns ``best_loss``, ``epochs_run``, ``checkpoint`` (path of the
    best weights), ``last``, ``history`` (per-epoch dicts), ``stopped`` (reason or None), ``aux``,
    ``grid``, ``log_file``, ``history_file`` and ``model`` (the PRN with the weights of the last
    epoch, in eval mode; the best weights are in ``checkpoint``).

    Under ``torchrun`` every rank calls this; rank 0 writes files. ``dataset_spec`` (plain dict,
    e.g. ``DatasetSpec.to_dict()``) is stored in the checkpoints' config for provenance.

    ``source`` replaces the files of ``cfg.data_dir`` by in-memory data. With ``cfg.select`` > 0
    (or a selection set in ``source``) a share of the maps is held out (docs/refiner.md): after
    every epoch the model is scored there and the plateau rule follows that score instead of the
    training loss, so the saved best weights are the best on held-out maps; at the end the output
    rule is chosen there (with the do-no-harm guard) and stored in the best checkpoint
    (``config["refiner"]``); ``result["selection"]`` is the :class:`Selection`.
    """
    device = resolve_device(cfg.device)
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(device)
    try:
        return _PRNRun(cfg, info, dataset_spec, source).run()
    finally:
        if owns_group and info.distributed:
            cleanup_distributed()


class _PRNRun(Family):
    """The PRN family of the training engine (:mod:`patchrefinenet.engine`): its data, objective
    (:class:`~patchrefinenet.losses.PRNLoss`), monitored value (the epoch's mean training loss, or
    minus the held-out score) and records; plus the final held-out choice of the output rule."""

    target_key = "gt"
    per_image = False  # the authors' epoch loss: the mean of the batch losses

    def __init__(self, cfg: RefineTrainConfig, info: DistInfo, dataset_spec: dict | None,
                 source: TrainSource | None = None) -> None:
        self.cfg, self.info, self.device = cfg, info, info.device
        self.dataset_spec, self.source, self.selector = dataset_spec, source, None
        self.cuda = self.device.type == "cuda"
        self.bf16 = cfg.bf16 and self.cuda
        self.channels_last = cfg.channels_last and self.cuda
        self.recipe = Recipe(lr=cfg.lr, max_epochs=cfg.epochs, decay_after=cfg.decay_after, stop_after=cfg.stop_after,
                             factor=cfg.lr_factor, min_lr=cfg.min_lr, max_batches=cfg.max_batches_per_epoch,
                             bf16=self.bf16, compile=cfg.compile, progress=cfg.progress)
        self.loss_fn = PRNLoss(upstream_order=cfg.upstream_order, check_values=False)
        if source is not None:
            self.choice, (h, w) = source.choice, source.image_size
            self.inputs = self.gt = self.pseudo = None
            n = len(source.probs)
        else:
            data = Path(cfg.data_dir)
            self.inputs, self.gt = data / TRAIN_INPUTS, data / TRAIN_GT
            require_arrays({"PRN inputs": self.inputs, "ground truth": self.gt},
                           generator_hint(cfg.dataset, cfg.base_model))
            n, h, w = NpyMaps(self.inputs, "inputs").shape
            self.choice: GridChoice = resolve_grid(cfg.aux_model, cfg.patch_size, image_size=h)
            if h != w and self.choice.grid > 0:
                log.warning("maps are %d×%d (not square): the PRN patch grid (padded size / %d) and the %d-px "
                            "pseudo-label patches do not coincide along the width", h, w, self.choice.grid,
                            self.choice.patch_size)
            self.pseudo = data / pseudo_label_name(self.choice.patch_size)
        self.name = self.choice.aux_name
        self.paths = self.out = RefineOutputs(Path(cfg.output_root), self.choice.aux_name)
        self.prn_config = PRNConfig(grid=self.choice.grid, width=cfg.width, row7_quirk=cfg.row7_quirk,
                                    residual=cfg.residual, step_bn=cfg.step_bn)
        self.config = self.config_record = self._config_record(n, h, w)

    # ------------------------------------------------------------------ setup

    def _ensure_pseudo_labels(self) -> None:
        """Make ``train_aux_gt_p_<P>.npy`` from the validation arrays if it is missing or stale (rank 0, then
        all wait). Stale: its provenance record says it was made from other arrays or settings. A file
        without a record (the authors' data.zip) is used as it is, unless older than the arrays."""
        if self.source is None and self.info.is_main:
            stale = pseudo_label_staleness(self.pseudo, self.inputs, self.gt, self.choice.patch_size)
            if stale is not None and self.pseudo.is_file() and read_provenance(self.pseudo) is None:
                newer = [p.name for p in (self.inputs, self.gt) if p.stat().st_mtime > self.pseudo.stat().st_mtime]
                if newer:
                    raise InputError(f"{self.pseudo} has no provenance record and is older than {', '.join(newer)}: "
                                     f"it may come from other maps; delete it to regenerate it")
                log.warning("%s; using it as it is (delete it to regenerate it)", stale)
            elif stale is not None:
                log.info("%s: generating pseudo-labels with %d-px patches", stale, self.choice.patch_size)
                generate_pseudo_label_file(self.inputs, self.gt, self.pseudo, self.choice.patch_size,
                                           progress=self.cfg.progress, device=str(self.device) if self.cuda else None)
        barrier()

    def _config_record(self, n_images: int, h: int, w: int) -> dict:
        """What every checkpoint stores as ``config``: model (rebuilds the PRN), train, dataset."""
        dataset = {"name": self.cfg.dataset, "base_model": self.cfg.base_model, "n_images": n_images,
                   "image_size": [h, w], "inputs": str(self.inputs), "pseudo_labels": str(self.pseudo),
                   "ground_truth": str(self.gt), "spec": self.dataset_spec}
        dataset["patch_size"] = self.choice.patch_size
        if self.source is not None:
            dataset.update(inputs=self.source.description, pseudo_labels="computed per map", ground_truth="in memory")
        else:  # what --resume compares: the run continues only on the same arrays
            dataset["fingerprints"] = {"inputs": fingerprint(self.inputs), "ground_truth": fingerprint(self.gt)}
        return {"model": self.prn_config.to_dict(), "train": self.cfg.to_dict(), "dataset": dataset}

    def _build_model(self) -> PRN:
        seed_everything(self.cfg.seed)
        model = PRN(self.prn_config, check_values=False)  # RefineDataset checks every item: no sync per step
        if self.cfg.init_checkpoint:
            loaded, ck = load_prn(self.cfg.init_checkpoint, "cpu", expected_grid=self.choice.grid,
                                  requested_grid=self.choice.grid)
            weights = loaded.state_dict()
            if model.config.step_bn and not loaded.config.step_bn:  # e.g. the authors' files: start from running stats
                model.reset_step_statistics()
                weights = {**{k: v for k, v in model.state_dict().items() if ".step_" in k}, **weights}
            load_weights_strict(model, weights, f"--checkpoint {self.cfg.init_checkpoint}")
            log.info("initialised from %s (%s checkpoint)", self.cfg.init_checkpoint, ck.source)
        model.set_batch_statistics(self.cfg.patch_bn_stats)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def _resume_file(self):
        """``<aux>_last.th``, refused (naming each difference) unless it was written with these settings and data."""
        ck = read_resume_file(self.out, lambda path, _: load_checkpoint(path, map_location=self.device))
        saved_model = (ck.config or {}).get("model", {})
        # a key missing from an older file had its default value then (e.g. ``residual``)
        # (files from before held-out selection existed trained on every map: their select was 0)
        saved_train = {**DEFAULTS, "select": 0.0, **(ck.config or {}).get("train", {})}
        diffs = setting_changes(saved_train, {k: getattr(self.cfg, k) for k in RUN_FIELDS})
        if saved_model.get("grid") != self.prn_config.grid:
            diffs.insert(0, f"grid: saved {saved_model.get('grid')!r}, now {self.prn_config.grid}")
        if saved_model.get("step_bn", False) != self.prn_config.step_bn:  # files before step_bn had none
            diffs.append(f"step_bn: saved {saved_model.get('step_bn', False)!r}, now {self.prn_config.step_bn!r}")
        diffs += self._data_changes((ck.config or {}).get("dataset") or {})
        refuse_changes(self.out.last, diffs)
        return ck

    def _data_changes(self, saved: dict) -> list[str]:
        """What differs between the data a resume file was trained on and the data now."""
        now = self.config_record["dataset"]
        diffs = [f"{key}: saved {saved.get(key)!r}, now {now[key]!r}"
                 for key in ("n_images", "image_size", "patch_size") if key in saved and saved[key] != now[key]]
        files = {"inputs": self.inputs, "ground_truth": self.gt}
        check = "fingerprints" in saved and self.source is None and not diffs
        changed = changed_inputs(saved["fingerprints"], files) if check else []
        return diffs + [f"{files[k].name} changed since the run started" for k in changed]

    # ------------------------------------------------------------------ the run

    def run(self) -> dict:
        cfg, info = self.cfg, self.info
        refuse_overwrite(self.out, cfg.resume, cfg.overwrite)
        if info.is_main:  # what a killed earlier run left half-written
            remove_leftovers(self.out.checkpoint_dir, self.out.log_dir, *([] if self.source else [Path(cfg.data_dir)]))
        self._ensure_pseudo_labels()
        self.dataset, (h, w) = self._datasets()
        n = len(self.dataset)
        log_file = self.out.train_log(time.strftime("%Y%m%d-%H%M%S")) if info.is_main else None
        with log_to_file(log_file):
            log.info("PRN training: %s", self.choice.description)
            log.info("data: %d maps of %d×%d from %s (pseudo-labels %s); world size %d on %s%s%s",
                     n, h, w, self.source.description if self.source else cfg.data_dir,
                     "computed per map" if self.source else self.pseudo.name, info.world_size, self.device,
                     ", bf16 autocast" if self.bf16 else "", ", channels_last" if self.channels_last else "")
            if (cfg.bf16 or cfg.channels_last) and not self.cuda:
                log.warning("--bf16/--channels_last apply on CUDA only; ignored on %s", self.device)
            log.info("config: %s", json.dumps(self.config_record["train"], sort_keys=True))
            if self.held_out is not None:
                log.info("held-out selection: %d maps to fit, %d held out: %d choose the epoch and the output rule, "
                         "%d judge it (docs/refiner.md)", n, len(self.held_out[2]), len(self.choose[2]),
                         0 if self.judge is None else len(self.judge[2]))
            result = self._train()
            if self.held_out is not None:
                result["selection"] = self._select(result["model"])
            result["log_file"] = None if log_file is None else str(log_file)
            return result

    def _datasets(self) -> tuple[Any, tuple[int, int]]:
        """The training dataset (the fit part) and the map size; sets ``held_out`` and ``selector``."""
        cfg, src = self.cfg, self.source
        if src is not None:
            probs, masks, size = src.probs, src.masks, src.image_size
        else:
            probs = as_source(open_maps(self.inputs, "PRN inputs"), "probs", str(self.inputs))
            masks = as_source(open_maps(self.gt, "ground truth"), "masks", str(self.gt))
            size = probs.size(0)
        everything = list(range(len(probs)))
        self.fit_part = (probs, masks, everything)
        self.held_out = None
        if src is not None and src.select_probs is not None:
            self.held_out = (src.select_probs, src.select_masks, list(range(len(src.select_probs))))
        elif cfg.select > 0:
            fit_idx, sel_idx = split_for_selection(len(probs), cfg.select, cfg.seed)
            self.fit_part, self.held_out = (probs, masks, fit_idx), (probs, masks, sel_idx)
        self.choose = self.judge = None
        if self.held_out is not None:  # one half chooses (epoch, rule, threshold), the other judges
            self.choose, self.judge = halves(self.held_out, cfg.seed)
            self.selector = make_selector(*self.choose, self.device, cfg.select_metric, self.bf16)
        fit_idx = self.fit_part[2]
        if src is not None:
            return PairDataset(probs, masks, fit_idx, self.choice.grid, augment=cfg.augment, seed=cfg.seed), size
        full = RefineDataset(self.inputs, self.gt, self.pseudo, augment=cfg.augment, seed=cfg.seed)
        return (full if len(fit_idx) == len(full) else EpochSubset(full, fit_idx)), size

    def _select(self, model: PRN) -> Selection:
        """Choose the output rule with the best weights and store it in the best checkpoint."""
        ck = load_checkpoint(self.out.weights, map_location=self.device)
        load_weights_strict(model, ck.state_dict, f"best weights {self.out.weights}")
        model.set_batch_statistics(False).eval()
        cfg = self.cfg
        selection = final_selection(model, self.choose, self.judge, self.fit_part, self.device, metric=cfg.select_metric,
                                    margin=cfg.margin, force_prn=cfg.force_prn, confidence=cfg.confidence,
                                    bf16=self.bf16)
        (log.warning if selection.fell_back else log.info)("selection: %s", selection.message())
        if self.info.is_main:
            config = {**(ck.config or self.config_record),
                      "refiner": {"rule": selection.rule.name, "batch_stats": False,
                                  "selection": selection.to_dict()}}
            save_checkpoint(self.out.weights, ck.state_dict, config, ck.meta)
        barrier()
        return selection

    def _train(self) -> dict:
        """Build the PRN and run the engine; the result of :func:`train_prn` without selection and log file."""
        cfg, info = self.cfg, self.info
        self.model = model = self._build_model()
        log.info("PRN %s: %.2fM parameters", self.prn_config, sum(p.numel() for p in model.parameters()) / 1e6)
        engine = Engine(self, info, self._resume_file() if cfg.resume else None)
        p = engine.progress
        if cfg.resume:
            log.info("resumed from %s after epoch %d (best loss %.6f, lr %.3g)", self.out.last, p.epoch,
                     engine.schedule.best, p.lr)
        if info.is_main:  # only now: a run refused above leaves the files of the earlier run as they were
            write_text_atomic(self.out.train_config, json.dumps(self.config_record, indent=2, sort_keys=True) + "\n")
        self.sampler = DistributedSampler(self.dataset, num_replicas=info.world_size, rank=info.rank,
                                          shuffle=cfg.shuffle, seed=cfg.seed, drop_last=False)
        self.loader = DataLoader(self.dataset, batch_size=cfg.batch_size, sampler=self.sampler,
                                 num_workers=cfg.num_workers, pin_memory=self.cuda, persistent_workers=False)
        if p.stopped:
            log.info("the resumed run had already stopped (%s); nothing to do", p.stopped)
        elif p.epoch >= cfg.epochs:
            log.info("the resumed run already completed %d epochs (--epochs %d); nothing to do", p.epoch, cfg.epochs)
        engine.run()
        model.set_batch_statistics(False).eval()  # a plain eval-mode model for the caller
        return {"best_loss": engine.best_value, "epochs_run": p.epoch, "checkpoint": str(self.out.weights),
                "last": str(self.out.last), "history": p.history, "stopped": p.stopped, "aux": self.choice.aux_name,
                "grid": self.choice.grid, "history_file": str(self.out.history), "model": model}

    # ------------------------------------------------------------------ the family's part of each epoch

    def train_batches(self, epoch: int, info: DistInfo) -> DataLoader:
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        return self.loader

    def prepare(self, raw: dict, device: torch.device) -> dict:
        batch = {k: raw[k].to(device, non_blocking=True) for k in ("input", "pseudo", "gt")}
        if self.channels_last:
            batch["input"] = batch["input"].contiguous(memory_format=torch.channels_last)
        return batch

    def objective(self, net: torch.nn.Module, batch: dict) -> StepOutput:
        global_prob, local_prob = net(batch["input"])
        with full_precision(self.device):  # the loss runs in float32 (BCE is unsafe under autocast)
            parts = self.loss_fn(global_prob.float(), None if local_prob is None else local_prob.float(),
                                 batch["pseudo"], batch["gt"])
        return StepOutput(parts["loss"], global_prob, {"rs": parts["rs"], "reg": parts["reg"]}, local_prob)

    def evaluate(self, engine: Engine, epoch: int) -> dict:
        """With held-out selection: the best PRN rule's score on the choose half (the plateau rule follows it)."""
        if self.selector is None:
            return {}
        self.model.set_batch_statistics(False).eval()
        score, details = self.selector(self.model)
        self.model.set_batch_statistics(self.cfg.patch_bn_stats)
        return {"select": score, "select_best": details.get("best")}

    def monitor(self, train: dict, evaluated: dict) -> float:
        return -evaluated["select"] if "select" in evaluated else train["loss"]

    def stop_reason(self, engine: Engine, no_improvement: bool) -> str:
        lr = engine.progress.lr
        return (f"no improvement for {engine.schedule.counter} epochs" if no_improvement
                else f"lr {lr:.3g} < min_lr {self.cfg.min_lr:.3g}")

    def record(self, engine: Engine, epoch: int, lr: float, train: dict, evaluated: dict, decision: Decision,
               actions: list[str], seconds: float) -> dict:
        return {"epoch": epoch, "loss": train["loss"], "lr": lr, **{k: v for k, v in train.items() if k != "loss"},
                **evaluated, "time": seconds, "improved": decision.improved, "reload_best": decision.reload_best,
                "stop": decision.stop}

    def log_epoch(self, engine: Engine, row: dict, train: dict, evaluated: dict, decision: Decision) -> None:
        p = engine.progress
        if decision.improved:
            outcome = "best so far, saved"
        elif decision.reload_best:
            outcome = f"reloaded the best weights, lr -> {p.lr:.3g}"
        else:
            outcome = f"stop: {p.stopped}" if p.stopped else f"{engine.schedule.counter} without improvement"
        local = f", local iou {train['iou_local']:.4f}" if "iou_local" in train else ""
        if "select" in evaluated:
            local += f", held-out {evaluated['select']:.4f} ({evaluated['select_best']})"
        log.info("epoch %d/%d: loss %.6f, iou %.4f%s, lr %.3g, %.1fs (%s)", row["epoch"], self.cfg.epochs,
                 row["loss"], train["iou"], local, row["lr"], row["time"], outcome)

    def _meta(self, epoch: int, best: float, lr: float) -> dict:
        return {"epoch": epoch, "best_loss": best, "lr": lr, "aux": self.choice.aux_name,
                "grid_reading": self.choice.description, "patch_size": self.choice.patch_size,
                "seed": self.cfg.seed, "world_size": self.info.world_size,
                "torch": str(torch.__version__)}  # a plain str: TorchVersion does not load with weights_only

    def best_meta(self, engine: Engine, epoch: int, value: float, train: dict, evaluated: dict) -> dict:
        return self._meta(epoch, train["loss"], engine.progress.lr)

    def last_meta(self, engine: Engine, epoch: int) -> dict:
        return self._meta(epoch, engine.schedule.best, engine.progress.lr)


__all__ = ["RefineTrainConfig", "TrainSource", "train_prn"]
