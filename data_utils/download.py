"""Download the authors' released weights (and, on request, ``data.zip``) from Google Drive (docs/authors-seg.md §S6).

Each dataset's archive holds its base-model weights and the released PRN weights; they are
placed where the scripts look for them, derived from ``src/<ds>/dataset.toml``:

* ``src/<ds>/seg-models/checkpoints/released/<checkpoint>``
* ``src/<ds>/refine-models/checkpoints/released/<refine.checkpoint>``

``released/`` is theirs alone: training writes ``checkpoints/<name>/``, so a download never
replaces a trained file and training never replaces a downloaded one. A file already in place is
never replaced unless ``overwrite`` (``--overwrite True``) is given.

``data.zip`` (6.7 GB) is unpacked into ``<dest>/data/`` (a leading ``data/`` folder inside the zip
is dropped). Two Drive ids are known for it: the README's, tried first, then the one in the
authors' ``download_data.py``.

Safety: archives are downloaded into a temporary folder inside ``<dest>`` (same disk, removed
afterwards whatever happens); an archive with an entry whose path is absolute or contains
``..`` is refused before anything is written; each file is written under a temporary name and
renamed into place only when complete. When a download fails (offline, Drive quota) the error
lists the manual Drive links and where to put each file.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from data_utils import layout
from data_utils.errors import InputError
from data_utils.io import atomic_path
from data_utils.spec import (DATASET_NAMES, DatasetSpec, dataset_spec_path, load_dataset_spec,
                             repo_root, resolve_dataset_name)

log = logging.getLogger("patchrefinenet")


@dataclass(frozen=True)
class DriveFile:
    """A file on Google Drive: its id and the name it is saved under."""

    file_id: str
    name: str

    @property
    def url(self) -> str:
        return f"https://drive.google.com/uc?id={self.file_id}"


MODEL_ARCHIVES = {
    "deepglobe": DriveFile("1taCeROWb_bYMvfcCDtC2ftv_QfsWqmou", "deepglobe_models.zip"),
    "DUTS": DriveFile("1Viu_mTI3aCvOKDLw8RRnMYFWvLZeBXqO", "DUTS_models.zip"),
    "kvasir": DriveFile("1Gj8Y43w5to-CdukJ0NlPzhrcUgvTNEa1", "kvasir_models.zip"),
}
# README link first, then the id in the authors' data_utils/download_data.py (which is current is unknown).
DATA_ARCHIVES = (
    DriveFile("1s3ygbL-sd_WkSn-SB2IY-hFeWXuQqVeD", "data.zip"),
    DriveFile("1C8xFJF6dHCGuDZU3XIu8Gg0_jroycnCF", "data.zip"),
)


class DownloadError(RuntimeError):
    """A download or an archive failed; the message says how to get the files by hand."""


def _gdown_download(file_id: str, out_path: Path) -> None:
    """Fetch one Drive file to ``out_path`` with gdown (imported here: only downloads need it)."""
    try:
        import gdown
    except ImportError:
        raise DownloadError("gdown is not installed; `pip install gdown` or download by hand") from None
    result = gdown.download(id=file_id, output=str(out_path), quiet=False)
    if result is None or not out_path.is_file():
        raise DownloadError(f"gdown could not fetch Drive id {file_id}")


def model_destinations(spec: DatasetSpec, dest_root: str | Path) -> list[tuple[str, Path]]:
    """(file name inside the archive, destination) for the base and PRN weights of ``spec``."""
    src = Path(dest_root) / "src" / spec.name
    return [
        (spec.checkpoint, layout.released_dir(src / layout.SEG_MODELS) / spec.checkpoint),
        (spec.refine.checkpoint, layout.released_dir(src / layout.REFINE_MODELS) / spec.refine.checkpoint),
    ]


def _member_parts(name: str) -> tuple[str, ...] | None:
    """Path components of a zip entry name, or None if it would land outside the target folder."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return None
    parts = tuple(p for p in re.split(r"[\\/]", name) if p not in ("", "."))
    return None if ".." in parts else parts


