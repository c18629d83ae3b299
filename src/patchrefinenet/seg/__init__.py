"""The base-model engine (docs/authors-seg.md §S3–§S5): train a base segmentation model with the authors' recipe,
load any base checkpoint, write the probability maps PatchRefineNet reads, make the RST
pseudo-labels, and score the base model on the test split.

The per-dataset scripts in ``src/<ds>/seg-models/`` are thin wrappers over
:mod:`patchrefinenet.cli` modules that call these functions.
"""
from patchrefinenet.seg.evaluate import calculate_base_iou, score_base_predictions
from patchrefinenet.seg.generate import (generate_aux_arrays, generate_rst, load_base_model, read_base_checkpoint,
                                         refine_arrays_dir)
from patchrefinenet.seg.train import BaseRunPaths, train_base_model

__all__ = ["BaseRunPaths", "calculate_base_iou", "generate_aux_arrays", "generate_rst", "load_base_model",
           "read_base_checkpoint", "refine_arrays_dir", "score_base_predictions", "train_base_model"]
