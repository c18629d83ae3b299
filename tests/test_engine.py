"""The one training engine (patchrefinenet.engine): both model families resume bit-exactly through
it, a resume with a changed setting is refused naming the setting, and the engine's own parts
(tallies, the plateau loop, the non-finite stop, overwrite refusal) on a toy family written here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from data_utils.errors import InputError
from data_utils.layout import RunFolders
from patchrefinenet.checkpoint import load_checkpoint
from patchrefinenet.engine import (Engine, Family, Recipe, StepOutput, Tally, full_precision, read_resume_file,
                                   refuse_overwrite, setting_changes)
from patchrefinenet.refine import RefineTrainConfig, train_prn
from patchrefinenet.training import DistInfo
from test_seg_engine import MODEL, NARROW, make_tiny_deepglobe, tiny_spec
from patchrefinenet.seg import train_base_model

TESTS = Path(__file__).resolve().parent


def _same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a).state_dict, load_checkpoint(b).state_dict
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{a.name}: {k} differs"


def _rows(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "time")} for row in history]


# --------------------------------------------------------------------------- both families, through the engine

@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> Path:
    return make_tiny_deepglobe(tmp_path_factory.mktemp("seg") / "data")


def _base(spec, data_root, out, **kw):
    args = dict(pretrained=False, model_kwargs=NARROW, device="cpu", progress=False, max_batches_per_epoch=2)
    return train_base_model(spec, MODEL, data_root=data_root, output_root=out, **{**args, **kw})


def test_base_model_resumed_halfway_ends_bit_identical(seg_data, tmp_path):
    spec = tiny_spec(decay_after=0)  # every non-improving epoch reloads the best weights and lowers the lr
    whole = _base(spec, seg_data, tmp_path / "whole", epochs=4)
    _base(spec, seg_data, tmp_path / "split", epochs=2)
    resumed = _base(spec, seg_data, tmp_path / "split", epochs=4, resume=True)
    for name in ("last", "checkpoint"):
        _same_weights(Path(whole[name]), Path(resumed[name]))
    a, b = (load_checkpoint(r["last"]).training_state["history"] for r in (whole, resumed))
    assert _rows(a) == _rows(b) and len(a) == 4
    assert {k: v for k, v in whole.items() if k not in ("checkpoint", "last", "history", "log_file")} == \
        {k: v for k, v in resumed.items() if k not in ("checkpoint", "last", "history", "log_file")}


def test_base_run_status_tells_a_killed_run_from_a_finished_one(seg_data, tmp_path, monkeypatch):
    """What the demo's stages rely on to continue an interrupted run instead of taking its first epoch's
    weights for a trained model: None before any epoch, "interrupted" after a kill, "finished" at the end."""
    from patchrefinenet.seg.train import base_run_status

    spec = tiny_spec()
    assert base_run_status(tmp_path, MODEL) is None
    original = Engine.epoch

    def killed_in_the_second_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        original(self, epoch)

    monkeypatch.setattr(Engine, "epoch", killed_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        _base(spec, seg_data, tmp_path, epochs=3)
    monkeypatch.setattr(Engine, "epoch", original)
    assert (tmp_path / "checkpoints" / MODEL / f"{MODEL}_weights.th").is_file()  # a best file exists already
    assert base_run_status(tmp_path, MODEL) == "interrupted"
    assert _base(spec, seg_data, tmp_path, epochs=3, resume=True)["epochs_run"] == 3
    assert base_run_status(tmp_path, MODEL) == "finished"


def test_base_model_resume_with_a_changed_setting_is_refused_naming_it(seg_data, tmp_path):
    spec = tiny_spec()
    _base(spec, seg_data, tmp_path, epochs=1)
    before = (tmp_path / "logs" / MODEL / f"{MODEL}_train_config.json").read_text()
    with pytest.raises(InputError, match=r"lr: saved 0.0002, now 0.001") as info:
        _base(spec, seg_data, tmp_path, epochs=2, resume=True, lr=1e-3)
    assert "\n" not in str(info.value) and "without --resume" in str(info.value)
    with pytest.raises(InputError, match=r"seed: saved 0, now 3"):
        _base(spec, seg_data, tmp_path, epochs=2, resume=True, seed=3)
    with pytest.raises(InputError, match=r"model_kwargs: saved"):
        _base(spec, seg_data, tmp_path, epochs=2, resume=True, model_kwargs={"filters": [8, 16, 32, 64, 128]})
    assert (tmp_path / "logs" / MODEL / f"{MODEL}_train_config.json").read_text() == before
    assert _base(spec, seg_data, tmp_path, epochs=2, resume=True)["epochs_run"] == 2  # more epochs are fine


@pytest.fixture(scope="module")
def prn_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("prn")
    rng = np.random.default_rng(0)
    gt = (rng.random((6, 32, 32, 1)) < 0.3).astype(np.float32)
    np.save(folder / "val_pred.npy", np.clip(0.4 * gt + 0.6 * rng.random(gt.shape), 0, 1).astype(np.float32))
    np.save(folder / "val_orig_gt.npy", gt)
    return folder


def _prn(data: Path, out: Path, **kw) -> RefineTrainConfig:
    base = dict(data_dir=str(data), output_root=str(out), aux_model="p4", width=4, epochs=4, device="cpu",
                progress=False, decay_after=0, lr=3e-3, max_batches_per_epoch=3)
    return RefineTrainConfig(**{**base, **kw})


@pytest.mark.parametrize("select", [0.0, 0.4])
def test_prn_resumed_halfway_ends_bit_identical(prn_data, tmp_path, select):
    whole = train_prn(_prn(prn_data, tmp_path / "whole", select=select))
    train_prn(_prn(prn_data, tmp_path / "split", select=select, epochs=2))
    resumed = train_prn(_prn(prn_data, tmp_path / "split", select=select, resume=True))
    for name in ("last", "checkpoint"):
        _same_weights(Path(whole[name]), Path(resumed[name]))
    assert all(torch.equal(v, resumed["model"].state_dict()[k]) for k, v in whole["model"].state_dict().items())
    assert _rows(whole["history"]) == _rows(resumed["history"]) and len(whole["history"]) == 4
    assert whole["best_loss"] == resumed["best_loss"] and whole["stopped"] == resumed["stopped"]


def test_prn_resume_with_a_changed_setting_is_refused_naming_it(prn_data, tmp_path):
    train_prn(_prn(prn_data, tmp_path, epochs=1))
    with pytest.raises(InputError, match=r"width: saved 4, now 8"):
        train_prn(_prn(prn_data, tmp_path, resume=True, width=8))
    with pytest.raises(InputError, match=r"max_batches_per_epoch: saved 3, now 2"):
        train_prn(_prn(prn_data, tmp_path, resume=True, max_batches_per_epoch=2))


# --------------------------------------------------------------------------- the engine's parts

def test_tally_pools_counts_and_averages_per_image_or_per_batch():
    prob = torch.tensor([0.5, 0.49, 0.9, 0.1]).view(1, 1, 2, 2)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    first = StepOutput(torch.tensor(2.0), prob, {"part": torch.tensor(1.0)})
    second = StepOutput(torch.tensor(5.0), torch.cat([prob, prob]), {"part": torch.tensor(3.0)})
    per_image, per_batch = Tally(torch.device("cpu"), True, True), Tally(torch.device("cpu"), False, False)
    for tally in (per_image, per_batch):
        tally.update(first, mask)
        tally.update(second, torch.cat([mask, mask]))
    # p >= 0.5 is positive: per map P = {0.5, 0.9}, Y = {0.5, 0.49}: |P∩Y| = 1, |P∪Y| = 3, pooled over 3 maps
    a, b = per_image.result(), per_batch.result()
    assert a["iou"] == b["iou"] == pytest.approx((3 + 1) / (9 + 1))
    assert a["loss"] == pytest.approx((2 * 1 + 5 * 2) / 3) and a["part"] == pytest.approx((1 + 3 * 2) / 3)
    assert b["loss"] == pytest.approx(3.5) and b["part"] == pytest.approx(2.0) and "mae" not in b
    assert a["mae"] == pytest.approx((0.5 + 0.51 + 0.9 + 0.1) / 4)


def test_setting_changes_name_each_difference():
    assert setting_changes({"lr": 1e-3, "seed": 0}, {"lr": 1e-3, "seed": 0}) == []
    assert setting_changes({"lr": 1e-3}, {"lr": 2e-3, "seed": 1}) == ["lr: saved 0.001, now 0.002",
                                                                     "seed: saved None, now 1"]


class _Toy(Family):
    """A third family written against the engine alone: a 1×1 conv on random maps."""

    target_key = "mask"

    def __init__(self, root: Path, max_epochs: int = 4, lr: float = 0.5, poison_at: int | None = None):
        torch.manual_seed(0)
        self.name, self.paths = "toy", RunFolders(root, "toy")
        self.model = nn.Conv2d(1, 1, 1)
        self.recipe = Recipe(lr=lr, max_epochs=max_epochs, decay_after=0, stop_after=2, factor=2.0, min_lr=0.0,
                             progress=False)
        self.config = {"kind": "toy"}
        g = torch.Generator().manual_seed(1)
        self.x = torch.rand(8, 1, 4, 4, generator=g)
        self.y = (self.x > 0.6).float()
        self.poison_at = poison_at

    def train_batches(self, epoch, info):
        order = torch.randperm(8, generator=torch.Generator().manual_seed(epoch))
        return [{"x": self.x[order[i:i + 4]], "mask": self.y[order[i:i + 4]]} for i in (0, 4)]

    def objective(self, net, batch):
        prob = torch.sigmoid(net(batch["x"]))
        with full_precision(prob.device):
            return StepOutput(nn.functional.binary_cross_entropy(prob, batch["mask"]), prob)

    def on_epoch_start(self, engine, epoch):
        if epoch == self.poison_at:  # the weights blow up: BCE then refuses its NaN input
            with torch.no_grad():
                self.model.weight.fill_(float("nan"))

    def monitor(self, train, evaluated):
        return train["loss"]

    def record(self, engine, epoch, lr, train, evaluated, decision, actions, seconds):
        return {"epoch": epoch, "lr": lr, "loss": train["loss"], "action": ", ".join(actions)}


def _toy_run(family: _Toy, resume: bool = False) -> Engine:
    info = DistInfo(0, 1, 0, True, torch.device("cpu"))
    engine = Engine(family, info, read_resume_file(family.paths) if resume else None)
    engine.run()
    return engine


def test_toy_family_trains_saves_and_resumes_bit_exactly(tmp_path):
    whole = _toy_run(_Toy(tmp_path / "a"))
    _toy_run(_Toy(tmp_path / "b", max_epochs=2))
    resumed = _toy_run(_Toy(tmp_path / "b"), resume=True)
    assert whole.progress.history == resumed.progress.history and len(whole.progress.history) == 4
    for name in ("toy_last.th", "toy_weights.th"):
        _same_weights(tmp_path / "a" / "checkpoints" / "toy" / name, tmp_path / "b" / "checkpoints" / "toy" / name)
    lines = (tmp_path / "a" / "logs" / "toy" / "toy_train_history.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == whole.progress.history
    assert whole.progress.history[0]["action"] == "saved"
    with pytest.raises(InputError, match="exists .*--overwrite True"):
        refuse_overwrite(RunFolders(tmp_path / "a", "toy"), resume=False, overwrite=False)
    refuse_overwrite(RunFolders(tmp_path / "a", "toy"), resume=False, overwrite=True)
    with pytest.raises(InputError, match="no resume file"):
        read_resume_file(RunFolders(tmp_path / "c", "toy"))


def test_plateau_rule_reloads_the_best_weights_and_stops(tmp_path):
    engine = _toy_run(_Toy(tmp_path, max_epochs=20, lr=1e-30))  # lr ~ 0: the loss repeats, no improvement after 1
    history = engine.progress.history
    assert [row["action"] for row in history] == ["saved", "reloaded best, lr -> 5e-31",
                                                  "reloaded best, lr -> 2.5e-31", "stop (no_improvement)"]
    assert engine.progress.stopped == "no_improvement" and engine.progress.best_epoch == 1


def test_non_finite_loss_stops_and_keeps_the_last_good_files(tmp_path):
    with pytest.raises(InputError, match=r"non-finite in epoch 3 .*toy_weights.th and .*toy_last.th"):
        _toy_run(_Toy(tmp_path, poison_at=2))
    assert load_checkpoint(tmp_path / "checkpoints" / "toy" / "toy_last.th").meta["epoch"] == 2
    state = load_checkpoint(tmp_path / "checkpoints" / "toy" / "toy_weights.th").state_dict
    assert all(torch.isfinite(t).all() for t in state.values())


# --------------------------------------------------------------------------- data parallelism for base models

_RANK_SCRIPT = textwrap.dedent('''
    import sys
    import torch
    sys.path.insert(0, sys.argv[3])
    from test_seg_engine import MODEL, NARROW, tiny_spec
    from patchrefinenet.seg import train_base_model

    torch.set_num_threads(1)
    train_base_model(tiny_spec(), MODEL, data_root=sys.argv[1], output_root=sys.argv[2], pretrained=False,
                     model_kwargs=NARROW, device="cpu", progress=False, epochs=2, max_batches_per_epoch=1)
''')


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="no gloo backend")
def test_base_model_trains_on_two_cpu_ranks_and_only_rank0_writes(seg_data, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(seg_data), str(out), str(TESTS)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = list((out / "logs" / MODEL).glob(f"{MODEL}_log_*.log"))
    assert len(logs) == 1 and logs[0].read_text().count("epoch 2/2") == 1
    lines = (out / "logs" / MODEL / f"{MODEL}_train_history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    written = sorted(p.name for p in (out / "checkpoints" / MODEL).iterdir())
    assert written == [f"{MODEL}_last.th", f"{MODEL}_weights.th"]


def test_base_objectives_take_the_model_or_its_engine_wrapper_alike():
    from patchrefinenet.models import build_base_model
    from patchrefinenet.seg.train import ForwardWithAux, FullSupervision

    torch.manual_seed(0)
    model = build_base_model(MODEL, **NARROW)
    batch = {"image": torch.randn(2, 3, 64, 64), "mask": (torch.rand(2, 1, 64, 64) > 0.5).float()}
    objective = FullSupervision("dice_bce")
    plain, wrapped = objective(model, batch), objective(ForwardWithAux(model), batch)
    assert torch.equal(plain.loss, wrapped.loss) and torch.equal(plain.prob, wrapped.prob)
