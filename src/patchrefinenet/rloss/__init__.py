"""Regularized losses for weakly-supervised segmentation (rloss; Tang et al., ECCV 2018) and the
DenseCRF refinement baseline, in pure PyTorch (CPU and CUDA, no compiled extension).

* :mod:`.lattice` — permutohedral-lattice bilateral filter (linear time; ≈ 0.6 × the exact sum).
* :mod:`.dense` — exact chunked dense Gaussian filter (small inputs; test oracle).
* :mod:`.losses` — DenseCRF / normalised-cut / size regularisers, partial cross-entropy,
  :class:`RegularizedLoss` and the :func:`build_regularizer` registry.
* :mod:`.meanfield` — DenseCRF mean-field inference (``densecrf_refine``).
"""
from patchrefinenet.rloss.dense import DenseGaussianFilter
from patchrefinenet.rloss.lattice import PermutohedralLattice, bilateral_features, bilateral_filter, spatial_features
from patchrefinenet.rloss.losses import (
    REGULARIZERS,
    DenseCRFLoss,
    NoRegularizer,
    NormalizedCutLoss,
    RegularizedLoss,
    SizeLoss,
    as_class_probabilities,
    build_regularizer,
    default_weight,
    partial_cross_entropy,
)
from patchrefinenet.rloss.meanfield import densecrf_refine, densecrf_refine_batch, mean_field

__all__ = [
    "DenseCRFLoss", "DenseGaussianFilter", "NoRegularizer", "NormalizedCutLoss", "PermutohedralLattice",
    "REGULARIZERS", "RegularizedLoss", "SizeLoss", "as_class_probabilities", "bilateral_features",
    "bilateral_filter", "build_regularizer", "default_weight", "densecrf_refine", "densecrf_refine_batch",
    "mean_field", "partial_cross_entropy", "spatial_features",
]
