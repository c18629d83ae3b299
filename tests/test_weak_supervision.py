"""Scribble supervision end to end on tiny data: scribble files → dataset items aligned with the
masks under augmentation → a scribble-supervised base model trained through the CLI (rloss)."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_utils.datasets import (Sample, SegmentationSplit, load_scribble_sample, read_split, resize_scribble,
                                 scribble_path)
from data_utils.errors import InputError
from data_utils.spec import dataset_spec_path, load_dataset_spec
from patchrefinenet.checkpoint import load_checkpoint
from patchrefinenet.cli import generate_scribbles, seg_train
from test_seg_engine import SIZE, make_tiny_deepglobe

REPO = Path(__file__).resolve().parents[1]
SEG = REPO / "src" / "deepglobe" / "seg-models"


def _spec(name: str, **overrides):
    return dataclasses.replace(load_dataset_spec(dataset_spec_path(name)), **overrides)


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".png", array)[1].tobytes())
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny DeepGlobe-layout data (64 px, 12 images) with train scribbles, and its 64-px config."""
    root = tmp_path_factory.mktemp("weak")
    data_root = make_tiny_deepglobe(root / "data", n=12)
    config = root / "tiny.toml"
    text = (REPO / "src" / "deepglobe" / "dataset.toml").read_text()
    text = text.replace("input_size = 512", f"input_size = {SIZE}").replace("prn_size = 512", f"prn_size = {SIZE}")
    config.write_text(text.replace("batch_size = 4", "batch_size = 2"))
    generate_scribbles.main(str(SEG / "generate_scribbles.py"),
                            ["--config", str(config), "--data_root", str(data_root), "--progress", "False"])
    return data_root, config


# --------------------------------------------------------------------------- scribble files

def test_generate_scribbles_writes_one_png_per_train_mask_named_by_its_stem_deterministically(tiny, tmp_path):
    data_root, config = tiny
    spec = load_dataset_spec(config)
    samples = read_split(spec, data_root, "train")
    folder = data_root / "deepglobe" / "seg-models" / "scribbles"
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(f"{s.mask_path.stem}.png" for s in samples)
    info = json.loads((folder / "generate_scribbles.json").read_text())
    assert info["train"]["seed"] == 0 and info["train"]["n_files"] == len(samples)
    first = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    # the same seed on a copy of the data reproduces every file; another seed changes them
    copy = make_tiny_deepglobe(tmp_path / "copy", n=12)
    for seed, same in ((0, True), (1, False)):
        generate_scribbles.main(str(SEG / "generate_scribbles.py"),
                                ["--config", str(config), "--data_root", str(copy), "--seed", str(seed), "--progress", "False"])
        again = {p.name: p.read_bytes() for p in (copy / "deepglobe" / "seg-models" / "scribbles").glob("*.png")}
        assert (again == first) is same


