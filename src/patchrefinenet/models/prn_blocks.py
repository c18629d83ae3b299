"""Building blocks of PRN (docs/authors-refine.md §R2) and the BatchNorm that can use per-patch batch statistics (docs/authors-refine.md §R3.5, §R4).

Attribute names and ``nn.Sequential`` slot indices follow the authors' ``network.py`` exactly, so
their state_dict keys (docs/authors-refine.md §RA) load without renaming: e.g. ``Up.up.1`` is the up-conv's
convolution and ``Up.up.2`` its BatchNorm, because the parameter-free Upsample keeps slot 0.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


class PatchBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same state_dict keys) with an optional batch-statistics mode.

    Off (default): exactly ``nn.BatchNorm2d`` — running stats in eval mode, statistics pooled over
    the whole batch in train mode.

    On (``batch_statistics = True``, set through :func:`set_batch_statistics`): every call is
    normalised with the current call's statistics, also in eval mode, as the authors' inference
    did (docs/authors-refine.md §R4). With ``groups = P > 1`` the input is a folded batch ``(B·P, C, h, w)`` whose row
    ``b·P + p`` holds patch ``p`` of image ``b``; the statistics are then computed per patch group,
    over the B images × h × w positions of that patch, separately for each of the P patches — what
    the authors' per-patch decoder loop computed. Vectorised: the folded batch is viewed as
    ``(B, P·C, h, w)`` and normalised by one ``F.batch_norm`` call with the affine parameters
    repeated P times.

    Running stats: in eval mode they are never touched. In train mode with batch statistics on and
    P > 1, each call's per-patch statistics are queued and :meth:`flush_running_stats` (called by
    ``PRN.forward``) applies them as the authors' loop did: one EMA update per patch and per
    application, in patch order (patch 0's k applications, then patch 1's, ...), in closed form.
    """

    def __init__(self, num_features: int, groups: int = 1, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.groups = groups
        self.batch_statistics = False
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.steps = 1  # > 1: separate running statistics per application (enable_step_statistics)
        self.step = 0  # which application the next call is; the caller sets it

    def enable_step_statistics(self, steps: int) -> None:
        """Keep running statistics per application as well: ``step_mean``/``step_var`` (steps, C).

        A block that applies this BN several times per forward (the recurrent ``ResidualBlock``, 3
        times) feeds it three differently scaled inputs; one running average mixes them, so eval
        mode normalises each application with the wrong statistics (docs/authors-refine.md §R4).
        With step statistics, training updates row ``step`` with each call's batch statistics
        (per-patch statistics averaged when the batch-statistics mode is on), and eval mode
        normalises application ``step`` with row ``step``. The plain running stats are kept as
        well, so the authors' keys stay; the two new buffers are saved in our checkpoints.
        """
        self.steps = int(steps)
        self.register_buffer("step_mean", self.running_mean.detach().clone().repeat(self.steps, 1))
        self.register_buffer("step_var", self.running_var.detach().clone().repeat(self.steps, 1))

    @torch.no_grad()
    def reset_step_statistics(self) -> None:
        """Set every row of the step statistics to the plain running statistics."""
        if self.steps > 1:
            self.step_mean.copy_(self.running_mean.expand_as(self.step_mean))
            self.step_var.copy_(self.running_var.expand_as(self.step_var))

    @torch.no_grad()
    def _update_step(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        m = 0.1 if self.momentum is None else float(self.momentum)
        k = min(self.step, self.steps - 1)
        self.step_mean[k].lerp_(mean.to(self.step_mean.dtype), m)
        self.step_var[k].lerp_(var.to(self.step_var.dtype), m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.steps > 1:
            if not self.training and not self.batch_statistics:
                k = min(self.step, self.steps - 1)
                return F.batch_norm(x, self.step_mean[k], self.step_var[k], self.weight, self.bias, False, 0.0,
                                    self.eps)
            if self.training and not (self.batch_statistics and self.groups > 1):
                with torch.no_grad():
                    xs = x if x.dtype in (torch.float32, torch.float64) else x.float()
                    var, mean = torch.var_mean(xs, dim=(0, 2, 3), correction=1)
                self._update_step(mean, var)
        if not self.batch_statistics or (self.training and self.groups == 1):
            return super().forward(x)
        n, c, h, w = x.shape
        p = self.groups
        if n % p:
            raise RuntimeError(f"PatchBatchNorm2d: batch {n} is not a multiple of its {p} patch groups")
        b = n // p
        xg = x.reshape(b, p * c, h, w)  # (B, P·C, h, w): channel p·C + c = patch p, channel c
        weight = self.weight.repeat(p) if self.weight is not None else None
        bias = self.bias.repeat(p) if self.bias is not None else None
        y = F.batch_norm(xg, None, None, weight, bias, True, 0.0, self.eps)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                xs = xg if xg.dtype in (torch.float32, torch.float64) else xg.float()  # half/bf16 -> fp32
                var, mean = torch.var_mean(xs, dim=(0, 2, 3), correction=1)  # (P·C,) each
            self._pending.append((mean.view(p, c), var.view(p, c)))
            if self.steps > 1:
                self._update_step(mean.view(p, c).mean(0), var.view(p, c).mean(0))
        y = y.view(n, c, h, w)
        if c > 1 and x.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous(memory_format=torch.channels_last)
        return y

    @torch.no_grad()
    def flush_running_stats(self) -> None:
        """Apply the queued per-patch statistics as sequential running-stat updates (see class doc)."""
        if not self._pending:
            return
        mean = torch.stack([m for m, _ in self._pending], 1).flatten(0, 1)  # (P·k, C): patch-major, then call order
        var = torch.stack([v for _, v in self._pending], 1).flatten(0, 1)  # (P·k, C)
        self._pending.clear()
        steps = mean.shape[0]
        n0 = self.num_batches_tracked.to(mean.dtype)
        self.num_batches_tracked.add_(steps)
        if self.momentum is None:  # cumulative average: r = (n0·r0 + Σ s) / (n0 + steps)
            new_mean = (n0 * self.running_mean + mean.sum(0)) / (n0 + steps)
            new_var = (n0 * self.running_var + var.sum(0)) / (n0 + steps)
        else:  # r_n = (1-m)^n r0 + Σ_j m (1-m)^(n-1-j) s_j
            m = float(self.momentum)
            decay = (1.0 - m) ** torch.arange(steps - 1, -1, -1, device=mean.device, dtype=mean.dtype)
            w = (m * decay)[:, None]  # (steps, 1)
            new_mean = (1.0 - m) ** steps * self.running_mean + (w * mean).sum(0)
            new_var = (1.0 - m) ** steps * self.running_var + (w * var).sum(0)
        self.running_mean.copy_(new_mean)
        self.running_var.copy_(new_var)


def set_batch_statistics(module: nn.Module, enabled: bool) -> None:
    """Switch batch-statistics normalisation on/off for every :class:`PatchBatchNorm2d` inside ``module``."""
    for m in module.modules():
        if isinstance(m, PatchBatchNorm2d):
            m.batch_statistics = bool(enabled)


@contextlib.contextmanager
def batch_statistics(module: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Context manager: batch-statistics BatchNorm inside the block, previous settings restored after.

    ``with batch_statistics(model): global_prob, local_prob = model(x)`` reproduces the authors'
    inference, which never called ``model.eval()`` (docs/authors-refine.md §R4): every BN uses the call's statistics,
    per patch group in the local decoder, and (in eval mode) running stats stay untouched.
    """
    norms = [m for m in module.modules() if isinstance(m, PatchBatchNorm2d)]
    previous = [m.batch_statistics for m in norms]
    for m in norms:
        m.batch_statistics = bool(enabled)
    try:
        yield module
    finally:
        for m, flag in zip(norms, previous):
            m.batch_statistics = flag


class ResidualBlock(nn.Module):
    """The authors' recurrent block: one conv+BN+ReLU ``f`` applied 3 times, h = f(x + f(x + f(x))).

    (B, ch, H, W) -> (B, ch, H, W). No identity is added at the output (docs/authors-refine.md §R2.1).
    """

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), PatchBatchNorm2d(ch), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.conv[1]
        bn.step = 0
        h = self.conv(x)
        bn.step = 1
        h = self.conv(x + h)
        bn.step = 2
        return self.conv(x + h)


class RRCNNBlock(nn.Module):
    """Recurrent-residual block: a = 1×1 conv(x); a + RCNN(a). (B, cin, H, W) -> (B, cout, H, W)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.RCNN = nn.Sequential(ResidualBlock(cout), ResidualBlock(cout))
        self.Conv_1x1 = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.Conv_1x1(x)
        return a + self.RCNN(a)


class UpConv(nn.Module):
    """Nearest ×2 upsampling, 3×3 conv, BN, ReLU. (B, cin, H, W) -> (B, cout, 2H, 2W)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(cin, cout, 3, padding=1),
            PatchBatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class AttentionGate(nn.Module):
    """Additive attention gate: x · psi(relu(W_g g + W_x x)), a (B, 1, H, W) gate in (0, 1) broadcast over channels."""

    def __init__(self, f_g: int, f_l: int, f_int: int) -> None:
        super().__init__()
        self.W_g = nn.Sequential(nn.Conv2d(f_g, f_int, 1), PatchBatchNorm2d(f_int))
        self.W_x = nn.Sequential(nn.Conv2d(f_l, f_int, 1), PatchBatchNorm2d(f_int))
        self.psi = nn.Sequential(nn.Conv2d(f_int, 1, 1), PatchBatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * self.psi(self.relu(self.W_g(g) + self.W_x(x)))


class PSPModule(nn.Module):
    """Pyramid pooling: pool to s×s (s = 1, 2, 4, 8), 1×1 conv, bilinear resize back (align_corners=False),
    concat [stages..., input], 1×1 bottleneck, ReLU. (B, ch, H, W) -> (B, ch, H, W); no BN (docs/authors-refine.md §R2.1)."""

    def __init__(self, ch: int, sizes: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(ch, ch, 1, bias=False)) for s in sizes
        )
        self.bottleneck = nn.Conv2d(ch * (len(sizes) + 1), ch, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pyramid = [F.interpolate(stage(x), size=(h, w), mode="bilinear", align_corners=False) for stage in self.stages]
        return self.relu(self.bottleneck(torch.cat(pyramid + [x], dim=1)))


class Encoder(nn.Module):
    """The authors' ``ThreshNetEncoder`` with base width w (32 in the paper), docs/authors-refine.md §R2.2.

    (B, in_ch, H, W) -> x0 (B, w, H, W), x1 (B, 2w, H/2, W/2), x2 (B, 4w, H/4, W/4),
    center (B, 8w, H/8, W/8). H and W must be multiples of 8.
    """

    def __init__(self, in_ch: int, width: int) -> None:
        super().__init__()
        w = width
        self.Maxpool = nn.MaxPool2d(2, 2)
        self.RRCNN1 = RRCNNBlock(in_ch, w)
        self.RRCNN2 = RRCNNBlock(w, 2 * w)
        self.RRCNN3 = RRCNNBlock(2 * w, 4 * w)
        self.RRCNN4 = RRCNNBlock(4 * w, 8 * w)
        self.psp = PSPModule(8 * w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x0 = self.RRCNN1(x)
        x1 = self.RRCNN2(self.Maxpool(x0))
        x2 = self.RRCNN3(self.Maxpool(x1))
        center = self.psp(self.RRCNN4(self.Maxpool(x2)))
        return x0, x1, x2, center


class Decoder(nn.Module):
    """The authors' ``ThreshNetDecoder(in_ch, out_ch)``: upsample the deep features, gate the skip with them,
    then an RRCNN block on concat[gated skip, upsampled] (docs/authors-refine.md §R2.3).

    skip (B, out_ch, 2h, 2w), deep (B, in_ch, h, w) -> (B, out_ch, 2h, 2w); in_ch = 2·out_ch.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.Up = UpConv(in_ch, out_ch)
        self.Up_Conv = RRCNNBlock(in_ch, out_ch)
        self.Attn = AttentionGate(in_ch // 2, out_ch, out_ch // 2)

    def forward(self, skip: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        d = self.Up(deep)
        s = self.Attn(d, skip)
        return self.Up_Conv(torch.cat([s, d], dim=1))
