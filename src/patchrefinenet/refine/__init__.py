"""The PRN engine (docs/authors-refine.md §R7–§R9): data (:mod:`.data`), training (:mod:`.train`), inference (:mod:`.predict`).

    from patchrefinenet.refine import RefineTrainConfig, train_prn, RefinePredictConfig, predict_prn
"""
from patchrefinenet.refine.data import RefineDataset, RefineOutputs
from patchrefinenet.refine.predict import RefinePredictConfig, combine_heads, predict_prn
from patchrefinenet.refine.train import RefineTrainConfig, train_prn

__all__ = ["RefineDataset", "RefineOutputs", "RefinePredictConfig", "RefineTrainConfig", "combine_heads",
           "predict_prn", "train_prn"]
