"""The demo pipeline: each stage calls the command-line implementation users run on real data.

Stages (all on by default; ``--stages`` picks some, each skips work whose outputs exist unless
``--force``):

1. ``data``    — generate the synthetic dataset in the real layout (:mod:`data_utils.synthetic`);
2. ``base``    — train a registry base model from scratch with early stopping on its val score
                 (``src/<ds>/seg-models/train.py``);
3. ``arrays``  — base probabilities on val/test (``generate_aux_training_data.py``), pseudo-labels
                 (``generate_rst.py``) and the base score (``calculate_base_iou.py``);
4. ``prn``     — train PRN at two grids and predict (``src/<ds>/refine-models/{train,predict}.py``);
5. ``report``  — the results table (Markdown + JSON) and the figures (:mod:`.report`).

``--weak`` adds the weakly-supervised branch (:mod:`.weak`, rloss) before the report: base models
trained from scribbles with pCE alone and with pCE + DenseCRF loss, PRN p64 on the latter; their
rows join the table (under ``<root>/weak-pce/`` and ``<root>/weak-crf/``).

Everything lives under ``--root`` (default ``runs/demo``): ``data/``, ``<ds>.toml`` (the reduced
dataset config), ``seg-models/`` and ``refine-models/`` (checkpoints and logs, as under ``src/<ds>/``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from data_utils.errors import InputError
from data_utils.io import write_text_atomic
from data_utils.spec import DatasetSpec, dataset_spec_path, load_dataset_spec, spec_to_toml
from data_utils.synthetic import DATASETS, write_demo_dataset
from patchrefinenet.cli import calculate_base_iou, generate_aux, generate_rst, refine_predict, refine_train, seg_train
from patchrefinenet.cli.common import cli_entry, keep_log_file, repo_root, setup_logging

log = logging.getLogger("patchrefinenet")

STAGES = ("data", "base", "arrays", "prn", "report")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and budgets of one demo run (primitives only; saved next to the results)."""

    kind: str = "roads"
    n_train: int = 160
    n_val: int = 80                # the PRN training set (the authors train PRN on the base model's val split)
    n_test: int = 60
    image_size: int = 256          # generated images
    input_size: int = 128          # network input and PRN map side
    base_model: str = "dlinknet"
    base_width: int = 8            # ResUNet++ only: filters (w, 2w, 4w, 8w, 16w); authors: 32
    base_epochs: int = 10          # the 10-minute budget, not convergence: val IoU is still rising
    base_batch_size: int = 4
    base_lr: float = 1e-3
    prn_width: int = 8
    prn_epochs: int = 10
    prn_lr: float = 8e-4
    prn_residual: bool = True      # PRN heads correct the base logit (see PRNConfig.residual)
    grids: tuple[str, ...] = ("p0", "p64")
    seed: int = 0

    @classmethod
    def fast(cls, **overrides) -> "DemoConfig":
        """A tiny configuration that runs end to end in about a minute (used by the tests)."""
        small = dict(n_train=24, n_val=12, n_test=8, image_size=64, input_size=64, base_model="resunetplusplus",
                     base_width=4, base_epochs=2,
                     base_batch_size=4, prn_width=4, prn_epochs=2)
        return cls(**{**small, **overrides})


@dataclass(frozen=True)
class DemoPaths:
    """Where each stage reads and writes, under the demo root."""

    root: Path
    dataset: str

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / f"{self.dataset}.toml"

    @property
    def seg_root(self) -> Path:
        return self.root / "seg-models"

    @property
    def refine_root(self) -> Path:
        return self.root / "refine-models"

    def arrays(self, model: str) -> Path:
        """``<data_root>/<ds>/refine-models/<model>``: the base model's probability maps and pseudo-labels."""
        return self.data_root / self.dataset / "refine-models" / model

    def script(self, side: str, name: str) -> str:
        """The per-dataset script a user would run; the CLI implementation derives the dataset from it."""
        return str(repo_root() / "src" / self.dataset / f"{side}-models" / name)


def demo_spec(cfg: DemoConfig, dataset: str) -> DatasetSpec:
    """The real dataset config with the demo's reduced sizes and budgets: same preprocessing, loss and
    plateau rule as the authors' recipe, smaller images, fewer epochs and a narrow registry model."""
    spec = load_dataset_spec(dataset_spec_path(dataset))
    train = dataclasses.replace(spec.train, batch_size=cfg.base_batch_size, lr=cfg.base_lr,
                                max_epochs=cfg.base_epochs)
    return dataclasses.replace(spec, base_model=cfg.base_model, input_size=cfg.input_size,
                               prn_size=cfg.input_size, train=train)


