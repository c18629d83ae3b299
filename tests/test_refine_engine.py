"""The PRN engine end to end on tiny generated arrays: training files and logs, the plateau rule in
the loop, bit-exact resume, the head combination, prediction outputs, and the six scripts' CLIs."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from data_utils.errors import InputError
from patchrefinenet.checkpoint import load_checkpoint
from patchrefinenet.cli import refine_predict, refine_train
from patchrefinenet.models.prn import load_prn
from patchrefinenet.refine.predict import COMBINE_MODES
from patchrefinenet.refine import RefinePredictConfig, RefineTrainConfig, combine_heads, predict_prn, train_prn

REPO = Path(__file__).resolve().parents[1]
N, SIZE = 6, 32


def _maps(rng, n):
    gt = np.zeros((n, SIZE, SIZE), np.uint8)
    for i in range(n):  # a random rectangle per image
        r, c = rng.integers(0, SIZE // 2, 2)
        gt[i, r:r + rng.integers(6, SIZE // 2), c:c + rng.integers(6, SIZE // 2)] = 1
    prob = np.clip(0.35 * gt + 0.65 * rng.random(gt.shape), 0, 1).astype(np.float32)
    return prob[..., None], gt[..., None].astype(np.float32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """``<root>/deepglobe/refine-models/dlinknet/`` with val and test arrays, as the CLIs expect."""
    root = tmp_path_factory.mktemp("data")
    d = root / "deepglobe" / "refine-models" / "dlinknet"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, (inputs, gt) in (("val", ("val_pred.npy", "val_orig_gt.npy")), ("test", ("test_input.npy", "test_orig_gt.npy"))):
        prob, mask = _maps(rng, N if split == "val" else 4)
        np.save(d / inputs, prob)
        np.save(d / gt, mask)
    return d


def _cfg(data_dir: Path, out: Path, **kw) -> RefineTrainConfig:
    """The authors' engine behaviour (no held-out selection) unless a test asks for it."""
    base = dict(data_dir=str(data_dir), output_root=str(out), aux_model="p16", width=4, epochs=2, device="cpu",
                progress=False, select=0.0)
    return RefineTrainConfig(**{**base, **kw})


def _unit(metrics: dict) -> None:
    for k in ("pooled_iou", "mean_iou", "dice", "precision", "recall", "mae"):
        assert 0.0 <= metrics[k] <= 1.0, (k, metrics[k])


# --------------------------------------------------------------------------- training + prediction (API, grid 4)

