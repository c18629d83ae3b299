"""Building blocks shared by the scene generators: smooth random fields, curves and blobs.

Everything here works on float32 arrays in image coordinates (``H × W``, x to the right, y down)
and draws its randomness from a caller-supplied ``numpy.random.Generator``, so a scene is a pure
function of its generator state. OpenCV does the heavy lifting (separable Gaussian blurs, resizes,
polyline rasterisation), which keeps a 256 × 256 scene in the low milliseconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

_SUBPIXEL_BITS = 4  # cv2 drawing with fractional coordinates: points scaled by 2**4


@dataclass(frozen=True)
class Scene:
    """One generated sample: ``image`` (H, W, 3) uint8 **RGB**, ``mask`` (H, W) uint8 {0, 1}, and
    ``conditions``: scalar summaries of the degradations used (for the manifest and analysis)."""

    image: np.ndarray
    mask: np.ndarray
    conditions: dict[str, float] = field(default_factory=dict)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Gaussian random field with correlation length ``scale`` px: (H, W) float32, mean 0, std 1.

    White noise is blurred at a reduced resolution (4 samples per correlation length) and
    resized up, which costs the same for every ``scale``.
    """
    h, w = shape
    step = max(1.0, scale / 4.0)
    sh, sw = math.ceil(h / step) + 2, math.ceil(w / step) + 2
    z = rng.standard_normal((sh, sw)).astype(np.float32)
    z = cv2.GaussianBlur(z, (0, 0), sigmaX=scale / step, borderType=cv2.BORDER_REFLECT)
    z = cv2.resize(z, (w, h), interpolation=cv2.INTER_CUBIC) if (sh, sw) != (h, w) else z
    return standardise(z)


def fractal_field(rng: np.random.Generator, shape: tuple[int, int], scales: tuple[float, ...],
                  decay: float = 0.6) -> np.ndarray:
    """Sum of :func:`smooth_field` octaves (weights 1, decay, decay², …), re-standardised."""
    total = np.zeros(shape, np.float32)
    for i, s in enumerate(scales):
        total += (decay ** i) * smooth_field(rng, shape, s)
    return standardise(total)


def standardise(z: np.ndarray) -> np.ndarray:
    """Shift/scale a field to mean 0 and std 1 (a constant field becomes all zeros)."""
    z = z - z.mean()
    sd = float(z.std())
    return (z / sd if sd > 1e-12 else z).astype(np.float32)


def soft_step(z: np.ndarray, level: float, softness: float) -> np.ndarray:
    """Logistic ramp from 0 (``z`` ≪ ``level``) to 1 (``z`` ≫ ``level``), width ``softness``."""
    return (0.5 + 0.5 * np.tanh((z - level) / (2.0 * softness))).astype(np.float32)


def grain(rng: np.random.Generator, shape: tuple[int, int], sigma: float = 0.7) -> np.ndarray:
    """Fine texture: lightly blurred white noise, (H, W) float32 with std 1."""
    z = rng.standard_normal(shape, dtype=np.float32)
    if sigma > 0:
        z = cv2.GaussianBlur(z, (0, 0), sigmaX=sigma)
    return standardise(z)


