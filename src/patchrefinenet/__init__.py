"""PatchRefineNet: refine a base model's segmentation probabilities patch by patch.

The core package: models, losses, metrics, the training/inference engine, checkpoints, config
and the implementations of every command-line script. Data handling lives in :mod:`data_utils`.
"""
from data_utils.errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
