"""Per-dataset configuration: :class:`DatasetSpec`, read from ``src/<ds>/dataset.toml``.

Everything that differs between DeepGlobe, DUTS and Kvasir (file layout, sizes, channel order,
normalisation, mask handling, model and checkpoint names, the authors' training recipes) is data
in one TOML file per dataset; the code is shared. The spec is a frozen dataclass, so
``dataclasses.replace(spec, input_size=64)`` gives a validated variant (the demo uses that), and
``spec.to_dict()`` gives plain primitives to store inside checkpoints
(``DatasetSpec.from_dict`` reads them back). The path helpers at the end say where a dataset's
raw files and split CSVs live under a data root. No torch, no OpenCV here: the split and
download command lines start fast.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from data_utils import layout
from data_utils.errors import InputError

DATASET_NAMES = ("deepglobe", "DUTS", "kvasir")
LAYOUTS = ("deepglobe", "duts", "kvasir")
CHANNEL_ORDERS = ("bgr", "rgb")
NORMALISATIONS = ("deepglobe", "imagenet", "unit")
MASK_MODES = ("binary", "soft_max")
LOSSES = ("dice_bce", "edge_saliency")
MONITORS = ("val_loss", "val_mae")
AUGMENTATIONS = ("deepglobe", "duts", "kvasir", "none")
AUX_MODELS = ("p0", "p4", "p64")
SPLITS = ("train", "val", "test")
CSV_HEADER = ("img", "target")
_DUTS_PART = {"train": "DUTS-TR", "val": "DUTS-TE", "test": "DUTS-TE"}


def repo_root() -> Path:
    """The repository root (the folder holding ``data_utils/`` and ``src/``)."""
    return Path(__file__).resolve().parents[1]


def resolve_dataset_name(name: str) -> str:
    """Map a dataset name, case-insensitively, to its folder spelling (``duts`` → ``DUTS``)."""
    for known in DATASET_NAMES:
        if name.lower() == known.lower():
            return known
    raise InputError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")


def dataset_spec_path(name: str) -> Path:
    """``<repo>/src/<name>/dataset.toml`` for one of :data:`DATASET_NAMES`."""
    return repo_root() / "src" / resolve_dataset_name(name) / "dataset.toml"


def _check_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise InputError(f"{key} = {value!r} is not valid; choose one of: {', '.join(choices)}")


def _check_positive(value: float, key: str) -> None:
    if value <= 0:
        raise InputError(f"{key} = {value!r} must be > 0")


@dataclass(frozen=True)
class TrainRecipe:
    """The authors' base-model training recipe (docs/authors-seg.md §S3).

    Plateau rule (applied after each epoch on ``monitor``): more than ``stop_after`` epochs
    without improvement stops; more than ``decay_after`` reloads the best weights and divides the
    learning rate by ``factor`` (stopping instead once lr < ``min_lr``).
    """

    batch_size: int
    lr: float
    weight_decay: float
    max_epochs: int
    loss: str
    monitor: str
    decay_after: int
    stop_after: int
    factor: float
    min_lr: float
    augmentation: str

    def __post_init__(self) -> None:
        for key in ("batch_size", "max_epochs", "lr", "factor", "min_lr"):
            _check_positive(getattr(self, key), f"train.{key}")
        for key in ("weight_decay", "decay_after", "stop_after"):
            if getattr(self, key) < 0:
                raise InputError(f"train.{key} = {getattr(self, key)!r} must be >= 0")
        _check_choice(self.loss, LOSSES, "train.loss")
        _check_choice(self.monitor, MONITORS, "train.monitor")
        _check_choice(self.augmentation, AUGMENTATIONS, "train.augmentation")


@dataclass(frozen=True)
class RefineRecipe:
    """PatchRefineNet training settings and the released PRN checkpoint (docs/authors-refine.md §R7).

    The released PRN weights live in ``src/<name>/refine-models/checkpoints/released/<checkpoint>``
    (:func:`released_checkpoint_dir`); ``checkpoint_aux_model`` is the grid they were trained for.
    """

    batch_size: int
    shuffle: bool
    aux_models: tuple[str, ...]
    checkpoint_aux_model: str
    checkpoint: str

    def __post_init__(self) -> None:
        _check_positive(self.batch_size, "refine.batch_size")
        if not self.aux_models:
            raise InputError("refine.aux_models is empty; list at least one of: " + ", ".join(AUX_MODELS))
        for aux in self.aux_models:
            _check_choice(aux, AUX_MODELS, "refine.aux_models entry")
        _check_choice(self.checkpoint_aux_model, self.aux_models, "refine.checkpoint_aux_model")
        if not self.checkpoint:
            raise InputError("refine.checkpoint is empty; give the released PRN file name (e.g. p64_weights.th)")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything dataset-specific, loaded from ``src/<ds>/dataset.toml`` (see those files' headers).

    ``name`` is the folder name under ``data/`` and ``src/``; ``layout`` the raw-file layout;
    ``input_size`` the square network input side; ``prn_size`` the side of the maps handed to PRN;
    ``pad_to_square`` selects the saliency (PFANet) preprocessing order; ``weights_key`` is the
    dict key holding the state_dict in the released base checkpoint (``None``: a bare state_dict).
    """

    name: str
    layout: str
    base_model: str
    input_size: int
    prn_size: int
    channel_order: str
    normalisation: str
    pad_to_square: bool
    mask_mode: str
    checkpoint: str
    train: TrainRecipe
    refine: RefineRecipe
    weights_key: str | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or "\\" in self.name:
            raise InputError(f"name = {self.name!r} must be a plain folder name (deepglobe, DUTS, kvasir)")
        _check_choice(self.layout, LAYOUTS, "layout")
        if not self.base_model:
            raise InputError("base_model is empty; give dlinknet, pfanet or resunetplusplus")
        _check_positive(self.input_size, "input_size")
        _check_positive(self.prn_size, "prn_size")
        _check_choice(self.channel_order, CHANNEL_ORDERS, "channel_order")
        _check_choice(self.normalisation, NORMALISATIONS, "normalisation")
        _check_choice(self.mask_mode, MASK_MODES, "mask_mode")
        if not self.checkpoint:
            raise InputError("checkpoint is empty; give the released base-weights file name")
        if self.weights_key == "":
            raise InputError("weights_key is empty; omit the key when the checkpoint is a bare state_dict")

    def to_dict(self) -> dict[str, Any]:
        """Plain primitives (dicts, lists, str, int, float, bool, None), e.g. to store in a checkpoint."""
        out = dataclasses.asdict(self)
        out["refine"]["aux_models"] = list(self.refine.aux_models)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "DatasetSpec":
        """Build and validate a spec from a mapping (a parsed TOML file or :meth:`to_dict` output).

        Unknown or missing keys and wrong types raise :class:`InputError` naming ``source`` and the key.
        """
        return _build(cls, data, source, prefix="")


