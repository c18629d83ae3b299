"""The data layer of PatchRefineNet: patch grids, pseudo-labels, dataset readers, splits,
downloads and the embedded demo data. numpy (and torch tensors as plain arrays) only: no
``nn.Module`` here, and nothing here imports :mod:`patchrefinenet`."""
from data_utils.errors import InputError

__all__ = ["InputError"]