def test_generate_scribbles_help_for_the_three_datasets(tmp_path):
    scripts = [REPO / "src" / ds / "seg-models" / "generate_scribbles.py" for ds in ("deepglobe", "DUTS", "kvasir")]
    procs = {p: subprocess.Popen([sys.executable, str(p), "--help"], cwd=tmp_path, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in scripts}
    for path, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        ds = path.parent.parent.name
        assert f"usage: python src/{ds}/seg-models/generate_scribbles.py" in out
        assert "--seed" in out and "--splits" in out and f"{ds}/seg-models/scribbles/<mask file stem>.png" in out


# --------------------------------------------------------------------------- dataset items

def test_resize_scribble_keeps_thin_strokes_when_shrinking_and_replicates_when_growing():
    s = np.full((8, 8), 255, np.uint8)
    s[3, :] = 1          # a 1-px foreground line: nearest neighbour (rows 0 and 4) would drop it
    s[5:8, 0:4] = 0      # background block in the lower-left cell (12 of 16 pixels)
    s[7, 1] = 1          # one foreground pixel in that cell: the majority (background) wins
    np.testing.assert_array_equal(resize_scribble(s, (2, 2)), [[1, 1], [0, 255]])
    small = np.array([[0, 255], [1, 0]], np.uint8)
    np.testing.assert_array_equal(resize_scribble(small, (4, 4)), np.kron(small, np.ones((2, 2), np.uint8)))
    assert resize_scribble(s, (8, 8)) is s


def test_scribble_items_carry_aligned_scribbles_rgb_and_roi_and_leave_image_and_mask_unchanged(tiny):
    data_root, config = tiny
    spec = load_dataset_spec(config)
    weak = SegmentationSplit(spec, data_root, "train", augment=True, seed=3, scribbles=True)
    full = SegmentationSplit(spec, data_root, "train", augment=True, seed=3)
    seen = {0: 0, 1: 0}
    for epoch in range(3):
        weak.set_epoch(epoch), full.set_epoch(epoch)
        for i in range(len(weak)):
            item, (image, mask, index) = weak[i], full[i]
            assert set(item) == {"image", "mask", "scribble", "rgb", "roi", "index"} and item["index"] == index
            assert (item["image"] == image).all() and (item["mask"] == mask).all()  # same augmentation draws
            scribble, m = item["scribble"].numpy(), item["mask"][0].numpy()
            assert scribble.shape == (SIZE, SIZE) and scribble.dtype == np.uint8
            assert set(np.unique(scribble)) <= {0, 1, 255}
            assert (m[scribble == 1] == 1).all() and (m[scribble == 0] == 0).all()  # labels inside their class
            assert ((item["roi"].numpy() == 0) <= (scribble == 255)).all()  # no labels outside the image
            rgb = item["rgb"]
            assert rgb.shape == (3, SIZE, SIZE) and rgb.dtype.is_floating_point
            assert 0 <= float(rgb.min()) and float(rgb.max()) <= 255 and float(rgb.max()) > 1
            for c in (0, 1):
                seen[c] += int((scribble == c).sum())
    assert seen[0] > 0 and seen[1] > 0


def test_geometric_augmentation_samples_scribbles_at_the_nearest_pixel_with_unlabelled_borders(tiny):
    """A 'scribble' that labels every pixel like the mask must come out equal to the augmented mask
    wherever the mask is not on an edge, and 255 exactly where the pixel left the image."""
    data_root, config = tiny
    spec = load_dataset_spec(config)
    sample = read_split(spec, data_root, "train")[0]
    truth = (cv2.imread(str(sample.mask_path), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
    plain = load_scribble_sample(spec, sample, truth)
    np.testing.assert_array_equal(plain.scribble, plain.mask.astype(np.uint8))
    assert (plain.roi == 1).all()
    borders = changed = 0
    for seed in range(12):
        out = load_scribble_sample(spec, sample, truth, augment=True, rng=np.random.default_rng(seed))
        mask, scribble, roi = out.mask.astype(np.uint8), out.scribble, out.roi.astype(bool)
        assert (scribble[~roi] == 255).all() and (scribble[roi] != 255).all()
        edge = cv2.dilate(cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)), np.ones((3, 3)))
        inner = roi & (edge == 0) & (out.image.std(0) > 0)  # off edges and off the warp's black border
        np.testing.assert_array_equal(scribble[inner], mask[inner])
        borders += int((~roi).any())
        changed += int((scribble != plain.scribble).any())
    assert borders > 0 and changed > 0  # the seeds did warp, flip and rotate


def test_duts_padding_and_rotation_leave_the_outside_unlabelled(tmp_path):
    spec = _spec("DUTS", input_size=32, prn_size=32)
    folder = tmp_path / "DUTS" / "seg-models" / "DUTS-TE" / "DUTS-TE"
    mask = np.zeros((16, 32), np.uint8)
    mask[4:12, 8:24] = 255
    image = _write(folder / "DUTS-TE-Image" / "wide.jpg", np.full((16, 32, 3), 90, np.uint8))
    sample = Sample("wide", image, _write(folder / "DUTS-TE-Mask" / "wide.png", mask))
    scribble = np.full((16, 32), 255, np.uint8)
    scribble[8, 10:22], scribble[1, :] = 1, 0
    out = load_scribble_sample(spec, sample, scribble)
    # 16×32 → padded 8 rows above and below → 32×32 (no resize at input 32)
    assert (out.scribble[:8] == 255).all() and (out.scribble[24:] == 255).all()
    assert (out.roi[:8] == 0).all() and (out.roi[8:24] == 1).all() and (out.roi[24:] == 0).all()
    np.testing.assert_array_equal(out.scribble[8:24], scribble)
    with pytest.raises(InputError, match="is 8x8 .* but the mask is 32x16.*generate_scribbles.py"):
        load_scribble_sample(spec, sample, np.full((8, 8), 255, np.uint8))
    # PFANet's crop, flip and canvas-enlarging rotation, then padding and shrinking to 24 px: a scribble
    # labelling every pixel keeps labels on the ROI only (unlabelled there only at fg/bg ties on the
    # mask's edge) and agrees with the mask off its edges
    spec, truth = dataclasses.replace(spec, input_size=24), (mask > 0).astype(np.uint8)
    for seed in range(4):
        out = load_scribble_sample(spec, sample, truth, augment=True, rng=np.random.default_rng(seed))
        roi, labelled = out.roi.astype(bool), out.scribble != 255
        m = (out.mask >= 0.5).astype(np.uint8)
        edge = cv2.dilate(cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)), np.ones((3, 3))) > 0
        assert not (labelled & ~roi).any() and not (roi & ~labelled & ~edge).any() and 0 < roi.mean() < 1
        np.testing.assert_array_equal(out.scribble[roi & ~edge], m[roi & ~edge])


