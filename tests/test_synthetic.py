"""Demo data generator: layouts of the authors' data.zip, determinism, idempotent writes, biased maps."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_utils.errors import InputError
from data_utils.synthetic import (biased_probability_maps, dataset_dir, is_complete, preview_montage, read_manifest,
                                  render_scene, signed_distance, write_demo_dataset)
from data_utils.synthetic import writer as writer_module
from data_utils.synthetic.__main__ import main as cli_main

KINDS = ("roads", "polyps", "saliency")
SIZE = 64
TINY = dict(n_train=2, n_val=1, n_test=1, size=SIZE, progress=False)
IDS = [f"demo{i:05d}" for i in range(4)]

# Expected files for TINY (ids 0-1 train, 2 val, 3 test), written out by hand from the authors' layouts.
EXPECTED_FILES = {
    "roads": {f"train/{i}_sat.jpg" for i in IDS} | {f"train_labels/{i}_mask.png" for i in IDS}
    | {"train.csv", "val.csv", "test.csv"},
    "polyps": {f"train/{i}.jpg" for i in IDS} | {f"train_labels/{i}.jpg" for i in IDS}
    | {"train.csv", "val.csv", "test.csv", "train.txt", "test.txt"},
    "saliency": {f"DUTS-TR/DUTS-TR/DUTS-TR-Image/{i}.jpg" for i in IDS[:2]}
    | {f"DUTS-TR/DUTS-TR/DUTS-TR-Mask/{i}.png" for i in IDS[:2]}
    | {f"DUTS-TE/DUTS-TE/DUTS-TE-Image/{i}.jpg" for i in IDS[2:]}
    | {f"DUTS-TE/DUTS-TE/DUTS-TE-Mask/{i}.png" for i in IDS[2:]}
    | {"train.csv", "val.csv", "test.csv"},
}
EXPECTED_CSV = {
    "roads": ("img,target\ndemo00000_sat.jpg,demo00000_mask.png\ndemo00001_sat.jpg,demo00001_mask.png\n",
              "img,target\ndemo00002_sat.jpg,demo00002_mask.png\n",
              "img,target\ndemo00003_sat.jpg,demo00003_mask.png\n"),
    "polyps": ("img,target\ndemo00000.jpg,demo00000.jpg\ndemo00001.jpg,demo00001.jpg\n",
               "img,target\ndemo00002.jpg,demo00002.jpg\n", "img,target\ndemo00003.jpg,demo00003.jpg\n"),
    "saliency": ("img,target\ndemo00000.jpg,demo00000.png\ndemo00001.jpg,demo00001.png\n",
                 "img,target\ndemo00002.jpg,demo00002.png\n", "img,target\ndemo00003.jpg,demo00003.png\n"),
}
DATASET_FOLDER = {"roads": "deepglobe", "polyps": "kvasir", "saliency": "DUTS"}


def _files(base: Path) -> dict[str, bytes]:
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """One tiny dataset of every kind, written once for the read-only tests."""
    root = tmp_path_factory.mktemp("demo")
    return {kind: Path(write_demo_dataset(root, kind, **TINY)["dataset_dir"]) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_layout_has_exactly_the_authors_files(written, kind):
    base = written[kind]
    assert base == base.parent.parent / DATASET_FOLDER[kind] / "seg-models"
    assert set(_files(base)) == EXPECTED_FILES[kind] | {"demo_manifest.json"}


@pytest.mark.parametrize("kind", KINDS)
def test_split_files_have_header_and_rows(written, kind):
    base = written[kind]
    texts = tuple((base / f"{split}.csv").read_text() for split in ("train", "val", "test"))
    assert texts == EXPECTED_CSV[kind]
    if kind == "polyps":  # no trailing newline: the authors' csv_generator would read an empty id
        assert (base / "train.txt").read_text() == "demo00000\ndemo00001"
        assert (base / "test.txt").read_text() == "demo00002\ndemo00003"


@pytest.mark.parametrize("kind", KINDS)
def test_images_are_rgb_and_masks_are_0_255_and_match_the_scene(written, kind):
    base = written[kind]
    manifest = read_manifest(base.parent.parent, kind)
    for index, sample in enumerate(manifest["samples"]):
        image = cv2.imread(str(base / sample["image"]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        mask = cv2.imread(str(base / sample["mask"]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
        truth = render_scene(kind, seed=0, index=index, size=SIZE).mask
        if kind == "polyps":  # JPEG mask, as Kvasir: the readers binarise at >= 0.5
            assert np.mean((mask >= 128) == (truth > 0)) > 0.99
        else:
            assert set(np.unique(mask)) <= {0, 255}
            np.testing.assert_array_equal(mask, truth * 255)
        assert truth.any(), "every sample has foreground"


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(tmp_path):
    for kind in KINDS:
        a = _files(Path(write_demo_dataset(tmp_path / "a", kind, seed=3, **TINY)["dataset_dir"]))
        b = _files(Path(write_demo_dataset(tmp_path / "b", kind, seed=3, **TINY)["dataset_dir"]))
        c = _files(Path(write_demo_dataset(tmp_path / "c", kind, seed=4, **TINY)["dataset_dir"]))
        assert a == b
        images = [k for k in a if k.endswith(".jpg")]
        assert all(a[k] != c[k] for k in images)


def test_scene_depends_only_on_kind_seed_index_and_size():
    a = render_scene("roads", seed=1, index=5, size=SIZE)
    b = render_scene("roads", seed=1, index=5, size=SIZE)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.conditions == b.conditions
    assert not np.array_equal(a.image, render_scene("roads", seed=1, index=6, size=SIZE).image)
    assert render_scene("roads", seed=1, index=5, size=96).image.shape == (96, 96, 3)


def test_roads_are_thin_and_other_kinds_are_blobs():
    road = np.array([render_scene("roads", seed=0, index=i, size=128).mask.mean() for i in range(12)])
    assert 0.03 <= road.mean() <= 0.25 and (road > 0).all() and road.max() < 0.3
    # thin: eroding by a 9x9 box (roads are at most ~5 px wide at 128 px) removes nearly all of them
    kernel = np.ones((9, 9), np.uint8)
    for kind, max_left in (("roads", 0.05), ("polyps", None), ("saliency", None)):
        masks = [render_scene(kind, seed=0, index=i, size=128).mask for i in range(6)]
        left = sum(cv2.erode(m, kernel).sum() for m in masks) / sum(m.sum() for m in masks)
        assert left < max_left if max_left else left > 0.4


def test_manifest_complete_skip_and_regenerate_after_deletion(tmp_path):
    first = write_demo_dataset(tmp_path, "roads", **TINY)
    base = Path(first["dataset_dir"])
    assert first["skipped"] is False and is_complete(tmp_path, "roads")
    assert [s["split"] for s in first["samples"]] == ["train", "train", "val", "test"]
    assert set(first["samples"][0]["conditions"]) >= {"fg_fraction", "haze_mean"}
    before = _files(base)
    again = write_demo_dataset(tmp_path, "roads", **TINY)
    assert again["skipped"] is True and _files(base) == before

    (base / "train/demo00001_sat.jpg").unlink()
    assert not is_complete(tmp_path, "roads")
    assert write_demo_dataset(tmp_path, "roads", **TINY)["skipped"] is False
    assert is_complete(tmp_path, "roads") and _files(base) == before


def test_different_arguments_regenerate_and_remove_stale_files(tmp_path):
    write_demo_dataset(tmp_path, "polyps", **TINY)
    result = write_demo_dataset(tmp_path, "polyps", **{**TINY, "n_train": 1})
    base = Path(result["dataset_dir"])
    assert result["skipped"] is False and result["counts"] == {"train": 1, "val": 1, "test": 1}
    assert not (base / "train/demo00003.jpg").exists() and not (base / "train_labels/demo00003.jpg").exists()
    assert (base / "train.txt").read_text() == "demo00000"
    assert (base / "test.txt").read_text() == "demo00001\ndemo00002"
    assert is_complete(tmp_path, "polyps")


def test_interrupted_run_is_incomplete_and_is_redone(tmp_path, monkeypatch):
    calls = []

    def failing(rng, size):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return writer_module.render_saliency(rng, size)

    monkeypatch.setitem(writer_module.RENDERERS, "saliency", failing)
    with pytest.raises(KeyboardInterrupt):
        write_demo_dataset(tmp_path, "saliency", **TINY)
    assert read_manifest(tmp_path, "saliency")["status"] == "writing"
    assert not is_complete(tmp_path, "saliency")
    monkeypatch.undo()
    assert write_demo_dataset(tmp_path, "saliency", **TINY)["skipped"] is False
    assert is_complete(tmp_path, "saliency")
    assert not [p for p in Path(dataset_dir(tmp_path, "saliency")).rglob(".*") if p.is_file()], "no temp files left"


def test_refuses_to_overwrite_real_data(tmp_path):
    real = tmp_path / "deepglobe" / "seg-models" / "train"
    real.mkdir(parents=True)
    (real / "104_sat.jpg").write_bytes(b"not ours")
    with pytest.raises(InputError, match="did not write"):
        write_demo_dataset(tmp_path, "roads", **TINY)
    assert (real / "104_sat.jpg").read_bytes() == b"not ours"


def test_unreadable_manifest_marks_our_folder_and_is_regenerated(tmp_path):
    base = Path(write_demo_dataset(tmp_path, "roads", **TINY)["dataset_dir"])
    (base / "demo_manifest.json").write_text("{ truncated")
    assert not is_complete(tmp_path, "roads")
    assert write_demo_dataset(tmp_path, "roads", **TINY)["skipped"] is False
    assert json.loads((base / "demo_manifest.json").read_text())["status"] == "complete"


def test_root_that_is_a_file_is_an_input_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="choose another root"):
        write_demo_dataset(tmp_path / "file", "roads", **TINY)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="cars"), "roads, polyps, saliency"),
    (dict(n_train=0), "n_train"),
    (dict(size=16), "size"),
    (dict(seed=-1), "seed"),
    (dict(n_val=1.5), "n_val"),
])
def test_bad_arguments_raise_input_error(tmp_path, kwargs, match):
    args = {**TINY, **kwargs}
    kind = args.pop("kind", "roads")
    with pytest.raises(InputError, match=match):
        write_demo_dataset(tmp_path, kind, **args)


def test_cli_help_writes_and_reports_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    assert exc.value.code == 0 and "--n_train" in capsys.readouterr().out
    preview = tmp_path / "p.png"
    assert cli_main(["--kind", "saliency", "--root", str(tmp_path), "--n_train", "1", "--n_val", "1",
                     "--n_test", "1", "--size", "64", "--no_progress", "--preview", str(preview)]) == 0
    assert is_complete(tmp_path, "saliency")
    assert cv2.imread(str(preview)).shape == (4 * 64, 3 * 64, 3)
    assert cli_main(["--root", str(tmp_path), "--size", "8"]) == 2
    assert "error: write_demo_dataset: size" in capsys.readouterr().err


def test_preview_montage_rows_are_image_mask_overlay():
    montage = preview_montage("polyps", n=2, size=SIZE, seed=0)
    scene = render_scene("polyps", seed=0, index=1, size=SIZE)
    assert montage.shape == (2 * SIZE, 3 * SIZE, 3)
    np.testing.assert_array_equal(montage[SIZE:, :SIZE], scene.image)
    np.testing.assert_array_equal(montage[SIZE:, SIZE:2 * SIZE, 0], scene.mask * 255)


# ---- readers -------------------------------------------------------------------------------------

def test_the_project_readers_read_the_demo_layouts(written):
    datasets = pytest.importorskip("data_utils.datasets")
    repo = Path(__file__).resolve().parents[1]
    for kind in KINDS:
        spec = datasets.load_dataset_spec(repo / "src" / DATASET_FOLDER[kind] / "dataset.toml")
        spec = dataclasses.replace(spec, input_size=SIZE)
        root = written[kind].parent.parent
        index = 0
        for split, n in (("train", 2), ("val", 1), ("test", 1)):
            samples = datasets.read_split(spec, root, split)
            assert [s.id for s in samples] == IDS[index:index + n]
            for s in samples:
                image, mask, rgb = datasets.load_sample(spec, s)
                scene = render_scene(kind, seed=0, index=index, size=SIZE)
                assert image.shape == (3, SIZE, SIZE) and mask.shape == (SIZE, SIZE)
                assert np.mean((mask >= 0.5) == (scene.mask > 0)) > 0.99
                error = np.abs(rgb.astype(int) - scene.image).mean()  # JPEG quality 95 on a noisy image
                assert error < 10 and error < np.abs(rgb[..., ::-1].astype(int) - scene.image).mean()
                index += 1


# ---- biased probability maps ---------------------------------------------------------------------

def _masks(n: int = 3, size: int = 64) -> np.ndarray:
    return np.stack([render_scene("polyps", seed=0, index=i, size=size).mask for i in range(n)])


def test_signed_distance_hand_computed():
    m = np.zeros((5, 5), np.uint8)
    m[2, 2] = 1
    d = signed_distance(m)
    assert d[2, 2] == pytest.approx(0.5)
    assert d[2, 3] == pytest.approx(-0.5) and d[1, 2] == pytest.approx(-0.5)
    assert d[1, 1] == pytest.approx(-(np.sqrt(2) - 0.5), abs=1e-5)
    assert d[0, 2] == pytest.approx(-1.5)
    np.testing.assert_allclose(signed_distance(1 - m), -d)
    assert np.all(signed_distance(np.zeros((3, 3))) == -np.inf)


def test_biased_maps_are_probabilities_and_deterministic():
    gt = _masks()
    prob, field = biased_probability_maps(gt, seed=5)
    assert prob.shape == field.shape == gt.shape and prob.dtype == field.dtype == np.float32
    assert prob.min() >= 0 and prob.max() <= 1
    again, field2 = biased_probability_maps(gt, seed=5)
    np.testing.assert_array_equal(prob, again)
    np.testing.assert_array_equal(field, field2)
    assert not np.array_equal(prob, biased_probability_maps(gt, seed=6)[0])
    # image i does not depend on the others
    np.testing.assert_array_equal(biased_probability_maps(gt[:1], seed=5)[0], prob[:1])
    # per image: zero-mean field with standard deviation bias_scale
    _, f = biased_probability_maps(gt, seed=5, bias_scale=2.0)
    np.testing.assert_allclose(f.mean(axis=(1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(f.std(axis=(1, 2)), 2.0, rtol=1e-3)


def test_zero_bias_is_a_symmetric_control():
    gt = _masks()
    prob, field = biased_probability_maps(gt, seed=1, bias_scale=0.0, noise=0.0)
    assert not field.any()
    flipped, _ = biased_probability_maps(1 - gt, seed=1, bias_scale=0.0, noise=0.0)
    np.testing.assert_allclose(flipped, 1 - prob, atol=1e-6)
    assert np.all((prob > 0.5) == (gt > 0))  # without bias or noise 0.5 separates perfectly


def test_positive_bias_raises_probability_and_moves_the_best_threshold():
    gt = _masks(4, 128)
    control, _ = biased_probability_maps(gt, seed=2, bias_scale=0.0, noise=1.0, sharpness=2.0)
    biased, field = biased_probability_maps(gt, seed=2, bias_scale=1.5, noise=1.0, sharpness=2.0)
    assert biased[field > 0].mean() > control[field > 0].mean() + 0.05
    assert biased[field < 0].mean() < control[field < 0].mean() - 0.05
    # best pixel-accuracy threshold of 16x16 patches, grouped by the sign of the patch's mean bias
    thresholds = np.linspace(0.05, 0.95, 19)
    best = {1: [], -1: []}
    for p, g, f in zip(biased, gt, field):
        for y in range(0, 128, 16):
            for x in range(0, 128, 16):
                pp, gg, b = p[y:y + 16, x:x + 16], g[y:y + 16, x:x + 16], f[y:y + 16, x:x + 16].mean()
                if abs(b) > 0.75:
                    acc = [np.mean((pp > t) == (gg > 0)) for t in thresholds]
                    best[int(np.sign(b))].append(thresholds[int(np.argmax(acc))])
    assert np.mean(best[1]) > 0.5 > np.mean(best[-1])


def test_biased_maps_reject_bad_input():
    gt = _masks(1)
    with pytest.raises(InputError, match="0/255"):
        biased_probability_maps(gt * 255)
    with pytest.raises(InputError, match="noise"):
        biased_probability_maps(gt, noise=-1.0)
    with pytest.raises(InputError, match="smoothness"):
        biased_probability_maps(gt, smoothness=0.0)
    with pytest.raises(InputError, match="gt"):
        biased_probability_maps(np.zeros((2, 3, 4, 5)))


def test_deployment_shift_keeps_the_mask_changes_the_image_and_is_deterministic():
    from data_utils.synthetic.shift import apply_shift

    plain = render_scene("roads", seed=0, index=1, size=64)
    a = render_scene("roads", seed=0, index=1, size=64, shift="haze")
    b = render_scene("roads", seed=0, index=1, size=64, shift="haze")
    assert np.array_equal(a.mask, plain.mask) and np.array_equal(a.image, b.image)
    assert np.abs(a.image.astype(int) - plain.image.astype(int)).mean() > 5
    assert "shift_veil_mean" in a.conditions
    with pytest.raises(InputError, match="shift"):
        apply_shift(plain.image, np.random.default_rng(0), "rain")
