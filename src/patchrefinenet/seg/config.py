"""The settings of a base-model training run, each declared once: a field with its default and its help.

Torch-free, so that a script's ``--help`` answers at once: ``seg-models/train.py`` builds its options
from these fields (:func:`patchrefinenet.cli.fields.add_field_options`), the engine reads the
dataclass, and ``dataset.toml``'s ``[train]`` table fills the recipe settings left at None
(``epochs``, ``batch_size``, ``lr``; on resume, the run's own). Adding a setting means adding one
field here (docs/DESIGN.md, "One source per setting").
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from data_utils.errors import InputError

#: ``--supervision`` choices (= patchrefinenet.seg.train.SUPERVISION_MODES; a test keeps them equal).
SUPERVISION_MODES = ("full", "scribbles")
#: ``--reg_loss`` choices (= the keys of patchrefinenet.rloss.REGULARIZERS; a test keeps them equal).
REG_LOSSES = ("densecrf", "ncut", "size", "none")
#: The fields that describe scribble supervision (given only with ``supervision="scribbles"``).
SCRIBBLE_FIELDS = ("reg_loss", "reg_weight", "pce_epochs", "sigma_rgb", "sigma_xy", "reg_scale", "size_bounds",
                   "balanced_pce")


def _f(default: Any, help: str, run: bool = False, **cli: Any) -> Any:
    """A dataclass field with a default, its command-line help and optional argparse keywords
    (``flags`` to respell the option, ``shown`` to say what the default means, ``choices``,
    ``nargs``, ``metavar``, ``action``). ``run``: the setting shapes the optimisation trajectory, so
    a resumed run refuses another value than the run's (:data:`RUN_FIELDS`)."""
    return field(default=default, metadata={"help": help, "cli": cli, "run": run})