def script_args(paths: DemoPaths, side: str, progress: bool, config: Path | None = None) -> list[str]:
    """The flags every seg-/refine-models script gets in the demo: config, roots, CPU, progress bars."""
    root = paths.seg_root if side == "seg" else paths.refine_root
    return ["--config", str(config or paths.config), "--data_root", str(paths.data_root), "--output_root", str(root),
            "--device", "cpu", "--progress", str(progress)]


def prn_train_args(cfg: DemoConfig) -> list[str]:
    """``refine-models/train.py`` flags of the demo's PRNs (width, epochs, lr, residual heads, seed)."""
    return ["--width", str(cfg.prn_width), "--epochs", str(cfg.prn_epochs), "--lr", str(cfg.prn_lr),
            "--residual", str(cfg.prn_residual), "--seed", str(cfg.seed)]


# PRN trains with batch size 1, so its BatchNorm statistics are per image; predicting with per-image
# statistics (the authors' inference) matches that, while running statistics can be far off (the
# recurrent blocks reuse each BatchNorm for differently scaled inputs).
PRN_PREDICT_ARGS = ["--checkpoint", "True", "--batch_stats", "True", "--figure", "0"]


def patch_size_for(aux: str, input_size: int) -> int:
    """Pixel side of the pseudo-label patches of ``pN`` at the demo's input size (p0: whole image)."""
    n = int(aux[1:])
    if n == 0:
        return input_size
    g = int(round(n ** 0.5))
    return input_size // g


def run_data(cfg: DemoConfig, paths: DemoPaths, progress: bool) -> None:
    write_demo_dataset(paths.data_root, cfg.kind, n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test,
                       size=cfg.image_size, seed=cfg.seed, progress=progress)


def run_base(cfg: DemoConfig, paths: DemoPaths, force: bool, progress: bool) -> None:
    weights = paths.seg_root / "checkpoints" / cfg.base_model / f"{cfg.base_model}_weights.th"
    if weights.is_file() and not force:
        log.info("demo: base model already trained (%s); --force retrains", weights)
        return
    width = ["--model_width", str(cfg.base_width)] if cfg.base_model == "resunetplusplus" else []
    argv = ["--model", cfg.base_model, "--no-pretrained", "--seed", str(cfg.seed), *width,
            *script_args(paths, "seg", progress)]
    seg_train.main(paths.script("seg", "train.py"), argv)


def run_arrays(cfg: DemoConfig, paths: DemoPaths, force: bool, progress: bool) -> None:
    arrays = paths.arrays(cfg.base_model)
    if force or not (arrays / "test_input.npy").is_file() or not (arrays / "val_pred.npy").is_file():
        generate_aux.main(paths.script("seg", "generate_aux_training_data.py"),
                          ["--model", cfg.base_model, *script_args(paths, "seg", progress)])
    sizes = sorted({patch_size_for(a, cfg.input_size) for a in cfg.grids})
    generate_rst.main(paths.script("seg", "generate_rst.py"),
                      ["--model", cfg.base_model, "--patch_size", *map(str, sizes),
                       *script_args(paths, "seg", progress)])
    calculate_base_iou.main(paths.script("seg", "calculate_base_iou.py"),
                            ["--model", cfg.base_model, *script_args(paths, "seg", progress)])


