"""The per-dataset seg-models scripts: --help from any folder, clean errors, and the whole
train → generate_aux_training_data → generate_rst → calculate_base_iou chain through the CLIs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from patchrefinenet.cli import calculate_base_iou, generate_aux, generate_rst, seg_train
from test_seg_engine import SIZE, make_tiny_deepglobe

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(REPO.glob("src/*/seg-models/*.py"))
SEG = REPO / "src" / "deepglobe" / "seg-models"


def test_every_dataset_has_the_same_scripts_and_kvasir_its_miou_name():
    names = {(p.parent.parent.name, p.name) for p in SCRIPTS}
    expected = {(ds, n) for ds in ("deepglobe", "DUTS", "kvasir") for n in
                ("train.py", "generate_aux_training_data.py", "generate_rst.py", "calculate_base_iou.py",
                 "generate_scribbles.py")}
    assert names == expected | {("kvasir", "calculate_base_miou.py")}


def test_help_of_every_script_from_another_folder(tmp_path):
    procs = {p: subprocess.Popen([sys.executable, str(p), "--help"], cwd=tmp_path, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in SCRIPTS}
    for path, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert f"usage: python src/{path.parent.parent.name}/seg-models/{path.name}" in out
        assert "--data_root" in out and ("--model" in out or path.name == "generate_scribbles.py")


def test_missing_data_exits_2_naming_the_download_and_the_demo(tmp_path):
    out_root = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SEG / "train.py"), "--model", "dlinknet", "--data_root",
                           str(tmp_path / "nowhere"), "--output_root", str(out_root)],
                          cwd=tmp_path, text=True, capture_output=True, timeout=300)
    assert proc.returncode == 2
    assert "python download.py --data" in proc.stderr and "python demo.py" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out_root.exists()  # nothing written, nothing downloaded before the data check


def test_unknown_model_lists_the_valid_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        generate_rst.main(str(SEG / "generate_rst.py"), ["--model", "unet"])
    assert exit_info.value.code == 2
    assert "unknown base model 'unet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        seg_train.main(str(SEG / "train.py"), ["--model", "unet", "--data_root", "x"])
    assert "dlinknet, pfanet, resunetplusplus" in capsys.readouterr().err


def test_checkpoint_flag_is_a_strict_boolean(capsys):
    with pytest.raises(SystemExit) as exit_info:
        seg_train.main(str(SEG / "train.py"), ["--checkpoint", "maybe"])
    assert exit_info.value.code == 2
    assert "expected a boolean" in capsys.readouterr().err


def test_the_four_scripts_chain_on_a_tiny_dataset(tmp_path):
    data_root = make_tiny_deepglobe(tmp_path / "data")
    config = tmp_path / "tiny.toml"
    text = (REPO / "src" / "deepglobe" / "dataset.toml").read_text()
    text = text.replace("input_size = 512", f"input_size = {SIZE}").replace("prn_size = 512", f"prn_size = {SIZE}")
    config.write_text(text.replace("batch_size = 4", "batch_size = 2"))
    common = ["--config", str(config), "--data_root", str(data_root), "--output_root", str(tmp_path / "out"),
              "--device", "cpu", "--model", "resunetplusplus"]
    first = seg_train.main(str(SEG / "train.py"), common + [
        "--model_width", "4", "--epochs", "1", "--no-pretrained", "--checkpoint", "False",
        "--max_batches_per_epoch", "1"])
    resumed = seg_train.main(str(SEG / "train.py"), common + ["--resume", "--epochs", "2"])
    weights = tmp_path / "out" / "checkpoints" / "resunetplusplus" / "resunetplusplus_weights.th"
    before = weights.read_bytes()
    with pytest.raises(SystemExit):  # a new run never replaces an earlier run's weights unless asked
        seg_train.main(str(SEG / "train.py"), common + ["--epochs", "1", "--max_batches_per_epoch", "1"])
    assert weights.read_bytes() == before
    restarted = seg_train.main(str(SEG / "train.py"), common + [  # authors' --checkpoint: widths from the file
        "--checkpoint", "True", "--epochs", "1", "--max_batches_per_epoch", "1", "--overwrite", "True"])
    written = generate_aux.main(str(SEG / "generate_aux_training_data.py"), common + ["--batch_size", "2"])
    summaries = generate_rst.main(str(SEG / "generate_rst.py"), common + ["--aux_model", "p64"])
    metrics = calculate_base_iou.main(str(SEG / "calculate_base_iou.py"), common)
    assert first["epochs_run"] == 1 and resumed["epochs_run"] == 2 and restarted["epochs_run"] == 1
    assert "started from the weights in" in Path(restarted["log_file"]).read_text()
    assert {"val", "test"} == set(written) and written["test"]["n_images"] == 2
    assert {(s["split"], s["patch_size"]) for s in summaries} == {("val", 8), ("test", 8)}  # p64 at 64 px
    assert 0 <= metrics["pooled_iou"] <= 1
    log_dir = tmp_path / "out" / "logs" / "resunetplusplus"
    assert "Base Test mIoU before Refinement = " in (log_dir / "resunetplusplus_miou_log.log").read_text()
    assert json.loads((log_dir / "resunetplusplus_base_metrics.json").read_text())["pooled_iou"] == metrics["pooled_iou"]