@dataclass(frozen=True)
class SegTrainConfig:
    """Every setting of a base-model training run (primitives only).

    ``data_root`` holds ``<ds>/seg-models/``; ``output_root`` gets ``checkpoints/<model>/`` and
    ``logs/<model>/``. The recipe (loss, Adam, plateau rule) comes from the dataset config
    (docs/authors-seg.md §S3); ``epochs``, ``batch_size`` and ``lr`` override it when given.
    """

    data_root: str
    output_root: str
    model: str = _f("", "base model: dlinknet (DeepGlobe), pfanet (DUTS) or resunetplusplus (Kvasir)")
    seed: int = _f(0, "seeds initialisation, shuffling and augmentation", run=True)
    epochs: int | None = _f(None, "max epochs", shown="the recipe's; on --resume the run's")
    batch_size: int | None = _f(None, "batch size", run=True, shown="the recipe's")
    lr: float | None = _f(None, "initial learning rate", run=True, shown="the recipe's")
    pretrained: bool = _f(True, "start the backbone from random weights instead of ImageNet",
                          flags=("--no-pretrained",), action="store_false")
    model_width: int | None = _f(None, "ResUNet++ only: width of the first level (authors: 32; 8 trains on a CPU)",
                                 run=True)
    checkpoint: bool = _f(False, "start from saved weights (<model>_weights.th or --checkpoint_path) with a fresh "
                                 "optimizer, as the authors' --checkpoint")
    checkpoint_path: str | None = _f(None, "weights file for --checkpoint True")
    resume: bool = _f(False, "continue an interrupted run from checkpoints/<model>/<model>_last.th")
    overwrite: bool = _f(False, "replace the weights of an earlier run under checkpoints/<model>/ (False: refuse)")
    max_batches_per_epoch: int | None = _f(None, "cap on train and val batches per epoch (smoke tests)")
    num_workers: int = _f(0, "data-loading worker processes")
    compile: bool = _f(False, "torch.compile the model (opt-in; the first batches compile)")
    bf16: bool = _f(False, "bf16 autocast of the forward passes (CUDA only; the losses stay float32)")
    device: str = _f("auto", "auto (cuda if available), cpu, cuda or cuda:<index>")
    progress: bool = _f(True, "show progress bars")
    supervision: str | None = _f(None, "full: the masks and the dataset's loss; scribbles: pCE + regulariser",
                              choices=SUPERVISION_MODES, shown="full, or on --resume the run's own")
    reg_loss: str | None = _f(None, "regulariser: densecrf (normalised DenseCRF/Potts energy), ncut (normalised "
                                    "cut), size (area bounds, needs --size_bounds), none (pCE only)",
                              flags=("--reg_loss", "--reg-loss"), choices=REG_LOSSES, shown="densecrf")
    reg_weight: float | None = _f(None, "weight of the regulariser", flags=("--reg_weight", "--reg-weight"),
                                  shown="densecrf 1.0, ncut 1.0, size 0.01")
    pce_epochs: int | None = _f(None, "first K epochs with pCE alone, then the best pCE weights + the regulariser "
                                      "(rloss's two-phase Caffe recipe); 0 = both from the start (rloss's PyTorch "
                                      "recipe)", flags=("--pce_epochs", "--pce-epochs"), shown=0)
    sigma_rgb: float | None = _f(None, "DenseCRF/ncut colour bandwidth, RGB 0-255 units", shown="15, rloss")
    sigma_xy: float | None = _f(None, "DenseCRF/ncut spatial bandwidth in input pixels",
                                shown="100 x input_size / 512, rloss's 100 px at 513-px crops")
    reg_scale: float | None = _f(None, "the regulariser runs at this fraction of the input size", shown="0.5, rloss")
    size_bounds: tuple[float, float] | None = _f(None, "--reg_loss size: foreground area bounds as fractions of "
                                                       "the image", nargs=2, metavar=("LOWER", "UPPER"))
    balanced_pce: bool | None = _f(None, "average the pCE per class, so sparse foreground strokes weigh as much as "
                                         "the background ones (not in rloss; docs/rloss.md §L6.1)",
                                   shown="False, rloss's plain pCE")
    model_kwargs: dict | None = _f(None, "constructor arguments of the model (Python API only; --model_width on "
                                         "the command line)")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_batches_per_epoch"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InputError(f"--{name} must be a positive integer, got {value!r}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be a positive number, got {self.lr!r}")
        if self.resume and self.checkpoint:
            raise InputError("--resume continues an interrupted run and --checkpoint starts from saved weights; "
                             "give one")
        if self.checkpoint_path is not None and not self.checkpoint:
            raise InputError("--checkpoint_path is used with --checkpoint True; add it or drop --checkpoint_path")
        if self.model_width is not None and self.model_width < 1:
            raise InputError(f"--model_width must be >= 1, got {self.model_width}")
        given = [name for name in SCRIBBLE_FIELDS if getattr(self, name) is not None]
        if self.supervision != "scribbles" and given:
            raise InputError(f"{', '.join(f'--{k}' for k in given)} apply to --supervision scribbles; "
                             f"add it or drop them")

    def supervision_settings(self) -> dict | None:
        """The :class:`~patchrefinenet.seg.train.Supervision` fields given, None when ``supervision`` is None."""
        if self.supervision is None:
            return None
        given = {k: getattr(self, k) for k in SCRIBBLE_FIELDS if getattr(self, k) is not None}
        if "size_bounds" in given:
            given["size_bounds"] = tuple(given["size_bounds"])
        return {"mode": self.supervision, **given}

    def recipe_overrides(self) -> dict[str, Any]:
        """The dataset recipe's settings this run overrides (``max_epochs``, ``batch_size``, ``lr``)."""
        pairs = (("max_epochs", self.epochs), ("batch_size", self.batch_size), ("lr", self.lr))
        return {k: v for k, v in pairs if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Settings that define the optimisation trajectory: given on resume, they must equal the run's.
RUN_FIELDS = tuple(f.name for f in fields(SegTrainConfig) if f.metadata.get("run"))

__all__ = ["REG_LOSSES", "RUN_FIELDS", "SCRIBBLE_FIELDS", "SUPERVISION_MODES", "SegTrainConfig"]
