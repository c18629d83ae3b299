"""What a careful user expects around PRN runs: no stale inputs reused, nothing an earlier run made
replaced without being asked, nothing half-written left after a failure (issue 10)."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from data_utils.errors import InputError
from patchrefinenet.checkpoint import load_checkpoint, save_checkpoint
from patchrefinenet.models.prn import PRN, PRNConfig
from patchrefinenet.refine import RefinePredictConfig, RefineTrainConfig, predict_prn, train_prn

SIZE = 32


def _write_maps(folder: Path, n: int, seed: int, names=("val_pred.npy", "val_orig_gt.npy"), size: int = SIZE) -> None:
    rng = np.random.default_rng(seed)
    gt = np.zeros((n, size, size, 1), np.float32)
    for i in range(n):
        r, c = rng.integers(0, size // 2, 2)
        gt[i, r:r + 10, c:c + 10] = 1
    prob = np.clip(0.35 * gt + 0.65 * rng.random(gt.shape), 0, 1).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / names[0], prob)
    np.save(folder / names[1], gt)


def _cfg(data: Path, out: Path, **kw) -> RefineTrainConfig:
    base = dict(data_dir=str(data), output_root=str(out), aux_model="p4", width=4, epochs=1, device="cpu",
                progress=False, max_batches_per_epoch=2)
    return RefineTrainConfig(**{**base, **kw})


def test_stale_pseudo_labels_are_regenerated(tmp_path):
    data = tmp_path / "data"
    _write_maps(data, 4, seed=0)
    train_prn(_cfg(data, tmp_path / "a"))
    labels = data / "train_aux_gt_p_16.npy"
    first = np.load(labels).copy()
    _write_maps(data, 4, seed=1)  # new base maps and ground truth under the same names
    train_prn(_cfg(data, tmp_path / "b"))
    again = np.load(labels)
    assert not np.array_equal(first, again)
    # what a fresh generation from the new arrays gives
    from data_utils.pseudo_labels import generate_pseudo_label_file
    generate_pseudo_label_file(data / "val_pred.npy", data / "val_orig_gt.npy", tmp_path / "ref.npy", 16,
                               progress=False)
    np.testing.assert_array_equal(again, np.load(tmp_path / "ref.npy"))


def test_unrecorded_pseudo_labels_older_than_the_maps_are_refused(tmp_path):
    data = tmp_path / "data"
    _write_maps(data, 4, seed=0)
    labels = data / "train_aux_gt_p_16.npy"
    np.save(labels, np.zeros((4, SIZE, SIZE, 1), np.uint8))  # e.g. made by an older version, no record
    old = os.stat(data / "val_pred.npy").st_mtime - 100
    os.utime(labels, (old, old))
    with pytest.raises(InputError, match="train_aux_gt_p_16.npy has no provenance record and is older"):
        train_prn(_cfg(data, tmp_path / "a"))


def test_unrecorded_pseudo_labels_newer_than_the_maps_are_used_as_they_are(tmp_path):
    """The authors' data.zip ships pseudo-labels without a record: used (with a warning), never replaced."""
    data = tmp_path / "data"
    _write_maps(data, 4, seed=0)
    labels = data / "train_aux_gt_p_16.npy"
    theirs = (np.load(data / "val_orig_gt.npy") > 0).astype(np.float64)  # their float64 labels
    np.save(labels, theirs)
    new = os.stat(data / "val_pred.npy").st_mtime + 100
    os.utime(labels, (new, new))
    train_prn(_cfg(data, tmp_path / "a"))
    np.testing.assert_array_equal(np.load(labels), theirs)


def test_resume_refuses_other_data(tmp_path):
    data = tmp_path / "data"
    _write_maps(data, 4, seed=0)
    cfg = _cfg(data, tmp_path / "out")
    train_prn(cfg)
    _write_maps(data, 5, seed=0)  # one more map
    with pytest.raises(InputError, match="n_images: saved 4, now 5"):
        train_prn(replace(cfg, resume=True, epochs=2))
    _write_maps(data, 4, seed=3)  # same shapes, other content
    with pytest.raises(InputError, match="val_pred.npy changed since the run started"):
        train_prn(replace(cfg, resume=True, epochs=2))
    _write_maps(data, 4, seed=0, size=2 * SIZE)  # p4 now means 32-px patches
    with pytest.raises(InputError, match=r"image_size: saved \[32, 32\], now \[64, 64\]; patch_size: saved 16, now 32"):
        train_prn(replace(cfg, resume=True, epochs=2))


def test_failed_run_leaves_the_earlier_config_and_weights(tmp_path):
    data = tmp_path / "data"
    _write_maps(data, 4, seed=0)
    cfg = _cfg(data, tmp_path / "out")
    train_prn(cfg)
    config = tmp_path / "out" / "logs" / "p4" / "p4_train_config.json"
    before = config.read_text()
    with pytest.raises(InputError, match="lr: saved"):  # refused at resume: nothing rewritten
        train_prn(replace(cfg, resume=True, epochs=2, lr=1e-2))
    assert config.read_text() == before


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), -1.0, 0.0])
def test_non_finite_or_non_positive_lr_is_refused_up_front(tmp_path, lr):
    with pytest.raises(InputError, match="--lr must be a finite number > 0"):
        _cfg(tmp_path, tmp_path, lr=lr)


