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
from patchrefinenet.seg.config import SegTrainConfig

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
