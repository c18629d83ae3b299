"""Shared engine pieces: the plateau rule (hand-traced against docs/authors-refine.md §R7), RNG snapshots, devices,
and the PRN dataset (one-image reads, the authors' augmentation, clear errors)."""
from __future__ import annotations

import itertools
import logging
import random

import numpy as np
import pytest
import torch

from data_utils.errors import InputError
from data_utils.pseudo_labels import patch_pseudo_labels
from patchrefinenet.refine.data import Augmentation, NpyMaps, RefineDataset, apply_augmentation, draw_augmentation
from patchrefinenet.training import (
    PlateauSchedule, all_reduce_sum, autocast_context, barrier, broadcast_object, capture_rng_state,
    init_distributed, log_to_file, resolve_device, restore_rng_state, seed_everything,
)


# --------------------------------------------------------------------------- PlateauSchedule

def _run(schedule: PlateauSchedule, losses, lr: float):
    """Drive the schedule like the trainer does; return per-epoch (decision, lr used next)."""
    trace = []
    for value in losses:
        d = schedule.step(value, lr)
        trace.append(d)
        if d.stop:
            break
        lr = d.new_lr
    return trace, lr


def test_plateau_hand_trace_authors_defaults():
    # docs/authors-refine.md §R7 with decay_after=4, stop_after=8: counter 5..8 decays (4 times), counter 9 stops.
    # epoch:  1    2    3    4     5     6     7     8     9    10    11    12
    losses = [1.0, 0.9, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]
    s = PlateauSchedule(decay_after=4, stop_after=8, factor=1.1, min_lr=5e-8)
    trace, lr = _run(s, losses, 1e-3)
    assert [d.improved for d in trace] == [True, True] + [False] * 9  # 0.9 == best is no improvement
    assert [e + 1 for e, d in enumerate(trace) if d.reload_best] == [7, 8, 9, 10]
    assert len(trace) == 11 and trace[-1].stop and not trace[-1].reload_best
    assert not any(d.stop for d in trace[:-1])
    assert lr == pytest.approx(1e-3 / 1.1**4, rel=1e-12)
    assert [d.new_lr for d in trace[6:10]] == pytest.approx([1e-3 / 1.1**k for k in (1, 2, 3, 4)])


def test_plateau_improvement_resets_counter_but_not_lr():
    # decay at epoch 7 (counter 5), improvement at 8, then decays at 13..16 and the stop at 17.
    losses = [1.0, 0.9] + [0.95] * 5 + [0.8] + [0.85] * 20
    s = PlateauSchedule(4, 8, 1.1, 5e-8)
    trace, lr = _run(s, losses, 1e-3)
    assert [e + 1 for e, d in enumerate(trace) if d.reload_best] == [7, 13, 14, 15, 16]
    assert len(trace) == 17 and trace[-1].stop
    assert trace[7].improved and trace[7].new_lr == pytest.approx(1e-3 / 1.1)  # lr kept after the improvement
    assert lr == pytest.approx(1e-3 / 1.1**5)
    assert s.best == 0.8


def test_plateau_min_lr_stops_instead_of_decaying():
    s = PlateauSchedule(decay_after=0, stop_after=10, factor=2.0, min_lr=0.3)
    trace, lr = _run(s, [1.0, 1.0, 1.0, 1.0, 1.0], 1.0)
    assert [(d.reload_best, d.stop) for d in trace] == [(False, False), (True, False), (True, False), (False, True)]
    assert [d.new_lr for d in trace[:3]] == [1.0, 0.5, 0.25]


def test_plateau_state_round_trip_gives_same_decisions():
    losses = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]
    a = PlateauSchedule(4, 8, 1.1, 5e-8)
    full, _ = _run(a, losses, 1e-3)
    b = PlateauSchedule(4, 8, 1.1, 5e-8)
    first, lr = _run(b, losses[:6], 1e-3)
    c = PlateauSchedule(4, 8, 1.1, 5e-8)
    c.load_state_dict(torch.load(_roundtrip(b.state_dict()), weights_only=True))
    rest, _ = _run(c, losses[6:], lr)
    assert first + rest == full


