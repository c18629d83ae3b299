"""Checkpoints: our format, the authors' bare files, wrapped dicts, prefixes, every kind of bad file,
strict loading with explanations, and the authors' exact P64/P4/P0 key lists (docs/authors-refine.md §RA)."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from data_utils.errors import InputError
from patchrefinenet.checkpoint import clean_state_dict, load_checkpoint, load_weights_strict, save_checkpoint
from patchrefinenet.models.prn import PRN, PRNConfig, infer_authors_variant, load_prn


def tiny(grid: int = 2, width: int = 4) -> PRN:
    torch.manual_seed(grid * 10 + width)
    return PRN(PRNConfig(grid=grid, width=width)).eval()


def assert_same_tensors(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------ our format


def test_round_trip_our_format(tmp_path):
    model = tiny()
    opt = torch.optim.Adam(model.parameters())
    model(torch.rand(1, 1, 32, 32))[0].mean().backward()
    opt.step()
    path = tmp_path / "ck" / "p4_weights.th"
    save_checkpoint(path, model.state_dict(), model.config.to_dict(), {"epoch": 3, "loss": 0.25},
                    training_state={"optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state()})
    assert os.listdir(path.parent) == ["p4_weights.th"]  # atomic: no temporary file left behind
    ck = load_checkpoint(path)
    assert ck.source == "patchrefinenet" and ck.path == path
    assert ck.config == model.config.to_dict()
    assert ck.meta["epoch"] == 3 and ck.meta["format"] == "patchrefinenet" and ck.meta["format_version"] == 1
    assert ck.meta["torch"] == torch.__version__ and "created" in ck.meta
    assert_same_tensors(ck.state_dict, model.state_dict())
    opt2 = torch.optim.Adam(model.parameters())
    opt2.load_state_dict(ck.training_state["optimizer"])
    assert torch.equal(ck.training_state["torch_rng"], torch.get_rng_state())


@pytest.mark.parametrize(
    "config,meta,fragment",
    [
        ({"root": Path("data")}, {}, "config['root']"),
        ({"grid": 2}, {"mae": np.float64(0.1)}, "meta['mae']"),
        ({"sizes": [1, torch.device("cpu")]}, {}, "config['sizes'][1]"),
        ({"w": torch.zeros(1)}, {}, "config['w']"),
    ],
)
def test_save_rejects_non_primitive_values(tmp_path, config, meta, fragment):
    with pytest.raises(TypeError) as e:
        save_checkpoint(tmp_path / "x.th", {"w": torch.zeros(1)}, config, meta)
    assert fragment in str(e.value)
    assert not list(tmp_path.iterdir())


def test_save_rejects_non_tensor_weights(tmp_path):
    with pytest.raises(TypeError, match="'w'"):
        save_checkpoint(tmp_path / "x.th", {"w": [1.0]}, {}, {})


# --------------------------------------------------------------------- bare / wrapped / prefixes


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_bare_state_dict_with_wrapper_prefixes(tmp_path, prefix):
    sd = tiny().state_dict()
    torch.save({prefix + k: v for k, v in sd.items()}, tmp_path / "bare.th")
    ck = load_checkpoint(tmp_path / "bare.th")
    assert ck.source == "bare" and ck.config is None and ck.training_state is None
    assert_same_tensors(ck.state_dict, sd)


def test_clean_state_dict_refuses_mixed_copies():
    with pytest.raises(InputError, match="both 'w'"):
        clean_state_dict({"w": torch.zeros(1), "module.w": torch.zeros(1)})


def test_wrapped_under_state_dict(tmp_path):
    sd = tiny().state_dict()
    torch.save({"state_dict": sd, "epoch": 7, "best": torch.tensor(0.5)}, tmp_path / "w.pt")
    ck = load_checkpoint(tmp_path / "w.pt")
    assert ck.source == "wrapped:state_dict" and ck.meta == {"epoch": 7, "best": 0.5}
    assert_same_tensors(ck.state_dict, sd)


def _rename_numpy_globals_to_numpy1(src: Path, dst: Path) -> None:
    """Rewrite a torch.save zip as numpy 1.x would have pickled its scalars (numpy.core.*)."""
    out = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
            zout.writestr(info.filename, data)
    dst.write_bytes(out.getvalue())


@pytest.mark.parametrize("numpy1_names", [False, True])
def test_wrapped_under_model_with_numpy_scalars(tmp_path, numpy1_names):
    """sairajk's PFANet file: {'epoch', 'model', 'test_mae' (numpy scalar), 'test_acc' (tensor), ...}."""
    sd = {"conv.weight": torch.randn(2, 3, 1, 1)}
    path = tmp_path / "best-model.pth"
    torch.save({"epoch": 204, "model": sd, "test_mae": np.float64(0.0505), "test_acc": torch.tensor(0.9)}, path)
    if numpy1_names:
        _rename_numpy_globals_to_numpy1(path, path)
        assert b"numpy.core.multiarray" in zipfile.ZipFile(path).read("best-model/data.pkl")
    with pytest.raises(InputError, match="allow_numpy_scalars=True") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)
    ck = load_checkpoint(path, allow_numpy_scalars=True)
    assert ck.source == "wrapped:model"
    assert ck.meta["epoch"] == 204 and ck.meta["test_mae"] == pytest.approx(0.0505)
    assert ck.meta["test_acc"] == pytest.approx(0.9)
    assert_same_tensors(ck.state_dict, sd)


