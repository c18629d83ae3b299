"""Atomic file writes: nothing half-written is ever left under the final name.

Every array, checkpoint, CSV and figure the project writes goes through :func:`atomic_path`: the
data are written to a temporary file in the same folder and moved into place with ``os.replace``
(atomic on POSIX and Windows). If writing fails or is interrupted, the temporary file is removed
and any previous file under the final name is left untouched. Temporary names carry the host and
process id, so a later run removes what a killed one left (:func:`remove_stale_temporaries`);
files get the permissions a plain ``open()`` gives under the umask. A set of outputs that must
change together is written into a :func:`staged_folder` and moved into place on success.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


def _owner() -> str:
    """``<host>~<pid>``: who made a temporary file, so a later run can tell an abandoned one."""
    return f"{socket.gethostname()}~{os.getpid()}"


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``.

    ``suffix`` (default: the final suffix of ``path``) lets writers that append an extension
    (``np.save``, ``plt.savefig``) keep working. The file gets the permissions of a plain
    ``open()`` (0666 less the umask), not the 0600 of a temporary file. A temporary left behind by
    a killed process is removed by :func:`remove_stale_temporaries`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to the entries of ``folder``; on success move every
    entry it holds into ``folder`` (a sub-folder replaces the one of the same name as a whole,
    so no old file survives among new ones); on failure delete it and leave ``folder`` untouched."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{_owner()}.", suffix=".tmp", dir=folder))
    os.chmod(stage, 0o777 & ~_umask())  # what it holds becomes a plain folder of ``folder``
    try:
        yield stage
        for entry in sorted(stage.iterdir()):
            dest = folder / entry.name
            if entry.is_dir() and dest.is_dir():
                old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{_owner()}.", suffix=".tmp", dir=folder))
                os.replace(dest, old / dest.name)
                os.replace(entry, dest)
                shutil.rmtree(old)
            else:
                os.replace(entry, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(*folders: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (and :func:`staged_folder` folders) left in ``folders`` (not
    recursive) by a process that was killed (SIGKILL, power loss): those of this host whose process
    no longer runs.
    Temporaries of live processes and of other hosts are kept. Returns the removed paths."""
    ours = re.compile(rf"^\..+\.{re.escape(socket.gethostname())}~(\d+)\.[^.]+\.tmp")  # see atomic_path
    removed = []
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            m = ours.match(entry.name)
            if m and int(m[1]) != os.getpid() and not _alive(int(m[1])):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


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
