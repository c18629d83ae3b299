"""PatchRefineNet: refine a base model's segmentation probabilities patch by patch.

The core package: models, losses, metrics, the training/inference engine, checkpoints, config
and the implementations of every command-line script. Data handling lives in :mod:`data_utils`.
"""
from data_utils.errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "RefineResult", "Refiner", "Rule", "__version__"]


def __getattr__(name: str):
    # Lazy: `import patchrefinenet` (and every script's --help) stays free of torch until the API is used.
    if name in ("Refiner", "RefineResult"):
        from patchrefinenet import refiner

        return getattr(refiner, name)
    if name == "Rule":
        from patchrefinenet.selection import Rule

        return Rule
    raise AttributeError(f"module 'patchrefinenet' has no attribute {name!r}")
