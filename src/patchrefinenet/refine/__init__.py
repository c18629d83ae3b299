"""The PRN engine (docs/authors-refine.md §R7–§R9): settings (:mod:`.config`), data (:mod:`.data`),
training (:mod:`.train`), held-out selection (:mod:`.heldout`), inference (:mod:`.predict`).

    from patchrefinenet.refine import RefineTrainConfig, train_prn, RefinePredictConfig, predict_prn

Names are imported on first use, so ``patchrefinenet.refine.config`` stays free of torch.
"""
from importlib import import_module

_WHERE = {"RefineDataset": "data", "RefineOutputs": "data", "RefinePredictConfig": "predict",
          "combine_heads": "predict", "predict_prn": "predict", "RefineTrainConfig": "config", "train_prn": "train"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"patchrefinenet.refine.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'patchrefinenet.refine' has no attribute {name!r}")
