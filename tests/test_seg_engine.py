"""The base-model engine end to end on a tiny dataset in the DeepGlobe layout: train → probability
maps → RST pseudo-labels → base score; exact resume; checkpoint formats and their errors."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data_utils.datasets import load_sample, read_split
from data_utils.errors import InputError
from data_utils.spec import DatasetSpec, dataset_spec_path, load_dataset_spec
from patchrefinenet.checkpoint import load_checkpoint
from patchrefinenet.seg import (calculate_base_iou, generate_aux_arrays, generate_rst, load_base_model,
                                train_base_model)

MODEL = "resunetplusplus"
NARROW = {"filters": (4, 8, 16, 32, 64)}
SIZE = 64


def _write_png_bytes(path: Path, array: np.ndarray) -> None:
    """PNG content under any name (cv2 decodes by content), so pixels stay exact even for .jpg."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".png", array)[1].tobytes())


def make_tiny_deepglobe(data_root: Path, n: int = 8, size: int = SIZE, seed: int = 0) -> Path:
    """``n`` road-like images in the DeepGlobe layout: train/<id>_sat.jpg, train_labels/<id>_mask.png
    and train/val/test CSVs (first half train, then a quarter each)."""
    rng = np.random.default_rng(seed)
    folder = data_root / "deepglobe" / "seg-models"
    ids = [f"{i:03d}" for i in range(n)]
    for i, sample_id in enumerate(ids):
        mask = np.zeros((size, size), np.uint8)
        start, width = int(rng.integers(8, size - 16)), int(rng.integers(4, 9))
        if i % 2:
            mask[:, start:start + width] = 255
        else:
            mask[start:start + width, :] = 255
        image = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
        image[mask > 0] = rng.integers(150, 230, (int((mask > 0).sum()), 3), dtype=np.uint8)
        _write_png_bytes(folder / "train" / f"{sample_id}_sat.jpg", image)
        _write_png_bytes(folder / "train_labels" / f"{sample_id}_mask.png", mask)
    parts = {"train": ids[: n // 2], "val": ids[n // 2: 3 * n // 4], "test": ids[3 * n // 4:]}
    for split, part in parts.items():
        rows = "".join(f"{k}_sat.jpg,{k}_mask.png\n" for k in part)
        (folder / f"{split}.csv").write_text("img,target\n" + rows)
    return data_root


def tiny_spec(**train) -> DatasetSpec:
    """The DeepGlobe config at 64 px with batch 2 (and any other recipe overrides)."""
    spec = load_dataset_spec(dataset_spec_path("deepglobe"))
    recipe = dataclasses.replace(spec.train, **{"batch_size": 2, **train})
    return dataclasses.replace(spec, input_size=SIZE, prn_size=SIZE, train=recipe)


def _train(spec, data_root, out, **kw):
    args = dict(pretrained=False, model_kwargs=NARROW, device="cpu", progress=False, max_batches_per_epoch=2)
    return train_base_model(spec, MODEL, data_root=data_root, output_root=out, **{**args, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    data_root = make_tiny_deepglobe(root / "data")
    spec = tiny_spec()
    result = _train(spec, data_root, root / "out", epochs=2)
    return spec, data_root, root / "out", result


def test_training_saves_best_weights_history_and_log(trained):
    spec, _, out, result = trained
    history = [json.loads(line) for line in Path(result["history"]).read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2] and result["epochs_run"] == 2
    assert result["stopped"] == "max_epochs"
    for row in history:
        assert 0 <= row["val_iou"] <= 1 and 0 <= row["val_mae"] <= 1 and row["val_loss"] > 0
    best = min(history, key=lambda r: r["val_loss"])
    assert result["best_value"] == pytest.approx(best["val_loss"])
    saved = load_checkpoint(result["checkpoint"])
    assert saved.meta["epoch"] == best["epoch"] == result["best_epoch"]
    assert saved.config["model"] == MODEL and saved.config["dataset"]["input_size"] == SIZE
    assert "epoch 2/2" in Path(result["log_file"]).read_text()
    assert Path(result["log_file"]).name.startswith(f"{MODEL}_log_")
    # The checkpoint rebuilds its own (narrow) model.
    model = load_base_model(spec, MODEL, output_root=out)
    assert tuple(model.filters) == NARROW["filters"] and not model.training
    assert all(torch.equal(v, saved.state_dict[k]) for k, v in model.state_dict().items())


def test_arrays_pseudo_labels_and_base_score(trained):
    spec, data_root, out, _ = trained
    written = generate_aux_arrays(spec, MODEL, data_root=data_root, output_root=out, device="cpu", progress=False)
    folder = data_root / "deepglobe" / "refine-models" / MODEL
    names = {"val": ("val_pred.npy", "val_orig_gt.npy"), "test": ("test_input.npy", "test_orig_gt.npy")}
    for split, (pred_name, gt_name) in names.items():
        pred, gt = np.load(folder / pred_name), np.load(folder / gt_name)
        assert written[split]["n_images"] == 2
        assert pred.shape == gt.shape == (2, SIZE, SIZE, 1) and pred.dtype == gt.dtype == np.float32
        assert pred.min() >= 0 and pred.max() <= 1 and set(np.unique(gt)) <= {0.0, 1.0}
    # The val maps are the model's plain (unflipped) output on the CSV's images, in CSV order.
    model = load_base_model(spec, MODEL, output_root=out)
    val_pred, val_gt = np.load(folder / "val_pred.npy"), np.load(folder / "val_orig_gt.npy")
    for i, sample in enumerate(read_split(spec, data_root, "val")):
        image, mask, _ = load_sample(spec, sample)
        with torch.no_grad():
            expected = model(torch.from_numpy(image)[None])[0, 0].numpy()
        # 1e-5: the arrays come from batches of 2, this call from 1 (float32 conv kernels may differ per
        # batch size); a wrong image, order or flip differs by far more
        np.testing.assert_allclose(val_pred[i, ..., 0], expected, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(val_gt[i, ..., 0], mask)

    summaries = generate_rst(spec, MODEL, data_root=data_root, progress=False)
    assert sorted((s["split"], s["patch_size"]) for s in summaries) == [("test", 8), ("test", 64), ("val", 8), ("val", 64)]
    labels = np.load(folder / "train_aux_gt_p_64.npy")
    taus = np.load(folder / "train_aux_thresholds_p_64.npy")
    assert labels.dtype == np.uint8 and labels.shape == (2, SIZE, SIZE, 1) and taus.shape == (2, 1, 1)
    assert np.load(folder / "train_aux_thresholds_p_8.npy").shape == (2, 8, 8)
    assert (folder / "test_aux_gt_p_8.npy").is_file()
    # p = image size: one threshold per image, and the label is the prediction binarised at it.
    np.testing.assert_array_equal(labels[..., 0], (val_pred[..., 0] > taus[:, :, :1]).astype(np.uint8))

    metrics = calculate_base_iou(spec, MODEL, data_root=data_root, output_root=out, progress=False)
    pred, gt = np.load(folder / "test_input.npy") > 0.5, np.load(folder / "test_orig_gt.npy") > 0.5
    pooled = ((pred & gt).sum() + 1) / ((pred | gt).sum() + 1)
    assert metrics["pooled_iou"] == pytest.approx(pooled)
    for key in ("pooled_iou", "mean_iou", "dice", "precision", "recall", "mae", "oracle_mean_iou"):
        assert 0 <= metrics[key] <= 1
    assert metrics["oracle_mean_iou"] >= metrics["mean_iou"] - 1e-9  # the oracle may pick 0.5 itself
    log_text = (out / "logs" / MODEL / f"{MODEL}_miou_log.log").read_text()
    assert f"Base Test mIoU before Refinement = {pooled:f}" in log_text
    assert json.loads((out / "logs" / MODEL / f"{MODEL}_base_metrics.json").read_text())["n_images"] == 2


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    data_root = make_tiny_deepglobe(tmp_path / "data")
    spec = tiny_spec(decay_after=0)  # any non-improving epoch reloads the best weights and decays lr
    whole = _train(spec, data_root, tmp_path / "whole", epochs=3)
    _train(spec, data_root, tmp_path / "split", epochs=2)
    resumed = _train(spec, data_root, tmp_path / "split", epochs=3, resume=True)
    a, b = load_checkpoint(whole["last"]), load_checkpoint(resumed["last"])
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a.training_state["history"]) == strip(b.training_state["history"])
    assert resumed["best_value"] == whole["best_value"] and resumed["epochs_run"] == 3


def test_resume_without_a_resume_file_says_so(tmp_path):
    data_root = make_tiny_deepglobe(tmp_path / "data")
    with pytest.raises(InputError, match="no resume file .*_last.th"):
        _train(tiny_spec(), data_root, tmp_path / "out", resume=True)


def test_checkpoint_of_another_model_is_refused(trained, tmp_path):
    spec, _, _, result = trained
    with pytest.raises(InputError, match=f"holds {MODEL} weights, but --model dlinknet"):
        load_base_model(spec, "dlinknet", result["checkpoint"])
    bare = tmp_path / "pfanet_like.th"
    torch.save({"cpfe_conv3_3.bn.weight": torch.ones(128), "vgg16.0.weight": torch.ones(64, 3, 3, 3)}, bare)
    with pytest.raises(InputError, match="holds pfanet weights.*pass --model pfanet"):
        load_base_model(spec, MODEL, bare)


def test_authors_bare_and_wrapped_files_load(trained, tmp_path):
    """A bare state_dict (DeepGlobe/Kvasir) and sairajk's dict with numpy scalars (DUTS) both load."""
    spec, _, _, result = trained
    reference = load_base_model(spec, MODEL, result["checkpoint"])
    state = reference.state_dict()
    bare, wrapped = tmp_path / "bare.th", tmp_path / "best-model_epoch-204.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, bare)
    torch.save({"epoch": 204, "test_mae": np.float64(0.0505), "model": state, "test_acc": torch.tensor(0.9)}, wrapped)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = reference(x)
        for path in (bare, wrapped):
            model = load_base_model(spec, MODEL, path)  # widths read from the weights
            torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_missing_weights_list_both_names_and_how_to_get_them(tmp_path):
    """DUTS: a model trained here (pfanet_weights.th) is looked for before the released file."""
    duts = load_dataset_spec(dataset_spec_path("DUTS"))
    with pytest.raises(InputError) as err:
        load_base_model(duts, "pfanet", output_root=tmp_path)
    message = str(err.value)
    assert message.index("pfanet_weights.th") < message.index("best-model_epoch-204_mae-0.0505_loss-0.1370.pth")
    assert "python download.py" in message and "src/DUTS/seg-models/train.py --model pfanet" in message


def test_base_score_of_the_authors_arrays_by_hand(tmp_path):
    """Falls back to data/<ds>/seg-models/test_*.npy (data.zip); values computed by hand."""
    folder = tmp_path / "data" / "deepglobe" / "seg-models"
    folder.mkdir(parents=True)
    np.save(folder / "test_input.npy", np.array([[0.9, 0.2], [0.6, 0.3]], np.float32).reshape(1, 2, 2, 1))
    np.save(folder / "test_orig_gt.npy", np.array([[1, 0], [0, 1]], np.float32).reshape(1, 2, 2, 1))
    metrics = calculate_base_iou(tiny_spec(), "dlinknet", data_root=tmp_path / "data", output_root=tmp_path / "out",
                                 progress=False)
    # > 0.5 predicts {(0,0), (1,0)}: I = 1, U = 3 -> (1+1)/(3+1). The oracle picks a threshold in
    # [0.2, 0.3) per image: {(0,0), (1,0), (1,1)} -> I = 2, U = 3 -> 3/4.
    assert metrics["pooled_iou"] == pytest.approx(0.5)
    assert metrics["oracle_mean_iou"] == pytest.approx(0.75)
    assert metrics["mae"] == pytest.approx((0.1 + 0.2 + 0.6 + 0.7) / 4)
    assert metrics["pred"] == str(folder / "test_input.npy")
    log_text = (tmp_path / "out" / "logs" / "dlinknet" / "dlinknet_miou_log.log").read_text()
    assert "Base Test mIoU before Refinement = 0.500000" in log_text


def test_base_score_without_arrays_says_how_to_make_them(tmp_path):
    with pytest.raises(InputError, match="generate_aux_training_data.py --model dlinknet.*demo.py"):
        calculate_base_iou(tiny_spec(), "dlinknet", data_root=tmp_path, output_root=tmp_path / "out", progress=False)


def test_trained_base_weights_are_found_before_the_released_file(tmp_path):
    """download.py puts the authors' file in checkpoints/released/; train.py writes checkpoints/<model>/."""
    from patchrefinenet.seg.generate import find_base_checkpoint

    spec = load_dataset_spec(dataset_spec_path("deepglobe"))
    released = tmp_path / "checkpoints" / "released" / spec.checkpoint
    released.parent.mkdir(parents=True)
    released.write_bytes(b"theirs")
    assert find_base_checkpoint(spec, spec.base_model, tmp_path) == released
    ours = tmp_path / "checkpoints" / spec.base_model / f"{spec.base_model}_weights.th"
    ours.parent.mkdir(parents=True)
    ours.write_bytes(b"ours")
    assert find_base_checkpoint(spec, spec.base_model, tmp_path) == ours
    assert released.read_bytes() == b"theirs"


def test_bad_base_arrays_name_the_file_and_the_log_ends_with_the_error(tmp_path):
    folder = tmp_path / "data" / "deepglobe" / "seg-models"
    folder.mkdir(parents=True)
    np.save(folder / "test_input.npy", np.full((2, 2, 2, 1), 200, np.uint8))  # an 8-bit image, not probabilities
    np.save(folder / "test_orig_gt.npy", np.zeros((2, 2, 2, 1), np.float32))
    with pytest.raises(InputError) as info:
        calculate_base_iou(tiny_spec(), "dlinknet", data_root=tmp_path / "data", output_root=tmp_path / "out",
                           progress=False)
    assert str(folder / "test_input.npy") in str(info.value) and "divide by 255" in str(info.value)
    log_lines = (tmp_path / "out" / "logs" / "dlinknet" / "dlinknet_miou_log.log").read_text().splitlines()
    assert "ERROR error:" in log_lines[-1] and str(folder / "test_input.npy") in log_lines[-1]


def test_pN_means_the_same_patch_in_generate_rst_and_prn_training(tmp_path):
    """Maps not at the config's prn_size: p64 is an 8×8 grid of the maps' own side in both places."""
    from patchrefinenet.models.prn import resolve_grid
    from patchrefinenet.refine.data import pseudo_label_name
    from patchrefinenet.seg.generate import refine_arrays_dir

    spec = load_dataset_spec(dataset_spec_path("deepglobe"))  # prn_size 512
    folder = refine_arrays_dir(spec, tmp_path, "dlinknet")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(folder / "val_pred.npy", rng.random((2, 64, 64, 1), dtype=np.float32))
    np.save(folder / "val_orig_gt.npy", (rng.random((2, 64, 64, 1)) > 0.5).astype(np.float32))
    summaries = generate_rst(spec, "dlinknet", data_root=tmp_path, aux_models=["p64"], splits=["val"], progress=False)
    assert [s["patch_size"] for s in summaries] == [8]
    train_patch = resolve_grid("p64", image_size=64).patch_size  # what refine-models/train.py reads
    assert (folder / pseudo_label_name(train_patch)).is_file()
