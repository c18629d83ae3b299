"""PRN: one PatchRefineNet for every patch grid (the authors' ThreshNetP0/P4/P64 in one class).

The local decoder is shared by all G×G patches, so instead of the authors' per-patch loop the
patches are folded into the batch dimension, decoded in one call and folded back (docs/authors-refine.md §R3.5).
Spec: docs/authors-refine.md §R2–§R4 (architecture, quirk, BatchNorm), §R5 + §RA (state_dict keys), §R15.5 (P4 naming).
"""
from __future__ import annotations

import functools
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from data_utils.errors import InputError
from patchrefinenet.checkpoint import LoadedCheckpoint, clean_state_dict, load_checkpoint, load_weights_strict
from patchrefinenet.losses import should_check_values
from patchrefinenet.models.prn_blocks import (
    Decoder, Encoder, PatchBatchNorm2d, ResidualBlock, batch_statistics, set_batch_statistics,
)

__all__ = [
    "AUTHORS_P4_RENAMES",
    "GridChoice",
    "PRN",
    "PRNConfig",
    "batch_statistics",
    "infer_authors_variant",
    "load_prn",
    "resolve_grid",
]

# The authors' ThreshNetP4 names its heads conv_last_*; ThreshNetP64 (and PRN) use out_* (docs/authors-refine.md §R3.3).
AUTHORS_P4_RENAMES = {"conv_last_global.": "out_global.", "conv_last_local.": "out_local."}

log = logging.getLogger("patchrefinenet")

_QUIRK_GRID, _QUIRK_ROW, _QUIRK_SOURCE_ROW = 8, 6, 2  # P64: patch row 6 takes its x1 cell from row 2 (docs/authors-refine.md §R3.4)
_RESIDUAL_EPS = 1e-4  # residual heads: base probabilities are clamped to [eps, 1 - eps] before the logit


@dataclass(frozen=True)
class PRNConfig:
    """Everything needed to rebuild a PRN; saved inside every checkpoint (primitive fields only).

    grid: G; the local decoder runs on a G×G patch grid. 0 = global decoder only (the authors' P0).
    width: base channels w; the encoder has w, 2w, 4w, 8w channels, PSP on 8w (paper: 32).
    row7_quirk: the authors' P64 wiring (patch row 6 reads its x1 skip from row 2, docs/authors-refine.md §R3.4); G = 8 only.
    global_head_kernel: 1 (the authors' P0) or 3 (P4/P64); None derives it from ``grid``.
    in_channels: channels of the input probability map.
    residual: False = the authors' heads (sigmoid of a conv). True = each head adds its conv output
        to the logit of the input probability (channel 0) before the sigmoid, and those convs start
        at zero, so an untrained PRN returns the base map and learns only corrections. Thresholding
        p at τ is the same as adding −logit(τ) to logit(p) and cutting at 0, so a per-region
        threshold is exactly an additive logit offset. Not in the paper; same state_dict keys.
    step_bn: the BatchNorm of each recurrent block keeps running statistics per application (it
        is applied 3 times per forward to differently scaled inputs, and one running average of
        the three makes eval mode unreliable; see ``PatchBatchNorm2d.enable_step_statistics``).
        Adds ``step_mean``/``step_var`` buffers to those BNs; False keeps the authors' keys exactly.
    """

    grid: int
    width: int = 32
    row7_quirk: bool = False
    global_head_kernel: int | None = None
    in_channels: int = 1
    residual: bool = False
    step_bn: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> InputError:
            return InputError(f"PRNConfig.{name}={getattr(self, name)!r}: {why}")

        if not isinstance(self.grid, int) or isinstance(self.grid, bool) or self.grid < 0:
            raise bad("grid", "must be an int >= 0 (0 = global decoder only, G = a G×G patch grid)")
        if not isinstance(self.width, int) or isinstance(self.width, bool) or self.width < 2 or self.width % 2:
            raise bad("width", "must be an even int >= 2 (the attention gates use width/2 channels; the paper uses 32)")
        if not isinstance(self.in_channels, int) or isinstance(self.in_channels, bool) or self.in_channels < 1:
            raise bad("in_channels", "must be an int >= 1")
        for flag in ("row7_quirk", "residual", "step_bn"):
            if not isinstance(getattr(self, flag), bool):
                raise bad(flag, "must be True or False")
        if self.row7_quirk and self.grid != _QUIRK_GRID:
            raise bad("row7_quirk", f"the authors' row-7 wiring exists only for the 8×8 grid (P64); this config has grid={self.grid}")
        if self.global_head_kernel is None:
            object.__setattr__(self, "global_head_kernel", 1 if self.grid == 0 else 3)
        k = self.global_head_kernel
        if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
            raise bad("global_head_kernel", "must be an odd int >= 1 (authors: 1 for P0, 3 for P4/P64)")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/checkpoint safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PRNConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise InputError listing the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise InputError(f"PRN config has unknown keys {unknown}; valid keys: {valid}")
        if "grid" not in d:
            raise InputError(f"PRN config lacks 'grid'; got keys {sorted(d)}")
        return cls(**d)


