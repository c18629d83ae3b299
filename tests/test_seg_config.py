"""Base-model training settings come from one dataclass (SegTrainConfig): the train.py options are
generated from its fields, keep the authors' spellings, and --help stays free of torch."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from data_utils.errors import InputError
from patchrefinenet.cli import seg_train
from patchrefinenet.seg.config import SCRIBBLE_FIELDS, SegTrainConfig

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "src" / "deepglobe" / "seg-models" / "train.py")


def test_every_setting_is_an_option_with_the_fields_default():
    parser, names = seg_train._parser(SCRIPT)
    own = {f.name for f in fields(SegTrainConfig)} - {"data_root", "output_root", "model_kwargs"}
    assert set(names) == own
    args = parser.parse_args([])
    for f in fields(SegTrainConfig):
        if f.name in own and f.name != "model":  # --model: None = the dataset config's
            assert getattr(args, f.name) == f.default, f.name


def test_the_authors_and_earlier_spellings_parse():
    parser, _ = seg_train._parser(SCRIPT)
    args = parser.parse_args(["--no-pretrained", "--reg-loss", "none", "--size_bounds", "0.1", "0.4", "--resume",
                              "--checkpoint", "False", "--epochs", "3", "--lr", "1e-3", "--supervision", "scribbles"])
    assert (args.pretrained, args.reg_loss, args.size_bounds, args.resume, args.checkpoint) == \
        (False, "none", [0.1, 0.4], True, False)
    assert (args.epochs, args.lr, args.supervision) == (3, 1e-3, "scribbles")
    with pytest.raises(SystemExit):
        parser.parse_args(["--supervision", "masks"])


def test_the_config_checks_its_settings():
    base = dict(data_root="d", output_root="o")
    with pytest.raises(InputError, match="--reg_loss, --pce_epochs apply to --supervision scribbles"):
        SegTrainConfig(**base, reg_loss="ncut", pce_epochs=1)
    with pytest.raises(InputError, match="--epochs must be a positive integer"):
        SegTrainConfig(**base, epochs=0)
    with pytest.raises(InputError, match="give one"):
        SegTrainConfig(**base, resume=True, checkpoint=True)
    cfg = SegTrainConfig(**base, supervision="scribbles", size_bounds=[0.1, 0.2], reg_loss="size")
    assert cfg.supervision_settings() == {"mode": "scribbles", "reg_loss": "size", "size_bounds": (0.1, 0.2)}
    assert SegTrainConfig(**base, epochs=5, lr=1e-3).recipe_overrides() == {"max_epochs": 5, "lr": 1e-3}


def test_the_config_and_the_train_parser_import_no_torch():
    code = ("import sys; import patchrefinenet.cli.seg_train, patchrefinenet.seg.config; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_resume_through_the_script_refuses_a_changed_run_setting_by_name(tmp_path, capsys):
    from test_seg_engine import SIZE, make_tiny_deepglobe

    data_root = make_tiny_deepglobe(tmp_path / "data")
    config = tmp_path / "tiny.toml"
    text = (REPO / "src" / "deepglobe" / "dataset.toml").read_text()
    config.write_text(text.replace("input_size = 512", f"input_size = {SIZE}").replace("prn_size = 512",
                                                                                        f"prn_size = {SIZE}"))
    common = ["--config", str(config), "--data_root", str(data_root), "--output_root", str(tmp_path / "out"),
              "--device", "cpu", "--model", "resunetplusplus", "--progress", "False", "--max_batches_per_epoch", "1"]
    seg_train.main(SCRIPT, [*common, "--model_width", "4", "--no-pretrained", "--epochs", "1", "--batch_size", "2"])
    for flags, needle in ((["--model_width", "8"], "model_width: saved 4, now 8"),
                          (["--batch_size", "4"], "batch_size: saved 2, now 4"),
                          (["--seed", "1"], "seed: saved 0, now 1")):
        with pytest.raises(SystemExit) as info:
            seg_train.main(SCRIPT, [*common, "--resume", "--epochs", "2", *flags])
        assert info.value.code == 2 and needle in capsys.readouterr().err
    resumed = seg_train.main(SCRIPT, [*common, "--resume", "--epochs", "2", "--model_width", "4", "--batch_size", "2"])
    assert resumed["epochs_run"] == 2


def test_every_scribble_setting_is_a_supervision_field_and_reaches_the_objective():
    """One field per setting: what the command line gives for scribbles is what the objective trains with."""
    import dataclasses

    from patchrefinenet.seg.train import ScribbleSupervision, Supervision

    assert set(SCRIBBLE_FIELDS) == {f.name for f in dataclasses.fields(Supervision)} - {"mode"}
    cfg = SegTrainConfig(data_root="d", output_root="o", supervision="scribbles", balanced_pce=True, reg_loss="none")
    settings = Supervision(**cfg.supervision_settings())
    assert settings.balanced_pce and ScribbleSupervision(settings).loss_fn.class_balanced
    assert not Supervision("scribbles").balanced_pce  # rloss's plain pCE unless asked
