"""A montage of generated samples, to see what a demo dataset looks like."""
from __future__ import annotations

import numpy as np

from data_utils.errors import InputError
from data_utils.synthetic.writer import render_scene

_OVERLAY = np.array([255, 40, 40], np.float32)


def preview_montage(kind: str = "roads", *, n: int = 4, size: int = 256, seed: int = 0) -> np.ndarray:
    """RGB uint8 image of ``n`` rows (samples 0…n−1), each: image | mask | mask overlaid in red.

    Shape (n·size, 3·size, 3). The samples are the ones :func:`write_demo_dataset` writes with
    the same ``seed`` and ``size``.
    """
    if int(n) != n or n < 1 or int(size) != size or size < 32:
        raise InputError(f"preview_montage: n must be an integer >= 1 and size an integer >= 32, "
                         f"got n={n!r}, size={size!r}")
    rows = []
    for index in range(n):
        scene = render_scene(kind, seed=seed, index=index, size=size)
        mask = scene.mask.astype(bool)
        overlay = scene.image.astype(np.float32)
        overlay[mask] = 0.5 * overlay[mask] + 0.5 * _OVERLAY
        rows.append(np.concatenate([scene.image, np.repeat(scene.mask[..., None] * np.uint8(255), 3, axis=2),
                                    overlay.astype(np.uint8)], axis=1))
    return np.concatenate(rows, axis=0)