def padded_size(height: int, width: int, grid: int) -> tuple[int, int]:
    """The size a grid-``grid`` PRN pads an input to: the next multiples of 8·G (8 for G = 0), so
    that the three 2× poolings and the patch grid divide evenly."""
    m = 8 * max(grid, 1)
    return math.ceil(height / m) * m, math.ceil(width / m) * m


def _fold(x: torch.Tensor, g: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Cut a (B, C, G·h, G·w) map into its G×G cells and stack them on the batch axis, image-major.

    Row b·G² + r·G + c of the result is cell (r, c) of image b. ``rows`` (length G) optionally
    replaces patch row r by cell row rows[r] (the authors' row-7 quirk).
    """
    B, C, H, W = x.shape
    h, w = H // g, W // g
    if C > 1 and x.is_contiguous(memory_format=torch.channels_last):  # keep NHWC memory (fast convs)
        x = x.permute(0, 2, 3, 1).view(B, g, h, g, w, C)  # (B, G, h, G, w, C), the memory order
        if rows is not None:
            x = x.index_select(1, rows)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * g * g, h, w, C)  # (B·G², h, w, C)
        return x.permute(0, 3, 1, 2)  # (B·G², C, h, w), channels_last memory
    x = x.view(B, C, g, h, g, w)  # (B, C, G, h, G, w)
    if rows is not None:
        x = x.index_select(2, rows)  # (B, C, G, h, G, w), patch row r now holds cell row rows[r]
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, G, G, C, h, w)
    return x.reshape(B * g * g, C, h, w)  # (B·G², C, h, w)


def _unfold(x: torch.Tensor, g: int) -> torch.Tensor:
    """Inverse of :func:`_fold`: (B·G², C, h, w) -> (B, C, G·h, G·w)."""
    N, C, h, w = x.shape
    B = N // (g * g)
    x = x.view(B, g, g, C, h, w)  # (B, G, G, C, h, w)
    x = x.permute(0, 3, 1, 4, 2, 5)  # (B, C, G, h, G, w)
    return x.reshape(B, C, g * h, g * w)  # (B, C, G·h, G·w)


def check_prn_input(x: Any, in_channels: int = 1, check_values: bool | None = True) -> None:
    """Raise InputError unless ``x`` is a floating (B, in_channels, H, W) tensor, finite if values are checked.

    Type, shape and dtype checks are free (metadata only). The finiteness check reads every value:
    on a CUDA tensor it is a host-device synchronisation, so it runs only when ``check_values`` is
    True, or None and ``x`` is on the CPU; never while torch.compile traces (docs/DESIGN.md:
    values are validated where data enters, hot paths stay free of syncs).
    """
    valid = f"a float tensor (B, {in_channels}, H, W) of probabilities in [0, 1]"
    if not isinstance(x, torch.Tensor):
        raise InputError(f"PRN input must be {valid}, got a {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != in_channels:
        hint = " (add the channel axis: x[:, None])" if x.ndim == 3 else ""
        raise InputError(f"PRN input must be {valid}, got shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise InputError(f"PRN input must be {valid}, got dtype {x.dtype} (convert with x.float(), scaling 0..255 masks to 0..1)")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise InputError(f"PRN input must be {valid} with B, H, W >= 1, got shape {tuple(x.shape)}")
    if not should_check_values(x, check_values):
        return
    if not bool(torch.isfinite(x).all()):
        raise InputError("PRN input contains NaN or Inf values; it must be the base model's finite probability map")


class PRN(nn.Module):
    """PatchRefineNet for any patch grid: refines a base model's probability map.

    forward(x: (B, 1, H, W) probabilities) -> (global_prob, local_prob), each (B, 1, H, W) in (0, 1);
    ``local_prob`` is None when ``grid == 0``.

    Architecture (docs/authors-refine.md §R2–§R3): a recurrent-residual encoder with PSP bottleneck runs once on the whole
    image; global decoders + head decode the whole image; if G > 0, one local decoder + head,
    shared by all G×G patches, decodes each patch from the encoder features of its own cell only
    (3×3 convs zero-pad at patch borders). Patches are folded into the batch, so the local
    decoder runs once on (B·G², C, h, w).

    Any H, W: the input is padded at the bottom/right by edge replication to Hp, Wp, the next
    multiples of 8·G (8 for G = 0) so that the three 2× poolings and the grid divide evenly, and
    outputs are cropped back to H, W. Replication (not zeros) continues foreground that touches
    the border, so the padding adds no artificial object edge for the encoder to react to. The
    patch grid is laid on the **padded** image: a patch is Hp/G × Wp/G pixels and the last patch
    row/column is partly padding. When H and W are multiples of 8·G (512 for G ≤ 64) nothing is
    padded and patches align with pseudo-labels made with patch size H/G (see :func:`resolve_grid`).

    BatchNorm: ``model.eval()`` uses running stats. :meth:`set_batch_statistics` (or the
    :func:`batch_statistics` context manager) makes every BN use the current call's statistics,
    per patch group in the local decoder — the authors' inference, which never called eval()
    (docs/authors-refine.md §R4). In train mode, statistics are pooled over the whole folded batch by default; with the
    switch on they are per patch group, and running stats receive the authors' G² sequential
    updates, i.e. exactly their per-patch training.

    ``check_values`` (attribute, also a constructor keyword): whether forward checks that the input
    is finite. None (default) checks CPU inputs only, so a CUDA forward makes no host-device sync;
    True checks on every device (one sync per call); False never checks — the training and
    prediction engines use False because their datasets check every item when it is read.
    """

    def __init__(self, config: PRNConfig, *, check_values: bool | None = None) -> None:
        super().__init__()
        if not isinstance(config, PRNConfig):
            raise InputError(f"PRN(config) needs a PRNConfig (or use PRN.from_config(dict)), got {type(config).__name__}")
        self.config = config
        self.check_values = check_values
        w, g = config.width, config.grid
        self._local_norms: list[PatchBatchNorm2d] = []  # plain list: not registered twice
        self.encoding = Encoder(config.in_channels, w)
        self.decode3_global = Decoder(8 * w, 4 * w)
        self.decode2_global = Decoder(4 * w, 2 * w)
        self.decode1_global = Decoder(2 * w, w)
        if g > 0:  # registered before the heads: state_dict order as in the authors' files
            self.decode3_local = Decoder(8 * w, 4 * w)
            self.decode2_local = Decoder(4 * w, 2 * w)
            self.decode1_local = Decoder(2 * w, w)
        k = config.global_head_kernel
        self.out_global = nn.Sequential(nn.Conv2d(w, 1, k, padding=k // 2), nn.Sigmoid())
        if g > 0:
            self.out_local = nn.Sequential(nn.Conv2d(w, 1, 3, padding=1), nn.Sigmoid())
            for part in (self.decode3_local, self.decode2_local, self.decode1_local):
                for m in part.modules():
                    if isinstance(m, PatchBatchNorm2d):
                        m.groups = g * g  # batch-statistics mode normalises per patch group
                        self._local_norms.append(m)
            rows = None
            if config.row7_quirk:  # patch row r reads its x1 cell from cell row rows[r]
                rows = torch.arange(g)
                rows[_QUIRK_ROW] = _QUIRK_SOURCE_ROW
            self.register_buffer("_x1_rows", rows, persistent=False)
        if config.step_bn:  # per-application running statistics in the recurrent blocks
            for m in self.modules():
                if isinstance(m, ResidualBlock):
                    m.conv[1].enable_step_statistics(3)
        if config.residual:  # start as the identity on the base map: corrections are learned from zero
            for head in (self.out_global, getattr(self, "out_local", None)):
                if head is not None:
                    nn.init.zeros_(head[0].weight)
                    nn.init.zeros_(head[0].bias)

    @classmethod
    def from_config(cls, config: dict[str, Any] | PRNConfig) -> "PRN":
        """Build from a config dict (as stored in checkpoints) or a PRNConfig."""
        return cls(config if isinstance(config, PRNConfig) else PRNConfig.from_dict(config))

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the input is padded to: the next multiples of 8·G (8 for G = 0)."""
        return padded_size(height, width, self.config.grid)

    @staticmethod
    def _head(head: nn.Sequential, features: torch.Tensor, base_logit: torch.Tensor | None) -> torch.Tensor:
        """``head`` = (conv, sigmoid); with ``base_logit`` the conv output is added to it before the sigmoid."""
        conv, sigmoid = head
        z = conv(features)
        return sigmoid(z if base_logit is None else z + base_logit)

    def reset_step_statistics(self) -> "PRN":
        """Copy each recurrent BN's running statistics into its per-application rows (``step_bn``); returns self."""
        for m in self.modules():
            if isinstance(m, PatchBatchNorm2d):
                m.reset_step_statistics()
        return self

    def set_batch_statistics(self, enabled: bool = True) -> "PRN":
        """Switch batch-statistics BatchNorm on/off (see the class docstring); returns self."""
        set_batch_statistics(self, enabled)
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        check_prn_input(x, self.config.in_channels, self.check_values)
        for m in self._local_norms:  # drop statistics queued by an interrupted call
            m._pending.clear()
        B, _, H, W = x.shape
        Hp, Wp = self.padded_size(H, W)
        if (Hp, Wp) != (H, W):
            x = F.pad(x, (0, Wp - W, 0, Hp - H), mode="replicate")  # (B, 1, Hp, Wp)
        x0, x1, x2, center = self.encoding(x)  # (B, w, Hp, Wp), (B, 2w, Hp/2, ..), (B, 4w, Hp/4, ..), (B, 8w, Hp/8, ..)
        d = self.decode3_global(x2, center)  # (B, 4w, Hp/4, Wp/4)
        d = self.decode2_global(x1, d)  # (B, 2w, Hp/2, Wp/2)
        d = self.decode1_global(x0, d)  # (B, w, Hp, Wp)
        base_logit = None
        if self.config.residual:  # logit of the base probability, clamped so 0 and 1 stay finite
            base_logit = torch.logit(x[:, :1].float().clamp(_RESIDUAL_EPS, 1 - _RESIDUAL_EPS)).to(x.dtype)
        global_prob = self._head(self.out_global, d, base_logit)[:, :, :H, :W]  # (B, 1, H, W)
        g = self.config.grid
        if g == 0:
            return global_prob, None
        d = self.decode3_local(_fold(x2, g), _fold(center, g))  # (B·G², 4w, Hp/4G, Wp/4G)
        d = self.decode2_local(_fold(x1, g, self._x1_rows), d)  # (B·G², 2w, Hp/2G, Wp/2G)
        d = self.decode1_local(_fold(x0, g), d)  # (B·G², w, Hp/G, Wp/G)
        local_prob = self._head(self.out_local, d, None if base_logit is None else _fold(base_logit, g))
        local_prob = _unfold(local_prob, g)[:, :, :H, :W]  # (B, 1, H, W)
        for m in self._local_norms:  # per-patch running-stat updates (train mode + batch statistics)
            m.flush_running_stats()
        return global_prob, local_prob


# ---------------------------------------------------------------- grid names and the authors' files


@dataclass(frozen=True)
class GridChoice:
    """A resolved patch grid: G, the patch side in input pixels, G² patches, the ``pN`` name, and a description."""

    grid: int
    patch_size: int
    n_patches: int
    aux_name: str
    description: str


def _describe(grid: int, patch: int, image_size: int) -> str:
    name = f"p{grid * grid}"
    if grid == 0:
        return (
            f"p0 = global decoder only, pseudo-labels per whole image ({image_size}-px patch, IST); "
            "the authors' ThreshNetP0 (p0_weights.th)"
        )
    text = f"{name} = {grid}×{grid} grid of {patch}-px patches"
    if grid == 2:
        text += (
            "; note: the authors' ThreshNetP4 (p4_weights.th) decoded a 4×4 grid of 128-px patches "
            "— loading that file selects grid 4"
        )
    elif grid == 4:
        text += " (the grid the authors' ThreshNetP4, p4_weights.th, actually decoded)"
    elif grid == 8:
        text += " (the authors' ThreshNetP64 grid; loading their p64_weights.th turns on row7_quirk)"
    return text


def resolve_grid(aux_model: str | None = None, patch_size: int | None = None, image_size: int = 512) -> GridChoice:
    """Turn a user's ``pN`` name (N = number of patches) or a patch size in pixels into a grid.

    ``aux_model``: ``p0`` (global only), ``p4`` (2×2), ``p16`` (4×4), ``p64`` (8×8), ... — N must be 0
    or a perfect square. ``patch_size``: the patch side at the input resolution; it must divide
    ``image_size`` (G = image_size // patch_size); ``patch_size >= image_size`` means grid 0.
    The patch side must be a multiple of 8 so that the model's cells (padded size / G) coincide
    with the pseudo-label patches. If both are given they must agree.
    """
    if not isinstance(image_size, int) or image_size < 8:
        raise InputError(f"image_size={image_size!r}: must be an int >= 8 (the PRN input side in pixels)")
    valid_grids = [g for g in range(1, image_size // 8 + 1) if image_size % (8 * g) == 0]
    examples = ", ".join(["p0"] + [f"p{g * g}" for g in valid_grids[:6]])
    sizes = ", ".join(str(image_size // g) for g in valid_grids[1:7])  # g = 1 (p1) needs --aux_model p1
    if aux_model is None and patch_size is None:
        raise InputError(f"give --aux_model (one of {examples}, ...) or --patch_size (e.g. {sizes})")
    grid_from_name = None
    if aux_model is not None:
        m = re.fullmatch(r"p(\d+)", str(aux_model).strip().lower())
        n = int(m.group(1)) if m else -1
        root = math.isqrt(n) if n >= 0 else -1
        if n < 0 or root * root != n:
            raise InputError(
                f"--aux_model {aux_model!r}: expected pN with N = number of patches, 0 or a perfect square "
                f"(valid for {image_size}-px images: {examples}, ...)"
            )
        grid_from_name = root
    grid = grid_from_name
    if patch_size is not None:
        if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
            raise InputError(f"--patch_size {patch_size!r}: must be a positive int (pixels at the input resolution)")
        if patch_size >= image_size:
            g = 0
        elif image_size % patch_size:
            raise InputError(f"--patch_size {patch_size} does not divide the image size {image_size}; valid: {sizes}, ... or {image_size} (p0)")
        else:
            g = image_size // patch_size
        if grid_from_name is not None and g != grid_from_name:
            raise InputError(f"--aux_model {aux_model} means a {grid_from_name}×{grid_from_name} grid but --patch_size {patch_size} gives {g}×{g}; give one of them")
        grid = g
    assert grid is not None
    if grid > 0 and image_size % (8 * grid):
        raise InputError(
            f"p{grid * grid} on {image_size}-px images gives {image_size / grid:g}-px patches; PRN needs patch sides that are "
            f"multiples of 8 so its cells match the pseudo-label patches. Valid for {image_size} px: {examples}, ..."
        )
    patch = image_size if grid == 0 else image_size // grid
    return GridChoice(grid, patch, grid * grid, f"p{grid * grid}", _describe(grid, patch, image_size))


@functools.lru_cache(maxsize=None)
def _authors_layout(variant: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(key, shape) of every entry of the authors' bare ``variant`` file (docs/authors-refine.md §R5, Appendix A), in order.

    Their files are our PRN at width 32 with one input channel; p4 names its heads ``conv_last_*``.
    """
    config = PRNConfig(grid=0 if variant == "p0" else 8, width=32, global_head_kernel=1 if variant == "p0" else 3)
    with torch.device("meta"):  # shapes only, nothing allocated
        keys = PRN(config).state_dict()
    rename = {v: k for k, v in AUTHORS_P4_RENAMES.items()} if variant == "p4" else {}
    out = []
    for key, value in keys.items():
        for new, old in rename.items():
            key = key.replace(new, old)
        out.append((key, tuple(value.shape)))
    return tuple(out)


def infer_authors_variant(state_dict: dict[str, torch.Tensor]) -> tuple[str | None, PRNConfig]:
    """Which of the authors' models a bare state_dict is (docs/authors-refine.md §R5), and the PRN config its weights imply.

    ``"p4"`` (ThreshNetP4: grid 4, docs/authors-refine.md §R15.5), ``"p64"`` (grid 8 with ``row7_quirk=True``, as their
    checkpoints were trained, docs/authors-refine.md §R3.4) or ``"p0"`` (grid 0) only when every key and shape is that of
    their file. Otherwise ``None`` (e.g. a bare state_dict of our own PRN, another width): the config
    then has the width, input channels and head kernel of the weights, grid 8 if they hold a local
    decoder (a bare file does not record its grid; :func:`load_prn` takes the caller's) and no quirk.
    """
    state_dict = clean_state_dict(state_dict)
    first = state_dict.get("encoding.RRCNN1.Conv_1x1.weight")
    if first is None or first.ndim != 4:
        raise InputError("not a PRN state_dict: 'encoding.RRCNN1.Conv_1x1.weight' (width×in×1×1) is missing")
    width, in_ch = int(first.shape[0]), int(first.shape[1])
    if "conv_last_local.0.weight" in state_dict or "conv_last_global.0.weight" in state_dict:
        variant, grid, quirk, head = "p4", 4, False, "conv_last_global.0.weight"
    elif "out_local.0.weight" in state_dict:
        variant, grid, quirk, head = "p64", 8, True, "out_global.0.weight"
    else:
        variant, grid, quirk, head = "p0", 0, False, "out_global.0.weight"
    if head not in state_dict:
        raise InputError(f"not a PRN state_dict: the global head '{head}' is missing")
    kernel = int(state_dict[head].shape[-1])
    layout = tuple((k, tuple(v.shape)) for k, v in state_dict.items())
    if sorted(layout) != sorted(_authors_layout(variant)) and variant != "p4":  # conv_last_* heads are theirs alone
        variant, quirk = None, False
    return variant, PRNConfig(grid=grid, width=width, row7_quirk=quirk, global_head_kernel=kernel, in_channels=in_ch)


def _bare_config(path: Any, state_dict: dict, requested_grid: int | None, row7_quirk: bool | None) -> PRNConfig:
    """The config of a bare state_dict, with one log line saying what was inferred and why."""
    variant, config = infer_authors_variant(state_dict)
    grid = config.grid
    if grid > 0 and variant != "p4" and requested_grid:  # a local decoder fits any grid: honour the one asked for
        grid = requested_grid
    if variant == "p64" and grid == _QUIRK_GRID:
        why = "the keys and shapes of the authors' ThreshNetP64 file and an 8×8 grid"
        quirk = True if row7_quirk is None else row7_quirk
        how = "; pass --row7_quirk False if these are your own weights" if row7_quirk is None else " (--row7_quirk)"
    elif variant is not None:
        why, quirk, how = f"the keys and shapes of the authors' {variant} file", bool(row7_quirk), ""
    else:
        why = f"a bare state_dict that is not one of the authors' files (width {config.width})"
        quirk, how = bool(row7_quirk), ""
    if grid > 0 and variant != "p4":
        why += f"; grid {grid} from {'the requested --aux_model/--patch_size' if requested_grid else 'the default'}"
    if quirk and grid != _QUIRK_GRID:
        raise InputError(f"{path}: --row7_quirk True needs the 8×8 grid (p64); these weights are loaded on grid {grid}")
    config = replace(config, grid=grid, row7_quirk=quirk)
    log.info("%s: %s (%s): grid %d, row7_quirk %s%s", path, f"authors' {variant}" if variant else "our PRN weights",
             why, grid, quirk, how)
    return config


def _grid_words(grid: int) -> str:
    if grid == 0:
        return "no local decoder (grid 0, p0)"
    article = "an" if str(grid).startswith("8") or grid in (11, 18) else "a"
    return f"a local decoder for {article} {grid}×{grid} grid (p{grid * grid})"


def _prn_config_dict(config: dict | None) -> dict | None:
    """The PRN config inside a checkpoint config: the dict itself, or its 'model'/'prn' entry."""
    if not isinstance(config, dict):
        return None
    if "grid" in config:
        return config
    for key in ("model", "prn"):
        if isinstance(config.get(key), dict) and "grid" in config[key]:
            return config[key]
    return None


def load_prn(
    path: str | os.PathLike,
    map_location: Any = "cpu",
    expected_grid: int | None = None,
    *,
    grid_override: int | None = None,
    requested_grid: int | None = None,
    row7_quirk: bool | None = None,
    allow_numpy_scalars: bool = False,
) -> tuple[PRN, LoadedCheckpoint]:
    """Rebuild and strictly load a PRN from our checkpoint or the authors' bare p0/p4/p64 file.

    The model config comes from the checkpoint (ours) or :func:`infer_authors_variant` (bare).
    ``expected_grid`` (e.g. from ``resolve_grid``) must match it, else InputError ("checkpoint has
    a local decoder for an 8×8 grid, model was built for 4×4"). ``grid_override`` deliberately
    reuses a checkpoint's local decoder on another grid > 0 (the weights do not depend on G; the
    patch side in pixels changes). Returns the model in eval mode on ``map_location``'s device.

    Bare state_dicts (no config): ``requested_grid`` is the grid a local decoder is loaded on (the
    file does not record it; default 8, the authors' P64); ``row7_quirk`` None (auto) switches the
    quirk on only for the authors' P64 layout on the 8×8 grid, True/False force it. For our
    checkpoints ``row7_quirk`` None keeps the saved value.
    """
    ck = load_checkpoint(path, map_location, allow_numpy_scalars=allow_numpy_scalars)
    cfg_dict = _prn_config_dict(ck.config)
    if cfg_dict is not None:
        config, rename = PRNConfig.from_dict(cfg_dict), None
        if row7_quirk is not None and row7_quirk != config.row7_quirk:
            log.warning("%s was saved with row7_quirk %s; loading it with --row7_quirk %s as asked", path,
                        config.row7_quirk, row7_quirk)
            config = replace(config, row7_quirk=row7_quirk)
    elif ck.source == "patchrefinenet":
        raise InputError(f"{path} is a patchrefinenet checkpoint but its config has no PRN 'grid': it is not a PRN checkpoint")
    else:
        try:
            config = _bare_config(path, ck.state_dict, requested_grid, row7_quirk)
        except InputError as e:
            raise InputError(f"{path}: {e} (is this a base-model checkpoint?)" if "PRN state_dict" in str(e)
                             else str(e)) from None
        rename = AUTHORS_P4_RENAMES
    if grid_override is not None and grid_override != config.grid:
        if config.grid == 0 or not isinstance(grid_override, int) or grid_override < 1:
            raise InputError(
                f"grid_override={grid_override!r}: only a checkpoint's local decoder can move to another grid >= 1; "
                f"{path} has {_grid_words(config.grid)}"
            )
        config = replace(config, grid=grid_override, row7_quirk=False)
    if expected_grid is not None and expected_grid != config.grid:
        raise InputError(
            f"{path}: checkpoint has {_grid_words(config.grid)}, model was built for "
            f"{'grid 0 (p0, global only)' if expected_grid == 0 else f'{expected_grid}×{expected_grid}'}. "
            f"Use --aux_model p{config.grid ** 2} (grid {config.grid}) for this checkpoint, or pick the checkpoint "
            "trained for your grid (grid_override=G reuses a local decoder on another grid deliberately)."
        )
    model = PRN(config)
    load_weights_strict(model, ck.state_dict, f"PRN checkpoint {path}", rename=rename)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval(), ck
