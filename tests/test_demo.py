"""The demo's fast configuration end to end: every artifact exists and every metric is a valid number.

Quality gains are the benchmark's and the default demo's business, not asserted here."""
from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from patchrefinenet import Refiner
from patchrefinenet.demo import pipeline
from patchrefinenet.demo.config import DemoConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    """One fast demo run shared by the tests below: (root, report, captured stderr)."""
    root = tmp_path_factory.mktemp("fast") / "demo"
    capture = pytest.MonkeyPatch()
    err = io.StringIO()
    capture.setattr(sys, "stderr", err)
    try:
        report = pipeline.main(["--fast", "--root", str(root), "--quiet"])
    finally:
        capture.undo()
    return root, report, err.getvalue()


def _assert_valid_rows(rows):
    for row in rows:
        for scenario in ("shift", "control"):
            if row[scenario] is None:
                continue
            for key in ("pooled_iou", "mean_iou", "dice"):
                value = row[scenario][key]
                assert math.isfinite(value) and 0.0 <= value <= 1.0, (row["id"], scenario, key, value)


def test_fast_demo_writes_every_artifact_with_valid_metrics(fast_demo):
    root, report, stderr = fast_demo

    # stage outputs, in the layouts users know: the training distribution and the shifted deployment one
    for data_root in ("data", "deploy-data"):
        data = root / data_root / "kvasir"
        assert (data / "seg-models" / "val.csv").is_file() and any((data / "seg-models" / "train").glob("*.jpg"))
        arrays = data / "refine-models" / "resunetplusplus"
        for name in ("val_pred.npy", "val_orig_gt.npy", "test_input.npy", "test_orig_gt.npy"):
            assert (arrays / name).is_file(), (data_root, name)
    assert json.loads((root / "deploy-data" / "kvasir" / "seg-models" / "demo_manifest.json").read_text())["shift"]
    assert (root / "seg-models" / "checkpoints" / "resunetplusplus" / "resunetplusplus_weights.th").is_file()
    assert "Base Test mIoU before Refinement" in \
        (root / "seg-models" / "logs" / "resunetplusplus" / "resunetplusplus_miou_log.log").read_text()
    for scenario in ("shift", "control"):
        refiner = Refiner.load(root / f"prn-{scenario}.pt")
        assert refiner.selection is not None and refiner.selection.n_maps >= 1
        # fitted with the demo's PRN settings (prn_fit_options), e.g. several maps per step, not the authors' 1
        assert refiner.train_config["batch_size"] == DemoConfig.fast().prn_batch_size > 1

    # the report: rows with ids, both scenarios, Markdown + JSON, two figures
    ids = [r["id"] for r in report["rows"]]
    assert ids == ["base@0.5", "best_global", "prn", "prn_authors", "prn_global", "oracle"]
    _assert_valid_rows(report["rows"])
    saved = json.loads((root / "results.json").read_text())
    assert [r["id"] for r in saved["rows"]] == ids and set(saved["goals"]["met"]) == {
        "shift: prn >= base@0.5 + 3", "shift: prn >= best_global + 1", "control: prn >= best_global - 0.2"}
    assert "| id | method |" in (root / "results.md").read_text()
    for fig in report["figures"].values():
        assert Path(fig).is_file() and Path(fig).stat().st_size > 1000
    rows = {r["id"]: r for r in report["rows"]}
    for scenario in ("shift", "control"):
        # the oracle is an upper bound for patch-wise thresholding of the same maps
        assert rows["oracle"][scenario]["pooled_iou"] >= rows["base@0.5"][scenario]["pooled_iou"] - 1e-9
        assert {"ece", "brier"} <= set(rows["prn"][scenario])
    # --quiet reaches every stage: no progress bars
    assert "batch/s" not in stderr and "it/s" not in stderr


def test_weak_flag_adds_scribble_supervised_rows(fast_demo):
    """``--weak`` on an existing demo root: scribbles, the pCE model, one fine-tune per grid point, PRN on the
    best; their rows in the table, the gap closed and the grid in their own table."""
    root, first, _ = fast_demo
    report = pipeline.main(["--fast", "--root", str(root), "--quiet", "--weak", "--stages", "report"])
    ids = [r["id"] for r in report["rows"]]
    assert ids == ["base@0.5", "best_global", "prn", "prn_authors", "prn_global", "full", "pce", "pce_densecrf",
                   "pce_ncut", "prn_on_weak", "oracle"]
    rows = {r["id"]: r for r in report["rows"]}
    assert all(rows[i]["shift"] is None for i in ("full", "pce", "pce_densecrf", "pce_ncut", "prn_on_weak"))
    # the fully-supervised row is the default run's base model after the same extra epochs as the weak rows
    assert "fine-tuned with the full masks" in rows["full"]["control"]["note"]
    _assert_valid_rows(report["rows"])
    grid = report["weak"]["grid"]
    assert [(c["reg_loss"], c["weight"]) for c in grid] == [("none", 0.0), ("densecrf", 1.0), ("ncut", 1.0)]
    assert 0 < report["weak"]["labelled_fraction"] < 0.2
    assert any((root / "data" / "kvasir" / "seg-models" / "scribbles").glob("*.png"))
    for name in ("pce-phase", "full", "pce", "densecrf-w1", "ncut-w1"):
        assert (root / "weak" / name / "checkpoints" / "resunetplusplus" / "resunetplusplus_weights.th").is_file()
        assert (root / "weak" / name / "arrays" / "test_input.npy").is_file() or name == "pce-phase"
    assert (root / "weak" / "prn.pt").is_file() and (root / "weak" / "grid.json").is_file()
    assert "weak" in report["timings_s"]
    text = (root / "results.md").read_text()
    assert "Base from scribbles, pCE only" in text and "gap closed" in text and "Weight grid" in text


def test_same_seed_gives_identical_data(tmp_path):
    from data_utils.synthetic import write_demo_dataset

    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        write_demo_dataset(root, "roads", n_train=3, n_val=2, n_test=2, size=64, seed=5, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.suffix in (".jpg", ".png", ".csv"))
    assert files
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_demo_help():
    proc = subprocess.run([sys.executable, str(REPO / "demo.py"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    assert "--fast" in proc.stdout and "--stages" in proc.stdout and "--full" in proc.stdout
