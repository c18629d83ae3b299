"""Provenance of derived files: what a file was made from, so stale files are never reused silently.

A derived file ``X`` (pseudo-labels, for example) gets a sidecar ``X.provenance.json`` written
atomically next to it, holding the fingerprints of its input files and the settings it was made
with. A fingerprint is (size, mtime_ns, sha256): a file whose size and mtime are unchanged is taken
as unchanged (no read); otherwise its content hash decides, so a copied or touched but identical
input still matches and a changed one never does.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from data_utils.io import write_text_atomic

SIDECAR_SUFFIX = ".provenance.json"


def sidecar_path(path: str | os.PathLike) -> Path:
    """``<path>.provenance.json``: where the provenance record of ``path`` lives."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def content_hash(path: str | os.PathLike, block: int = 1 << 24) -> str:
    """sha256 of the file's bytes, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(path: str | os.PathLike, content: bool = True) -> dict[str, Any]:
    """{"name", "size", "mtime_ns"[, "sha256"]} of an existing file (the hash only if ``content``)."""
    path = Path(path)
    st = path.stat()
    record = {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if content:
        record["sha256"] = content_hash(path)
    return record


def matches(record: dict[str, Any], path: str | os.PathLike) -> bool:
    """Whether ``path`` still holds the content ``record`` (a :func:`fingerprint`) describes."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_size != record.get("size"):
        return False
    if st.st_mtime_ns == record.get("mtime_ns"):
        return True
    return "sha256" in record and content_hash(path) == record["sha256"]


def changed_inputs(recorded: dict[str, dict], inputs: dict[str, str | os.PathLike]) -> list[str]:
    """The names of ``inputs`` (name → path) whose content differs from their ``recorded`` fingerprint."""
    return [name for name, path in inputs.items() if name not in recorded or not matches(recorded[name], path)]


def write_provenance(path: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write the sidecar of ``path`` atomically (JSON)."""
    return write_text_atomic(sidecar_path(path), json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_provenance(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar record of ``path``, or None if it has none (or an unreadable one)."""
    try:
        record = json.loads(sidecar_path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return record if isinstance(record, dict) else None
