"""The settings of a PRN training run, each declared once: a field with its default and its help.

Torch-free, so that a script's ``--help`` answers at once: the ``refine-models/train.py`` parser and
the ``patchrefinenet fit`` command build their options from these fields
(:func:`patchrefinenet.cli.fields.add_field_options`), the engine reads the dataclass, and every
checkpoint stores it. Adding a setting means adding one field here.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from data_utils.errors import InputError

#: Held-out selection metrics (docs/refiner.md).
METRICS = ("pooled_iou", "dice")


def _f(default: Any, help: str, run: bool = False) -> Any:
    """A dataclass field with a default and its command-line help; ``run``: the setting shapes the
    optimisation trajectory, so a resumed run must keep the saved value (:data:`RUN_FIELDS`)."""
    return field(default=default, metadata={"help": help, "run": run})


@dataclass(frozen=True)
class RefineTrainConfig:
    """Every setting of a PRN training run (primitives only; saved in every checkpoint).

    data_dir holds ``val_pred.npy``, ``val_orig_gt.npy`` and the pseudo-labels; output_root gets
    ``checkpoints/<aux>/`` and ``logs/<aux>/``. The grid comes from ``aux_model`` (``p0``, ``p4``,
    ``p16``, ``p64``, ...) or ``patch_size`` (pixels). Training defaults are the authors'
    (docs/authors-refine.md §R7); held-out selection (``select`` > 0) is ours (docs/refiner.md).
    """

    data_dir: str
    output_root: str
    aux_model: str | None = _f(None, "pN, N = number of patches: p0 (global only), p4 (2×2), p16 (4×4), p64 (8×8)")
    patch_size: int | None = _f(None, "patch side in pixels instead of --aux_model")
    width: int = _f(32, "PRN base width (the paper: 32)", run=True)
    row7_quirk: bool = _f(False, "the authors' P64 row-7 wiring (docs/authors-refine.md §R3.4); only for "
                                 "fine-tuning their p64 file", run=True)
    residual: bool = _f(False, "heads add a correction to the logit of the base probability, starting from zero "
                               "(PRN begins as the base map; not in the paper)", run=True)
    step_bn: bool = _f(True, "the recurrent blocks' BatchNorm keeps running statistics per application, so eval "
                             "mode is reliable (not in the paper)")
    select: float = _f(0.2, "share of the labelled maps held out to choose the epoch and the output rule, with a "
                            "fallback to the base map's best global threshold if PRN does not beat it "
                            "(docs/refiner.md); 0 = the authors' behaviour", run=True)
    select_metric: str = _f("pooled_iou", "held-out selection metric: pooled_iou or dice", run=True)
    margin: float = _f(0.005, "gain over the base map's best global threshold PRN must show on the held-out maps "
                              "(0.005 = half a point)")
    confidence: float = _f(0.9, "PRN is kept only if, resampling the held-out maps, it beats the base map with this "
                                "confidence (one-sided bootstrap bound); 0 = the margin alone")
    force_prn: bool = _f(False, "keep the best PRN rule even if it loses to the base map")
    epochs: int = _f(300, "max epochs")
    lr: float = _f(8e-4, "initial Adam learning rate", run=True)
    batch_size: int = _f(1, "maps per step", run=True)
    shuffle: bool = _f(True, "shuffle the maps every epoch", run=True)
    decay_after: int = _f(4, "plateau rule: epochs without improvement before reloading the best weights and "
                             "dividing the lr (the 5th non-improving epoch)", run=True)
    stop_after: int = _f(8, "plateau rule: epochs without improvement before stopping (the 9th)", run=True)
    lr_factor: float = _f(1.1, "plateau rule: lr divisor", run=True)
    min_lr: float = _f(5e-8, "plateau rule: stop once the lr falls below this", run=True)
    augment: bool = _f(True, "flips and rot90, as the authors", run=True)
    patch_bn_stats: bool = _f(True, "per-patch BatchNorm statistics in the local decoder during training, as the "
                                    "authors", run=True)
    upstream_order: bool = _f(False, "the authors' swapped loss arguments (analysis only: it does not train)", run=True)
    seed: int = _f(0, "seeds initialisation, shuffling, augmentation and the held-out split", run=True)
    device: str = _f("auto", "auto (cuda if available), cpu, cuda or cuda:<index>")
    bf16: bool = _f(False, "bf16 autocast (CUDA only)")
    channels_last: bool = _f(False, "channels-last memory format (CUDA only)")
    compile: bool = _f(False, "torch.compile the training forward (opt-in; the first batches compile)")
    num_workers: int = _f(0, "data-loading worker processes")
    max_batches_per_epoch: int | None = _f(None, "cap on batches per epoch (smoke tests)", run=True)
    resume: bool = _f(False, "continue an interrupted run from checkpoints/<aux>/<aux>_last.th")
    overwrite: bool = _f(False, "replace the weights of an earlier run in the output folder")
    init_checkpoint: str | None = _f(None, "start from these weights (ours or the authors' bare files)")
    dataset: str = _f("", "dataset name, for the logs")
    base_model: str = _f("", "base model name, for the logs")
    progress: bool = _f(True, "show progress bars")

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise InputError(f"--{key} must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "lr_factor"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise InputError(f"--{key} must be a finite number > 0, got {getattr(self, key)}")
        if not (math.isfinite(self.min_lr) and self.min_lr >= 0):
            raise InputError(f"min_lr must be a finite number >= 0, got {self.min_lr}")
        for key in ("seed", "num_workers", "decay_after", "stop_after"):
            if getattr(self, key) < 0:
                raise InputError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.max_batches_per_epoch is not None and self.max_batches_per_epoch < 1:
            raise InputError(f"--max_batches_per_epoch must be >= 1, got {self.max_batches_per_epoch}")
        if self.resume and self.init_checkpoint:
            raise InputError("--resume continues <aux>_last.th; it cannot be combined with --checkpoint True "
                             "(initialising from other weights)")
        if not 0 <= self.select < 1:
            raise InputError(f"--select {self.select}: the held-out share must be in [0, 1) (0 = none, the authors')")
        if self.select_metric not in METRICS:
            raise InputError(f"--select_metric {self.select_metric!r}: choose one of {', '.join(METRICS)}")
        if not 0 <= self.confidence < 1:
            raise InputError(f"--confidence {self.confidence}: must be in [0, 1) (0.9 = a 90 % one-sided bound)")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise InputError(f"--margin {self.margin}: must be a finite number >= 0 (0.005 = half a point)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The selection settings, named arguments of ``Refiner.fit``.
SELECTION_FIELDS = ("select", "select_metric", "margin", "force_prn")
#: Fields ``Refiner.fit`` sets itself or takes as named arguments (the rest are its ``**train`` keywords).
OWN_FIELDS = {"data_dir", "output_root", "aux_model", "patch_size", "dataset", "base_model", "progress",
              *SELECTION_FIELDS}

#: Settings that define the optimisation trajectory: a resumed run must use the saved values.
RUN_FIELDS = tuple(f.name for f in fields(RefineTrainConfig) if f.metadata.get("run"))

#: Default value of every field that has one (resume files from older versions may lack new keys).
DEFAULTS = {f.name: f.default for f in fields(RefineTrainConfig) if f.default is not MISSING}

__all__ = ["DEFAULTS", "METRICS", "OWN_FIELDS", "RUN_FIELDS", "RefineTrainConfig", "SELECTION_FIELDS"]