def run_prn(cfg: DemoConfig, paths: DemoPaths, force: bool, progress: bool) -> None:
    for aux in cfg.grids:
        weights = paths.refine_root / "checkpoints" / aux / f"{aux}_weights.th"
        if force or not weights.is_file():
            refine_train.main(paths.script("refine", "train.py"),
                              ["--base_model", cfg.base_model, "--aux_model", aux, *prn_train_args(cfg),
                               *script_args(paths, "refine", progress)])
        refine_predict.main(paths.script("refine", "predict.py"),
                            ["--base_model", cfg.base_model, "--aux_model", aux, *PRN_PREDICT_ARGS, "--save_probs",
                             "True", *script_args(paths, "refine", progress)])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="demo.py",
        description="PatchRefineNet end to end on embedded synthetic data: generate a dataset in the real "
                    "layout, train a base model from scratch, make pseudo-labels, train PRN at two patch grids, "
                    "and write a results table and figures. Each stage reuses the per-dataset scripts.",
        epilog="examples:\n  python demo.py\n  python demo.py --fast\n  python demo.py --kind polyps\n"
               "  python demo.py --stages prn report --force\n  python demo.py --weak   # + scribble-supervised base models",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=sorted(DATASETS), default="roads",
                   help="synthetic dataset: roads (DeepGlobe-like, default), polyps (Kvasir-like), saliency (DUTS-like)")
    p.add_argument("--root", type=Path, default=None, help="output folder (default: runs/demo, or runs/demo-<kind>)")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run (default: all)")
    p.add_argument("--fast", action="store_true", help="tiny sizes and budgets (about a minute; for smoke tests)")
    p.add_argument("--force", action="store_true", help="redo stages whose outputs already exist")
    p.add_argument("--seed", type=int, default=0, help="seeds data, training and augmentation (default: 0)")
    p.add_argument("--base_model", choices=("dlinknet", "pfanet", "resunetplusplus"), default=None,
                   help="base architecture from the registry (default: dlinknet)")
    p.add_argument("--base_epochs", type=int, default=None, help="max epochs of the base model")
    p.add_argument("--prn_epochs", type=int, default=None, help="max epochs of each PRN")
    p.add_argument("--copy_figures", type=Path, default=None, help="also copy the figures into this folder "
                   "(the README's images/ were made with --copy_figures images)")
    p.add_argument("--weak", action="store_true",
                   help="also train base models from scribbles (pCE, pCE + DenseCRF loss) and PRN p64 on the "
                        "latter, and add their rows to the table (trains two more base models: well over twice the "
                        "default run's time)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


@cli_entry
def main(argv: Sequence[str] | None = None) -> dict:
    """Run the demo; returns the report (the rows of the results table)."""
    from patchrefinenet.demo.report import write_report  # matplotlib is only needed here
    from patchrefinenet.demo.weak import run_weak  # imports this module

    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in (("kind", args.kind), ("seed", args.seed), ("base_model", args.base_model),
                                   ("base_epochs", args.base_epochs),
                                   ("prn_epochs", args.prn_epochs)) if v is not None}
    cfg = DemoConfig.fast(**overrides) if args.fast else DemoConfig(**overrides)
    dataset = DATASETS[cfg.kind]
    root = args.root or (repo_root() / "runs" / ("demo" if cfg.kind == "roads" else f"demo-{cfg.kind}"))
    paths = DemoPaths(Path(root).resolve(), dataset)
    paths.root.mkdir(parents=True, exist_ok=True)
    setup_logging()
    demo_log = keep_log_file(paths.root / "demo.log")
    try:
        write_text_atomic(paths.config, spec_to_toml(demo_spec(cfg, dataset),
                                                     header=f"Demo variant of src/{dataset}/dataset.toml, written by demo.py"))
        write_text_atomic(paths.root / "demo_config.json", json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        log.info("demo: %s data (%s layout) under %s; stages %s%s", cfg.kind, dataset, paths.root,
                 " ".join(args.stages), " + weak" if args.weak else "")
        timings: dict[str, float] = {}
        progress = not args.quiet
        weak_rows: list[dict] = []
        stages = [s for s in STAGES if s in args.stages]
        if args.weak:
            stages.insert(stages.index("report") if "report" in stages else len(stages), "weak")
        for stage in stages:
            t0 = time.perf_counter()
            if stage == "data":
                run_data(cfg, paths, progress)
            elif stage == "base":
                run_base(cfg, paths, args.force, progress)
            elif stage == "arrays":
                run_arrays(cfg, paths, args.force, progress)
            elif stage == "prn":
                run_prn(cfg, paths, args.force, progress)
            elif stage == "weak":
                weak_rows = run_weak(cfg, paths, force=args.force, progress=progress)
            else:
                report = write_report(cfg, paths, progress=progress, extra_rows=weak_rows)
            timings[stage] = time.perf_counter() - t0
            log.info("demo: stage %s done in %.1f s", stage, timings[stage])
        if "report" not in args.stages:
            return {"timings": timings}
        report["timings_s"] = timings
        write_text_atomic(paths.root / "results.json", json.dumps(report, indent=2) + "\n")
        print("\n" + report["markdown"])
        if args.copy_figures:
            args.copy_figures.mkdir(parents=True, exist_ok=True)
            for fig in report["figures"].values():
                shutil.copy(fig, args.copy_figures / Path(fig).name)
        return report
    finally:
        log.removeHandler(demo_log)
        demo_log.close()


if __name__ == "__main__":  # pragma: no cover
    main()
