"""Golden test: the per-dataset scripts give the arrays and numbers recorded before the training
engines were merged into one (docs/DESIGN.md, "One training engine").

The chain runs the deepglobe scripts' code paths (``patchrefinenet.cli.*.main``) on a tiny
synthetic dataset (64 px, 12 images, a narrow ResUNet++ and a width-4 PRN):

1. base model, full masks, 3 epochs with ``decay_after = 0`` (plateau reloads happen) → history,
   result, val/test probability arrays (``generate_aux_training_data.py``);
2. base model from scribbles, two-phase (``--pce_epochs 1``) → history and result;
3. RST pseudo-labels (``generate_rst.py``) from the *recorded* val/test arrays, so the binary
   labels compare exactly on any CPU;
4. PRN training, 3 epochs without and with held-out selection, from the recorded arrays → history
   and result; then ``predict.py`` → metrics and the refined probabilities.

Floats compare with rtol = atol = 1e-4 (other BLAS builds round differently), binary labels and
epochs, decisions and actions exactly. Regenerate the recorded values on purpose only (after a
change that is meant to alter the numbers, explained in its commit message):

    REGENERATE_GOLDEN=1 python -m pytest -q tests/test_golden_scripts.py

which rewrites ``tests/golden/scripts.json`` and ``tests/golden/arrays.npz``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from patchrefinenet.cli import generate_aux, generate_rst, generate_scribbles, refine_predict, refine_train, seg_train
from test_seg_engine import SIZE, make_tiny_deepglobe

REPO = Path(__file__).resolve().parents[1]
SEG = REPO / "src" / "deepglobe" / "seg-models"
REFINE = REPO / "src" / "deepglobe" / "refine-models"
GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = os.environ.get("REGENERATE_GOLDEN") == "1"
MODEL = "resunetplusplus"
TOL = dict(rtol=1e-4, atol=1e-4)

# keys whose values are wall-clock times or machine paths, never compared
_VOLATILE = {"out_path", "threshold_map_path", "seconds", "time", "checkpoint", "last", "history", "log_file",
             "history_file", "model", "selection"}


def _plain(value):
    """``value`` with the volatile keys of every dict dropped (recursively)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _compare(got, want, where: str) -> None:
    """Equal structure; floats within TOL, everything else exactly."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            _compare(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            _compare(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert got == pytest.approx(want, rel=TOL["rtol"], abs=TOL["atol"]), f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _history(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _run_chain(root: Path) -> tuple[dict, dict]:
    """Run every script of the chain; return (numbers, arrays)."""
    data_root = make_tiny_deepglobe(root / "data", n=12)
    config = root / "tiny.toml"
    text = (REPO / "src" / "deepglobe" / "dataset.toml").read_text()
    text = text.replace("input_size = 512", f"input_size = {SIZE}").replace("prn_size = 512", f"prn_size = {SIZE}")
    config.write_text(text.replace("batch_size = 4", "batch_size = 2").replace("decay_after = 3", "decay_after = 0"))
    common = ["--config", str(config), "--data_root", str(data_root), "--device", "cpu", "--progress", "False"]
    base = [*common, "--model", MODEL, "--model_width", "4", "--no-pretrained", "--max_batches_per_epoch", "2"]
    numbers, arrays = {}, {}

    full = seg_train.main(str(SEG / "train.py"), [*base, "--output_root", str(root / "seg"), "--epochs", "4",
                                                  "--lr", "2e-2"])
    numbers["base_full"] = {"result": _plain(full), "history": _plain(_history(full["history"]))}
    generate_aux.main(str(SEG / "generate_aux_training_data.py"),
                      [*common, "--model", MODEL, "--output_root", str(root / "seg"), "--batch_size", "2"])
    folder = data_root / "deepglobe" / "refine-models" / MODEL
    names = ("val_pred", "val_orig_gt", "test_input", "test_orig_gt")
    for name in names:
        arrays[name] = np.load(folder / f"{name}.npy")

    generate_scribbles.main(str(SEG / "generate_scribbles.py"), [*common[:4], "--progress", "False"])
    weak = seg_train.main(str(SEG / "train.py"), [*base, "--output_root", str(root / "weak"), "--epochs", "2",
                                                  "--supervision", "scribbles", "--pce_epochs", "1"])
    numbers["base_scribbles"] = {"result": _plain(weak), "history": _plain(_history(weak["history"]))}

    # From here on the inputs are the recorded arrays, so the binary labels compare exactly.
    if not REGENERATE:
        recorded = np.load(GOLDEN / "arrays.npz")
        for name in names:
            np.save(folder / f"{name}.npy", recorded[name])
    summaries = generate_rst.main(str(SEG / "generate_rst.py"), [*common, "--model", MODEL, "--aux_model", "p4"])
    numbers["rst"] = _plain(summaries)
    arrays["train_aux_gt_p_32"] = np.load(folder / "train_aux_gt_p_32.npy")
    arrays["test_aux_gt_p_32"] = np.load(folder / "test_aux_gt_p_32.npy")

    refine = [*common[2:], "--base_model", MODEL, "--aux_model", "p4", "--width", "4", "--epochs", "4",
              "--decay_after", "0", "--lr", "2e-2"]
    for name, extra in (("prn_authors", ["--select", "0"]), ("prn_select", ["--select", "0.5"])):
        out = root / name
        res = refine_train.main(str(REFINE / "train.py"), [*refine, *extra, "--output_root", str(out)])
        numbers[name] = {"result": _plain(res), "history": _plain(_history(res["history_file"]))}
        if res.get("selection") is not None:
            numbers[name]["selection"] = _plain(res["selection"].to_dict())
        metrics = refine_predict.main(str(REFINE / "predict.py"), [
            *common[2:], "--base_model", MODEL, "--aux_model", "p4", "--checkpoint", "True", "--figure", "0",
            "--save_probs", "True", "--output_root", str(out)])
        numbers[name]["predict"] = _plain({k: metrics[k] for k in ("rule", "refined", "base", "global", "local")
                                           if k in metrics})
        arrays[f"{name}_test_prob_global"] = np.load(out / "outputs" / "p4" / "test_prob_global.npy")
    return numbers, arrays


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    numbers, arrays = _run_chain(tmp_path_factory.mktemp("golden"))
    numbers = json.loads(json.dumps(numbers))  # tuples become lists, as in the record
    if REGENERATE:
        GOLDEN.mkdir(exist_ok=True)
        (GOLDEN / "scripts.json").write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")
        np.savez_compressed(GOLDEN / "arrays.npz", **arrays)
    return numbers, arrays


def test_recorded_values_are_small_and_present(chain):
    sizes = [p.stat().st_size for p in (GOLDEN / "scripts.json", GOLDEN / "arrays.npz")]
    assert sum(sizes) < 200_000


@pytest.mark.parametrize("stage", ["base_full", "base_scribbles", "rst", "prn_authors", "prn_select"])
def test_numbers_match_the_recorded_run(chain, stage):
    numbers, _ = chain
    want = json.loads((GOLDEN / "scripts.json").read_text())[stage]
    _compare(numbers[stage], want, stage)


def test_arrays_match_the_recorded_run(chain):
    _, arrays = chain
    recorded = np.load(GOLDEN / "arrays.npz")
    assert sorted(recorded.files) == sorted(arrays)
    for name in recorded.files:
        got, want = arrays[name], recorded[name]
        assert got.shape == want.shape and got.dtype == want.dtype, name
        if want.dtype == np.uint8 or name.endswith("_gt"):  # labels and ground truth: exactly
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, **TOL, err_msg=name)


def test_the_chain_trained_and_planned_what_it_claims(chain):
    """The recorded run exercised the paths the engine must keep: plateau reloads, the two-phase
    scribble recipe and held-out selection (so a regenerated record cannot silently lose them)."""
    numbers, _ = chain
    actions = [row["action"] for row in numbers["base_full"]["history"]]
    assert any("reloaded best" in a for a in actions) and numbers["base_full"]["result"]["epochs_run"] == 4
    weak = numbers["base_scribbles"]["history"]
    assert [row["regularized"] for row in weak] == [False, True] and weak[1]["train_reg"] > 0
    assert all("select" in row for row in numbers["prn_select"]["history"])
    assert not any("select" in row for row in numbers["prn_authors"]["history"])
    for name in ("prn_authors", "prn_select"):
        assert any(row["reload_best"] for row in numbers[name]["history"]), name
