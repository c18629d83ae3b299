"""Atomic file writes: nothing half-written is ever left under the final name.

Every array, checkpoint, CSV and figure the project writes goes through :func:`atomic_path`: the
data are written to a temporary file in the same folder and moved into place with ``os.replace``
(atomic on POSIX and Windows). If writing fails or is interrupted, the temporary file is removed
and any previous file under the final name is left untouched.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``.

    ``suffix`` (default: the final suffix of ``path``) lets writers that append an extension
    (``np.save``, ``plt.savefig``) keep working.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` that never leaves a partial ``.npy`` under ``path``."""
    path = Path(path)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (JSON, CSV, Markdown)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


@contextlib.contextmanager
def open_memmap_atomic(path: str | os.PathLike, shape: tuple[int, ...], dtype=np.float32) -> Iterator[np.memmap]:
    """Create a ``.npy`` memory-map to fill in place; it appears under ``path`` only when complete.

    Use for outputs larger than RAM: write slices as they are computed; on leaving the block
    without an exception the map is flushed and renamed onto ``path``; on an exception (or
    Ctrl-C) the partial file is deleted.
    """
    with atomic_path(path, suffix=".npy") as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        try:
            yield mm
            mm.flush()
        finally:
            del mm