def linear_ramp(shape: tuple[int, int], angle: float) -> np.ndarray:
    """Planar ramp along direction ``angle`` (radians): (H, W) float32 in [-1, 1]."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = (x - (w - 1) / 2) * math.cos(angle) + (y - (h - 1) / 2) * math.sin(angle)
    return (r / max(1.0, float(np.abs(r).max()))).astype(np.float32)


def smooth_walk(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """1-D smooth noise of length ``n`` (correlation ``scale`` samples), std ≈ 1, float32."""
    z = rng.standard_normal((1, n + 8)).astype(np.float32)
    z = cv2.GaussianBlur(z, (0, 0), sigmaX=max(scale, 0.5), borderType=cv2.BORDER_REFLECT)[0, 4:n + 4]
    return z * math.sqrt(2.0 * math.sqrt(math.pi) * max(scale, 0.5))


def random_curve(rng: np.random.Generator, start: tuple[float, float], heading: float, length: float,
                 *, step: float, sway: float, sway_scale: float, drift: float = 0.0) -> np.ndarray:
    """A smooth random path: (n, 2) float32 points (x, y) starting at ``start``.

    The heading is ``heading + sway·s(t) + drift·Σ s'(t)``: ``s`` and ``s'`` are independent smooth
    unit-std noises with correlation length ``sway_scale`` steps, so ``sway`` (radians) bends the
    path without looping and ``drift`` (radians per step) lets it turn gradually.
    """
    n = max(2, int(length / step))
    theta = heading + sway * smooth_walk(rng, n, sway_scale)
    if drift:
        theta = theta + drift * np.cumsum(smooth_walk(rng, n, sway_scale))
    steps = np.stack([np.cos(theta), np.sin(theta)], axis=1) * step
    pts = np.asarray(start, np.float32)[None] + np.cumsum(steps, axis=0)
    return np.concatenate([np.asarray(start, np.float32)[None], pts.astype(np.float32)])


def draw_polyline(canvas: np.ndarray, pts: np.ndarray, width: float, value: float | tuple = 1.0,
                  antialias: bool = False) -> None:
    """Rasterise a polyline of ``width`` px into ``canvas`` (in place), with sub-pixel points.

    Without ``antialias`` the pixels are set to ``value`` (a scalar, or a colour tuple for an
    (H, W, 3) canvas). With ``antialias`` (2-D float canvas, scalar value) the coverage times
    ``value`` is max-composited into the canvas — OpenCV anti-aliases 8-bit images only, so the
    line is drawn on a uint8 scratch canvas first.
    """
    p = np.round(pts * (1 << _SUBPIXEL_BITS)).astype(np.int32).reshape(-1, 1, 2)
    thickness = max(1, int(round(width)))
    if antialias:
        scratch = np.zeros(canvas.shape[:2], np.uint8)
        cv2.polylines(scratch, [p], isClosed=False, color=255, thickness=thickness, lineType=cv2.LINE_AA,
                      shift=_SUBPIXEL_BITS)
        np.maximum(canvas, scratch * np.float32(float(value) / 255.0), out=canvas)
        return
    color = tuple(float(c) for c in value) if isinstance(value, tuple) else float(value)
    cv2.polylines(canvas, [p], isClosed=False, color=color, thickness=thickness, lineType=cv2.LINE_8,
                  shift=_SUBPIXEL_BITS)


def draw_disc(canvas: np.ndarray, centre: tuple[float, float], radius: float) -> None:
    """Max-composite an anti-aliased filled disc (coverage in [0, 1]) into a 2-D float ``canvas``."""
    scratch = np.zeros(canvas.shape[:2], np.uint8)
    c = tuple(int(round(v * (1 << _SUBPIXEL_BITS))) for v in centre)
    cv2.circle(scratch, c, int(round(radius * (1 << _SUBPIXEL_BITS))), 255, thickness=-1, lineType=cv2.LINE_AA,
               shift=_SUBPIXEL_BITS)
    np.maximum(canvas, scratch * np.float32(1.0 / 255.0), out=canvas)


_BLOB_MARGIN = 8.0  # px of signed distance kept outside a blob; farther pixels read −_BLOB_MARGIN


def blob_window(rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float], radius: float,
                *, aspect: float = 1.0, irregularity: float = 0.15,
                harmonics: int = 5) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Signed distance (px, positive inside) to a smooth irregular ellipse, in a window around it.

    The outline in polar form is ``r(θ) = radius·(1 + Σ_k a_k cos(kθ + φ_k))`` for k = 2…harmonics,
    with ``a_k ~ N(0, irregularity / k)``, stretched by ``aspect`` along a random axis. The value
    is ``r(θ) − ρ`` (exact on rays from the centre, a good proxy near the outline), clamped to
    ≥ −8. Returns the window's values and its ``(rows, cols)`` slices; the window may be empty
    when the blob lies outside the image (everything outside it is ≤ −8 px).
    """
    h, w = shape
    angle = rng.uniform(0, math.pi)
    coeffs = [(rng.normal(0, irregularity / k), rng.uniform(0, 2 * math.pi)) for k in range(2, harmonics + 1)]
    reach = radius * (1.0 + sum(abs(a) for a, _ in coeffs)) * math.sqrt(aspect) + _BLOB_MARGIN + 1
    x0, x1 = min(w, max(0, int(centre[0] - reach))), max(0, min(w, int(centre[0] + reach) + 1))
    y0, y1 = min(h, max(0, int(centre[1] - reach))), max(0, min(h, int(centre[1] + reach) + 1))
    y, x = np.ogrid[y0:y1, x0:x1]
    dx, dy = (x - centre[0]).astype(np.float32), (y - centre[1]).astype(np.float32)
    ca, sa = math.cos(angle), math.sin(angle)
    u = (dx * ca + dy * sa) / math.sqrt(aspect)
    v = (dy * ca - dx * sa) * math.sqrt(aspect)
    rho = np.sqrt(u * u + v * v)
    # cos(kθ + φ) = Re(e^{iφ} z^k) with z = e^{iθ} = (u + iv)/ρ: no trigonometry per pixel
    z = (u + 1j * v).astype(np.complex64) / np.maximum(rho, 1e-6)
    zk, r = z, np.ones_like(rho)
    for a, phase in coeffs:
        zk = zk * z
        r += a * (zk.real * math.cos(phase) - zk.imag * math.sin(phase))
    sdf = radius * np.maximum(r, 0.3) - rho
    return np.maximum(sdf, -_BLOB_MARGIN).astype(np.float32), (slice(y0, y1), slice(x0, x1))