def test_diverging_loss_stops_with_a_clear_message_and_keeps_the_last_good_weights(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _write_maps(data, 4, seed=0)
    calls = {"n": 0}
    step = torch.optim.Adam.step

    def poisoned_step(self, *args, **kwargs):  # from the 3rd step (epoch 2) on, the weights blow up
        out = step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 3:
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned_step)
    with pytest.raises(InputError) as info:
        train_prn(_cfg(data, tmp_path / "out", epochs=3))
    msg = str(info.value)
    weights = tmp_path / "out" / "checkpoints" / "p4" / "p4_weights.th"
    assert "non-finite" in msg and "epoch 2" in msg and str(weights) in msg and "smaller --lr" in msg
    state = load_checkpoint(weights).state_dict
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    assert load_checkpoint(weights).meta["epoch"] == 1


def _predict_data(folder: Path) -> None:
    _write_maps(folder, 2, seed=5, names=("test_input.npy", "test_orig_gt.npy"))


def test_predict_uses_our_weights_first_then_the_released_file(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    _predict_data(data)
    cfg = RefinePredictConfig(data_dir=str(data), output_root=str(out), aux_model="p0", device="cpu",
                              progress=False, figure=0)
    with pytest.raises(InputError, match="checkpoints/released/p0_weights.th"):
        predict_prn(cfg)
    torch.manual_seed(0)
    released = out / "checkpoints" / "released" / "p0_weights.th"
    released.parent.mkdir(parents=True)
    torch.save(PRN(PRNConfig(grid=0)).state_dict(), released)  # the authors' bare format
    first = predict_prn(cfg)
    assert first["checkpoint"] == str(released)
    ours = out / "checkpoints" / "p0" / "p0_weights.th"
    save_checkpoint(ours, PRN(PRNConfig(grid=0, width=4)).state_dict(), {"model": PRNConfig(grid=0, width=4).to_dict()},
                    {})
    second = predict_prn(cfg)
    assert second["checkpoint"] == str(ours)
    log = (out / "logs" / "p0" / "p0_predict_log.log").read_text()
    assert f"{released} (released)" in log and f"{ours} (trained)" in log
    assert json.loads((out / "logs" / "p0" / "p0_predict_metrics.json").read_text())["checkpoint"] == str(ours)


def test_failed_predict_leaves_the_earlier_outputs_whole_and_logs_the_error(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    _write_maps(data, 4, seed=5, names=("test_input.npy", "test_orig_gt.npy"))
    weights = tmp_path / "w.th"
    save_checkpoint(weights, PRN(PRNConfig(grid=0, width=4)).state_dict(), {"model": PRNConfig(grid=0, width=4).to_dict()},
                    {})
    cfg = RefinePredictConfig(data_dir=str(data), output_root=str(out), aux_model="p0", checkpoint_path=str(weights),
                              device="cpu", progress=False, figure=2, save_masks=True)
    predict_prn(cfg)
    outputs, metrics = out / "outputs" / "p0", out / "logs" / "p0" / "p0_predict_metrics.json"
    before = {p: p.read_bytes() for p in [*outputs.rglob("*.png"), metrics]}
    assert len(list((outputs / "masks").glob("*.png"))) == 4
    prob = np.load(data / "test_input.npy")
    prob[2] = np.nan  # the third map is corrupt: the run fails after two masks
    np.save(data / "test_input.npy", 1 - prob)
    with pytest.raises(InputError, match="image 2"):
        predict_prn(cfg)
    assert {p: p.read_bytes() for p in [*outputs.rglob("*.png"), metrics]} == before
    assert not [p for p in outputs.rglob(".*")]  # no staging folder left
    last = (out / "logs" / "p0" / "p0_predict_log.log").read_text().splitlines()[-1]
    assert "ERROR error:" in last and "image 2" in last


@pytest.mark.parametrize("name", ["train", "predict"])
def test_unknown_base_model_is_named_with_the_valid_ones(tmp_path, capsys, name):
    from patchrefinenet.cli import refine_predict, refine_train

    main = refine_train.main if name == "train" else refine_predict.main
    script = str(Path(__file__).resolve().parents[1] / "src" / "deepglobe" / "refine-models" / f"{name}.py")
    with pytest.raises(SystemExit) as exc:
        main(script, ["--base_model", "banana", "--aux_model", "p64", "--checkpoint", "True",
                      "--data_root", str(tmp_path), "--output_root", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "unknown base model 'banana'" in err and "dlinknet" in err
    assert "missing" not in err


def test_train_and_predict_remove_what_a_killed_run_left(tmp_path):
    import socket
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    data, out = tmp_path / "data", tmp_path / "out"
    _write_maps(data, 4, seed=0)
    _write_maps(data, 2, seed=5, names=("test_input.npy", "test_orig_gt.npy"))
    host = socket.gethostname()
    left = [out / "checkpoints" / "p4" / f".p4_weights.th.{host}~{dead}.abc.tmp.th",
            data / f".train_aux_gt_p_16.npy.{host}~{dead}.def.tmp.npy",
            out / "outputs" / "p4" / f".p4.{host}~{dead}.ghi.tmp"]
    for p in left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    train_prn(_cfg(data, out))
    predict_prn(RefinePredictConfig(data_dir=str(data), output_root=str(out), aux_model="p4", device="cpu",
                                    progress=False, figure=0))
    assert not any(p.exists() for p in left)
