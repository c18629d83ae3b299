"""The `patchrefinenet` command on folders of 8-bit PNGs: fit, refine, evaluate, pseudo-labels, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from patchrefinenet.cli.app import main

TRAIN = ["--epochs", "1", "--width", "4", "--max_batches_per_epoch", "2", "--progress", "False"]


def write_pairs(root: Path, n: int = 6, size: tuple[int, int] = (32, 40), seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    probs, masks = root / "probs", root / "masks"
    probs.mkdir(parents=True)
    masks.mkdir(parents=True)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        gt = ((yy - cy) ** 2 + (xx - cx) ** 2 < 60).astype(np.uint8)
        p = np.clip(0.2 + 0.5 * gt + rng.normal(0, 0.05, gt.shape), 0, 1)
        cv2.imwrite(str(probs / f"img{i}.png"), (p * 255).round().astype(np.uint8))
        cv2.imwrite(str(masks / f"img{i}.png"), gt * 255)
    return probs, masks


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    probs, masks = write_pairs(root)
    out = root / "prn.pt"
    main(["fit", "--probs", str(probs), "--masks", str(masks), "--out", str(out), "--patch_size", "16", *TRAIN])
    return out, probs, masks


def test_fit_refine_evaluate_on_png_folders(model, tmp_path):
    path, probs, masks = model
    assert path.is_file()
    out = tmp_path / "refined"
    main(["refine", "--model", str(path), "--probs", str(probs), "--out", str(out), "--save_probs", "True",
          "--save_thresholds", "True", "--progress", "False"])
    for i in range(6):
        mask = cv2.imread(str(out / f"img{i}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (32, 40) and set(np.unique(mask)) <= {0, 255}
        assert np.load(out / f"img{i}_prob.npy").shape == (32, 40)
        assert np.load(out / f"img{i}_thresholds.npy").ndim == 2
    ev = tmp_path / "eval"
    main(["evaluate", "--model", str(path), "--probs", str(probs), "--masks", str(masks), "--out", str(ev),
          "--figure", "2", "--progress", "False"])
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["base"]["n_images"] == 6 and "ece" in metrics["refined"]
    assert (ev / "figure.png").is_file()


def test_refine_refuses_to_overwrite(model, tmp_path):
    path, probs, _ = model
    out = tmp_path / "refined"
    out.mkdir()
    (out / "img0.png").write_bytes(b"user file")
    with pytest.raises(SystemExit) as e:
        main(["refine", "--model", str(path), "--probs", str(probs), "--out", str(out), "--progress", "False"])
    assert e.value.code == 2
    assert (out / "img0.png").read_bytes() == b"user file" and len(list(out.iterdir())) == 1
    main(["refine", "--model", str(path), "--probs", str(probs), "--out", str(out), "--overwrite", "True",
          "--progress", "False"])
    assert (out / "img0.png").read_bytes() != b"user file"


def test_pseudo_labels_command(tmp_path):
    probs, masks = write_pairs(tmp_path, n=2)
    main(["pseudo-labels", "--probs", str(probs), "--masks", str(masks), "--out", str(tmp_path / "pl"),
          "--patch_size", "16", "--save_thresholds", "True", "--progress", "False"])
    label = cv2.imread(str(tmp_path / "pl" / "img0.png"), cv2.IMREAD_UNCHANGED)
    assert label.shape == (32, 40) and set(np.unique(label)) <= {0, 255}
    assert np.load(tmp_path / "pl" / "img0_thresholds.npy").shape == (2, 3)


def _bad(tmp_path: Path, case: str) -> tuple[list[str], str]:
    probs, masks = write_pairs(tmp_path, n=3)
    if case == "mask missing":
        (masks / "img1.png").unlink()
        return [], "no mask for 1 probability file"
    if case == "prob missing":
        (probs / "img2.png").unlink()
        return [], "no probability file for 1 mask"
    if case == "size":
        cv2.imwrite(str(masks / "img0.png"), np.zeros((20, 20), np.uint8))
        return [], "a map and its mask must have the same size"
    if case == "rgb":
        cv2.imwrite(str(probs / "img0.png"), np.zeros((32, 40, 3), np.uint8))
        return [], "RGB"
    if case == "empty":
        for f in probs.iterdir():
            f.unlink()
        return [], "holds no map files"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["mask missing", "prob missing", "size", "rgb", "empty"])
def test_bad_folders_give_one_line_errors_and_write_nothing(tmp_path, capsys, case):
    _, fragment = _bad(tmp_path, case)
    out = tmp_path / "out.pt"
    with pytest.raises(SystemExit) as e:
        main(["fit", "--probs", str(tmp_path / "probs"), "--masks", str(tmp_path / "masks"), "--out", str(out),
              "--patch_size", "16", *TRAIN])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and fragment in err
    assert not out.exists()


def test_a_model_file_that_is_not_a_prn(tmp_path, capsys):
    probs, _ = write_pairs(tmp_path, n=1)
    torch.save({"conv.weight": torch.zeros(1, 1, 3, 3)}, tmp_path / "other.pt")
    with pytest.raises(SystemExit):
        main(["refine", "--model", str(tmp_path / "other.pt"), "--probs", str(probs), "--out", str(tmp_path / "o")])
    assert "not a PRN" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [[], ["fit"], ["refine"], ["evaluate"], ["pseudo-labels"]])
def test_help(command):
    run = subprocess.run([sys.executable, "-m", "patchrefinenet", *command, "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "usage: patchrefinenet" in run.stdout
    if command:
        assert "examples:" in run.stdout
