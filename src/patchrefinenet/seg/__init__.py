"""The base-model engine (docs/authors-seg.md §S3–§S5): train a base segmentation model with the authors' recipe,
load any base checkpoint, write the probability maps PatchRefineNet reads, make the RST
pseudo-labels, and score the base model on the test split.

The per-dataset scripts in ``src/<ds>/seg-models/`` are thin wrappers over
:mod:`patchrefinenet.cli` modules that call these functions. Names are imported on first use, so
``patchrefinenet.seg.config`` (the training settings) stays free of torch.
"""
from importlib import import_module

_WHERE = {"calculate_base_iou": "evaluate", "score_base_predictions": "evaluate", "generate_aux_arrays": "generate",
          "generate_rst": "generate", "load_base_model": "generate", "read_base_checkpoint": "generate",
          "refine_arrays_dir": "generate", "BaseRunPaths": "train", "train_base": "train",
          "train_base_model": "train", "SegTrainConfig": "config"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"patchrefinenet.seg.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'patchrefinenet.seg' has no attribute {name!r}")