def _build(cls: type, data: Any, source: str, prefix: str) -> Any:
    """Convert one TOML table into the dataclass ``cls``, checking keys and types."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: [{where}] must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{source}: unknown key {prefix + unknown[0]!r} (valid keys in {where}: "
                         f"{', '.join(fields)}); remove or rename it")
    values = {}
    for name, field in fields.items():
        key = prefix + name
        if name not in data:
            if field.default is not dataclasses.MISSING:
                continue
            raise InputError(f"{source}: missing key {key!r}; add it (see src/deepglobe/dataset.toml "
                             f"for a commented example)")
        values[name] = _convert(hints[name], data[name], source, key)
    try:
        return cls(**values)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None


def _convert(hint: Any, value: Any, source: str, key: str) -> Any:
    """Check ``value`` against the type hint ``hint`` (int, float, bool, str, str|None, tuple[str,...], dataclass)."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, prefix=key + ".")
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif hint == (str | None):  # None only arrives through from_dict(to_dict()); TOML has no null
        ok = value is None or isinstance(value, str)
    elif typing.get_origin(hint) is tuple:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:  # pragma: no cover - only reached if a field of an unsupported type is added
        raise TypeError(f"unsupported field type {hint!r} for {key}")
    if not ok:
        expected = getattr(hint, "__name__", None) or ("list of strings" if typing.get_origin(hint) is tuple else "string")
        raise InputError(f"{source}: key {key!r} must be a {expected}, got {value!r}")
    return value


def load_dataset_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a ``dataset.toml``; every problem raises :class:`InputError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"dataset config {path} not found; the repository ships "
                         f"src/<dataset>/dataset.toml for {', '.join(DATASET_NAMES)}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    return DatasetSpec.from_dict(data, source=str(path))


# --- where a dataset's files live (docs/authors-seg.md §S2.1) ------------------------------------------------------

def seg_models_dir(spec: DatasetSpec, data_root: str | Path) -> Path:
    """``<data_root>/<name>/seg-models``: raw images, split CSVs, base-model test arrays."""
    return layout.seg_models_dir(data_root, spec.name)


RELEASED_DIR = layout.RELEASED


def released_checkpoint_dir(models_root: str | Path) -> Path:
    """``<models_root>/checkpoints/released``: the authors' downloaded weights, kept apart from the
    ``checkpoints/<name>/`` folders that training writes, so neither side overwrites the other."""
    return layout.released_dir(models_root)


def split_csv_path(spec: DatasetSpec, data_root: str | Path, split: str) -> Path:
    """``<data_root>/<name>/seg-models/<split>.csv``."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    return seg_models_dir(spec, data_root) / f"{split}.csv"


def layout_dirs(spec: DatasetSpec, data_root: str | Path, split: str) -> tuple[Path, Path]:
    """(image folder, mask folder) holding the files of ``split`` for the spec's layout.

    DeepGlobe and Kvasir keep every split in ``train/`` + ``train_labels/``; DUTS reads train from
    the doubly nested ``DUTS-TR/DUTS-TR/`` and val/test from ``DUTS-TE/DUTS-TE/`` (docs/authors-seg.md §S2.1).
    """
    root = seg_models_dir(spec, data_root)
    if spec.layout == "duts":
        part = _DUTS_PART[split]
        return root / part / part / f"{part}-Image", root / part / part / f"{part}-Mask"
    return root / "train", root / "train_labels"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def spec_to_toml(spec: DatasetSpec, header: str = "") -> str:
    """The TOML text of ``spec`` (what :func:`load_dataset_spec` reads back), e.g. for the demo's
    reduced-size variant of a dataset. ``header`` is written as leading comment lines."""
    data = spec.to_dict()
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines += [f"{k} = {_toml_value(v)}" for k, v in data.items() if k not in tables and v is not None]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