# --------------------------------------------------------------------------------- bad files


class NotWeights:
    pass


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = tmp / "good.th"
    torch.save(tiny().state_dict(), good)
    data = good.read_bytes()
    (tmp / "truncated.th").write_bytes(data[: len(data) // 2])
    (tmp / "notes.th").write_text("these are my training notes\n")
    (tmp / "empty.th").write_bytes(b"")
    torch.save([1, 2, 3], tmp / "list.th")
    torch.save({"obj": NotWeights()}, tmp / "object.th")
    torch.save({"lr": 0.1, "epoch": 3}, tmp / "no_tensors.th")
    (tmp / "folder.th").mkdir()
    return {
        "missing": (tmp / "missing.th", "not found"),
        "folder": (tmp / "folder.th", "directory"),
        "truncated": (tmp / "truncated.th", "truncated"),
        "text": (tmp / "notes.th", "cannot read checkpoint"),
        "empty": (tmp / "empty.th", "empty"),
        "list": (tmp / "list.th", "holds a list"),
        "object": (tmp / "object.th", "NotWeights"),
        "no_tensors": (tmp / "no_tensors.th", "keys 'lr', 'epoch'"),
    }


@pytest.mark.parametrize("kind", ["missing", "folder", "truncated", "text", "empty", "list", "object", "no_tensors"])
def test_bad_files_give_clear_errors(tmp_path, kind):
    path, fragment = _bad_files(tmp_path)[kind]
    with pytest.raises(InputError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and fragment in str(e.value)


# ------------------------------------------------------------------------------- strict loading


def test_wrong_width_is_explained():
    with pytest.raises(InputError) as e:
        load_weights_strict(tiny(width=8), tiny(width=4).state_dict(), "ck.th")
    msg = str(e.value)
    assert "ck.th" in msg and "shape mismatches" in msg and "width" in msg
    assert "encoding.RRCNN1.RCNN.0.conv.0.weight: checkpoint (4, 4, 3, 3) vs model (8, 8, 3, 3)" in msg


def test_wrong_grid_is_explained():
    with pytest.raises(InputError) as e:
        load_weights_strict(tiny(grid=2), tiny(grid=0).state_dict(), "p0_weights.th")
    msg = str(e.value)
    assert "134 missing keys (decode3_local.Up.up.1.weight" in msg and "patch grid" in msg
    with pytest.raises(InputError, match="unexpected keys.*patch grid"):
        load_weights_strict(tiny(grid=0), tiny(grid=2).state_dict(), "p64_weights.th")


def test_wrong_model_is_explained():
    with pytest.raises(InputError, match="wrong model"):
        load_weights_strict(tiny(grid=0), {"firstconv.weight": torch.zeros(64, 3, 7, 7)}, "dlinknet.th")


def test_load_prn_round_trip(tmp_path):
    model = tiny(grid=2)
    path = save_checkpoint(tmp_path / "p4.th", model.state_dict(), model.config.to_dict(), {})
    loaded, ck = load_prn(path, expected_grid=2)
    assert loaded.config == model.config and not loaded.training and ck.source == "patchrefinenet"
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x)):
            assert torch.equal(a, b)


def test_load_prn_wrong_grid(tmp_path):
    model = tiny(grid=8)
    path = save_checkpoint(tmp_path / "p64.th", model.state_dict(), model.config.to_dict(), {})
    with pytest.raises(InputError, match="checkpoint has a local decoder for an 8×8 grid.*model was built for 4×4"):
        load_prn(path, expected_grid=4)
    with pytest.raises(InputError, match="model was built for grid 0"):
        load_prn(path, expected_grid=0)
    moved, _ = load_prn(path, expected_grid=4, grid_override=4)  # deliberate reuse on another grid
    assert moved.config.grid == 4


def test_load_prn_config_that_does_not_match_its_weights(tmp_path):
    path = save_checkpoint(tmp_path / "x.th", tiny(width=4).state_dict(), PRNConfig(grid=2, width=8).to_dict(), {})
    with pytest.raises(InputError, match="width"):
        load_prn(path)


# ------------------------------------------------------------------ the authors' exact key lists


def appendix_a() -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of ThreshNetP64 in order; 'scalar int64' is the 0-d num_batches_tracked."""
    out = []
    for line in APPENDIX_A_P64.strip().splitlines():
        key, shape = line.split()[0], line.split()[1]
        out.append((key, () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))))
    return out


def authors_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """A random state_dict with exactly the keys/shapes/dtypes of the authors' p0/p4/p64 file (docs/authors-refine.md §R5)."""
    g = torch.Generator().manual_seed(1)
    sd = {}
    for key, shape in appendix_a():
        if variant == "p0" and ("_local." in key or key.startswith("out_local.")):
            continue
        if variant == "p0" and key == "out_global.0.weight":
            shape = (1, 32, 1, 1)
        if variant == "p4":
            key = key.replace("out_global.", "conv_last_global.").replace("out_local.", "conv_last_local.")
        if shape == ():
            sd[key] = torch.tensor(5, dtype=torch.int64)
        else:
            sd[key] = torch.rand(shape, generator=g) + 0.5  # positive: valid running_var too
    return sd


def test_appendix_a_is_exactly_prn_grid_8_width_32():
    entries = appendix_a()
    assert len(entries) == 338
    own = PRN(PRNConfig(grid=8, width=32)).state_dict()
    assert [(k, tuple(v.shape)) for k, v in own.items()] == entries  # same keys, shapes and order
    model = PRN(PRNConfig(grid=8, width=32))
    model.load_state_dict(authors_state_dict("p64"), strict=True)


@pytest.mark.parametrize(
    "variant,grid,quirk,kernel,n_keys",
    [("p64", 8, True, 3, 338), ("p4", 4, False, 3, 338), ("p0", 0, False, 1, 204)],
)
def test_authors_bare_files_load_with_the_right_variant(tmp_path, variant, grid, quirk, kernel, n_keys):
    sd = authors_state_dict(variant)
    assert len(sd) == n_keys
    assert infer_authors_variant(sd) == (variant, PRNConfig(grid, 32, quirk, kernel, 1))
    path = tmp_path / f"{variant}_weights.th"
    torch.save(sd, path)
    model, ck = load_prn(path, expected_grid=grid)
    assert ck.source == "bare" and model.config.grid == grid and model.config.row7_quirk == quirk
    head = "conv_last_global" if variant == "p4" else "out_global"
    assert torch.equal(model.out_global[0].weight, sd[f"{head}.0.weight"])
    assert model.encoding.RRCNN1.RCNN[0].conv[1].num_batches_tracked == 5


def test_load_prn_refuses_a_base_model_file(tmp_path):
    torch.save({"model": {"firstconv.weight": torch.zeros(64, 3, 7, 7)}}, tmp_path / "dlinknet.th")
    with pytest.raises(InputError, match="dlinknet.th: not a PRN state_dict"):
        load_prn(tmp_path / "dlinknet.th")


def test_authors_p4_file_is_a_4x4_grid_not_the_users_p4(tmp_path):
    torch.save(authors_state_dict("p4"), tmp_path / "p4_weights.th")
    with pytest.raises(InputError, match="for a 4×4 grid .*built for 2×2"):
        load_prn(tmp_path / "p4_weights.th", expected_grid=2)  # the users' p4 is 2×2; the authors' P4 is 4×4


APPENDIX_A_P64 = """
encoding.RRCNN1.RCNN.0.conv.0.weight                       32x32x3x3
encoding.RRCNN1.RCNN.0.conv.0.bias                         32
encoding.RRCNN1.RCNN.0.conv.1.weight                       32
encoding.RRCNN1.RCNN.0.conv.1.bias                         32
encoding.RRCNN1.RCNN.0.conv.1.running_mean                 32
encoding.RRCNN1.RCNN.0.conv.1.running_var                  32
encoding.RRCNN1.RCNN.0.conv.1.num_batches_tracked          scalar int64
encoding.RRCNN1.RCNN.1.conv.0.weight                       32x32x3x3
encoding.RRCNN1.RCNN.1.conv.0.bias                         32
encoding.RRCNN1.RCNN.1.conv.1.weight                       32
encoding.RRCNN1.RCNN.1.conv.1.bias                         32
encoding.RRCNN1.RCNN.1.conv.1.running_mean                 32
encoding.RRCNN1.RCNN.1.conv.1.running_var                  32
encoding.RRCNN1.RCNN.1.conv.1.num_batches_tracked          scalar int64
encoding.RRCNN1.Conv_1x1.weight                            32x1x1x1
encoding.RRCNN1.Conv_1x1.bias                              32
encoding.RRCNN2.RCNN.0.conv.0.weight                       64x64x3x3
encoding.RRCNN2.RCNN.0.conv.0.bias                         64
encoding.RRCNN2.RCNN.0.conv.1.weight                       64
encoding.RRCNN2.RCNN.0.conv.1.bias                         64
encoding.RRCNN2.RCNN.0.conv.1.running_mean                 64
encoding.RRCNN2.RCNN.0.conv.1.running_var                  64
encoding.RRCNN2.RCNN.0.conv.1.num_batches_tracked          scalar int64
encoding.RRCNN2.RCNN.1.conv.0.weight                       64x64x3x3
encoding.RRCNN2.RCNN.1.conv.0.bias                         64
encoding.RRCNN2.RCNN.1.conv.1.weight                       64
encoding.RRCNN2.RCNN.1.conv.1.bias                         64
encoding.RRCNN2.RCNN.1.conv.1.running_mean                 64
encoding.RRCNN2.RCNN.1.conv.1.running_var                  64
encoding.RRCNN2.RCNN.1.conv.1.num_batches_tracked          scalar int64
encoding.RRCNN2.Conv_1x1.weight                            64x32x1x1
encoding.RRCNN2.Conv_1x1.bias                              64
encoding.RRCNN3.RCNN.0.conv.0.weight                       128x128x3x3
encoding.RRCNN3.RCNN.0.conv.0.bias                         128
encoding.RRCNN3.RCNN.0.conv.1.weight                       128
encoding.RRCNN3.RCNN.0.conv.1.bias                         128
encoding.RRCNN3.RCNN.0.conv.1.running_mean                 128
encoding.RRCNN3.RCNN.0.conv.1.running_var                  128
encoding.RRCNN3.RCNN.0.conv.1.num_batches_tracked          scalar int64
encoding.RRCNN3.RCNN.1.conv.0.weight                       128x128x3x3
encoding.RRCNN3.RCNN.1.conv.0.bias                         128
encoding.RRCNN3.RCNN.1.conv.1.weight                       128
encoding.RRCNN3.RCNN.1.conv.1.bias                         128
encoding.RRCNN3.RCNN.1.conv.1.running_mean                 128
encoding.RRCNN3.RCNN.1.conv.1.running_var                  128
encoding.RRCNN3.RCNN.1.conv.1.num_batches_tracked          scalar int64
encoding.RRCNN3.Conv_1x1.weight                            128x64x1x1
encoding.RRCNN3.Conv_1x1.bias                              128
encoding.RRCNN4.RCNN.0.conv.0.weight                       256x256x3x3
encoding.RRCNN4.RCNN.0.conv.0.bias                         256
encoding.RRCNN4.RCNN.0.conv.1.weight                       256
encoding.RRCNN4.RCNN.0.conv.1.bias                         256
encoding.RRCNN4.RCNN.0.conv.1.running_mean                 256
encoding.RRCNN4.RCNN.0.conv.1.running_var                  256
encoding.RRCNN4.RCNN.0.conv.1.num_batches_tracked          scalar int64
encoding.RRCNN4.RCNN.1.conv.0.weight                       256x256x3x3
encoding.RRCNN4.RCNN.1.conv.0.bias                         256
encoding.RRCNN4.RCNN.1.conv.1.weight                       256
encoding.RRCNN4.RCNN.1.conv.1.bias                         256
encoding.RRCNN4.RCNN.1.conv.1.running_mean                 256
encoding.RRCNN4.RCNN.1.conv.1.running_var                  256
encoding.RRCNN4.RCNN.1.conv.1.num_batches_tracked          scalar int64
encoding.RRCNN4.Conv_1x1.weight                            256x128x1x1
encoding.RRCNN4.Conv_1x1.bias                              256
encoding.psp.stages.0.1.weight                             256x256x1x1
encoding.psp.stages.1.1.weight                             256x256x1x1
encoding.psp.stages.2.1.weight                             256x256x1x1
encoding.psp.stages.3.1.weight                             256x256x1x1
encoding.psp.bottleneck.weight                             256x1280x1x1
encoding.psp.bottleneck.bias                               256
decode3_global.Up.up.1.weight                              128x256x3x3
decode3_global.Up.up.1.bias                                128
decode3_global.Up.up.2.weight                              128
decode3_global.Up.up.2.bias                                128
decode3_global.Up.up.2.running_mean                        128
decode3_global.Up.up.2.running_var                         128
decode3_global.Up.up.2.num_batches_tracked                 scalar int64
decode3_global.Up_Conv.RCNN.0.conv.0.weight                128x128x3x3
decode3_global.Up_Conv.RCNN.0.conv.0.bias                  128
decode3_global.Up_Conv.RCNN.0.conv.1.weight                128
decode3_global.Up_Conv.RCNN.0.conv.1.bias                  128
decode3_global.Up_Conv.RCNN.0.conv.1.running_mean          128
decode3_global.Up_Conv.RCNN.0.conv.1.running_var           128
decode3_global.Up_Conv.RCNN.0.conv.1.num_batches_tracked   scalar int64
decode3_global.Up_Conv.RCNN.1.conv.0.weight                128x128x3x3
decode3_global.Up_Conv.RCNN.1.conv.0.bias                  128
decode3_global.Up_Conv.RCNN.1.conv.1.weight                128
decode3_global.Up_Conv.RCNN.1.conv.1.bias                  128
decode3_global.Up_Conv.RCNN.1.conv.1.running_mean          128
decode3_global.Up_Conv.RCNN.1.conv.1.running_var           128
decode3_global.Up_Conv.RCNN.1.conv.1.num_batches_tracked   scalar int64
decode3_global.Up_Conv.Conv_1x1.weight                     128x256x1x1
decode3_global.Up_Conv.Conv_1x1.bias                       128
decode3_global.Attn.W_g.0.weight                           64x128x1x1
decode3_global.Attn.W_g.0.bias                             64
decode3_global.Attn.W_g.1.weight                           64
decode3_global.Attn.W_g.1.bias                             64
decode3_global.Attn.W_g.1.running_mean                     64
decode3_global.Attn.W_g.1.running_var                      64
decode3_global.Attn.W_g.1.num_batches_tracked              scalar int64
decode3_global.Attn.W_x.0.weight                           64x128x1x1
decode3_global.Attn.W_x.0.bias                             64
decode3_global.Attn.W_x.1.weight                           64
decode3_global.Attn.W_x.1.bias                             64
decode3_global.Attn.W_x.1.running_mean                     64
decode3_global.Attn.W_x.1.running_var                      64
decode3_global.Attn.W_x.1.num_batches_tracked              scalar int64
decode3_global.Attn.psi.0.weight                           1x64x1x1
decode3_global.Attn.psi.0.bias                             1
decode3_global.Attn.psi.1.weight                           1
decode3_global.Attn.psi.1.bias                             1
decode3_global.Attn.psi.1.running_mean                     1
decode3_global.Attn.psi.1.running_var                      1
decode3_global.Attn.psi.1.num_batches_tracked              scalar int64
decode2_global.Up.up.1.weight                              64x128x3x3
decode2_global.Up.up.1.bias                                64
decode2_global.Up.up.2.weight                              64
decode2_global.Up.up.2.bias                                64
decode2_global.Up.up.2.running_mean                        64
decode2_global.Up.up.2.running_var                         64
decode2_global.Up.up.2.num_batches_tracked                 scalar int64
decode2_global.Up_Conv.RCNN.0.conv.0.weight                64x64x3x3
decode2_global.Up_Conv.RCNN.0.conv.0.bias                  64
decode2_global.Up_Conv.RCNN.0.conv.1.weight                64
decode2_global.Up_Conv.RCNN.0.conv.1.bias                  64
decode2_global.Up_Conv.RCNN.0.conv.1.running_mean          64
decode2_global.Up_Conv.RCNN.0.conv.1.running_var           64
decode2_global.Up_Conv.RCNN.0.conv.1.num_batches_tracked   scalar int64
decode2_global.Up_Conv.RCNN.1.conv.0.weight                64x64x3x3
decode2_global.Up_Conv.RCNN.1.conv.0.bias                  64
decode2_global.Up_Conv.RCNN.1.conv.1.weight                64
decode2_global.Up_Conv.RCNN.1.conv.1.bias                  64
decode2_global.Up_Conv.RCNN.1.conv.1.running_mean          64
decode2_global.Up_Conv.RCNN.1.conv.1.running_var           64
decode2_global.Up_Conv.RCNN.1.conv.1.num_batches_tracked   scalar int64
decode2_global.Up_Conv.Conv_1x1.weight                     64x128x1x1
decode2_global.Up_Conv.Conv_1x1.bias                       64
decode2_global.Attn.W_g.0.weight                           32x64x1x1
decode2_global.Attn.W_g.0.bias                             32
decode2_global.Attn.W_g.1.weight                           32
decode2_global.Attn.W_g.1.bias                             32
decode2_global.Attn.W_g.1.running_mean                     32
decode2_global.Attn.W_g.1.running_var                      32
decode2_global.Attn.W_g.1.num_batches_tracked              scalar int64
decode2_global.Attn.W_x.0.weight                           32x64x1x1
decode2_global.Attn.W_x.0.bias                             32
decode2_global.Attn.W_x.1.weight                           32
decode2_global.Attn.W_x.1.bias                             32
decode2_global.Attn.W_x.1.running_mean                     32
decode2_global.Attn.W_x.1.running_var                      32
decode2_global.Attn.W_x.1.num_batches_tracked              scalar int64
decode2_global.Attn.psi.0.weight                           1x32x1x1
decode2_global.Attn.psi.0.bias                             1
decode2_global.Attn.psi.1.weight                           1
decode2_global.Attn.psi.1.bias                             1
decode2_global.Attn.psi.1.running_mean                     1
decode2_global.Attn.psi.1.running_var                      1
decode2_global.Attn.psi.1.num_batches_tracked              scalar int64
decode1_global.Up.up.1.weight                              32x64x3x3
decode1_global.Up.up.1.bias                                32
decode1_global.Up.up.2.weight                              32
decode1_global.Up.up.2.bias                                32
decode1_global.Up.up.2.running_mean                        32
decode1_global.Up.up.2.running_var                         32
decode1_global.Up.up.2.num_batches_tracked                 scalar int64
decode1_global.Up_Conv.RCNN.0.conv.0.weight                32x32x3x3
decode1_global.Up_Conv.RCNN.0.conv.0.bias                  32
decode1_global.Up_Conv.RCNN.0.conv.1.weight                32
decode1_global.Up_Conv.RCNN.0.conv.1.bias                  32
decode1_global.Up_Conv.RCNN.0.conv.1.running_mean          32
decode1_global.Up_Conv.RCNN.0.conv.1.running_var           32
decode1_global.Up_Conv.RCNN.0.conv.1.num_batches_tracked   scalar int64
decode1_global.Up_Conv.RCNN.1.conv.0.weight                32x32x3x3
decode1_global.Up_Conv.RCNN.1.conv.0.bias                  32
decode1_global.Up_Conv.RCNN.1.conv.1.weight                32
decode1_global.Up_Conv.RCNN.1.conv.1.bias                  32
decode1_global.Up_Conv.RCNN.1.conv.1.running_mean          32
decode1_global.Up_Conv.RCNN.1.conv.1.running_var           32
decode1_global.Up_Conv.RCNN.1.conv.1.num_batches_tracked   scalar int64
decode1_global.Up_Conv.Conv_1x1.weight                     32x64x1x1
decode1_global.Up_Conv.Conv_1x1.bias                       32
decode1_global.Attn.W_g.0.weight                           16x32x1x1
decode1_global.Attn.W_g.0.bias                             16
decode1_global.Attn.W_g.1.weight                           16
decode1_global.Attn.W_g.1.bias                             16
decode1_global.Attn.W_g.1.running_mean                     16
decode1_global.Attn.W_g.1.running_var                      16
decode1_global.Attn.W_g.1.num_batches_tracked              scalar int64
decode1_global.Attn.W_x.0.weight                           16x32x1x1
decode1_global.Attn.W_x.0.bias                             16
decode1_global.Attn.W_x.1.weight                           16
decode1_global.Attn.W_x.1.bias                             16
decode1_global.Attn.W_x.1.running_mean                     16
decode1_global.Attn.W_x.1.running_var                      16
decode1_global.Attn.W_x.1.num_batches_tracked              scalar int64
decode1_global.Attn.psi.0.weight                           1x16x1x1
decode1_global.Attn.psi.0.bias                             1
decode1_global.Attn.psi.1.weight                           1
decode1_global.Attn.psi.1.bias                             1
decode1_global.Attn.psi.1.running_mean                     1
decode1_global.Attn.psi.1.running_var                      1
decode1_global.Attn.psi.1.num_batches_tracked              scalar int64
decode3_local.Up.up.1.weight                               128x256x3x3
decode3_local.Up.up.1.bias                                 128
decode3_local.Up.up.2.weight                               128
decode3_local.Up.up.2.bias                                 128
decode3_local.Up.up.2.running_mean                         128
decode3_local.Up.up.2.running_var                          128
decode3_local.Up.up.2.num_batches_tracked                  scalar int64
decode3_local.Up_Conv.RCNN.0.conv.0.weight                 128x128x3x3
decode3_local.Up_Conv.RCNN.0.conv.0.bias                   128
decode3_local.Up_Conv.RCNN.0.conv.1.weight                 128
decode3_local.Up_Conv.RCNN.0.conv.1.bias                   128
decode3_local.Up_Conv.RCNN.0.conv.1.running_mean           128
decode3_local.Up_Conv.RCNN.0.conv.1.running_var            128
decode3_local.Up_Conv.RCNN.0.conv.1.num_batches_tracked    scalar int64
decode3_local.Up_Conv.RCNN.1.conv.0.weight                 128x128x3x3
decode3_local.Up_Conv.RCNN.1.conv.0.bias                   128
decode3_local.Up_Conv.RCNN.1.conv.1.weight                 128
decode3_local.Up_Conv.RCNN.1.conv.1.bias                   128
decode3_local.Up_Conv.RCNN.1.conv.1.running_mean           128
decode3_local.Up_Conv.RCNN.1.conv.1.running_var            128
decode3_local.Up_Conv.RCNN.1.conv.1.num_batches_tracked    scalar int64
decode3_local.Up_Conv.Conv_1x1.weight                      128x256x1x1
decode3_local.Up_Conv.Conv_1x1.bias                        128
decode3_local.Attn.W_g.0.weight                            64x128x1x1
decode3_local.Attn.W_g.0.bias                              64
decode3_local.Attn.W_g.1.weight                            64
decode3_local.Attn.W_g.1.bias                              64
decode3_local.Attn.W_g.1.running_mean                      64
decode3_local.Attn.W_g.1.running_var                       64
decode3_local.Attn.W_g.1.num_batches_tracked               scalar int64
decode3_local.Attn.W_x.0.weight                            64x128x1x1
decode3_local.Attn.W_x.0.bias                              64
decode3_local.Attn.W_x.1.weight                            64
decode3_local.Attn.W_x.1.bias                              64
decode3_local.Attn.W_x.1.running_mean                      64
decode3_local.Attn.W_x.1.running_var                       64
decode3_local.Attn.W_x.1.num_batches_tracked               scalar int64
decode3_local.Attn.psi.0.weight                            1x64x1x1
decode3_local.Attn.psi.0.bias                              1
decode3_local.Attn.psi.1.weight                            1
decode3_local.Attn.psi.1.bias                              1
decode3_local.Attn.psi.1.running_mean                      1
decode3_local.Attn.psi.1.running_var                       1
decode3_local.Attn.psi.1.num_batches_tracked               scalar int64
decode2_local.Up.up.1.weight                               64x128x3x3
decode2_local.Up.up.1.bias                                 64
decode2_local.Up.up.2.weight                               64
decode2_local.Up.up.2.bias                                 64
decode2_local.Up.up.2.running_mean                         64
decode2_local.Up.up.2.running_var                          64
decode2_local.Up.up.2.num_batches_tracked                  scalar int64
decode2_local.Up_Conv.RCNN.0.conv.0.weight                 64x64x3x3
decode2_local.Up_Conv.RCNN.0.conv.0.bias                   64
decode2_local.Up_Conv.RCNN.0.conv.1.weight                 64
decode2_local.Up_Conv.RCNN.0.conv.1.bias                   64
decode2_local.Up_Conv.RCNN.0.conv.1.running_mean           64
decode2_local.Up_Conv.RCNN.0.conv.1.running_var            64
decode2_local.Up_Conv.RCNN.0.conv.1.num_batches_tracked    scalar int64
decode2_local.Up_Conv.RCNN.1.conv.0.weight                 64x64x3x3
decode2_local.Up_Conv.RCNN.1.conv.0.bias                   64
decode2_local.Up_Conv.RCNN.1.conv.1.weight                 64
decode2_local.Up_Conv.RCNN.1.conv.1.bias                   64
decode2_local.Up_Conv.RCNN.1.conv.1.running_mean           64
decode2_local.Up_Conv.RCNN.1.conv.1.running_var            64
decode2_local.Up_Conv.RCNN.1.conv.1.num_batches_tracked    scalar int64
decode2_local.Up_Conv.Conv_1x1.weight                      64x128x1x1
decode2_local.Up_Conv.Conv_1x1.bias                        64
decode2_local.Attn.W_g.0.weight                            32x64x1x1
decode2_local.Attn.W_g.0.bias                              32
decode2_local.Attn.W_g.1.weight                            32
decode2_local.Attn.W_g.1.bias                              32
decode2_local.Attn.W_g.1.running_mean                      32
decode2_local.Attn.W_g.1.running_var                       32
decode2_local.Attn.W_g.1.num_batches_tracked               scalar int64
decode2_local.Attn.W_x.0.weight                            32x64x1x1
decode2_local.Attn.W_x.0.bias                              32
decode2_local.Attn.W_x.1.weight                            32
decode2_local.Attn.W_x.1.bias                              32
decode2_local.Attn.W_x.1.running_mean                      32
decode2_local.Attn.W_x.1.running_var                       32
decode2_local.Attn.W_x.1.num_batches_tracked               scalar int64
decode2_local.Attn.psi.0.weight                            1x32x1x1
decode2_local.Attn.psi.0.bias                              1
decode2_local.Attn.psi.1.weight                            1
decode2_local.Attn.psi.1.bias                              1
decode2_local.Attn.psi.1.running_mean                      1
decode2_local.Attn.psi.1.running_var                       1
decode2_local.Attn.psi.1.num_batches_tracked               scalar int64
decode1_local.Up.up.1.weight                               32x64x3x3
decode1_local.Up.up.1.bias                                 32
decode1_local.Up.up.2.weight                               32
decode1_local.Up.up.2.bias                                 32
decode1_local.Up.up.2.running_mean                         32
decode1_local.Up.up.2.running_var                          32
decode1_local.Up.up.2.num_batches_tracked                  scalar int64
decode1_local.Up_Conv.RCNN.0.conv.0.weight                 32x32x3x3
decode1_local.Up_Conv.RCNN.0.conv.0.bias                   32
decode1_local.Up_Conv.RCNN.0.conv.1.weight                 32
decode1_local.Up_Conv.RCNN.0.conv.1.bias                   32
decode1_local.Up_Conv.RCNN.0.conv.1.running_mean           32
decode1_local.Up_Conv.RCNN.0.conv.1.running_var            32
decode1_local.Up_Conv.RCNN.0.conv.1.num_batches_tracked    scalar int64
decode1_local.Up_Conv.RCNN.1.conv.0.weight                 32x32x3x3
decode1_local.Up_Conv.RCNN.1.conv.0.bias                   32
decode1_local.Up_Conv.RCNN.1.conv.1.weight                 32
decode1_local.Up_Conv.RCNN.1.conv.1.bias                   32
decode1_local.Up_Conv.RCNN.1.conv.1.running_mean           32
decode1_local.Up_Conv.RCNN.1.conv.1.running_var            32
decode1_local.Up_Conv.RCNN.1.conv.1.num_batches_tracked    scalar int64
decode1_local.Up_Conv.Conv_1x1.weight                      32x64x1x1
decode1_local.Up_Conv.Conv_1x1.bias                        32
decode1_local.Attn.W_g.0.weight                            16x32x1x1
decode1_local.Attn.W_g.0.bias                              16
decode1_local.Attn.W_g.1.weight                            16
decode1_local.Attn.W_g.1.bias                              16
decode1_local.Attn.W_g.1.running_mean                      16
decode1_local.Attn.W_g.1.running_var                       16
decode1_local.Attn.W_g.1.num_batches_tracked               scalar int64
decode1_local.Attn.W_x.0.weight                            16x32x1x1
decode1_local.Attn.W_x.0.bias                              16
decode1_local.Attn.W_x.1.weight                            16
decode1_local.Attn.W_x.1.bias                              16
decode1_local.Attn.W_x.1.running_mean                      16
decode1_local.Attn.W_x.1.running_var                       16
decode1_local.Attn.W_x.1.num_batches_tracked               scalar int64
decode1_local.Attn.psi.0.weight                            1x16x1x1
decode1_local.Attn.psi.0.bias                              1
decode1_local.Attn.psi.1.weight                            1
decode1_local.Attn.psi.1.bias                              1
decode1_local.Attn.psi.1.running_mean                      1
decode1_local.Attn.psi.1.running_var                       1
decode1_local.Attn.psi.1.num_batches_tracked               scalar int64
out_global.0.weight                                        1x32x3x3
out_global.0.bias                                          1
out_local.0.weight                                         1x32x3x3
out_local.0.bias                                           1
"""


@pytest.mark.parametrize("grid", [2, 4, 8])
def test_bare_state_dict_of_our_own_prn_keeps_its_grid_and_no_quirk(tmp_path, grid, log_messages):
    """Another width: not the authors' layout, so never their P64 (no quirk, the requested grid)."""
    torch.manual_seed(0)
    ours = PRN(PRNConfig(grid=grid, width=8)).eval()
    torch.save(ours.state_dict(), tmp_path / "mine.th")
    assert infer_authors_variant(ours.state_dict())[0] is None
    (model, _), lines = log_messages(lambda: load_prn(tmp_path / "mine.th", requested_grid=grid))
    assert model.config.grid == grid and not model.config.row7_quirk
    assert any("our PRN weights" in line and f"grid {grid}" in line for line in lines)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), ours(x)))


def test_authors_p64_layout_gets_the_quirk_only_on_auto_and_8x8(tmp_path, log_messages):
    path = tmp_path / "p64_weights.th"
    torch.save(authors_state_dict("p64"), path)
    (model, _), lines = log_messages(lambda: load_prn(path, requested_grid=8))
    assert model.config.row7_quirk and any("authors' p64" in line and "--row7_quirk False" in line for line in lines)
    assert not load_prn(path, requested_grid=8, row7_quirk=False)[0].config.row7_quirk
    on_4x4 = load_prn(path, requested_grid=4)[0].config  # p16 asked: honoured, the quirk exists only on 8×8
    assert on_4x4.grid == 4 and not on_4x4.row7_quirk
    with pytest.raises(InputError, match="--row7_quirk True needs the 8×8 grid"):
        load_prn(path, requested_grid=4, row7_quirk=True)
