"""download.py: a local stand-in for gdown serves zips built here; nothing touches the network."""
from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import data_utils.download as dl
from data_utils.download import DATA_ARCHIVES, MODEL_ARCHIVES, DownloadError, download, main

REPO = Path(__file__).resolve().parents[1]
DG_BASE = Path("src/deepglobe/seg-models/checkpoints/released/dlinknet_weights.th")
DG_PRN = Path("src/deepglobe/refine-models/checkpoints/released/p64_weights.th")
KV_BASE = Path("src/kvasir/seg-models/checkpoints/released/resunetplusplus_weights.th")
KV_PRN = Path("src/kvasir/refine-models/checkpoints/released/p64_weights.th")
DG_TRAINED_PRN = Path("src/deepglobe/refine-models/checkpoints/p64/p64_weights.th")


def make_zip(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def drive(monkeypatch):
    """Fake Drive: file id -> zip bytes or an exception; records the ids asked for."""
    files: dict[str, bytes | Exception] = {}
    calls: list[str] = []

    def fake(file_id: str, out_path: Path) -> None:
        calls.append(file_id)
        item = files.get(file_id, ConnectionError("Failed to resolve 'drive.google.com'"))
        if isinstance(item, Exception):
            out_path.write_bytes(b"partial")      # like an interrupted transfer
            raise item
        out_path.write_bytes(item)

    monkeypatch.setattr(dl, "_gdown_download", fake)
    return files, calls


def all_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_weights_land_where_the_scripts_look(tmp_path, drive):
    files, calls = drive
    files[MODEL_ARCHIVES["deepglobe"].file_id] = make_zip({
        "deepglobe_models/dlinknet_weights.th": b"base", "deepglobe_models/p64_weights.th": b"prn"})
    written = download(["deepglobe"], dest_root=tmp_path)
    assert sorted(written) == sorted([tmp_path / DG_BASE, tmp_path / DG_PRN])
    assert (tmp_path / DG_BASE).read_bytes() == b"base" and (tmp_path / DG_PRN).read_bytes() == b"prn"
    assert all_files(tmp_path) == sorted([DG_BASE, DG_PRN])          # no zip, no temporary folder left

    assert download(["deepglobe"], dest_root=tmp_path) == [] and len(calls) == 1   # already there: skipped
    download(["deepglobe"], dest_root=tmp_path, overwrite=True)
    assert len(calls) == 2


def test_download_never_replaces_a_file_it_did_not_write_unless_asked(tmp_path, drive):
    files, calls = drive
    files[MODEL_ARCHIVES["deepglobe"].file_id] = make_zip({
        "deepglobe_models/dlinknet_weights.th": b"base", "deepglobe_models/p64_weights.th": b"prn"})
    for rel, data in ((DG_TRAINED_PRN, b"mine, trained"), (DG_BASE, b"edited by hand")):
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_bytes(data)
    assert download(["deepglobe"], dest_root=tmp_path) == [tmp_path / DG_PRN]   # only the missing file
    assert (tmp_path / DG_TRAINED_PRN).read_bytes() == b"mine, trained"          # training's folder: untouched
    assert (tmp_path / DG_BASE).read_bytes() == b"edited by hand"
    with pytest.raises(SystemExit):
        main(["--datasets", "deepglobe", "--dest", str(tmp_path), "--overwrite", "maybe"])
    main(["--datasets", "deepglobe", "--dest", str(tmp_path), "--overwrite", "True"])
    assert (tmp_path / DG_BASE).read_bytes() == b"base" and len(calls) == 2
    assert (tmp_path / DG_TRAINED_PRN).read_bytes() == b"mine, trained"


@pytest.mark.parametrize("evil", ["../evil.th", "/abs/evil.th", "deepglobe_models/../../evil.th", "C:/evil.th"])
def test_archive_escaping_the_target_is_refused_before_writing(tmp_path, drive, evil):
    files, _ = drive
    dest = tmp_path / "dest"
    files[MODEL_ARCHIVES["deepglobe"].file_id] = make_zip({
        "deepglobe_models/dlinknet_weights.th": b"base", "deepglobe_models/p64_weights.th": b"prn", evil: b"x"})
    with pytest.raises(DownloadError, match="refusing to unpack"):
        download(["deepglobe"], dest_root=dest)
    assert all_files(tmp_path) == []
    assert not Path("/abs/evil.th").exists()


def test_failed_download_lists_manual_links_and_leaves_nothing(tmp_path, drive):
    files, _ = drive
    files[MODEL_ARCHIVES["deepglobe"].file_id] = make_zip({
        "deepglobe_models/dlinknet_weights.th": b"base", "deepglobe_models/p64_weights.th": b"prn"})
    with pytest.raises(DownloadError) as info:
        download(["deepglobe", "kvasir"], dest_root=tmp_path)       # kvasir's id is "offline"
    msg = str(info.value)
    assert MODEL_ARCHIVES["kvasir"].url in msg and "https://drive.google.com/uc?id=" in msg
    assert str(tmp_path / KV_BASE) in msg and str(tmp_path / KV_PRN) in msg
    assert MODEL_ARCHIVES["deepglobe"].url not in msg                  # that one worked
    assert all_files(tmp_path) == sorted([DG_BASE, DG_PRN])           # no partial kvasir download


def test_archive_missing_a_file_or_not_a_zip_is_an_error(tmp_path, drive):
    files, _ = drive
    files[MODEL_ARCHIVES["kvasir"].file_id] = make_zip({"kvasir_models/p64_weights.th": b"prn"})
    with pytest.raises(DownloadError, match="resunetplusplus_weights.th"):
        download(["kvasir"], dest_root=tmp_path)
    files[MODEL_ARCHIVES["kvasir"].file_id] = b"<html>quota exceeded</html>"
    with pytest.raises(DownloadError, match="not a zip"):
        download(["kvasir"], dest_root=tmp_path)
    assert all_files(tmp_path) == []


def test_corrupt_entry_leaves_no_partial_file(tmp_path, drive):
    files, _ = drive
    payload = b"A" * 4096
    blob = make_zip({"kvasir_models/resunetplusplus_weights.th": payload, "kvasir_models/p64_weights.th": b"p"},
                    compression=zipfile.ZIP_STORED)
    files[MODEL_ARCHIVES["kvasir"].file_id] = blob.replace(payload, b"B" + payload[1:])   # CRC mismatch
    with pytest.raises(DownloadError, match="corrupt"):
        download(["kvasir"], dest_root=tmp_path)
    assert all_files(tmp_path) == []


@pytest.mark.parametrize("prefix", ["data/", ""])
def test_data_tries_the_readme_id_then_the_other_and_unpacks_requested_datasets(tmp_path, drive, prefix):
    files, calls = drive
    for rel in (KV_BASE, KV_PRN):                                      # weights already in place
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_bytes(b"w")
    files[DATA_ARCHIVES[1].file_id] = make_zip({
        f"{prefix}kvasir/seg-models/train.txt": b"a\n", f"{prefix}kvasir/seg-models/train/a.jpg": b"img",
        f"{prefix}DUTS/seg-models/test.csv": b"img,target\n"})
    download(["kvasir"], dest_root=tmp_path, data=True)
    assert calls == [DATA_ARCHIVES[0].file_id, DATA_ARCHIVES[1].file_id]
    assert (tmp_path / "data/kvasir/seg-models/train.txt").read_bytes() == b"a\n"
    assert (tmp_path / "data/kvasir/seg-models/train/a.jpg").read_bytes() == b"img"
    assert not (tmp_path / "data/DUTS").exists()                         # not requested


def test_data_failure_names_both_links(tmp_path, drive):
    for rel in (KV_BASE, KV_PRN):
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_bytes(b"w")
    with pytest.raises(DownloadError) as info:
        download(["kvasir"], dest_root=tmp_path, data=True)
    assert DATA_ARCHIVES[0].url in str(info.value) and DATA_ARCHIVES[1].url in str(info.value)
    assert str(tmp_path / "data") in str(info.value)
    assert not (tmp_path / "data").exists()


def test_main_exits_non_zero_with_the_manual_links(tmp_path, drive, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--datasets", "duts", "--dest", str(tmp_path)])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and MODEL_ARCHIVES["DUTS"].url in err
    assert "best-model_epoch-204_mae-0.0505_loss-0.1370.pth" in err
    assert all_files(tmp_path) == []


def test_download_py_help_runs_from_anywhere(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "download.py"), "--help"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0 and "--datasets" in done.stdout and "--data" in done.stdout
    bad = subprocess.run([sys.executable, str(REPO / "download.py"), "--datasets", "coco"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "coco" in bad.stderr


def test_unpacked_data_keep_the_archive_times(tmp_path, drive):
    """Which array was made after which stays visible (a pseudo-label file older than its maps is refused)."""
    files, _ = drive
    for rel in (KV_BASE, KV_PRN):
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_bytes(b"w")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("kvasir/seg-models/a.npy", date_time=(2021, 3, 4, 5, 6, 8)), b"a")
    files[DATA_ARCHIVES[0].file_id] = buf.getvalue()
    download(["kvasir"], dest_root=tmp_path, data=True)
    import time
    assert time.localtime((tmp_path / "data/kvasir/seg-models/a.npy").stat().st_mtime)[:6] == (2021, 3, 4, 5, 6, 8)
