"""The authors' split rule (scikit-learn's train_test_split, test_size=0.2, seed 29) and the CSV writer."""
from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from data_utils.datasets import read_split
from data_utils.errors import InputError
from data_utils.spec import dataset_spec_path, load_dataset_spec
from data_utils.splits import format_split_csv, shuffle_split, split_items, write_splits

REPO = Path(__file__).resolve().parents[1]


def spec(name):
    return load_dataset_spec(dataset_spec_path(name))


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_shuffle_split_matches_hard_coded_sklearn_results():
    # Computed once with np.random.RandomState(29).permutation(n) and checked against
    # sklearn.model_selection.train_test_split(range(n), test_size=0.2, random_state=29).
    train, test = shuffle_split(10)
    assert test.tolist() == [8, 6] and train.tolist() == [1, 7, 0, 2, 9, 4, 3, 5]
    train, test = shuffle_split(7)
    assert test.tolist() == [6, 0] and train.tolist() == [2, 1, 4, 3, 5]   # ceil(1.4) = 2 test items
    train, test = shuffle_split(5)
    assert test.tolist() == [2] and train.tolist() == [4, 1, 0, 3]
    assert split_items(["a", "b"]) == (["b"], ["a"])


@pytest.mark.parametrize("n", [2, 3, 7, 11, 120, 1001])
def test_test_share_is_rounded_up_and_parts_partition(n):
    train, test = shuffle_split(n)
    assert len(test) == -(-n // 5) and len(train) == n - len(test)
    assert sorted(train.tolist() + test.tolist()) == list(range(n))


def test_deepglobe_counts_for_6226_tiles():
    train, rest = split_items(list(range(6226)))
    val, test = split_items(rest)
    assert (len(train), len(val), len(test)) == (4980, 996, 250)
    assert len(set(train) | set(val) | set(test)) == 6226


def test_too_few_items_is_an_input_error():
    with pytest.raises(InputError, match="at least 2"):
        shuffle_split(1)


def test_deepglobe_write_splits_round_trip_and_stray_files(tmp_path):
    seg = tmp_path / "deepglobe" / "seg-models"
    ids = [str(100 + i) for i in range(10)]
    for i in ids:
        touch(seg / "train" / f"{i}_sat.jpg")
        touch(seg / "train_labels" / f"{i}_mask.png")
    touch(seg / "train" / "desktop.ini")          # the authors removed it only after splitting
    touch(seg / "train_labels" / ".DS_Store")
    counts = write_splits(spec("deepglobe"), tmp_path)
    assert counts == {"train": 8, "val": 1, "test": 1}
    # first split of 10: train [1,7,0,2,9,4,3,5], rest [8,6]; second split of 2: test [8], val [6]
    assert [s.id for s in read_split(spec("deepglobe"), tmp_path, "train")] == [ids[i] for i in [1, 7, 0, 2, 9, 4, 3, 5]]
    assert [s.id for s in read_split(spec("deepglobe"), tmp_path, "val")] == [ids[6]]
    assert [s.id for s in read_split(spec("deepglobe"), tmp_path, "test")] == [ids[8]]
    lines = (seg / "val.csv").read_text().splitlines()
    assert lines == ["img,target", "106_sat.jpg,106_mask.png"]
    assert not list(seg.glob(".*.tmp*"))


def test_deepglobe_unpaired_listing_is_refused(tmp_path):
    seg = tmp_path / "deepglobe" / "seg-models"
    for i in ("1", "2", "3"):
        touch(seg / "train" / f"{i}_sat.jpg")
    for i in ("1", "2", "4"):
        touch(seg / "train_labels" / f"{i}_mask.png")
    with pytest.raises(InputError, match="do not pair up") as info:
        write_splits(spec("deepglobe"), tmp_path)
    assert "3" in str(info.value) and str(seg / "train") in str(info.value)
    assert not (seg / "train.csv").exists()


def test_duts_train_is_all_of_tr_and_te_is_split(tmp_path):
    seg = tmp_path / "DUTS" / "seg-models"
    for part, n in (("DUTS-TR", 3), ("DUTS-TE", 5)):
        for k in range(n):
            touch(seg / part / part / f"{part}-Image" / f"{part.lower()}_{k}.jpg")
            touch(seg / part / part / f"{part}-Mask" / f"{part.lower()}_{k}.png")
    assert write_splits(spec("DUTS"), tmp_path) == {"train": 3, "val": 4, "test": 1}
    train = read_split(spec("DUTS"), tmp_path, "train")
    assert [s.id for s in train] == ["duts-tr_0", "duts-tr_1", "duts-tr_2"]
    assert train[0].mask_path == seg / "DUTS-TR" / "DUTS-TR" / "DUTS-TR-Mask" / "duts-tr_0.png"
    # n = 5: test [2], train(=val) [4, 1, 0, 3]
    assert [s.id for s in read_split(spec("DUTS"), tmp_path, "val")] == [f"duts-te_{k}" for k in (4, 1, 0, 3)]
    assert [s.id for s in read_split(spec("DUTS"), tmp_path, "test")] == ["duts-te_2"]


def test_duts_singly_nested_folder_gets_a_hint(tmp_path):
    seg = tmp_path / "DUTS" / "seg-models"
    touch(seg / "DUTS-TR" / "DUTS-TR-Image" / "a.jpg")
    with pytest.raises(InputError, match="doubly nested"):
        write_splits(spec("DUTS"), tmp_path)


def test_kvasir_lists_are_stripped_before_splitting(tmp_path):
    seg = tmp_path / "kvasir" / "seg-models"
    train_ids, test_ids = ["t1", "t2"], ["v1", "v2", "v3", "v4", "v5"]
    for i in train_ids + test_ids:
        touch(seg / "train" / f"{i}.jpg")
        touch(seg / "train_labels" / f"{i}.jpg")
    (seg / "train.txt").write_text("t1\nt2\n\n")                      # trailing newline + blank line
    (seg / "test.txt").write_text("v1\r\nv2\r\nv3\r\nv4\r\nv5\r\n")    # Windows line ends
    assert write_splits(spec("kvasir"), tmp_path) == {"train": 2, "val": 4, "test": 1}
    assert [s.id for s in read_split(spec("kvasir"), tmp_path, "train")] == train_ids
    assert [s.id for s in read_split(spec("kvasir"), tmp_path, "val")] == ["v5", "v2", "v1", "v4"]
    assert (seg / "test.csv").read_text() == "img,target\nv3.jpg,v3.jpg\n"


def test_kvasir_missing_listed_file_is_named(tmp_path):
    seg = tmp_path / "kvasir" / "seg-models"
    touch(seg / "train" / "a.jpg")
    (seg / "train.txt").write_text("a\n")
    (seg / "test.txt").write_text("a\n")
    with pytest.raises(InputError, match="train_labels/a.jpg"):
        write_splits(spec("kvasir"), tmp_path)


def test_csv_format_round_trips_awkward_names():
    pairs = [("a,b.jpg", "a,b.png"), ('q"uote.jpg', 'q"uote.png'), ("plain.jpg", "plain.png")]
    text = format_split_csv(pairs)
    assert text.startswith("img,target\n")
    rows = list(csv.DictReader(text.splitlines()))
    assert [(r["img"], r["target"]) for r in rows] == pairs


def test_cli_help_writes_and_reports_errors(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "data_utils.splits", *a], capture_output=True,
                                    text=True, cwd=tmp_path)
    assert run("--help").returncode == 0
    missing = run("--dataset", "kvasir", "--data_root", str(tmp_path))
    assert missing.returncode == 2 and "error:" in missing.stderr and "download.py --data" in missing.stderr
    seg = tmp_path / "kvasir" / "seg-models"
    for i in ("a", "b", "c"):
        touch(seg / "train" / f"{i}.jpg")
        touch(seg / "train_labels" / f"{i}.jpg")
    (seg / "train.txt").write_text("a\n")
    (seg / "test.txt").write_text("b\nc\n")
    done = run("--dataset", "KVASIR", "--data_root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in seg.glob("*.csv")) == ["test.csv", "train.csv", "val.csv"]
