"""Run a trained base model: load it from any checkpoint, write the arrays PatchRefineNet reads,
and make the patch-wise pseudo-labels (docs/authors-seg.md §S5, docs/authors-refine.md §R11).

* :func:`load_base_model` — our checkpoints and the authors' files (bare state_dicts, sairajk's
  PFANet dict with the weights under ``"model"``), always weights-only, mapped to CPU first.
* :func:`generate_aux_arrays` — base probabilities and ground truth of the val and test splits
  as N×P×P×1 float32 ``.npy`` files (P = ``spec.prn_size``), streamed into memory-maps so peak
  memory does not grow with N. Deterministic: eval mode, no augmentation (the authors' Kvasir
  script used its training loader and flipped images at random, docs/authors-seg.md §S8.22), and the test arrays
  are made the same way as the val arrays (the authors ship them without a generator).
* :func:`generate_rst` — RST pseudo-labels per patch size, from the val arrays (PRN's training
  targets) and from the test arrays (for analysis), plus the chosen threshold per patch.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from data_utils.arrays import open_maps
from data_utils.datasets import SegmentationSplit, seg_models_dir, to_prn_resolution
from data_utils.errors import InputError
from data_utils.io import open_memmap_atomic, remove_stale_temporaries
from data_utils.pseudo_labels import generate_pseudo_label_file
from data_utils import layout
from data_utils.spec import DatasetSpec
from patchrefinenet.checkpoint import LoadedCheckpoint, load_checkpoint, load_weights_strict
from patchrefinenet.models import BASE_MODELS, build_base_model
from patchrefinenet.models.prn import resolve_grid
from patchrefinenet.training import resolve_device

log = logging.getLogger("patchrefinenet")

# A key only that network's state_dict has: tells which model an authors' bare file holds.
_SIGNATURE_KEYS = {
    "dlinknet": "dblock.dilate1.weight",
    "pfanet": "cpfe_conv3_3.bn.weight",
    "resunetplusplus": "aspp_bridge.output.weight",
    "PatchRefineNet (PRN)": "encoding.RRCNN1.Conv_1x1.weight",
}

# File names of the arrays handed to PRN, per split (the authors' names; defined in data_utils.layout).
ARRAY_NAMES, LABEL_PREFIX = layout.ARRAYS, layout.LABEL_PREFIX


# --------------------------------------------------------------------------- paths

def refine_arrays_dir(spec: DatasetSpec, data_root: str | os.PathLike, model_name: str) -> Path:
    """``<data_root>/<ds>/refine-models/<model>/``: where the PRN arrays of this base model live."""
    return layout.refine_arrays_dir(data_root, spec.name, model_name)


def pseudo_label_paths(spec: DatasetSpec, data_root: str | os.PathLike, model_name: str, split: str,
                       patch_size: int) -> tuple[Path, Path]:
    """(labels, thresholds) files of ``split`` for ``patch_size``-px patches:
    ``train_aux_gt_p_<P>.npy`` / ``train_aux_thresholds_p_<P>.npy`` for val (PRN's training set),
    ``test_aux_gt_p_<P>.npy`` / ``test_aux_thresholds_p_<P>.npy`` for test."""
    return layout.pseudo_label_paths(refine_arrays_dir(spec, data_root, model_name), split, patch_size)


def base_checkpoint_candidates(spec: DatasetSpec, model_name: str, output_root: str | os.PathLike) -> list[Path]:
    """Where the weights of ``model_name`` are looked for, in order: ours,
    ``<output_root>/checkpoints/<model>/<model>_weights.th`` (what ``train.py`` writes), then the
    released file named in the dataset config under ``checkpoints/released/`` (where ``download.py``
    puts it; for DUTS sairajk's PFANet file), then that name in ``checkpoints/<model>/`` (where
    older versions put it). A model trained here is used without renaming anything (docs/authors-seg.md §S8.6)."""
    run = layout.RunFolders(Path(output_root), model_name)
    paths = [run.weights]
    if model_name == spec.base_model:
        paths += [run.released(spec.checkpoint), run.checkpoint_dir / spec.checkpoint]
    return list(dict.fromkeys(paths))


def find_base_checkpoint(spec: DatasetSpec, model_name: str, output_root: str | os.PathLike) -> Path:
    """The first existing file of :func:`base_checkpoint_candidates`, or an InputError saying how to get one."""
    candidates = base_checkpoint_candidates(spec, model_name, output_root)
    for i, path in enumerate(candidates):
        if path.is_file():
            log.info("%s weights: %s (%s)", model_name, path, "trained" if i == 0 else "released")
            return path
    looked = ", ".join(str(p) for p in candidates)
    released = ("download the released weights with `python download.py` or " if model_name == spec.base_model else "")
    raise InputError(f"no {model_name} weights found (looked for {looked}); {released}train them with "
                     f"`python src/{spec.name}/seg-models/train.py --model {model_name}`, or pass --checkpoint_path")


# --------------------------------------------------------------------------- loading

def held_model(loaded: LoadedCheckpoint) -> str | None:
    """Which network a checkpoint holds: the model name stored in our config, else guessed from the keys."""
    if loaded.config and isinstance(loaded.config.get("model"), str):
        return loaded.config["model"]
    for name, key in _SIGNATURE_KEYS.items():
        if key in loaded.state_dict:
            return name
    return None


def read_base_checkpoint(path: str | os.PathLike, model_name: str) -> LoadedCheckpoint:
    """Load a base-model checkpoint (CPU, weights-only) and check that it holds ``model_name``.

    NumPy scalars are allow-listed (sairajk's PFANet file stores its MAE as one; docs/authors-seg.md §S1.3).
    A file holding another network raises :class:`InputError` naming both.
    """
    loaded = load_checkpoint(path, map_location="cpu", allow_numpy_scalars=True)
    held = held_model(loaded)
    if held is not None and held != model_name:
        hint = f"pass --model {held}" if held in BASE_MODELS else "pass a base-model checkpoint"
        raise InputError(f"checkpoint {path} holds {held} weights, but --model {model_name} was asked; "
                         f"{hint} or another --checkpoint_path")
    return loaded


def checkpoint_model_kwargs(loaded: LoadedCheckpoint, model_name: str) -> dict:
    """Constructor arguments of the checkpoint's model: those stored in our config, else read from
    the weights' shapes (ResUNet++ widths, so narrow bare files load too); {} for the rest."""
    stored = (loaded.config or {}).get("model_kwargs")
    if stored:
        return dict(stored)
    keys = ("input_layer.0.weight", "residual_conv1.conv_block.2.weight", "residual_conv2.conv_block.2.weight",
            "residual_conv3.conv_block.2.weight", "aspp_bridge.output.weight")
    if model_name != "resunetplusplus" or not all(k in loaded.state_dict for k in keys):
        return {}  # a strict load reports what is missing
    return {"filters": [int(loaded.state_dict[k].shape[0]) for k in keys]}


def build_from_checkpoint(loaded: LoadedCheckpoint, model_name: str) -> nn.Module:
    """Build ``model_name`` as the checkpoint describes (:func:`checkpoint_model_kwargs`) and load
    the weights strictly."""
    model = build_base_model(model_name, **checkpoint_model_kwargs(loaded, model_name))
    return load_weights_strict(model, loaded.state_dict, f"checkpoint {loaded.path}")


def load_base_model(spec: DatasetSpec, model_name: str, checkpoint_path: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu", *,
                    output_root: str | os.PathLike | None = None) -> nn.Module:
    """The trained base model ``model_name`` in eval mode on ``device``.

    ``checkpoint_path`` defaults to :func:`find_base_checkpoint` under ``output_root`` (the
    dataset's ``src/<ds>/seg-models``). Accepts our format and the authors' files; the model is
    rebuilt from the checkpoint's own config when it has one.
    """
    if model_name not in BASE_MODELS:
        raise InputError(f"unknown base model {model_name!r}; valid names: {', '.join(sorted(BASE_MODELS))}")
    if checkpoint_path is None:
        if output_root is None:
            raise InputError("load_base_model needs checkpoint_path or output_root (the seg-models folder)")
        checkpoint_path = find_base_checkpoint(spec, model_name, output_root)
    loaded = read_base_checkpoint(checkpoint_path, model_name)
    model = build_from_checkpoint(loaded, model_name)
    trained_on = (loaded.config or {}).get("dataset") or {}
    for key in ("input_size", "normalisation", "channel_order"):
        if key in trained_on and trained_on[key] != getattr(spec, key):
            log.warning("checkpoint %s was trained with %s=%r but the dataset config says %r",
                        checkpoint_path, key, trained_on[key], getattr(spec, key))
    log.info("loaded %s weights from %s (%s format)", model_name, checkpoint_path, loaded.source)
    return model.to(resolve_device(device)).eval()


# --------------------------------------------------------------------------- base probabilities

@torch.no_grad()
def _write_split(model: nn.Module, dataset: SegmentationSplit, spec: DatasetSpec, out_dir: Path,
                 device: torch.device, batch_size: int, num_workers: int, progress: bool) -> dict:
    """Predict one split in CSV order and stream the maps into its two ``.npy`` files in ``out_dir``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    n, p = len(dataset), spec.prn_size
    pred_name, gt_name = ARRAY_NAMES[dataset.split]
    pred_path, gt_path = out_dir / pred_name, out_dir / gt_name
    with open_memmap_atomic(pred_path, (n, p, p, 1)) as pred_mm, open_memmap_atomic(gt_path, (n, p, p, 1)) as gt_mm:
        bar = tqdm(loader, desc=f"{dataset.split} predictions", unit="batch", disable=not progress)
        for images, masks, index in bar:
            prob = model(images.to(device, non_blocking=True)).float().cpu().numpy()  # (B, 1, S, S)
            for b, i in enumerate(index.tolist()):
                pred_mm[i, ..., 0], gt_mm[i, ..., 0] = to_prn_resolution(prob[b, 0], masks[b, 0].numpy(), spec)
    log.info("%s: %d maps of %dx%d -> %s, %s", dataset.split, n, p, p, pred_path, gt_path)
    return {"n_images": n, "pred": str(pred_path), "gt": str(gt_path)}


def generate_aux_arrays(spec: DatasetSpec, model_name: str, *, data_root: str | os.PathLike,
                        checkpoint: str | os.PathLike | None = None,
                        output_root: str | os.PathLike | None = None, device: str | torch.device = "auto",
                        splits: Sequence[str] = ("val", "test"), batch_size: int = 4, num_workers: int = 0,
                        progress: bool = True, compile: bool = False,
                        out_dir: str | os.PathLike | None = None) -> dict[str, dict]:
    """Write the base model's probabilities and the ground truth for PRN (docs/authors-seg.md §S5.1).

    For each split in ``splits``: val → ``val_pred.npy`` + ``val_orig_gt.npy``, test →
    ``test_input.npy`` + ``test_orig_gt.npy``, in ``<data_root>/<ds>/refine-models/<model>/``,
    each N×P×P×1 float32 in CSV row order (predictions in [0, 1], ground truth in {0, 1};
    DUTS: 256-px predictions replicated 2×2 to 512, docs/authors-seg.md §S5.1). ``checkpoint`` defaults to
    :func:`find_base_checkpoint` under ``output_root``. Returns per split the image count and
    the two paths. ``compile``: run the model through ``torch.compile`` (opt-in). ``out_dir``
    replaces the layout's folder (e.g. several models of one name, as in the demo's weak branch).
    """
    bad = [s for s in splits if s not in ARRAY_NAMES]
    if bad or not splits:
        raise InputError(f"--splits {list(splits)}: choose from {', '.join(ARRAY_NAMES)}")
    if batch_size < 1:
        raise InputError(f"--batch_size must be >= 1, got {batch_size}")
    data_root = Path(data_root)
    datasets = [SegmentationSplit(spec, data_root, split, augment=False) for split in dict.fromkeys(splits)]
    for dataset in datasets:
        if len(dataset) == 0:
            raise InputError(f"the {dataset.split} split of {spec.name} is empty; check "
                             f"{seg_models_dir(spec, data_root) / (dataset.split + '.csv')}")
    dev = resolve_device(device)
    model = load_base_model(spec, model_name, checkpoint, dev, output_root=output_root)
    if compile:
        model = torch.compile(model)
    out_dir = refine_arrays_dir(spec, data_root, model_name) if out_dir is None else Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in remove_stale_temporaries(out_dir):
        log.info("removed %s (left by a run that was killed)", path)
    return {d.split: _write_split(model, d, spec, out_dir, dev, batch_size, num_workers, progress) for d in datasets}


# --------------------------------------------------------------------------- pseudo-labels

def default_patch_sizes(image_size: int) -> list[int]:
    """The patch sizes of the P64 and P0 variants at ``image_size`` (at 512: [64, 512])."""
    sizes = [resolve_grid(aux_model=a, image_size=image_size).patch_size for a in ("p64", "p0")]
    return sorted(set(sizes))


def generate_rst(spec: DatasetSpec, model_name: str, *, data_root: str | os.PathLike,
                 patch_sizes: Sequence[int] | None = None, splits: Sequence[str] | None = None,
                 progress: bool = True, device: str | torch.device | None = None,
                 aux_models: Sequence[str] = ()) -> list[dict]:
    """Make the RST pseudo-labels (docs/authors-refine.md §R11) from the arrays :func:`generate_aux_arrays` wrote.

    For each split and patch size P (default :func:`default_patch_sizes`; P = the image side is
    the whole-image IST of P0): labels N×H×W×1 uint8 {0,1} and the chosen threshold per patch
    (N, H/P, W/P) float32 (:func:`pseudo_label_paths`). ``splits`` None means val, plus test
    when its arrays exist. ``aux_models`` (``p16``, ``p64``, ...) add the patch sizes of those grids
    on the maps' own side (as PRN training reads them). Returns one summary dict per (split, P) with ``mean_patch_iou`` and
    ``mean_image_iou`` (the "RST mIoU" of the authors' Kvasir script). ``device`` (``auto``, ``cuda``,
    ...) runs the search on a GPU when it resolves to one (identical labels); None or a CPU: numpy.
    """
    dev = None if device is None else resolve_device(device)
    search_device = str(dev) if dev is not None and dev.type != "cpu" else None
    folder = refine_arrays_dir(spec, data_root, model_name)
    if splits is None:
        test_there = all((folder / name).is_file() for name in ARRAY_NAMES["test"])
        splits = ("val", "test") if test_there else ("val",)
    bad = [s for s in splits if s not in ARRAY_NAMES]
    if bad or not splits:
        raise InputError(f"--splits {list(splits)}: choose from {', '.join(ARRAY_NAMES)}")
    summaries = []
    for split in splits:
        prob_path, gt_path = (folder / name for name in ARRAY_NAMES[split])
        missing = [str(p) for p in (prob_path, gt_path) if not p.is_file()]
        if missing:
            raise InputError(f"missing {', '.join(missing)}; make them with `python src/{spec.name}/seg-models/"
                             f"generate_aux_training_data.py --model {model_name}` (or run `python demo.py`)")
        image_size = int(open_maps(prob_path, "prob").shape[1])  # (N, H, W) view
        sizes = default_patch_sizes(image_size) if patch_sizes is None and not aux_models else list(patch_sizes or [])
        sizes += [resolve_grid(aux_model=a, image_size=image_size).patch_size for a in aux_models]
        sizes = sorted(set(sizes))
        for size in sizes:
            patch = resolve_grid(patch_size=int(size), image_size=image_size).patch_size
            out_path, tmap_path = pseudo_label_paths(spec, data_root, model_name, split, patch)
            summary = generate_pseudo_label_file(prob_path, gt_path, out_path, patch, threshold_map_path=tmap_path,
                                                 progress=progress, device=search_device)
            summary["split"] = split
            log.info("RST %s p=%d -> %s: mean patch IoU %.6f, RST mean IoU %.6f (%d images)", split, patch,
                     out_path.name, summary["mean_patch_iou"], summary["mean_image_iou"], summary["n_images"])
            summaries.append(summary)
    return summaries