def test_plateau_rejects_nan():
    with pytest.raises(FloatingPointError):
        PlateauSchedule(4, 8, 1.1, 5e-8).step(float("nan"), 1e-3)


def _roundtrip(obj):
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


# --------------------------------------------------------------------------- RNG, devices, DDP no-ops

def _draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_rng_capture_restore_survives_weights_only_load():
    seed_everything(123)
    _draws()
    state = torch.load(_roundtrip(capture_rng_state()), weights_only=True)
    expected = _draws()
    _draws()
    restore_rng_state(state)
    assert _draws() == expected


def test_seed_everything_is_reproducible():
    seed_everything(7)
    a = _draws()
    seed_everything(7)
    assert _draws() == a
    seed_everything(8)
    assert _draws() != a


def test_restore_rng_state_rejects_garbage():
    with pytest.raises(InputError, match="RNG state"):
        restore_rng_state({"python": 3})


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_autocast_context_is_noop_unless_asked():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast_context(torch.device("cpu"), False):
        assert (a @ b).dtype == torch.float32
    with autocast_context(torch.device("cpu"), True):
        assert (a @ b).dtype == torch.bfloat16


def test_distributed_helpers_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed(torch.device("cpu"))
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    barrier()
    assert broadcast_object({"a": 1}) == {"a": 1}
    t = torch.tensor([2.0, 3.0])
    assert all_reduce_sum(t).tolist() == [2.0, 3.0]


def test_log_to_file_writes_only_inside_block(tmp_path):
    log = logging.getLogger("patchrefinenet")
    path = tmp_path / "logs" / "run.log"
    with log_to_file(path):
        log.info("inside")
    log.info("outside")
    text = path.read_text()
    assert "inside" in text and "outside" not in text


# --------------------------------------------------------------------------- dataset

def _write(tmp_path, name, arr):
    path = tmp_path / name
    np.save(path, arr)
    return path


def _triplet(tmp_path, n=3, h=16, w=16, seed=0):
    rng = np.random.default_rng(seed)
    prob = rng.random((n, h, w, 1))  # float64, as the authors' arrays may be
    gt = (rng.random((n, h, w)) < 0.4).astype(np.uint8)
    pseudo = (prob[..., 0] > 0.5).astype(np.float32)[..., None]
    paths = (_write(tmp_path, "val_pred.npy", prob), _write(tmp_path, "val_orig_gt.npy", gt),
             _write(tmp_path, "pseudo.npy", pseudo))
    return paths, (prob[..., 0], gt, pseudo[..., 0])


def test_dataset_reads_items_exactly_without_augmentation(tmp_path):
    (pi, pg, pp), (prob, gt, pseudo) = _triplet(tmp_path)
    ds = RefineDataset(pi, pg, pp, augment=False)
    assert len(ds) == 3 and ds.image_size == (16, 16)
    for i in range(3):
        item = ds[i]
        assert item["input"].shape == (1, 16, 16) and item["input"].dtype == torch.float32
        np.testing.assert_array_equal(item["input"][0].numpy(), prob[i].astype(np.float32))
        np.testing.assert_array_equal(item["gt"][0].numpy(), gt[i])
        np.testing.assert_array_equal(item["pseudo"][0].numpy(), pseudo[i])
        assert item["index"] == i


def test_npy_maps_fortran_order_fallback_and_truncation(tmp_path):
    a = np.asfortranarray(np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5))
    p = _write(tmp_path, "f.npy", a)
    maps = NpyMaps(p, "f")
    assert maps.shape == (2, 4, 5)
    np.testing.assert_array_equal(maps[1], a[1])
    c = _write(tmp_path, "c.npy", np.zeros((3, 4, 4), np.float32))
    data = c.read_bytes()
    c.write_bytes(data[:-10])
    with pytest.raises(InputError):  # numpy's own header/size check, or our truncation check
        NpyMaps(c, "c")[2]


