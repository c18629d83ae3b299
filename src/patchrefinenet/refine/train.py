"""PRN training (docs/authors-refine.md §R7): Adam, the authors' plateau rule (on the training loss, or
with held-out selection on the held-out score, docs/refiner.md), atomic checkpoints, bit-exact resume,
and ``torchrun`` data parallelism.

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
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from data_utils.arrays import open_maps
from data_utils.errors import InputError
from data_utils.io import remove_stale_temporaries, write_text_atomic
from data_utils.provenance import changed_inputs, fingerprint, read_provenance
from data_utils.pseudo_labels import generate_pseudo_label_file, pseudo_label_staleness
from patchrefinenet.checkpoint import load_checkpoint, load_weights_strict, save_checkpoint
from patchrefinenet.losses import PRNLoss
from patchrefinenet.maps import MapSource, as_source
from patchrefinenet.models.prn import PRN, GridChoice, PRNConfig, load_prn, resolve_grid
from patchrefinenet.refine.config import DEFAULTS, RefineTrainConfig
from patchrefinenet.refine.data import (
    TRAIN_GT, TRAIN_INPUTS, NpyMaps, RefineDataset, RefineOutputs, generator_hint, pseudo_label_name, require_arrays,
)
from patchrefinenet.refine.heldout import (EpochSubset, PairDataset, final_selection, halves, make_selector,
                                           split_for_selection)
from patchrefinenet.selection import Selection
from patchrefinenet.training import (
    DistInfo, PlateauSchedule, all_reduce_sum, autocast_context, barrier, broadcast_buffers, capture_rng_state,
    cleanup_distributed,
    init_distributed, log_to_file, resolve_device, restore_rng_state, seed_everything,
)

log = logging.getLogger("patchrefinenet")

# Settings that define the optimisation trajectory: a resumed run must use the saved values.
_RUN_KEYS = ("width", "row7_quirk", "residual", "select", "select_metric", "lr", "batch_size", "shuffle",
             "decay_after", "stop_after", "lr_factor", "min_lr", "augment", "patch_bn_stats", "upstream_order", "seed",
             "max_batches_per_epoch")




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
        return _Run(cfg, info, dataset_spec, source).run()
    finally:
        if owns_group and info.distributed:
            cleanup_distributed()


class _Run:
    """One training run; split into steps so each reads on its own."""

    def __init__(self, cfg: RefineTrainConfig, info: DistInfo, dataset_spec: dict | None,
                 source: TrainSource | None = None) -> None:
        self.cfg, self.info, self.device = cfg, info, info.device
        self.dataset_spec, self.source, self.selector = dataset_spec, source, None
        self.cuda = self.device.type == "cuda"
        self.bf16 = cfg.bf16 and self.cuda
        self.channels_last = cfg.channels_last and self.cuda
        if source is not None:
            self.choice, (h, w) = source.choice, source.image_size
            self.inputs = self.gt = self.pseudo = None
            self.out = RefineOutputs(Path(cfg.output_root), self.choice.aux_name)
            self.prn_config = PRNConfig(grid=self.choice.grid, width=cfg.width, row7_quirk=cfg.row7_quirk,
                                        residual=cfg.residual, step_bn=cfg.step_bn)
            self.config_record = self._config_record(len(source.probs), h, w)
            return
        data = Path(cfg.data_dir)
        self.inputs, self.gt = data / TRAIN_INPUTS, data / TRAIN_GT
        require_arrays({"PRN inputs": self.inputs, "ground truth": self.gt}, generator_hint(cfg.dataset, cfg.base_model))
        n, h, w = NpyMaps(self.inputs, "inputs").shape
        self.choice: GridChoice = resolve_grid(cfg.aux_model, cfg.patch_size, image_size=h)
        if h != w and self.choice.grid > 0:
            log.warning("maps are %d×%d (not square): the PRN patch grid (padded size / %d) and the %d-px "
                        "pseudo-label patches do not coincide along the width", h, w, self.choice.grid, self.choice.patch_size)
        self.pseudo = data / pseudo_label_name(self.choice.patch_size)
        self.out = RefineOutputs(Path(cfg.output_root), self.choice.aux_name)
        self.prn_config = PRNConfig(grid=self.choice.grid, width=cfg.width, row7_quirk=cfg.row7_quirk,
                                    residual=cfg.residual, step_bn=cfg.step_bn)
        self.config_record = self._config_record(n, h, w)

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

    def _resume(self, model: PRN, optimizer: torch.optim.Optimizer, schedule: PlateauSchedule) -> dict:
        """Load ``<aux>_last.th`` into model/optimizer/schedule; return its training state."""
        if not self.out.last.is_file():
            raise InputError(f"--resume True: no resume file {self.out.last}; start without --resume "
                             f"(it is written after the first completed epoch)")
        ck = load_checkpoint(self.out.last, map_location=self.device)
        ts = ck.training_state
        if ts is None or "optimizer" not in ts:
            raise InputError(f"{self.out.last} holds no training state; it is not a resume file")
        saved_model = (ck.config or {}).get("model", {})
        # a key missing from an older file had its default value then (e.g. ``residual``)
        # (files from before held-out selection existed trained on every map: their select was 0)
        saved_train = {**DEFAULTS, "select": 0.0, **(ck.config or {}).get("train", {})}
        diffs = [f"{k}: saved {saved_train.get(k)!r}, now {getattr(self.cfg, k)!r}"
                 for k in _RUN_KEYS if saved_train.get(k) != getattr(self.cfg, k)]
        if saved_model.get("grid") != self.prn_config.grid:
            diffs.insert(0, f"grid: saved {saved_model.get('grid')!r}, now {self.prn_config.grid}")
        if saved_model.get("step_bn", False) != self.prn_config.step_bn:  # files before step_bn had none
            diffs.append(f"step_bn: saved {saved_model.get('step_bn', False)!r}, now {self.prn_config.step_bn!r}")
        diffs += self._data_changes((ck.config or {}).get("dataset") or {})
        if diffs:
            raise InputError(f"--resume: {self.out.last} was written with other settings or data ({'; '.join(diffs)}); "
                             f"pass the saved values or start a new run without --resume")
        load_weights_strict(model, ck.state_dict, f"resume file {self.out.last}")
        optimizer.load_state_dict(ts["optimizer"])
        schedule.load_state_dict(ts["schedule"])
        restore_rng_state(ts["rng"])
        log.info("resumed from %s after epoch %d (best loss %.6f, lr %.3g)", self.out.last, ts["epoch"],
                 schedule.best, ts["lr"])
        return ts

    def _data_changes(self, saved: dict) -> list[str]:
        """What differs between the data a resume file was trained on and the data now."""
        now = self.config_record["dataset"]
        diffs = [f"{key}: saved {saved.get(key)!r}, now {now[key]!r}"
                 for key in ("n_images", "image_size", "patch_size") if key in saved and saved[key] != now[key]]
        files = {"inputs": self.inputs, "ground_truth": self.gt}
        check = "fingerprints" in saved and self.source is None and not diffs
        changed = changed_inputs(saved["fingerprints"], files) if check else []
        return diffs + [f"{files[k].name} changed since the run started" for k in changed]

    # ------------------------------------------------------------------ main loop

    def _refuse_overwrite(self) -> None:
        """A new run (no --resume) never replaces weights an earlier run wrote, unless --overwrite True."""
        if self.cfg.resume or self.cfg.overwrite:
            return
        existing = [p for p in (self.out.weights, self.out.last) if p.is_file()]
        if existing:
            raise InputError(f"{existing[0]} exists (an earlier run's weights); continue it with --resume True, "
                             f"replace it with --overwrite True, or write elsewhere with --output_root")

    def run(self) -> dict:
        cfg, info = self.cfg, self.info
        self._refuse_overwrite()
        if info.is_main:  # what a killed earlier run left half-written
            folders = [self.out.checkpoint_dir, self.out.log_dir] + ([] if self.source else [Path(cfg.data_dir)])
            for path in remove_stale_temporaries(*folders):
                log.info("removed %s (left by a run that was killed)", path)
        self._ensure_pseudo_labels()
        dataset, (h, w) = self._datasets()
        n = len(dataset)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        log_file = self.out.train_log(stamp) if info.is_main else None
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
            result = self._loop(dataset)
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

    def _loop(self, dataset: RefineDataset) -> dict:
        cfg, info, device = self.cfg, self.info, self.device
        model = self._build_model()
        log.info("PRN %s: %.2fM parameters", self.prn_config, sum(p.numel() for p in model.parameters()) / 1e6)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        schedule = PlateauSchedule(cfg.decay_after, cfg.stop_after, cfg.lr_factor, cfg.min_lr)
        history: list[dict] = []
        start, stopped, lr = 0, None, cfg.lr
        if cfg.resume:
            ts = self._resume(model, optimizer, schedule)
            start, stopped, lr, history = int(ts["epoch"]), ts.get("stopped"), float(ts["lr"]), list(ts["history"])
        if info.is_main:  # only now: a run refused above leaves the files of the earlier run as they were
            write_text_atomic(self.out.train_config, json.dumps(self.config_record, indent=2, sort_keys=True) + "\n")
        net = model
        if info.distributed:
            net = DistributedDataParallel(model, device_ids=[device.index] if self.cuda else None)
        if cfg.compile:
            net = torch.compile(net)
        sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=cfg.shuffle,
                                     seed=cfg.seed, drop_last=False)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                            pin_memory=self.cuda, persistent_workers=False)
        loss_fn = PRNLoss(upstream_order=cfg.upstream_order, check_values=False)
        if stopped:
            log.info("the resumed run had already stopped (%s); nothing to do", stopped)
        elif start >= cfg.epochs:
            log.info("the resumed run already completed %d epochs (--epochs %d); nothing to do", start, cfg.epochs)
        epoch = start
        while not stopped and epoch < cfg.epochs:
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            t0 = time.perf_counter()
            stats = self._train_epoch(net, loader, optimizer, loss_fn, epoch)
            broadcast_buffers(model)  # BN running stats: every rank now holds what rank 0 saves
            epoch += 1
            loss = stats["loss"]
            if self.selector is not None:  # held-out selection: the plateau rule follows -score
                model.set_batch_statistics(False).eval()
                stats["select"], details = self.selector(model)
                stats["select_best"] = details.get("best")
                model.set_batch_statistics(cfg.patch_bn_stats)
            decision = schedule.step(-stats["select"] if self.selector is not None else loss, lr)
            record = {"epoch": epoch, "loss": loss, "lr": lr, **{k: v for k, v in stats.items() if k != "loss"},
                      "time": round(time.perf_counter() - t0, 3), "improved": decision.improved,
                      "reload_best": decision.reload_best, "stop": decision.stop}
            history.append(record)
            if decision.improved:
                self._save_best(model, epoch, loss, lr)
            if decision.stop:
                stopped = (f"no improvement for {schedule.counter} epochs" if schedule.counter > cfg.stop_after
                           else f"lr {lr:.3g} < min_lr {cfg.min_lr:.3g}")
            elif decision.reload_best:
                ck = load_checkpoint(self.out.weights, map_location=device)  # every rank reads the same file
                load_weights_strict(model, ck.state_dict, f"best weights {self.out.weights}")
                lr = decision.new_lr
                for group in optimizer.param_groups:
                    group["lr"] = lr
            if decision.improved:
                outcome = "best so far, saved"
            elif decision.reload_best:
                outcome = f"reloaded the best weights, lr -> {lr:.3g}"
            else:
                outcome = f"stop: {stopped}" if stopped else f"{schedule.counter} without improvement"
            local = f", local iou {stats['iou_local']:.4f}" if "iou_local" in stats else ""
            if "select" in stats:
                local += f", held-out {stats['select']:.4f} ({stats['select_best']})"
            log.info("epoch %d/%d: loss %.6f, iou %.4f%s, lr %.3g, %.1fs (%s)", epoch, cfg.epochs, loss, stats["iou"],
                     local, record["lr"], record["time"], outcome)
            self._save_last(model, optimizer, schedule, epoch, lr, history, stopped)
        best = schedule.best if math.isfinite(schedule.best) else None
        model.set_batch_statistics(False).eval()  # a plain eval-mode model for the caller
        return {"best_loss": best, "epochs_run": epoch, "checkpoint": str(self.out.weights), "last": str(self.out.last),
                "history": history, "stopped": stopped, "aux": self.choice.aux_name, "grid": self.choice.grid,
                "history_file": str(self.out.history), "model": model}

    def _train_epoch(self, net, loader: DataLoader, optimizer, loss_fn: PRNLoss, epoch: int) -> dict:
        """One pass; returns the epoch's mean loss and pooled training IoUs (≥ 0.5, +1 smoothing), averaged over ranks."""
        cfg, device = self.cfg, self.device
        net.train()
        total = len(loader) if cfg.max_batches_per_epoch is None else min(len(loader), cfg.max_batches_per_epoch)
        keys = ["loss", "rs", "reg", "inter", "union", "inter_local", "union_local"]
        sums = dict.fromkeys(["batches"] + keys, 0.0)
        acc = torch.zeros(len(keys), dtype=torch.float64, device=device)  # summed on the device
        bar = tqdm(loader, total=total, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=not (cfg.progress and self.info.is_main))
        for step, batch in enumerate(bar):
            if step >= total:
                break
            x = batch["input"].to(device, non_blocking=True)
            pseudo = batch["pseudo"].to(device, non_blocking=True)
            gt = batch["gt"].to(device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(device, self.bf16):
                global_prob, local_prob = net(x)
            # the loss runs in float32 (BCE is unsafe under autocast)
            try:
                parts = loss_fn(global_prob.float(), None if local_prob is None else local_prob.float(), pseudo, gt)
            except (InputError, RuntimeError):  # BCE refuses NaN inputs
                if not bool(torch.isfinite(global_prob.detach()).all()):  # the weights diverged: say so
                    raise self._diverged(epoch) from None
                raise
            parts["loss"].backward()
            optimizer.step()
            with torch.no_grad():  # no host sync here: the sums stay on the device
                counts = _iou_counts(global_prob, gt) + (_iou_counts(local_prob, gt) if local_prob is not None else [])
                values = torch.stack([t.double() for t in (parts["loss"].detach(), parts["rs"], parts["reg"], *counts)])
                acc[: len(values)] += values
            sums["batches"] += 1
            if step % 10 == 0 or step == total - 1:  # the only host syncs of the loop
                sums.update(zip(keys, acc.tolist()))
                if not math.isfinite(sums["loss"]):
                    raise self._diverged(epoch)
                bar.set_postfix(loss=f"{sums['loss'] / sums['batches']:.4f}",
                                iou=f"{(sums['inter'] + 1) / (sums['union'] + 1):.4f}")
        bar.close()
        sums.update(zip(keys, acc.tolist()))
        if not math.isfinite(sums["loss"]):
            raise self._diverged(epoch)
        names = list(sums)
        reduced = dict(zip(names, all_reduce_sum(torch.tensor([sums[k] for k in names], dtype=torch.float64,
                                                                device=device)).tolist()))
        n = max(reduced["batches"], 1.0)
        out = {"loss": reduced["loss"] / n, "rs": reduced["rs"] / n, "reg": reduced["reg"] / n,
               "iou": (reduced["inter"] + 1) / (reduced["union"] + 1)}
        if self.choice.grid > 0:
            out["iou_local"] = (reduced["inter_local"] + 1) / (reduced["union_local"] + 1)
        return out

    def _diverged(self, epoch: int) -> InputError:
        """The error that ends a run whose loss became non-finite; the files of the last good epoch stay."""
        kept = " and ".join(str(p) for p in (self.out.weights, self.out.last) if p.is_file())
        return InputError(f"the training loss became non-finite in epoch {epoch + 1} (lr {self.cfg.lr:g}): the "
                          f"weights diverged; stopped, keeping {kept or 'no checkpoint (none was saved yet)'}; "
                          f"start again with a smaller --lr{' and --overwrite True' if kept else ''}")

    # ------------------------------------------------------------------ files

    def _meta(self, epoch: int, best: float, lr: float) -> dict:
        return {"epoch": epoch, "best_loss": best, "lr": lr, "aux": self.choice.aux_name,
                "grid_reading": self.choice.description, "patch_size": self.choice.patch_size,
                "seed": self.cfg.seed, "world_size": self.info.world_size,
                "torch": str(torch.__version__)}  # a plain str: TorchVersion does not load with weights_only

    def _save_best(self, model: PRN, epoch: int, loss: float, lr: float) -> None:
        if self.info.is_main:
            save_checkpoint(self.out.weights, model.state_dict(), self.config_record, self._meta(epoch, loss, lr))
        barrier()  # the file exists on every rank before anyone may reload it

    def _save_last(self, model, optimizer, schedule: PlateauSchedule, epoch: int, lr: float, history: list,
                   stopped: str | None) -> None:
        if not self.info.is_main:
            return
        state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                 "history": history, "rng": capture_rng_state(), "lr": lr, "stopped": stopped}
        save_checkpoint(self.out.last, model.state_dict(), self.config_record,
                        self._meta(epoch, schedule.best, lr), training_state=state)
        write_text_atomic(self.out.history, "".join(json.dumps(r) + "\n" for r in history))


def _iou_counts(prob: torch.Tensor, gt: torch.Tensor) -> list[torch.Tensor]:
    """[|P∩Y|, |P∪Y|] with P = prob ≥ 0.5 (the authors' training-log threshold, docs/authors-refine.md §R10)."""
    pred = prob.detach() >= 0.5
    truth = gt >= 0.5
    inter = (pred & truth).sum()
    union = pred.sum() + truth.sum() - inter
    return [inter, union]


__all__ = ["RefineTrainConfig", "TrainSource", "train_prn"]
