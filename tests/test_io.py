"""Atomic writes: permissions as a plain open() gives, and temporaries of killed processes cleaned."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest

from data_utils.io import atomic_path, remove_stale_temporaries, save_npy_atomic, staged_folder, write_text_atomic


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        a = write_text_atomic(tmp_path / "a.json", "{}\n")
        b = save_npy_atomic(tmp_path / "b.npy", np.zeros(3))
    finally:
        os.umask(old)
    assert stat.S_IMODE(a.stat().st_mode) == mode and stat.S_IMODE(b.stat().st_mode) == mode


def test_temporaries_of_killed_processes_are_removed_and_others_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = socket.gethostname()
    abandoned = tmp_path / f".p64_weights.th.{host}~{dead_pid}.abc123.tmp.th"
    live = tmp_path / f".p64_last.th.{host}~{os.getppid()}.def456.tmp.th"
    other_host = tmp_path / f".x.npy.{host}-elsewhere~{dead_pid}.ghi789.tmp.npy"
    user_file = tmp_path / ".hidden_notes.tmp"
    for p in (abandoned, live, other_host, user_file):
        p.write_bytes(b"")
    with atomic_path(tmp_path / "mine.npy") as tmp:  # this process' own temporary, in use
        tmp.write_bytes(b"x")
        assert remove_stale_temporaries(tmp_path, tmp_path / "missing") == [abandoned]
        assert tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, other_host, user_file, tmp_path / "mine.npy"))


def test_staged_folder_replaces_a_subfolder_whole_on_success_and_nothing_on_failure(tmp_path):
    out = tmp_path / "outputs" / "p64"
    (out / "masks").mkdir(parents=True)
    for i in range(3):
        (out / "masks" / f"{i:05d}.png").write_bytes(b"old")
    (out / "figure.png").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with staged_folder(out) as stage:
            (stage / "masks").mkdir()
            (stage / "masks" / "00000.png").write_bytes(b"new")
            raise RuntimeError("failed half-way")
    assert sorted(p.name for p in out.rglob("*")) == ["00000.png", "00001.png", "00002.png", "figure.png", "masks"]
    assert all(p.read_bytes() == b"old" for p in out.rglob("*.png"))
    with staged_folder(out) as stage:
        (stage / "masks").mkdir()
        (stage / "masks" / "00000.png").write_bytes(b"new")
        (stage / "figure.png").write_bytes(b"new")
    assert sorted(p.name for p in out.rglob("*")) == ["00000.png", "figure.png", "masks"]  # no stale old mask
    assert all(p.read_bytes() == b"new" for p in out.rglob("*.png"))