def _dihedral(a: np.ndarray):
    """The 8 transforms reachable by (hflip?, vflip?, rot90?) in the authors' order."""
    out = {}
    for h, v, r in itertools.product([False, True], repeat=3):
        m = a[:, ::-1] if h else a
        m = m[::-1] if v else m
        out[(h, v, r)] = np.rot90(m) if r else m
    return out


def test_augmentation_same_on_all_arrays_and_matches_draw(tmp_path):
    (pi, pg, pp), (prob, gt, pseudo) = _triplet(tmp_path)
    ds = RefineDataset(pi, pg, pp, augment=True, seed=5)
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(3):
            item = ds[i]
            aug = draw_augmentation(5, epoch, i)
            key = (aug.hflip, aug.vflip, aug.rot90)
            seen.add(key)
            np.testing.assert_array_equal(item["input"][0].numpy(), _dihedral(prob[i].astype(np.float32))[key])
            np.testing.assert_array_equal(item["gt"][0].numpy(), _dihedral(gt[i])[key])
            np.testing.assert_array_equal(item["pseudo"][0].numpy(), _dihedral(pseudo[i])[key])
    assert len(seen) > 2  # the draws vary across items and epochs


def test_rot90_is_counter_clockwise():
    a = np.array([[1, 2], [3, 4]])
    (out,) = apply_augmentation([a], Augmentation(False, False, True))
    np.testing.assert_array_equal(out, [[2, 4], [1, 3]])  # out[i, j] = a[j, W-1-i]


def test_augmentation_is_deterministic_and_epoch_dependent(tmp_path):
    (pi, pg, pp), _ = _triplet(tmp_path, n=12)
    a = RefineDataset(pi, pg, pp, augment=True, seed=1)
    b = RefineDataset(pi, pg, pp, augment=True, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    for i in range(12):
        assert torch.equal(a[i]["input"], b[i]["input"])
    draws = [[draw_augmentation(1, e, i) for i in range(12)] for e in (0, 1)]
    assert draws[0] != draws[1]


def test_augmented_pseudo_labels_stay_patch_optimal(tmp_path):
    # The transforms map the 4×4 patch grid of a 16×16 map onto itself, so the augmented label
    # equals the pseudo-label recomputed from the augmented probability and GT.
    rng = np.random.default_rng(3)
    prob = rng.random((4, 16, 16)).astype(np.float32)
    gt = (rng.random((4, 16, 16)) < 0.3).astype(np.uint8)
    labels = patch_pseudo_labels(prob, gt, 4).labels
    ds = RefineDataset(_write(tmp_path, "p.npy", prob), _write(tmp_path, "g.npy", gt),
                       _write(tmp_path, "l.npy", labels), augment=True, seed=0)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(4):
            item = ds[i]
            x, g, lab = (item[k][0].numpy() for k in ("input", "gt", "pseudo"))
            np.testing.assert_array_equal(lab, patch_pseudo_labels(x, g, 4).labels)


def test_rotation_skipped_on_non_square_maps():
    a = np.arange(12).reshape(3, 4)
    (out,) = apply_augmentation([a], Augmentation(True, True, True))
    np.testing.assert_array_equal(out, a[::-1, ::-1])


def test_dataset_errors_name_the_files(tmp_path):
    (pi, pg, pp), _ = _triplet(tmp_path)
    short = _write(tmp_path, "short_gt.npy", np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(InputError, match="short_gt.npy.*2 maps.*val_pred.npy.*3 maps"):
        RefineDataset(pi, short, pp)
    with pytest.raises(InputError, match="not found.*missing.npy"):
        RefineDataset(tmp_path / "missing.npy", pg)
    bad = np.zeros((3, 16, 16), np.float32)
    bad[2, 0, 0] = 3.0
    ds = RefineDataset(_write(tmp_path, "bad.npy", bad), pg)
    ds[1]
    with pytest.raises(InputError, match="bad.npy.*image 2"):
        ds[2]
    gt255 = np.full((3, 16, 16), 255, np.uint8)
    with pytest.raises(InputError, match="image 0 is not binary"):
        RefineDataset(pi, _write(tmp_path, "gt255.npy", gt255))[0]