def blob_sdf(rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float], radius: float,
             *, aspect: float = 1.0, irregularity: float = 0.15, harmonics: int = 5) -> np.ndarray:
    """:func:`blob_window` on the whole image: (H, W) float32, −8 outside the window."""
    out = np.full(shape, -_BLOB_MARGIN, np.float32)
    win, sl = blob_window(rng, shape, centre, radius, aspect=aspect, irregularity=irregularity,
                          harmonics=harmonics)
    out[sl] = win
    return out


# NumPy broadcasts over a trailing axis of length 3 slowly (a 3-long inner loop); the colour
# helpers below work plane by plane and let OpenCV interleave, which is ~10x faster.

def modulate(img: np.ndarray, gain: np.ndarray | tuple[float, float, float]) -> np.ndarray:
    """``img · gain`` for an (H, W, 3) image and an (H, W) gain map or a per-channel gain tuple."""
    if isinstance(gain, np.ndarray) and gain.ndim == 2:
        g = gain.astype(np.float32, copy=False)
        return cv2.multiply(img, cv2.merge([g, g, g]))
    return cv2.multiply(img, tuple(float(c) for c in gain) + (0.0,))


def solid(shape: tuple[int, int], colour: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """An (H, W, 3) float32 image of one colour."""
    return cv2.merge([np.full(shape, float(c), np.float32) for c in colour])


def blend(base: np.ndarray, layer: np.ndarray | tuple[float, float, float], alpha: np.ndarray) -> np.ndarray:
    """``base·(1 − α) + layer·α`` for an (H, W, 3) image, an (H, W, 3) image or a colour, and an
    (H, W) alpha (returns a new array)."""
    alpha = alpha.astype(np.float32, copy=False)
    if not (isinstance(layer, np.ndarray) and layer.shape == base.shape):
        layer = solid(alpha.shape, np.asarray(layer, np.float32).reshape(3))
    return cv2.blendLinear(base.astype(np.float32, copy=False), layer.astype(np.float32, copy=False),
                           1.0 - alpha, alpha)


def colour_texture(base_rgb: tuple[float, float, float] | np.ndarray, field: np.ndarray, amount: float,
                   tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """An (H, W, 3) image ``base·(1 + amount·field·tint)``: brightness texture with a colour cast."""
    f = (amount * field).astype(np.float32, copy=False)
    return cv2.merge([f * float(b * t) + float(b) for b, t in zip(base_rgb, tint)])


def finish(rgb: np.ndarray, rng: np.random.Generator, noise: float, blur: float = 0.0) -> np.ndarray:
    """Sensor model: optional Gaussian blur, additive pixel noise, clip, round → (H, W, 3) uint8 RGB."""
    if blur > 0:
        rgb = cv2.GaussianBlur(rgb, (0, 0), sigmaX=blur)
    if noise > 0:
        rgb = rgb + noise * rng.standard_normal(rgb.shape, dtype=np.float32)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
