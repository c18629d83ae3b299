"""Permutohedral-lattice Gaussian filter in pure PyTorch (CPU and CUDA, no compiled extension).

Computes ``W @ V`` for the dense Gaussian affinity ``W_ij ≈ exp(-½‖f_i − f_j‖²)`` of per-pixel
feature vectors ``f`` (Adams et al. 2010, in the form Krähenbühl's DenseCRF and rloss use) in
time and memory linear in the number of pixels. The bilateral RGBXY kernel of DenseCRF and rloss is
this filter on the features ``(x/σ_xy, y/σ_xy, c_1/σ_rgb, …, c_C/σ_rgb)``
(:func:`bilateral_features`); any number ``C ≥ 0`` of guidance channels works (``d = 2 + C``).

Scale and normalisation. The filter is *unnormalised* and includes each pixel's own contribution,
exactly like rloss's ``bilateralfilter`` (same elevation, rounding, rank fix-up, barycentric
weights, blur with weights ½·1·½ along each of the ``d+1`` axes in turn, slice with
``α = 1/(1 + 2^-d)``). Its output is a fraction of the exact Gaussian sum (:mod:`.dense`) that
depends on the feature dimension: ≈ 0.55–0.65 for RGBXY (d = 5; docs/rloss.md §L2b measured 0.56–0.62
on photos), ≈ 0.78 for grayscale+XY (d = 3), ≈ 0.87 for XY only (d = 2), with cosine > 0.99
between the two filtered fields (the per-pixel ratio varies, 0.4–0.95 for d = 5). Loss weights
therefore do not transfer unchanged between this lattice and the exact filter; normalised losses
(divided by a filtered ones/ROI vector) are unaffected because the factor cancels.

Implementation. There is no hash table: vertex keys are packed into one ``int64`` code per vertex
(mixed radix), deduplicated with one stable sort + ``torch.unique_consecutive``, and neighbours are
found with ``torch.searchsorted``. Splat, the d+1 axis blurs and slice are then sparse CSR
matrices built once per lattice (and dtype), so filtering is d+3 sparse-dense products. A batch
of images shares one lattice by carrying the image index as an extra key coordinate.
The filter is a custom autograd Function whose backward applies the exact transpose of the
forward (the same lattice with the axis blurs in reverse order), so gradients are exact for the
value computed — not rloss's ``2·W S`` approximation (the lattice is only nearly symmetric).
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from data_utils.errors import InputError

_MAX_SPAN = 2**62
_SPARSE_MIN_VERTICES = 2**16  # below this many pixel-vertex pairs, index ops beat sparse matmuls


def check_sigma(value: float, name: str) -> float:
    """Return ``float(value)`` if it is a finite number > 0, else raise :class:`InputError` naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number > 0, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def spatial_features(batch: int, height: int, width: int, sigma_xy: float, *,
                     device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Pixel positions divided by ``sigma_xy``: (batch, H·W, 2) with columns (x = column, y = row)."""
    sigma_xy = check_sigma(sigma_xy, "sigma_xy")
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                            torch.arange(width, device=device, dtype=dtype), indexing="ij")
    pos = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1) / sigma_xy  # (P, 2)
    return pos.unsqueeze(0).expand(batch, -1, -1)


def bilateral_features(image: Tensor, sigma_xy: float, sigma_rgb: float) -> Tensor:
    """Features ``(x/σ_xy, y/σ_xy, c_1/σ_rgb, …, c_C/σ_rgb)`` of ``image`` (B, C, H, W) → (B, H·W, 2 + C).

    Colour values are taken as given (the rloss convention is [0, 255] per channel); any channel
    count, grayscale included, is accepted. No gradient flows to the image.
    """
    sigma_rgb = check_sigma(sigma_rgb, "sigma_rgb")
    if image.dim() != 4:
        raise InputError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    B, C, H, W = image.shape
    dtype = image.dtype if image.is_floating_point() else torch.float32
    pos = spatial_features(B, H, W, sigma_xy, device=image.device, dtype=dtype)
    col = image.detach().to(dtype).reshape(B, C, H * W).transpose(1, 2) / sigma_rgb  # (B, P, C)
    return torch.cat([pos, col], dim=2)


def _encode_rows(rows: Tensor) -> Tensor:
    """Injective map of integer rows (Q, c) to int64 codes (Q,): equal rows ↔ equal codes.

    Mixed-radix packing after subtracting each column's minimum; when the radix product would
    overflow, the partial code is first compressed to dense ranks with ``torch.unique``.
    """
    code = rows[:, 0] - rows[:, 0].min()
    span = int(code.max()) + 1
    for j in range(1, rows.shape[1]):
        col = rows[:, j] - rows[:, j].min()
        radix = int(col.max()) + 1
        if span * radix >= _MAX_SPAN:
            code = torch.unique(code, return_inverse=True)[1]
            span = int(code.max()) + 1
        code = code * radix + col
        span *= radix
    return code


class PermutohedralLattice:
    """A lattice built once from per-pixel features; :meth:`filter` then computes ``W @ values``.

    ``features``: (B, P, d) float tensor (already divided by the kernel widths). Build cost is
    O(B·P·d²) plus one sort of B·P·(d+1) codes; the lattice holds (B·P, d+1) vertex indices and
    barycentric weights, (d+1, 2, M) neighbour indices for its M points, and (on first use) the
    sparse matrices. Device follows ``features``; the filter works in the dtype of the values.
    """

    def __init__(self, features: Tensor):
        if features.dim() != 3 or features.shape[2] < 1:
            raise InputError(f"features must be (B, P, d) with d >= 1, got shape {tuple(features.shape)}")
        if not features.is_floating_point():
            raise InputError(f"features must be a floating-point tensor, got {features.dtype}")
        B, P, d = features.shape
        self.batch, self.pixels, self.dim = B, P, d
        feats = features.detach().reshape(B * P, d)
        dev, dt = feats.device, feats.dtype
        n = B * P

        # Elevate onto the hyperplane Σ = 0 in d+1 dimensions (Adams et al. 2010, p. 5).
        inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
        scale = torch.tensor([inv_std / math.sqrt((i + 1) * (i + 2)) for i in range(d)], device=dev, dtype=dt)
        cf = feats * scale  # (n, d)
        suffix = torch.flip(torch.cumsum(torch.flip(cf, [1]), 1), [1])  # suffix[:, j] = Σ_{i≥j} cf_i
        suffix = torch.cat([suffix, torch.zeros(n, 1, device=dev, dtype=dt)], 1)  # (n, d+1)
        shift = torch.cat([torch.zeros(n, 1, device=dev, dtype=dt),
                           torch.arange(1, d + 1, device=dev, dtype=dt) * cf], 1)
        elevated = suffix - shift  # (n, d+1)

        # Nearest 0-coloured lattice point (round half to even, as the SSE build of the reference).
        rd = torch.round(elevated * (1.0 / (d + 1)))
        rem0 = rd * (d + 1)
        total = rd.sum(1, keepdim=True).long()  # (n, 1)

        # Rank of each residual (descending; ties go to the lower index), as the reference's pair
        # loop: for i < j, res_i < res_j ranks i one lower, otherwise j.
        res = elevated - rem0
        rank = torch.zeros(n, d + 1, dtype=torch.int32, device=dev)
        for j in range(1, d + 1):
            later = res[:, j:j + 1] > res[:, :j]  # (n, j): res_j > res_i for each i < j
            rank[:, :j] += later
            rank[:, j] += (~later).sum(1, dtype=torch.int32)
        rank = rank.long() + total  # (n, d+1)
        low, high = rank < 0, rank > d
        rank = rank + (d + 1) * (low.long() - high.long())
        rem0 = rem0 + (d + 1) * (low.to(dt) - high.to(dt))

        # Barycentric weights of the d+1 enclosing-simplex vertices (p. 10).
        v = (elevated - rem0) * (1.0 / (d + 1))
        bary = torch.zeros(n, d + 2, device=dev, dtype=dt)
        bary.scatter_add_(1, d - rank, v)
        bary.scatter_add_(1, d - rank + 1, -v)
        bary[:, 0] += 1.0 + bary[:, d + 1]
        self.weights = bary[:, : d + 1].contiguous()  # (n, d+1)

        # Vertex r of the simplex has key rem0 + r − (d+1)·[rank > d − r] (first d coordinates
        # suffice, as the coordinates sum to 0); the image index is one more key coordinate.
        rem = rem0[:, :d].round().long()  # (n, d)
        image = torch.arange(B, device=dev).repeat_interleave(P)  # (n,)
        lo = rem.amin(0) - 2 * d  # neighbour queries stay within rem ± 2d
        radix = rem.amax(0) + 2 * d - lo + 1
        if math.prod(radix.tolist()) * B < _MAX_SPAN:
            self._index_packed(rem - lo, rank, image, radix)
        else:
            self._index_rows(rem, rank[:, :d], image)
        self.alpha = 1.0 / (1.0 + 2.0 ** (-d))
        self._cache: dict[torch.dtype, tuple[Tensor, Tensor, list[Tensor]]] = {}

    def _index_packed(self, rem: Tensor, rank: Tensor, image: Tensor, radix: Tensor) -> None:
        """Vertex indices and neighbours with keys packed as one mixed-radix int64 code.

        ``rem`` (n, d) offset key of vertex 0, ``rank`` (n, d+1) the simplex ranks.
        The code is linear in the key, so a neighbour's code is the point's code plus a constant.
        """
        d, dev = self.dim, rem.device
        mult = torch.ones(d, dtype=torch.long, device=dev)
        for i in range(d - 2, -1, -1):
            mult[i] = mult[i + 1] * radix[i + 1]
        batch_mult = int(mult[0] * radix[0])
        n = rem.shape[0]
        base = (rem * mult).sum(1) + image * batch_mult  # (n,) code of vertex 0 (key = rem)
        # Vertex r+1 adds 1 to every coordinate and subtracts d+1 from the one ranked d − r.
        owner = torch.empty(n, d + 1, dtype=torch.long, device=dev)
        owner.scatter_(1, rank, torch.arange(d + 1, device=dev).expand(n, d + 1))  # owner[:, k] = i with rank_i = k
        mult_ext = torch.cat([mult, mult.new_zeros(1)])  # the (d+1)-th coordinate is not stored
        steps = int(mult.sum()) - (d + 1) * mult_ext[owner.flip(1)[:, : d]]  # (n, d): vertex r → r+1
        codes = torch.cat([base.unsqueeze(1), base.unsqueeze(1) + torch.cumsum(steps, 1)], 1)  # (n, d+1)
        uniq = self._deduplicate(codes.reshape(-1))  # sorted codes
        M = self.points
        step = torch.full((d + 1,), -int(mult.sum()), dtype=torch.long, device=dev)
        step[:d] += (d + 1) * mult  # axis j < d: +d on coordinate j, −1 elsewhere; axis d: −1 everywhere
        queries = torch.stack([uniq + step.view(-1, 1), uniq - step.view(-1, 1)], 1)  # (d+1, 2, M)
        self.neighbours = self._lookup(uniq, torch.arange(M, device=dev), queries)

    def _index_rows(self, rem: Tensor, rank: Tensor, image: Tensor) -> None:
        """Fallback when packed codes would overflow int64: deduplicate key rows by compressed codes."""
        d, dev = self.dim, rem.device
        n = rem.shape[0]
        r = torch.arange(d + 1, device=dev).view(1, d + 1, 1)
        keys = rem.unsqueeze(1) + r - (d + 1) * (rank.unsqueeze(1) > d - r).long()  # (n, d+1, d)
        keys = torch.cat([keys, image.view(n, 1, 1).expand(n, d + 1, 1)], 2).reshape(n * (d + 1), d + 1)
        self._deduplicate(_encode_rows(keys))
        M = self.points
        table = torch.empty(M, d + 1, dtype=keys.dtype, device=dev)
        table[self.offsets.reshape(-1)] = keys  # one representative key per lattice point
        step = torch.full((d + 1, d + 1), -1, dtype=torch.long, device=dev)
        step[torch.arange(d), torch.arange(d)] = d
        step[:, d] = 0  # the image index never changes
        queries = torch.stack([table + step.unsqueeze(1), table - step.unsqueeze(1)], 1)  # (d+1, 2, M, d+1)
        codes = _encode_rows(torch.cat([table, queries.reshape(-1, d + 1)], 0))
        sorted_codes, perm = torch.sort(codes[:M])
        self.neighbours = self._lookup(sorted_codes, perm, codes[M:].view(d + 1, 2, M))

    def _deduplicate(self, codes: Tensor) -> Tensor:
        """Set ``offsets`` (n, d+1) lattice indices from vertex codes (n·(d+1),); return the sorted unique codes.

        One stable sort serves both the deduplication and, later, the splat matrix (vertices
        grouped by lattice point, pixels ascending within a group).
        """
        sorted_codes, self._order = codes.sort(stable=True)
        uniq, inverse, self._counts = torch.unique_consecutive(sorted_codes, return_inverse=True, return_counts=True)
        offsets = torch.empty_like(inverse)
        offsets[self._order] = inverse
        self.offsets = offsets.view(-1, self.dim + 1)
        self.points = uniq.numel()
        return uniq

    def _lookup(self, sorted_codes: Tensor, index: Tensor, queries: Tensor) -> Tensor:
        """Lattice index of each query code (``index`` of its match in ``sorted_codes``), or M if absent."""
        M = sorted_codes.numel()
        pos = torch.searchsorted(sorted_codes, queries.reshape(-1)).clamp_(max=M - 1)
        found = sorted_codes[pos] == queries.reshape(-1)
        return torch.where(found, index[pos], torch.full_like(pos, M)).view(queries.shape).contiguous()

    def _matrices(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Sparse CSR (splat (M, n), slice (n, M) with α folded in, blur_j (M, M)) in ``dtype``, cached."""
        if dtype not in self._cache:
            with warnings.catch_warnings():  # torch flags sparse CSR as beta; the ops used here are stable
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
                self._cache[dtype] = self._build_matrices(dtype)
        return self._cache[dtype]

    def _build_matrices(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, list[Tensor]]:
        n, d1 = self.offsets.shape
        M, dev = self.points, self.offsets.device
        w = self.weights.to(dtype)
        cols, order = self.offsets.sort(1)  # CSR wants sorted column indices within a row
        slice_ = torch.sparse_csr_tensor(torch.arange(0, n * d1 + 1, d1, device=dev), cols.reshape(-1),
                                         (w.gather(1, order) * self.alpha).reshape(-1), size=(n, M),
                                         check_invariants=False)
        crow = torch.cat([self._counts.new_zeros(1), torch.cumsum(self._counts, 0)])
        splat = torch.sparse_csr_tensor(crow, self._order // d1, w.reshape(-1)[self._order], size=(M, n),
                                        check_invariants=False)
        blurs = []
        own = torch.arange(M, device=dev)
        half = torch.tensor([0.5, 1.0, 0.5], dtype=dtype, device=dev).expand(M, 3)
        for j in range(d1):  # new = old + ½(left + right); missing neighbours (index M) are dropped
            nb, order = torch.stack([self.neighbours[j, 0], own, self.neighbours[j, 1]], 1).sort(1)
            keep = nb < M
            crow = torch.cat([nb.new_zeros(1), torch.cumsum(keep.sum(1), 0)])
            blurs.append(torch.sparse_csr_tensor(crow, nb[keep], half.gather(1, order)[keep], size=(M, M),
                                                 check_invariants=False))
        return splat, slice_, blurs

    def _apply(self, values: Tensor, transpose: bool) -> Tensor:
        """Splat, blur, slice without autograd: (B, P, V) → (B, P, V).

        Large lattices use the cached sparse matrices; small ones (below ``_SPARSE_MIN_VERTICES``
        pixel-vertex pairs) use index_add/index_select directly, which avoids the sparse kernels'
        fixed threading overhead on tiny inputs. Both compute the same products.
        """
        B, P, V = values.shape
        x = values.reshape(B * P, V)
        if self.offsets.numel() < _SPARSE_MIN_VERTICES:
            return self._apply_indexed(x, transpose).view(B, P, V)
        splat, slice_, blurs = self._matrices(values.dtype)
        lat = splat @ x  # (M, V)
        for blur in (reversed(blurs) if transpose else blurs):
            lat = blur @ lat
        return (slice_ @ lat).view(B, P, V)

    def _apply_indexed(self, x: Tensor, transpose: bool) -> Tensor:
        """The same filter with index ops on an (M+1, V) lattice whose last row stays 0: (n, V) → (n, V)."""
        n, d1 = self.offsets.shape
        flat = self.offsets.reshape(-1)
        w = self.weights.to(x.dtype).unsqueeze(2)  # (n, d+1, 1)
        lat = x.new_zeros(self.points + 1, x.shape[1])
        lat.index_add_(0, flat, (w * x.unsqueeze(1)).reshape(n * d1, -1))
        zero = lat[-1:]
        for j in (range(d1 - 1, -1, -1) if transpose else range(d1)):
            left, right = lat.index_select(0, self.neighbours[j, 0]), lat.index_select(0, self.neighbours[j, 1])
            lat = torch.cat([lat[:-1] + 0.5 * (left + right), zero])
        return (lat.index_select(0, flat).view(n, d1, -1) * w).sum(1) * self.alpha

    def filter(self, values: Tensor, transpose: bool = False) -> Tensor:
        """``W @ values`` per image: (B, P, V) → (B, P, V); differentiable (exact transpose in backward)."""
        if values.dim() != 3 or values.shape[0] != self.batch or values.shape[1] != self.pixels:
            raise InputError(f"values must be (B={self.batch}, P={self.pixels}, V) to match the lattice, "
                             f"got shape {tuple(values.shape)}")
        if values.device != self.offsets.device:
            raise InputError(f"values are on {values.device} but the lattice was built on {self.offsets.device}")
        return _LatticeFilter.apply(values, self, transpose)

    __call__ = filter


class _LatticeFilter(torch.autograd.Function):
    """``W V`` whose backward is ``Wᵀ G`` (itself differentiable, so double backward works)."""

    @staticmethod
    def forward(ctx, values: Tensor, lattice: PermutohedralLattice, transpose: bool) -> Tensor:
        ctx.lattice, ctx.transpose = lattice, transpose
        return lattice._apply(values.contiguous(), transpose)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _LatticeFilter.apply(grad.contiguous(), ctx.lattice, not ctx.transpose), None, None


def bilateral_filter(values: Tensor, image: Tensor, sigma_xy: float, sigma_rgb: float) -> Tensor:
    """One-shot lattice bilateral filter: ``values`` (B, V, H, W) guided by ``image`` (B, C, H, W) → (B, V, H, W)."""
    if values.dim() != 4 or image.dim() != 4 or values.shape[0] != image.shape[0] \
            or values.shape[2:] != image.shape[2:]:
        raise InputError(f"values (B, V, H, W) and image (B, C, H, W) must agree in B, H, W; "
                         f"got {tuple(values.shape)} and {tuple(image.shape)}")
    B, V, H, W = values.shape
    lattice = PermutohedralLattice(bilateral_features(image.to(values.dtype), sigma_xy, sigma_rgb))
    out = lattice.filter(values.reshape(B, V, H * W).transpose(1, 2))
    return out.transpose(1, 2).reshape(B, V, H, W)
