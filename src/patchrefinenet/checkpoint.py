"""One checkpoint format and one loader for every network in the project (PRN and base models).

Our format is a dict ``{"state_dict", "config", "meta"[, "training_state"]}`` holding only tensors
and primitive Python values, so it always loads with ``torch.load(weights_only=True)`` and a
checkpoint rebuilds its own model from ``config``. The loader also accepts the authors' bare
state_dicts (``p64_weights.th``, ...) and dicts that wrap the weights under ``"model"`` or
``"state_dict"`` (sairajk's PFANet checkpoint). Nothing is ever unpickled with ``weights_only=False``.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from data_utils.errors import InputError
from data_utils.io import atomic_path

log = logging.getLogger("patchrefinenet")

FORMAT = "patchrefinenet"
FORMAT_VERSION = 1
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
_PRIMITIVES = (type(None), bool, int, float, str)


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` found.

    ``state_dict`` has wrapper prefixes stripped; ``config`` is None for files that carry none (the
    authors' bare state_dicts); ``source`` is ``"patchrefinenet"``, ``"bare"`` or ``"wrapped:<key>"``.
    For wrapped files ``meta`` holds the other entries as plain Python values.
    """

    state_dict: dict[str, torch.Tensor]
    config: dict | None
    meta: dict
    training_state: dict | None
    source: str
    path: Path | None = None


def _check_plain(value: Any, where: str, allow_tensors: bool) -> None:
    """Raise TypeError unless ``value`` is built only from primitives, lists/tuples, str-keyed dicts (and tensors)."""
    # Exact types: subclasses such as numpy.float64 or TorchVersion would pickle as foreign objects.
    if type(value) in _PRIMITIVES or (allow_tensors and isinstance(value, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]", allow_tensors)
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: dict key {k!r} is a {type(k).__name__}; use str keys")
            _check_plain(v, f"{where}[{k!r}]", allow_tensors)
        return
    allowed = "None, bool, int, float, str, lists/tuples and str-keyed dicts of those"
    if allow_tensors:
        allowed += ", and tensors"
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__name__} ({value!r:.60}); checkpoints hold only {allowed} "
        "so that they load with torch.load(weights_only=True). Convert it first (e.g. str(path), float(x), x.tolist(), "
        "torch.as_tensor(array))."
    )


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    config: dict,
    meta: dict,
    training_state: dict | None = None,
) -> Path:
    """Write ``{"state_dict", "config", "meta"[, "training_state"]}`` atomically to ``path``.

    ``config`` and ``meta`` must hold only primitive values (TypeError otherwise); ``training_state``
    (optimizer, scheduler, RNG states, epoch) may also hold tensors. ``meta`` gains ``format``,
    ``format_version``, ``torch`` (version) and ``created`` (UTC ISO time) unless it sets them.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of name -> tensor, got {type(state_dict).__name__}")
    for k, v in state_dict.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise TypeError(f"state_dict entry {k!r} is a {type(v).__name__}; expected str -> torch.Tensor")
    _check_plain(config, "config", allow_tensors=False)
    _check_plain(meta, "meta", allow_tensors=False)
    if training_state is not None:
        _check_plain(training_state, "training_state", allow_tensors=True)
    full_meta = {
        "torch": str(torch.__version__),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **meta,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
    }
    obj: dict[str, Any] = {
        "state_dict": {k: v.detach() for k, v in state_dict.items()},
        "config": dict(config),
        "meta": full_meta,
    }
    if training_state is not None:
        obj["training_state"] = training_state
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    log.info("saved checkpoint %s", path)
    return path


def clean_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes, in any nesting order."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key
        while new.startswith(_PREFIXES):
            new = new.split(".", 1)[1]
        if new in out:
            raise InputError(f"state_dict has both {new!r} and a prefixed copy {key!r}; it mixes wrapped and unwrapped weights")
        out[new] = value
    return out


def _numpy_safe_globals() -> list:
    """Globals that numpy scalars pickle to, under numpy 1.x and 2.x names (sairajk's PFANet file stores one)."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    dtype_classes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *dtype_classes,
    ]