def test_train_and_predict_grid4(data_dir, tmp_path):
    out = tmp_path / "out"
    res = train_prn(_cfg(data_dir, out))
    ck_dir, log_dir = out / "checkpoints" / "p16", out / "logs" / "p16"
    assert res["epochs_run"] == 2 and res["grid"] == 4 and res["aux"] == "p16"
    assert Path(res["checkpoint"]) == ck_dir / "p16_weights.th" and (ck_dir / "p16_last.th").is_file()
    assert (data_dir / "train_aux_gt_p_8.npy").is_file()  # 4×4 grid on 32 px: 8-px pseudo-label patches
    history = [json.loads(line) for line in (log_dir / "p16_train_history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"loss", "lr", "iou", "iou_local", "time", "improved"} <= set(history[0])
    assert history[0]["improved"] and res["best_loss"] == min(h["loss"] for h in history)
    log_text = Path(res["log_file"]).read_text()
    assert "p16 = 4×4 grid of 8-px patches" in log_text and "epoch 2/2" in log_text
    assert json.loads((log_dir / "p16_train_config.json").read_text())["model"]["grid"] == 4

    model, ck = load_prn(res["checkpoint"])  # our checkpoint rebuilds its own model
    assert model.config.grid == 4 and model.config.width == 4
    assert ck.meta["best_loss"] == res["best_loss"] and ck.config["train"]["seed"] == 0

    metrics = predict_prn(RefinePredictConfig(data_dir=str(data_dir), output_root=str(out), aux_model="p16",
                                              device="cpu", save_masks=True, save_probs=True, figure=2,
                                              progress=False))
    assert metrics["combine"] == "upstream" and metrics["miou"] == metrics["refined"]["pooled_iou"]
    for key in ("refined", "base", "global", "local"):
        _unit(metrics[key])
        assert metrics[key]["n_images"] == 4
    assert "Total mIoU after Refinement = " in (log_dir / "p16_predict_log.log").read_text()
    saved = json.loads((log_dir / "p16_predict_metrics.json").read_text())
    assert saved["refined"] == metrics["refined"] and saved["base"] == metrics["base"]
    outputs = out / "outputs" / "p16"
    assert len(list((outputs / "masks").glob("*.png"))) == 4 and (outputs / "p16_predict_figure.png").is_file()
    probs = np.load(outputs / "test_prob_global.npy")
    assert probs.shape == (4, SIZE, SIZE, 1) and probs.dtype == np.float32
    # the base metric is the input thresholded at > 0.5, computed here by hand
    x = np.load(data_dir / "test_input.npy")[..., 0] > 0.5
    y = np.load(data_dir / "test_orig_gt.npy")[..., 0] > 0.5
    assert metrics["base"]["pooled_iou"] == pytest.approx(((x & y).sum() + 1) / ((x | y).sum() + 1))


def test_resume_ends_where_an_uninterrupted_run_ends(data_dir, tmp_path):
    # decay_after=0: every non-improving epoch reloads the best weights, exercising that path too.
    cfg = _cfg(data_dir, tmp_path / "a", epochs=4, decay_after=0, stop_after=10, lr=3e-3, max_batches_per_epoch=3)
    straight = train_prn(cfg)
    first = train_prn(replace(cfg, output_root=str(tmp_path / "b"), epochs=2))
    assert first["epochs_run"] == 2
    resumed = train_prn(replace(cfg, output_root=str(tmp_path / "b"), resume=True))
    assert resumed["epochs_run"] == 4
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    for name in ("p16_last.th", "p16_weights.th"):
        a = load_checkpoint(tmp_path / "a" / "checkpoints" / "p16" / name).state_dict
        b = load_checkpoint(tmp_path / "b" / "checkpoints" / "p16" / name).state_dict
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resume"


def test_loader_workers_do_not_change_the_run(data_dir, tmp_path):
    # augmentation draws depend on (seed, epoch, index) only, so worker processes see the same items
    cfg = _cfg(data_dir, tmp_path / "w0", aux_model="p0", epochs=2, max_batches_per_epoch=3)
    a = train_prn(cfg)["model"].state_dict()
    b = train_prn(replace(cfg, output_root=str(tmp_path / "w2"), num_workers=2))["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_plateau_rule_in_the_loop_reloads_and_stops(data_dir, tmp_path):
    # lr ~ 0 and a fixed data order: the loss repeats exactly, so epoch 1 improves and every later
    # epoch does not: reloads (lr / 2) at epochs 2 and 3, stop at epoch 4 (counter 3 > stop_after 2).
    cfg = _cfg(data_dir, tmp_path, aux_model="p0", epochs=10, lr=1e-30, lr_factor=2.0, min_lr=0.0, decay_after=0,
               stop_after=2, augment=False, shuffle=False)
    res = train_prn(cfg)
    hist = res["history"]
    assert [h["improved"] for h in hist] == [True, False, False, False]
    assert [h["reload_best"] for h in hist] == [False, True, True, False]
    assert [h["lr"] for h in hist] == pytest.approx([1e-30, 1e-30, 5e-31, 2.5e-31])
    assert res["epochs_run"] == 4 and "no improvement for 3 epochs" in res["stopped"]
    again = train_prn(replace(cfg, resume=True))  # a finished run stays finished
    assert again["epochs_run"] == 4 and len(again["history"]) == 4


def test_resume_rejects_other_settings_and_missing_file(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path, aux_model="p0", epochs=1)
    with pytest.raises(InputError, match="no resume file"):
        train_prn(replace(cfg, resume=True))
    train_prn(cfg)
    with pytest.raises(InputError, match="lr: saved 0.0008, now 0.001"):
        train_prn(replace(cfg, resume=True, epochs=2, lr=1e-3))


# --------------------------------------------------------------------------- combination rule

def test_combine_heads_hand_case():
    g = torch.zeros(1, 1, 5, 5)
    l = torch.zeros(1, 1, 5, 5)
    g[0, 0, 0, 0:3] = 0.9  # G: top row, columns 0-2
    g[0, 0, 4, 4] = 0.7  # G: bottom-right corner
    g[0, 0, 2, 2] = 0.5  # exactly 0.5 is background (strict >)
    l[0, 0, 0, 0] = 0.8  # L agrees with G at (0, 0) and (4, 4) only
    l[0, 0, 4, 4] = 0.6
    l[0, 0, 2, 2] = 0.9
    expected = np.array([
        [1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0],  # dilate((0,0)) adds (1,0), (1,1); pixels outside the image add nothing
        [0, 0, 0, 0, 0],
        [0, 0, 0, 1, 1],  # dilate((4,4)) adds (3,3), (3,4), (4,3)
        [0, 0, 0, 1, 1],
    ], np.uint8)
    final = combine_heads(g, l, "upstream")
    assert final.dtype == torch.uint8
    np.testing.assert_array_equal(final[0, 0].numpy(), expected)
    np.testing.assert_array_equal(combine_heads(g, l, "global")[0, 0].numpy(), (g[0, 0] > 0.5).numpy())
    np.testing.assert_array_equal(combine_heads(g, l, "local")[0, 0].numpy(), (l[0, 0] > 0.5).numpy())
    # no agreement between the heads: the final mask is G
    np.testing.assert_array_equal(combine_heads(g, torch.zeros_like(l))[0, 0].numpy(), (g[0, 0] > 0.5).numpy())
    with pytest.raises(InputError, match="no local head"):
        combine_heads(g, None, "upstream")
    assert refine_predict._COMBINE_MODES == COMBINE_MODES  # the CLI's copy (kept torch-free for --help)


# --------------------------------------------------------------------------- CLIs

def _script(ds: str, name: str) -> str:
    return str(REPO / "src" / ds / "refine-models" / f"{name}.py")


def test_cli_train_predict_in_process(data_dir, tmp_path, capsys):
    root = data_dir.parents[2]
    common = ["--data_root", str(root), "--output_root", str(tmp_path), "--device", "cpu", "--progress", "False"]
    train = _script("deepglobe", "train")
    res = refine_train.main(train, ["--base_model", "dlinknet", "--aux_model", "p0", "--epochs", "1", "--width", "4",
                                    *common])
    assert res["epochs_run"] == 1 and (tmp_path / "checkpoints" / "p0" / "p0_weights.th").is_file()
    assert (data_dir / "train_aux_gt_p_32.npy").is_file()  # p0 = one patch per (32-px) image
    # a new run never replaces an earlier run's weights unless asked
    weights = tmp_path / "checkpoints" / "p0" / "p0_weights.th"
    before = weights.read_bytes()
    with pytest.raises(SystemExit) as exc:
        refine_train.main(train, ["--aux_model", "p0", "--epochs", "1", "--width", "4", *common])
    assert exc.value.code == 2 and "--overwrite True" in capsys.readouterr().err
    assert weights.read_bytes() == before
    # --checkpoint True starts from the saved weights (here replacing them, so --overwrite True)
    refine_train.main(train, ["--aux_model", "p0", "--epochs", "1", "--width", "4", "--checkpoint", "True",
                              "--overwrite", "True", *common])
    logs = sorted((tmp_path / "logs" / "p0").glob("p0_train_log_*.log"))
    assert any("initialised from" in p.read_text() for p in logs)

    metrics = refine_predict.main(_script("deepglobe", "predict"),
                                  ["--aux_model", "p0", "--checkpoint", "True", "--figure", "0", *common])
    stored = load_prn(weights)[1].config["refiner"]["rule"]  # train.py held out maps and chose a rule
    assert metrics["rule"] == stored and metrics["rule_source"] == "chosen on held-out maps at training time"
    assert "local" not in metrics
    authors = refine_predict.main(_script("deepglobe", "predict"), ["--aux_model", "p0", "--checkpoint", "True",
                                                                    "--combine", "global", "--figure", "0", *common])
    assert authors["combine"] == "global" and authors["rule"] == "global@0.5"
    _unit(metrics["refined"])
    assert "Total mIoU after Refinement" in (tmp_path / "logs" / "p0" / "p0_predict_log.log").read_text()

    with pytest.raises(SystemExit) as exc:  # --checkpoint False means false: nothing to predict with
        refine_predict.main(_script("deepglobe", "predict"), ["--aux_model", "p0", "--checkpoint", "False", *common])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        refine_train.main(train, ["--aux_model", "p5", *common])
    assert exc.value.code == 2
    assert "p5" in capsys.readouterr().err


def test_help_of_all_six_scripts():
    procs = {(ds, name): subprocess.Popen([sys.executable, _script(ds, name), "--help"], cwd="/", text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for ds in ("deepglobe", "DUTS", "kvasir") for name in ("train", "predict")}
    for (ds, name), proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        assert f"src/{ds}/refine-models/{name}.py" in stdout and "--aux_model" in stdout and "examples:" in stdout


@pytest.mark.parametrize("ds, name, model, missing", [
    ("kvasir", "train", "resunetplusplus", "val_pred.npy"),
    ("DUTS", "predict", "pfanet", "test_input.npy"),
])
def test_missing_arrays_give_a_clean_error(tmp_path, capsys, ds, name, model, missing):
    main = refine_train.main if name == "train" else refine_predict.main
    argv = ["--aux_model", "p64", "--checkpoint", str(name == "predict"), "--data_root", str(tmp_path),
            "--output_root", str(tmp_path / "out"), "--device", "cpu"]
    with pytest.raises(SystemExit) as exc:
        main(_script(ds, name), argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert missing in err and f"src/{ds}/seg-models/generate_aux_training_data.py --model {model}" in err


def test_held_out_selection_stores_the_rule_and_scores_in_the_best_checkpoint(data_dir, tmp_path):
    """With --select, the plateau rule follows the held-out score, and the chosen rule (or the guard's
    fallback to the base map) is written into <aux>_weights.th, where predict and Refiner.load find it."""
    from patchrefinenet import Refiner

    res = train_prn(_cfg(data_dir, tmp_path / "out", select=0.25))
    selection = res["selection"]
    history = [json.loads(line) for line in
               (tmp_path / "out" / "logs" / "p16" / "p16_train_history.jsonl").read_text().splitlines()]
    assert all("select" in h for h in history)
    assert res["best_loss"] == -max(h["select"] for h in history)
    _, ck = load_prn(res["checkpoint"])
    assert ck.config["refiner"]["rule"] == selection.rule.name
    n = np.load(data_dir / "val_pred.npy", mmap_mode="r").shape[0]
    assert ck.config["refiner"]["selection"]["n_maps"] == max(1, round(0.25 * n))
    assert Refiner.load(res["checkpoint"]).rule == selection.rule