def safe_members(zf: zipfile.ZipFile, label: str) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """The file entries of ``zf`` with their path components (macOS ``__MACOSX`` metadata skipped).

    Raises :class:`DownloadError` — before anything is written — if any entry has an absolute
    path, a drive letter or a ``..`` component.
    """
    unsafe = [info.filename for info in zf.infolist() if _member_parts(info.filename) is None]
    if unsafe:
        raise DownloadError(f"refusing to unpack {label}: entries {unsafe[:3]} point outside the target "
                            f"folder (absolute path or '..'); nothing was written")
    members = [(info, _member_parts(info.filename)) for info in zf.infolist() if not info.is_dir()]
    return [(info, parts) for info, parts in members if parts and parts[0] != "__MACOSX"]


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    """Copy one entry to ``dest`` via a temporary file renamed into place when complete (CRC checked)."""
    try:
        with atomic_path(dest) as tmp, zf.open(info) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        # the archive's times: which array was made after which stays visible (pseudo-label checks)
        stamp = time.mktime(info.date_time + (0, 0, -1))
        os.utime(dest, (stamp, stamp))
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"entry {info.filename} is corrupt ({exc}); download the archive again") from None


def _open_zip(zip_path: Path, label: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise DownloadError(f"{label} is not a zip file (Google Drive may have sent an error page)") from None


def _install_models(zip_path: Path, label: str, targets: list[tuple[str, Path]]) -> list[Path]:
    """Unpack the named weight files of a model archive to their destinations."""
    with _open_zip(zip_path, label) as zf:
        members = safe_members(zf, label)
        chosen = []
        for file_name, dest in targets:
            hits = [info for info, parts in members if parts[-1] == file_name]
            if len(hits) != 1:
                listing = ", ".join(info.filename for info, _ in members[:6])
                raise DownloadError(f"{label} holds {len(hits)} entries named {file_name} (expected one); "
                                    f"it contains: {listing}")
            chosen.append((hits[0], dest))
        for info, dest in chosen:
            _extract(zf, info, dest)
            log.info("%s -> %s", info.filename, dest)
    return [dest for _, dest in chosen]


def _install_data(zip_path: Path, label: str, data_dir: Path, datasets: Sequence[str]) -> list[Path]:
    """Unpack the ``<ds>/...`` entries of ``data.zip`` for ``datasets`` into ``data_dir``."""
    with _open_zip(zip_path, label) as zf:
        members = safe_members(zf, label)
        if members and all(len(p) > 1 and p[0] == "data" for _, p in members):
            members = [(info, parts[1:]) for info, parts in members]
        wanted = [(info, parts) for info, parts in members if parts[0] in datasets]
        absent = [d for d in datasets if not any(parts[0] == d for _, parts in wanted)]
        if absent:
            tops = sorted({parts[0] for _, parts in members})
            raise DownloadError(f"{label} holds no folder for {', '.join(absent)}; its top-level entries are "
                                f"{', '.join(tops[:8]) or '(none)'}")
        written = []
        for info, parts in tqdm(wanted, desc=f"unpacking {label}", unit="file"):
            dest = data_dir.joinpath(*parts)
            _extract(zf, info, dest)
            written.append(dest)
    return written


def _fetch(candidates: Sequence[DriveFile], dest_root: Path, install: Callable[[Path, str], list[Path]]) -> list[Path]:
    """Download the first candidate that works into a temporary folder and install it."""
    errors = []
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest_root) as tmp:
        for archive in candidates:
            zip_path = Path(tmp) / archive.name
            log.info("downloading %s from %s", archive.name, archive.url)
            try:
                _gdown_download(archive.file_id, zip_path)
            except Exception as exc:  # network, quota, permission: all mean "fetch it by hand"
                first_line = (str(exc).strip().splitlines() or [""])[0]
                errors.append(f"{archive.url}: {type(exc).__name__}: {first_line[:120]}")
                zip_path.unlink(missing_ok=True)
                continue
            return install(zip_path, archive.name)
    raise DownloadError("\n      ".join(errors))


def _manual_models(archive: DriveFile, targets: list[tuple[str, Path]]) -> str:
    moves = "\n".join(f"      {name} -> {dest}" for name, dest in targets)
    return f"  - {archive.url} ({archive.name}): unzip it and move\n{moves}"


