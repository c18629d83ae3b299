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

from patchrefinenet.demo import pipeline

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
        for key in ("pooled_iou", "mean_iou", "dice"):
            assert math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0, (row["method"], key, row[key])


def test_fast_demo_writes_every_artifact_with_valid_metrics(fast_demo):
    root, report, stderr = fast_demo

    # stage outputs, in the layouts users know
    data = root / "data" / "deepglobe"
    assert (data / "seg-models" / "train.csv").is_file() and any((data / "seg-models" / "train").glob("*_sat.jpg"))
    arrays = data / "refine-models" / "resunetplusplus"
    for name in ("val_pred.npy", "val_orig_gt.npy", "test_input.npy", "test_orig_gt.npy",
                 "train_aux_gt_p_8.npy", "train_aux_gt_p_64.npy", "test_aux_gt_p_8.npy"):
        assert (arrays / name).is_file(), name
    assert (root / "seg-models" / "checkpoints" / "resunetplusplus" / "resunetplusplus_weights.th").is_file()
    for aux in ("p0", "p64"):
        assert (root / "refine-models" / "checkpoints" / aux / f"{aux}_weights.th").is_file()
        log = (root / "refine-models" / "logs" / aux / f"{aux}_predict_log.log").read_text()
        assert "Total mIoU after Refinement = " in log
    assert "Base Test mIoU before Refinement" in \
        (root / "seg-models" / "logs" / "resunetplusplus" / "resunetplusplus_miou_log.log").read_text()

    # the report: table rows with metrics in [0, 1], Markdown + JSON, two figures
    methods = [r["method"] for r in report["rows"]]
    assert methods[0].startswith("Base model, threshold 0.5") and methods[-1].startswith("Patch oracle")
    assert any(m.startswith("PRN p64") for m in methods) and any(m.startswith("DenseCRF") for m in methods)
    assert "PRN p64, global head alone" in methods
    _assert_valid_rows(report["rows"])
    saved = json.loads((root / "results.json").read_text())
    assert [r["method"] for r in saved["rows"]] == methods
    assert "| method |" in (root / "results.md").read_text()
    for fig in report["figures"].values():
        assert Path(fig).is_file() and Path(fig).stat().st_size > 1000
    # the oracle is an upper bound for patch-wise thresholding of the same maps
    oracle = report["rows"][-1]["pooled_iou"]
    assert oracle >= report["rows"][0]["pooled_iou"] - 1e-9
    # --quiet reaches every stage's script: no progress bars
    assert "batch/s" not in stderr and "it/s" not in stderr


def test_weak_flag_adds_scribble_supervised_rows(fast_demo):
    """``--weak`` on an existing demo root: scribbles, two weak base models, PRN p64, their rows in the table."""
    root, first, _ = fast_demo
    report = pipeline.main(["--fast", "--root", str(root), "--quiet", "--weak", "--stages", "report"])
    methods = [r["method"] for r in report["rows"]]
    weak = [m for m in methods if "scribbles" in m or "DenseCRF base" in m]
    assert weak == ["Base from scribbles, pCE only", "Base from scribbles, pCE + DenseCRF loss",
                    "PRN p64 on the pCE + DenseCRF base"]
    assert methods[:len(first["rows"]) - 1] == [r["method"] for r in first["rows"][:-1]]  # full supervision kept
    assert methods[-1].startswith("Patch oracle")
    _assert_valid_rows(report["rows"])
    assert any((root / "data" / "deepglobe" / "seg-models" / "scribbles").glob("*.png"))
    for name in ("pce", "crf"):
        assert (root / f"weak-{name}" / "seg-models" / "checkpoints" / "resunetplusplus"
                / "resunetplusplus_weights.th").is_file()
    assert (root / "weak-crf" / "refine-models" / "checkpoints" / "p64" / "p64_weights.th").is_file()
    assert "weak" in report["timings_s"]
    assert "Base from scribbles, pCE only" in (root / "results.md").read_text()


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
    assert "--fast" in proc.stdout and "--stages" in proc.stdout
