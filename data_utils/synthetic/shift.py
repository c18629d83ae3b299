"""Deployment shift: the same scenes seen through another sensor, in other weather.

A base model trained on one distribution and used on another is miscalibrated *region by region*
— the situation PatchRefineNet exists for. :func:`apply_shift` turns a rendered scene into its
deployment version with degradations the training scenes do not contain:

- ``"haze"``: a patchy veil (a smooth random field pushed through a soft step, so about half of
  the image lies under it) that blends up to ``0.6·strength`` of a pale haze colour into the image
  and washes out its contrast, plus a dimmed region (gain down to ``1 − 0.45·strength``) and a
  sensor colour cast. Under the veil a road or polyp is faint; elsewhere the image is nearly
  unchanged. What the base model makes of it is measured, not designed: the demo's polyp model
  calls much of the pale veil polyp (README, the demo's results).

The shift is a pure function of the image and the generator state (deterministic for a seed).
"""
from __future__ import annotations

import numpy as np

from data_utils.errors import InputError
from data_utils.synthetic.fields import blend, modulate, smooth_field, soft_step

SHIFTS = ("haze",)


def apply_shift(image: np.ndarray, rng: np.random.Generator, shift: str = "haze",
                strength: float = 1.0) -> tuple[np.ndarray, dict[str, float]]:
    """(shifted (H, W, 3) uint8 RGB image, condition summaries) for an (H, W, 3) uint8 RGB ``image``."""
    if shift not in SHIFTS:
        raise InputError(f"shift {shift!r}: choose one of {', '.join(SHIFTS)}")
    if not 0.0 <= float(strength) <= 1.5:
        raise InputError(f"shift strength {strength!r}: must be in [0, 1.5]")
    h, w = image.shape[:2]
    rgb = image.astype(np.float32) / 255.0
    veil = 0.6 * strength * soft_step(smooth_field(rng, (h, w), scale=h / 3.0), level=0.0, softness=0.35)
    dim = 1.0 - 0.45 * strength * soft_step(smooth_field(rng, (h, w), scale=h / 2.5), level=0.3, softness=0.35)
    cast = tuple(float(c) for c in 1.0 + 0.08 * strength * rng.uniform(-1.0, 1.0, 3))
    rgb = modulate(modulate(rgb, dim), cast)
    rgb = blend(rgb, (0.78, 0.79, 0.82), veil)
    out = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out, {"shift_veil_mean": float(veil.mean()), "shift_dim_mean": float(1.0 - dim.mean())}