def _torch_load(path: Path, map_location: Any, allow_numpy_scalars: bool) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into an InputError naming the file."""
    expected = "expected a torch.save file holding a state_dict or a {'state_dict'|'model': ...} dict"
    try:
        if allow_numpy_scalars:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found and "numpy" in found.group(1) and not allow_numpy_scalars:
            raise InputError(
                f"checkpoint {path} stores numpy values ({found.group(1)}) next to its weights; if you trust the file, "
                "load it with allow_numpy_scalars=True (still weights-only, numpy scalar types allow-listed)"
            ) from None
        if found:
            raise InputError(
                f"{path} is not a plain checkpoint: it contains a pickled Python object ({found.group(1)}) that "
                f"weights-only loading refuses; {expected}"
            ) from None
        raise InputError(f"{path} is not a PyTorch checkpoint (it cannot be unpickled); {expected}") from None
    except Exception as e:  # torch raises RuntimeError/OSError/EOFError/KeyError... for damaged files
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
            why = "it is truncated (a zip-format torch.save file without its end record: interrupted download or copy?)"
        elif path.stat().st_size == 0:
            why = "it is empty"
        else:
            why = f"it is corrupt or not a torch.save file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        raise InputError(f"cannot read checkpoint {path}: {why}; {expected}. Download or copy it again.") from None


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _plain_value(v: Any) -> Any:
    """A primitive stand-in for a wrapper entry (numpy scalars and 1-element tensors become numbers)."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    if isinstance(v, _PRIMITIVES):
        return v
    return f"<{type(v).__name__}>"


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", *, allow_numpy_scalars: bool = False
) -> LoadedCheckpoint:
    """Read any checkpoint the project deals with, always with ``torch.load(weights_only=True)``.

    Accepts our format, bare state_dicts (the authors' ``*_weights.th``) and dicts wrapping the
    weights under ``"model"`` or ``"state_dict"``. ``allow_numpy_scalars`` allow-lists numpy scalar
    types (needed for sairajk's PFANet file). Prefixes ``module.``/``_orig_mod.`` are stripped.
    Missing, truncated or non-checkpoint files raise InputError naming the path.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint not found: {path}; pass the path of a .th/.pt/.pth file (download it or train one first)")
    if not path.is_file():
        raise InputError(f"checkpoint path {path} is a directory; pass the checkpoint file inside it")
    obj = _torch_load(path, map_location, allow_numpy_scalars)
    if not isinstance(obj, Mapping):
        raise InputError(
            f"{path} is not a checkpoint: it holds a {type(obj).__name__}, expected a dict of tensors (a state_dict) "
            "or a dict with the weights under 'state_dict' or 'model'"
        )
    meta = obj.get("meta")
    if isinstance(meta, Mapping) and meta.get("format") == FORMAT:
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputError(f"{path} has checkpoint format_version {version!r}; this code reads up to {FORMAT_VERSION}: update patchrefinenet")
        if not _is_tensor_dict(obj.get("state_dict")):
            raise InputError(f"{path} is a patchrefinenet checkpoint without weights: 'state_dict' is missing or not name -> tensor")
        return LoadedCheckpoint(
            clean_state_dict(obj["state_dict"]), obj.get("config"), dict(meta), obj.get("training_state"), FORMAT, path
        )
    if _is_tensor_dict(obj):
        return LoadedCheckpoint(clean_state_dict(obj), None, {}, None, "bare", path)
    for key in ("state_dict", "model"):
        if _is_tensor_dict(obj.get(key)):
            extra = {str(k): _plain_value(v) for k, v in obj.items() if k != key}
            return LoadedCheckpoint(clean_state_dict(obj[key]), None, extra, None, f"wrapped:{key}", path)
    keys = ", ".join(repr(k) for k in list(obj)[:8]) or "none"
    raise InputError(
        f"{path} is not a checkpoint: its dict (keys {keys}) is neither a state_dict (name -> tensor) nor holds one "
        "under 'state_dict' or 'model'"
    )


def _likely_cause(missing: list[str], unexpected: list[str], shapes: list[str], n_model: int) -> str:
    """Guess why a strict load failed, from the key names involved."""
    causes = []
    local = [k for k in missing + unexpected if "_local." in k]
    if local:
        has = "has" if any("_local." in k for k in unexpected) else "lacks"
        causes.append(
            f"wrong patch grid: the checkpoint {has} the local decoder that a grid > 0 PRN (p4, p16, p64, ...) has and "
            "grid 0 (p0) lacks — pick the --aux_model the checkpoint was trained with"
        )
    if any(k.startswith("conv_last_") for k in unexpected):
        causes.append("the authors' P4 head names (conv_last_*): load through patchrefinenet.models.prn.load_prn")
    if shapes:
        causes.append("wrong width/channels: same layers, different sizes — build the model with the checkpoint's width/config")
    if len(missing) + len(unexpected) > 0.5 * max(n_model, 1) and not local:
        causes.append("wrong model: the checkpoint was made for a different architecture")
    return "; ".join(causes) or "the checkpoint does not match this model"


def load_weights_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str, rename: Mapping[str, str] | None = None
) -> nn.Module:
    """Strictly load ``state_dict`` into ``model``; on any mismatch raise InputError explaining it.

    ``rename`` maps old key prefixes to new ones (e.g. the authors' ``conv_last_global.`` ->
    ``out_global.``). ``what`` names the checkpoint in messages. The error lists the first few
    missing/unexpected keys with counts and shape mismatches, and the likely cause.
    """
    sd = clean_state_dict(state_dict)
    if rename:
        renamed = {}
        for k, v in sd.items():
            for old, new in rename.items():
                if k.startswith(old):
                    k = new + k[len(old):]
                    break
            renamed[k] = v
        sd = renamed
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        def head(items: list[str], n: int = 4) -> str:
            return ", ".join(items[:n]) + (", ..." if len(items) > n else "")

        parts = [f"{what} does not fit {type(model).__name__}"]
        if missing:
            parts.append(f"{len(missing)} missing keys ({head(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({head(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches ({head(shapes, 3)})")
        parts.append("likely cause: " + _likely_cause(missing, unexpected, shapes, len(own)))
        raise InputError("; ".join(parts))
    model.load_state_dict(sd, strict=True)
    return model