def _manual_data(data_dir: Path, datasets: Sequence[str]) -> str:
    first, second = DATA_ARCHIVES
    return (f"  - {first.url} (data.zip, 6.7 GB; if that link fails: {second.url}): unzip it into "
            f"{data_dir} so that {data_dir}/<dataset>/seg-models/ exists for {', '.join(datasets)}")


def download(datasets: Sequence[str] = DATASET_NAMES, *, dest_root: str | Path | None = None,
             data: bool = False, overwrite: bool = False) -> list[Path]:
    """Download and install the released weights of ``datasets`` (and ``data.zip`` if ``data``).

    Files already in place are kept (and not downloaded again) unless ``overwrite``; only the
    missing ones are installed. Returns the files written. Raises :class:`DownloadError` listing
    every failure with manual links and destinations.
    """
    dest_root = Path(dest_root) if dest_root is not None else repo_root()
    names = list(dict.fromkeys(resolve_dataset_name(d) for d in datasets))
    dest_root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    reasons: list[str] = []
    manual: list[str] = []
    for name in names:
        targets = model_destinations(load_dataset_spec(dataset_spec_path(name)), dest_root)
        if not overwrite:
            for _, dest in targets:
                if dest.is_file():
                    log.info("%s is already in place: kept (--overwrite True replaces it)", dest)
            targets = [(n, dest) for n, dest in targets if not dest.is_file()]
            if not targets:
                continue
        archive = MODEL_ARCHIVES[name]
        try:
            written += _fetch([archive], dest_root,
                              lambda path, label, t=targets: _install_models(path, label, t))
        except DownloadError as exc:
            reasons.append(f"  - {archive.name}: {exc}")
            manual.append(_manual_models(archive, targets))
    data_dir = dest_root / "data"
    if data:
        wanted = list(names)
        if not overwrite:
            present = [n for n in names if layout.seg_models_dir(data_dir, n).exists()]
            if present:
                log.info("data for %s already in %s: kept (--overwrite True replaces it)", ", ".join(present), data_dir)
            wanted = [n for n in names if n not in present]
        if wanted:
            try:
                written += _fetch(DATA_ARCHIVES, dest_root,
                                  lambda path, label: _install_data(path, label, data_dir, wanted))
            except DownloadError as exc:
                reasons.append(f"  - data.zip: {exc}")
                manual.append(_manual_data(data_dir, wanted))
    if reasons:
        raise DownloadError("could not download {} archive(s):\n{}\nDownload by hand (e.g. in a browser) and put "
                            "the files in place:\n{}\nNo partial files were left behind."
                            .format(len(reasons), "\n".join(reasons), "\n".join(manual)))
    return written


def _dataset_arg(value: str) -> str:
    try:
        return resolve_dataset_name(value)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bool_arg(value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "t", "yes", "y", "1", "on"):
        return True
    if v in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line of ``download.py``; exits 1 when a download fails, 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python download.py",
        description="Download the authors' released base-model and PatchRefineNet weights from Google "
                    "Drive into src/<dataset>/{seg,refine}-models/checkpoints/, and with --data the "
                    "datasets (data.zip, 6.7 GB) into <dest>/data/.")
    parser.add_argument("--datasets", nargs="+", type=_dataset_arg, default=list(DATASET_NAMES),
                        metavar="NAME", help=f"subset of {' '.join(DATASET_NAMES)} (default: all)")
    parser.add_argument("--data", action="store_true", help="also download and unpack data.zip")
    parser.add_argument("--dest", type=Path, default=None,
                        help="root to install into (default: the repository root)")
    parser.add_argument("--overwrite", type=_bool_arg, nargs="?", const=True, default=False,
                        help="replace files already in place (default False: they are kept, only missing files "
                             "are downloaded); --force is the same as --overwrite True")
    parser.add_argument("--force", dest="overwrite", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        written = download(args.datasets, dest_root=args.dest, data=args.data, overwrite=args.overwrite)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log.info("done: %d file(s) written", len(written))