def test_missing_scribbles_raise_a_clean_error_naming_the_file_and_the_script(tiny, tmp_path, capsys):
    data_root, config = tiny
    spec = load_dataset_spec(config)
    with pytest.raises(InputError) as info:
        SegmentationSplit(spec, data_root, "val", scribbles=True)
    first = scribble_path(spec, data_root, read_split(spec, data_root, "val")[0])
    assert str(first) in str(info.value) and "generate_scribbles.py" in str(info.value)
    bare = make_tiny_deepglobe(tmp_path / "bare", n=12)
    with pytest.raises(SystemExit) as exit_info:
        seg_train.main(str(SEG / "train.py"), ["--config", str(config), "--data_root", str(bare), "--output_root",
                                               str(tmp_path / "out"), "--model", "resunetplusplus", "--device", "cpu",
                                               "--supervision", "scribbles", "--no-pretrained"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "generate_scribbles.py" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- training

def _train(config: Path, data_root: Path, out: Path, *extra: str) -> dict:
    return seg_train.main(str(SEG / "train.py"), [
        "--config", str(config), "--data_root", str(data_root), "--output_root", str(out), "--device", "cpu",
        "--model", "resunetplusplus", "--model_width", "4", "--no-pretrained", "--lr", "3e-3", *extra])


def _history(result: dict) -> list[dict]:
    return [json.loads(line) for line in Path(result["history"]).read_text().splitlines()]


def test_scribble_supervised_training_through_the_cli_records_its_settings_and_learns(tiny, tmp_path):
    data_root, config = tiny
    result = _train(config, data_root, tmp_path / "out", "--supervision", "scribbles", "--epochs", "2")
    loaded = load_checkpoint(result["checkpoint"])
    saved = loaded.config
    assert saved["supervision"] == "scribbles"
    history = _history(result)
    # model selection on the val IoU against the full val masks (maximised)
    assert result["monitor"] == "val_iou" and loaded.meta["monitor"] == "val_iou"
    assert result["best_value"] == max(row["val_iou"] for row in history) == loaded.meta["val_iou"]
    rloss = saved["rloss"]
    assert (rloss["reg_loss"], rloss["reg_weight"], rloss["pce_epochs"]) == ("densecrf", 1.0, 0)
    assert rloss["sigma_xy"] == 100 * SIZE / 512 and (rloss["sigma_rgb"], rloss["reg_scale"]) == (15.0, 0.5)
    assert [row["regularized"] for row in history] == [True, True]
    assert all(row["train_reg"] > 0 for row in history)
    assert history[1]["train_loss"] < history[0]["train_loss"]
    # resume keeps the run's supervision even when other flags are given
    resumed = _train(config, data_root, tmp_path / "out", "--resume", "--epochs", "3", "--supervision", "scribbles",
                     "--reg_loss", "none")
    assert load_checkpoint(resumed["last"]).config["rloss"]["reg_loss"] == "densecrf"
    assert [row["epoch"] for row in _history(resumed)] == [1, 2, 3] and _history(resumed)[2]["train_reg"] > 0


def test_pce_epochs_give_the_two_phase_recipe(tiny, tmp_path):
    data_root, config = tiny
    result = _train(config, data_root, tmp_path / "out", "--supervision", "scribbles", "--pce_epochs", "1",
                    "--epochs", "2", "--max_batches_per_epoch", "2")
    first, second = _history(result)
    assert (first["regularized"], first["train_reg"], first["train_loss"]) == (False, 0.0, first["train_pce"])
    assert "densecrf regulariser on from epoch 2" in first["action"]
    assert second["regularized"] and second["train_reg"] > 0


def test_scribble_flags_are_checked(tiny, capsys):
    data_root, config = tiny
    common = ["--config", str(config), "--data_root", str(data_root), "--model", "resunetplusplus"]
    for extra, needle in ((["--reg_loss", "ncut"], "--reg_loss apply to --supervision scribbles"),
                          (["--supervision", "scribbles", "--reg_loss", "size"], "--reg_loss size needs --size_bounds"),
                          (["--supervision", "scribbles", "--pce_epochs", "-1"], "--pce_epochs must be an integer >= 0"),
                          (["--supervision", "scribbles", "--reg_weight", "nan"], "--reg_weight must be a finite")):
        with pytest.raises(SystemExit) as exit_info:
            seg_train.main(str(SEG / "train.py"), common + extra)
        assert exit_info.value.code == 2 and needle in capsys.readouterr().err


def test_cli_choices_match_the_engine():
    from patchrefinenet.cli.seg_train import REG_LOSSES, SUPERVISION_MODES
    from patchrefinenet.rloss import REGULARIZERS
    from patchrefinenet.seg.train import SUPERVISION_MODES as ENGINE_MODES

    assert REG_LOSSES == tuple(REGULARIZERS) and SUPERVISION_MODES == ENGINE_MODES


# --------------------------------------------------------------------------- the Python entry point

def test_draw_scribbles_records_seed_and_settings_so_callers_know_when_to_redraw(tiny, tmp_path):
    """The demo's weak branch redraws only when the recorded seed or settings differ from what it asks for."""
    data_root, config = tiny
    spec = load_dataset_spec(config)
    own = tmp_path / "data"
    shutil.copytree(data_root, own)
    shutil.rmtree(own / "deepglobe" / "seg-models" / "scribbles")
    assert not generate_scribbles.scribbles_current(spec, own, seed=4)
    result = generate_scribbles.draw_scribbles(spec, own, ["train"], seed=4, progress=False)
    assert result["splits"] == {"train": len(read_split(spec, own, "train"))}
    assert generate_scribbles.scribbles_current(spec, own, seed=4)
    assert not generate_scribbles.scribbles_current(spec, own, seed=5)
    assert not generate_scribbles.scribbles_current(spec, own, seed=4, background_strokes=2)
    next(iter((own / "deepglobe" / "seg-models" / "scribbles").glob("*.png"))).unlink()
    assert not generate_scribbles.scribbles_current(spec, own, seed=4)
    with pytest.raises(InputError, match="--seed"):
        generate_scribbles.draw_scribbles(spec, own, ["train"], seed=-1)
