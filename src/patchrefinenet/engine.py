"""One training engine for every model family: base segmentation models and PRN (docs/DESIGN.md,
"One training engine").

The engine owns what every run needs: the epoch loop with the authors' plateau rule and best-weight
reload (:class:`~patchrefinenet.training.PlateauSchedule`), atomic best/last checkpoints, the JSON
history, resume (one behaviour: a run continues only with the settings it started with, and a
changed one is refused with its name), refusal to replace an earlier run's weights, the stop on a
non-finite loss (the files of the last good epoch stay), progress bars, ``torchrun`` data
parallelism and bf16 autocast. A model family (:class:`Family`) supplies its objective, the
quantity it monitors and the wording of its records; hooks let it act around each epoch (the
scribble recipe's pCE → pCE + regulariser switch is one).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from data_utils.errors import InputError
from data_utils.io import remove_stale_temporaries, write_text_atomic
from data_utils.layout import RunFolders
from patchrefinenet.checkpoint import LoadedCheckpoint, load_checkpoint, load_weights_strict, save_checkpoint
from patchrefinenet.training import (Decision, DistInfo, PlateauSchedule, all_reduce_sum, autocast_context, barrier,
                                     broadcast_buffers, capture_rng_state, restore_rng_state)

log = logging.getLogger("patchrefinenet")

#: The probability threshold of the training-log IoUs, both families (the authors' ``p >= 0.5``,
#: docs/authors-refine.md §R10 and docs/authors-seg.md §S3).
LOG_THRESHOLD = 0.5


# --------------------------------------------------------------------------- one step, one pass

class StepOutput(NamedTuple):
    """One forward pass of an objective: the scalar to minimise, the probabilities (B, 1, H, W) it came
    from, optional named parts of the loss for the logs (e.g. ``pce``/``reg``, ``rs``/``reg``) and an
    optional second head (PRN's local decoder), tallied as ``iou_local``."""

    loss: torch.Tensor
    prob: torch.Tensor
    terms: dict | None = None
    local: torch.Tensor | None = None


def full_precision(device: torch.device):
    """Autocast off inside the block: losses run in float32 (BCE is unsafe under autocast)."""
    return torch.autocast(device_type=device.type, enabled=False)


def iou_counts(prob: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(|P∩Y|, |P∪Y|) with P = prob ≥ 0.5 and Y = target ≥ 0.5 (soft masks count from 0.5 on)."""
    pred, truth = prob.detach() >= LOG_THRESHOLD, target >= LOG_THRESHOLD
    inter = (pred & truth).sum()
    return inter, pred.sum() + truth.sum() - inter


class Tally:
    """Running sums of one pass, on the device (no host sync per batch).

    The loss and its terms are averaged per image (``per_image``, the base models) or per batch (PRN,
    the authors' epoch loss); IoUs are pooled over the pass with +1 smoothing; ``mae`` adds the mean
    absolute error against the target.
    """

    def __init__(self, device: torch.device, per_image: bool, mae: bool) -> None:
        self.device, self.per_image, self.mae = device, per_image, mae
        self.keys: list[str] | None = None
        self.acc: torch.Tensor | None = None
        self.count = 0  # images or batches
        self.pixels = 0

    @torch.no_grad()
    def update(self, out: StepOutput, target: torch.Tensor) -> None:
        weight = out.prob.shape[0] if self.per_image else 1
        values = {"loss": out.loss.detach().double() * weight}
        values.update((k, v.detach().double() * weight) for k, v in (out.terms or {}).items())
        values["inter"], values["union"] = iou_counts(out.prob, target)
        if out.local is not None:
            values["inter_local"], values["union_local"] = iou_counts(out.local, target)
        if self.mae:
            values["abs_err"] = (out.prob.detach().double() - target.double()).abs().sum()
        stacked = torch.stack([v.double() for v in values.values()])
        if self.acc is None:
            self.keys, self.acc = list(values), torch.zeros_like(stacked)
        self.acc += stacked
        self.count += weight
        self.pixels += out.prob.numel()

    def sums(self, reduce: bool = False) -> dict[str, float]:
        """The sums (one host sync), summed over ranks when ``reduce``."""
        if self.acc is None:
            return {"count": 0.0, "pixels": 0.0}
        total = torch.cat([self.acc, torch.tensor([self.count, self.pixels], dtype=torch.float64, device=self.device)])
        if reduce:
            total = all_reduce_sum(total)
        return dict(zip([*self.keys, "count", "pixels"], total.tolist()))

    def result(self, reduce: bool = False) -> dict[str, float]:
        """Loss and terms as means, ``iou`` (and ``iou_local``, ``mae``) from the pooled counts."""
        s = self.sums(reduce)
        n = max(s["count"], 1.0)
        counts = ("inter", "union", "inter_local", "union_local", "abs_err")
        out = {"loss": 0.0, **{k: s[k] / n for k in (self.keys or []) if k not in counts}}
        out["iou"] = (s.get("inter", 0.0) + 1) / (s.get("union", 0.0) + 1)
        if "inter_local" in s:
            out["iou_local"] = (s["inter_local"] + 1) / (s["union_local"] + 1)
        if self.mae:
            out["mae"] = s.get("abs_err", 0.0) / max(s["pixels"], 1.0)
        return out


# --------------------------------------------------------------------------- what a family supplies

@dataclass(frozen=True)
class Recipe:
    """The optimisation settings the engine applies (Adam and the plateau rule)."""

    lr: float
    max_epochs: int
    decay_after: int
    stop_after: int
    factor: float
    min_lr: float
    weight_decay: float = 0.0
    max_batches: int | None = None
    bf16: bool = False
    compile: bool = False
    progress: bool = True


@dataclass
class Progress:
    """Where a run stands after ``epoch`` completed epochs (stored in the resume file); ``extra``
    holds the family's own state (e.g. the scribble recipe's ``reg_start``)."""

    lr: float
    epoch: int = 0
    history: list = field(default_factory=list)
    stopped: str | None = None
    best_epoch: int | None = None
    extra: dict = field(default_factory=dict)


class Family:
    """A model family's part of a run. Subclasses set ``name``, ``paths``, ``model``, ``recipe``,
    ``config`` (stored in every checkpoint), ``target_key`` and ``per_image``, and implement
    :meth:`objective`, :meth:`train_batches` and :meth:`monitor`; the rest have defaults."""

    name: str
    paths: RunFolders
    model: nn.Module
    recipe: Recipe
    config: dict
    target_key: str = "mask"
    per_image: bool = True  # loss averaged per image (else per batch)
    mae: bool = False
    sign: float = 1.0  # the plateau rule minimises sign · monitored value

    # -- required
    def objective(self, net: nn.Module, batch: dict) -> StepOutput:
        raise NotImplementedError

    def train_batches(self, epoch: int, info: DistInfo) -> Iterable:
        """The training loader of ``epoch`` (its order a function of the seed and the epoch)."""
        raise NotImplementedError

    def monitor(self, train: dict, evaluated: dict) -> float:
        """The monitored value of an epoch (before ``sign``)."""
        raise NotImplementedError

    # -- optional
    def forward_module(self) -> nn.Module:
        """What the objective calls (DDP and torch.compile wrap it); the model itself by default."""
        return self.model

    def prepare(self, raw: Any, device: torch.device) -> dict:
        """A loader batch as a dict of tensors on ``device``."""
        return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in raw.items()}

    def evaluate(self, engine: "Engine", epoch: int) -> dict:
        """Numbers measured after the training pass (validation, held-out score); none by default."""
        return {}

    def on_epoch_start(self, engine: "Engine", epoch: int) -> None:
        """Called before the training pass of ``epoch`` (0-based)."""

    def after_decision(self, engine: "Engine", epoch: int, decision: Decision, actions: list[str]) -> Decision:
        """May amend the plateau decision of ``epoch`` (after the best weights were saved)."""
        return decision

    def stop_reason(self, engine: "Engine", no_improvement: bool) -> str:
        return "no_improvement" if no_improvement else "lr_below_min"

    def record(self, engine: "Engine", epoch: int, lr: float, train: dict, evaluated: dict, decision: Decision,
               actions: list[str], seconds: float) -> dict:
        """The history row of ``epoch`` (1-based) trained with ``lr``."""
        raise NotImplementedError

    def log_epoch(self, engine: "Engine", row: dict, train: dict, evaluated: dict, decision: Decision) -> None:
        log.info("epoch %d/%d: %s", row["epoch"], self.recipe.max_epochs, json.dumps(row))

    def best_meta(self, engine: "Engine", epoch: int, value: float, train: dict, evaluated: dict) -> dict:
        return {"epoch": epoch, "value": value}

    def last_meta(self, engine: "Engine", epoch: int) -> dict:
        return {"epoch": epoch}


# --------------------------------------------------------------------------- checks before a run

def refuse_overwrite(paths: RunFolders, resume: bool, overwrite: bool) -> None:
    """A new run (no resume) never replaces the weights an earlier run wrote, unless ``overwrite``."""
    if resume or overwrite:
        return
    existing = [p for p in (paths.weights, paths.last) if p.is_file()]
    if existing:
        raise InputError(f"{existing[0]} exists (an earlier run's weights); continue it with --resume True, "
                         f"replace it with --overwrite True, or write elsewhere with --output_root")


def read_resume_file(paths: RunFolders, load=load_checkpoint, device: Any = "cpu") -> LoadedCheckpoint:
    """``<name>_last.th`` with its training state, or an InputError saying why it cannot resume."""
    if not paths.last.is_file():
        raise InputError(f"--resume True: no resume file {paths.last}; start without --resume "
                         f"(it is written after the first completed epoch)")
    ck = load(paths.last, device)
    if not ck.training_state or "optimizer" not in ck.training_state or not ck.config:
        raise InputError(f"--resume: {paths.last} holds no training state; it is not a resume file")
    return ck


def setting_changes(saved: dict, now: dict) -> list[str]:
    """``"name: saved X, now Y"`` for every key of ``now`` whose value differs from ``saved``."""
    return [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in now.items() if saved.get(k) != v]


def refuse_changes(path, changes: list[str]) -> None:
    """The one resume rule: a run continues only with the settings and data it started with."""
    if changes:
        raise InputError(f"--resume: {path} was written with other settings or data ({'; '.join(changes)}); "
                         f"pass the saved values or start a new run without --resume")


def remove_leftovers(*folders) -> None:
    """Delete the temporary files a killed run left half-written in ``folders``."""
    for path in remove_stale_temporaries(*folders):
        log.info("removed %s (left by a run that was killed)", path)


# --------------------------------------------------------------------------- the engine

class Engine:
    """Runs a :class:`Family`'s epochs (see the module docstring). Under ``torchrun`` every rank runs
    it; rank 0 writes the files and the others wait where a file must exist for everyone."""

    def __init__(self, family: Family, info: DistInfo, resume_from: LoadedCheckpoint | None = None) -> None:
        self.family, self.info, self.device = family, info, info.device
        recipe = family.recipe
        self.model = family.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        self.schedule = PlateauSchedule(recipe.decay_after, recipe.stop_after, recipe.factor, recipe.min_lr)
        self.progress = Progress(lr=recipe.lr)
        self.bf16 = recipe.bf16
        self.resumed = resume_from is not None
        if resume_from is not None:
            self._resume(resume_from)
        module = family.forward_module()
        net = module
        if info.distributed:
            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if recipe.compile:
            net = torch.compile(net)
        self.net = net  # training passes
        self.eval_net = module if info.distributed else net  # evaluation: each rank alone, no DDP collectives

    def _resume(self, ck: LoadedCheckpoint) -> None:
        state = ck.training_state
        load_weights_strict(self.model, ck.state_dict, f"resume file {self.family.paths.last}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        known = {"lr", "epoch", "history", "stopped", "best_epoch", "optimizer", "schedule", "rng"}
        self.progress = Progress(float(state["lr"]), int(state["epoch"]), list(state["history"]), state.get("stopped"),
                                 state.get("best_epoch"), {k: v for k, v in state.items() if k not in known})
        restore_rng_state(state["rng"])

    # ------------------------------------------------------------------ one pass

    def run_pass(self, net: nn.Module, batches: Iterable, objective, *, train: bool, desc: str,
                 epoch: int) -> dict[str, float]:
        """One pass over ``batches``: trains when ``train`` (then the sums are reduced over ranks),
        else evaluates under no_grad. Returns the tallied means and IoUs."""
        family, recipe, device = self.family, self.family.recipe, self.device
        net.train(train)
        tally = Tally(device, family.per_image, family.mae)
        total = len(batches) if recipe.max_batches is None else min(len(batches), recipe.max_batches)
        bar = tqdm(batches, total=total, desc=desc, unit="batch", leave=False,
                   disable=not (recipe.progress and self.info.is_main))
        with torch.set_grad_enabled(train):
            for step, raw in enumerate(bar):
                if step >= total:
                    break
                batch = family.prepare(raw, device)
                if train:
                    self.optimizer.zero_grad(set_to_none=True)
                out = self._forward(net, objective, batch, epoch)
                if train:
                    out.loss.backward()
                    self.optimizer.step()
                tally.update(out, batch[family.target_key])
                if step % 10 == 0 or step == total - 1:  # the only host syncs of the loop
                    running = tally.result()
                    if not math.isfinite(running["loss"]):
                        raise self.diverged(epoch)
                    bar.set_postfix(loss=f"{running['loss']:.4f}", iou=f"{running['iou']:.4f}")
        bar.close()
        result = tally.result(reduce=train)
        if not math.isfinite(result["loss"]):
            raise self.diverged(epoch)
        return result

    def _forward(self, net: nn.Module, objective, batch: dict, epoch: int) -> StepOutput:
        try:
            with autocast_context(self.device, self.bf16):
                return objective(net, batch)
        except (InputError, RuntimeError):  # a loss refuses NaN inputs: if the weights diverged, say so
            if any(not bool(torch.isfinite(p).all()) for p in self.model.parameters()):
                raise self.diverged(epoch) from None
            raise

    def diverged(self, epoch: int) -> InputError:
        """The error that ends a run whose loss became non-finite; the files of the last good epoch stay."""
        paths = self.family.paths
        kept = " and ".join(str(p) for p in (paths.weights, paths.last) if p.is_file())
        return InputError(f"the training loss became non-finite in epoch {epoch + 1} (lr {self.family.recipe.lr:g}): "
                          f"the weights diverged; stopped, keeping {kept or 'no checkpoint (none was saved yet)'}; "
                          f"start again with a smaller --lr{' and --overwrite True' if kept else ''}")

    # ------------------------------------------------------------------ files

    def reload_best(self) -> None:
        """Load the best weights saved so far into the model (every rank reads the same file)."""
        ck = load_checkpoint(self.family.paths.weights, map_location=self.device)
        load_weights_strict(self.model, ck.state_dict, f"best weights {self.family.paths.weights}")

    def set_lr(self, lr: float) -> None:
        self.progress.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _save_best(self, epoch: int, value: float, train: dict, evaluated: dict) -> None:
        if self.info.is_main:
            save_checkpoint(self.family.paths.weights, self.model.state_dict(), self.family.config,
                            self.family.best_meta(self, epoch, value, train, evaluated))
        barrier()  # the file exists on every rank before anyone may reload it

    def _save_last(self) -> None:
        if not self.info.is_main:
            return
        p = self.progress
        state = {"lr": p.lr, "epoch": p.epoch, "history": p.history, "stopped": p.stopped,
                 "best_epoch": p.best_epoch, **p.extra, "optimizer": self.optimizer.state_dict(),
                 "schedule": self.schedule.state_dict(), "rng": capture_rng_state()}
        paths = self.family.paths
        save_checkpoint(paths.last, self.model.state_dict(), self.family.config,
                        self.family.last_meta(self, p.epoch), training_state=state)
        write_text_atomic(paths.history, "".join(json.dumps(row) + "\n" for row in p.history))

    # ------------------------------------------------------------------ the loop

    def run(self) -> Progress:
        """Train the remaining epochs; returns the final :class:`Progress`."""
        family, p = self.family, self.progress
        epochs = range(p.epoch, family.recipe.max_epochs) if p.stopped is None else range(0)
        bar = tqdm(epochs, initial=p.epoch, total=family.recipe.max_epochs, desc=f"{family.name} epochs",
                   unit="epoch", disable=not (family.recipe.progress and self.info.is_main))
        for epoch in bar:
            self.epoch(epoch)
            bar.set_postfix(value=f"{self.last_value:.5f}", best=f"{family.sign * self.schedule.best:.5f}")
            if p.stopped is not None:
                break
        bar.close()
        return p

    def epoch(self, epoch: int) -> None:
        """Train ``epoch`` (0-based), apply the plateau rule, record, write the files."""
        family, p = self.family, self.progress
        started = time.perf_counter()
        family.on_epoch_start(self, epoch)
        train = self.run_pass(self.net, family.train_batches(epoch, self.info), family.objective, train=True,
                              desc=f"train {epoch + 1}/{family.recipe.max_epochs}", epoch=epoch)
        broadcast_buffers(self.model)  # BN running stats: every rank now holds what rank 0 saves
        evaluated = family.evaluate(self, epoch)
        value = self.last_value = family.monitor(train, evaluated)
        lr = p.lr
        decision = self.schedule.step(family.sign * value, lr)
        actions: list[str] = []
        if decision.improved:
            p.best_epoch = epoch + 1
            self._save_best(epoch + 1, value, train, evaluated)
            actions.append("saved")
        decision = family.after_decision(self, epoch, decision, actions)
        if decision.stop:
            p.stopped = family.stop_reason(self, self.schedule.counter > family.recipe.stop_after)
            actions.append(f"stop ({p.stopped})")
        elif decision.reload_best:  # as the authors: weights only, the Adam state is kept
            self.reload_best()
            self.set_lr(decision.new_lr)
            actions.append(f"reloaded best, lr -> {p.lr:.3g}")
        row = family.record(self, epoch + 1, lr, train, evaluated, decision, actions,
                            round(time.perf_counter() - started, 3))
        p.history.append(row)
        p.epoch = epoch + 1
        family.log_epoch(self, row, train, evaluated, decision)
        self._save_last()

    @property
    def best_value(self) -> float | None:
        """The best monitored value (in the family's own sign), None before any epoch."""
        best = self.schedule.best
        return self.family.sign * best if math.isfinite(best) else None


__all__ = ["Engine", "Family", "LOG_THRESHOLD", "Progress", "Recipe", "StepOutput", "Tally", "full_precision",
           "iou_counts", "read_resume_file", "refuse_changes", "refuse_overwrite", "remove_leftovers",
           "setting_changes"]
