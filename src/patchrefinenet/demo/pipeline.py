"""The demo pipeline: PatchRefineNet where it is meant to help, and a control where it cannot.

Stages (all on by default; ``--stages`` picks some; each skips work whose outputs exist unless
``--force``). Every stage calls the Python API a user would call:

1. ``data``    — two synthetic datasets in the authors' on-disk layout (:mod:`data_utils.synthetic`):
                 the training distribution (train / val / test) and a deployment distribution
                 (new scenes under a shift, e.g. patchy haze; val / test);
2. ``base``    — train a registry base model from scratch on the training scenes
                 (:func:`patchrefinenet.seg.train.train_base_model`, early stopping on val);
3. ``arrays``  — its probability maps on both distributions' val and test splits
                 (:func:`patchrefinenet.seg.generate.generate_aux_arrays`) and the authors' base score;
4. ``prn``     — two refiners with :meth:`patchrefinenet.Refiner.fit`: *shift* on the deployment val
                 maps (a small labelled set from where the model is used), *control* on the training
                 distribution's val maps; each holds out 20 % for selection and the do-no-harm guard;
5. ``report``  — the table (Markdown + JSON, rows with ids) and the figures (:mod:`.report`).

``--weak`` adds the weakly-supervised branch (:mod:`.weak`, rloss) before the report: base models
trained from scribbles with pCE alone and fine-tuned with pCE + DenseCRF loss / normalised cut
(weights chosen on val), PRN on the best of them; their rows join the control column and get a
table of their own (with the share of the pCE → full-supervision gap closed).

Everything lives under ``--root`` (default ``runs/demo``): ``data/`` and ``deploy-data/`` (the two
datasets and the base maps), ``<ds>.toml`` (the reduced dataset config), ``seg-models/``
(checkpoints and logs of the base model), ``prn-shift.pt`` / ``prn-control.pt`` (the refiners),
``results.md`` / ``results.json`` and the figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

from data_utils import layout
from data_utils.arrays import open_maps
from data_utils.io import write_text_atomic
from data_utils.spec import DatasetSpec, spec_to_toml
from data_utils.synthetic import DATASETS, write_demo_dataset
from patchrefinenet.cli.common import (add_threads_argument, cli_entry, configure_cli_threads, keep_log_file, repo_root,
                                       setup_logging)
from patchrefinenet.demo.config import (SCENARIOS, DemoConfig, DemoPaths, base_model_kwargs, demo_spec,
                                        prn_fit_options)

log = logging.getLogger("patchrefinenet")

STAGES = ("data", "base", "arrays", "prn", "report")


def run_data(cfg: DemoConfig, paths: DemoPaths, progress: bool) -> None:
    write_demo_dataset(paths.data_root, cfg.kind, n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test,
                       size=cfg.image_size, seed=cfg.seed, progress=progress)
    # the deployment distribution: other scenes (seed + 1), all under the shift; its train split is unused
    write_demo_dataset(paths.deploy_root, cfg.kind, n_train=1, n_val=cfg.n_val, n_test=cfg.n_test,
                       size=cfg.image_size, seed=cfg.seed + 1, shift=cfg.shift, progress=progress)


def run_base(cfg: DemoConfig, paths: DemoPaths, spec: DatasetSpec, force: bool, progress: bool) -> None:
    from patchrefinenet.seg.train import base_run_status, train_base_model

    status = None if force else base_run_status(paths.seg_root, cfg.base_model)
    if status == "finished":
        log.info("demo: base model already trained (%s); --force retrains",
                 layout.RunFolders(paths.seg_root, cfg.base_model).weights)
        return
    if status == "interrupted":
        log.info("demo: continuing the interrupted base-model run")
    train_base_model(spec, cfg.base_model, data_root=paths.data_root, output_root=paths.seg_root, seed=cfg.seed,
                     device=cfg.device, pretrained=False, model_kwargs=base_model_kwargs(cfg), progress=progress,
                     resume=status == "interrupted", overwrite=force)


def run_arrays(cfg: DemoConfig, paths: DemoPaths, spec: DatasetSpec, force: bool, progress: bool) -> None:
    from patchrefinenet.seg.evaluate import calculate_base_iou
    from patchrefinenet.seg.generate import generate_aux_arrays

    for scenario, root in (("control", paths.data_root), ("shift", paths.deploy_root)):
        arrays = paths.arrays(cfg.base_model, scenario)
        if force or not all(p.is_file() for split in ("val", "test") for p in layout.array_paths(arrays, split)):
            generate_aux_arrays(spec, cfg.base_model, data_root=root, output_root=paths.seg_root, device=cfg.device,
                                progress=progress)
    calculate_base_iou(spec, cfg.base_model, data_root=paths.data_root, output_root=paths.seg_root, progress=progress)


def run_prn(cfg: DemoConfig, paths: DemoPaths, force: bool, progress: bool) -> None:
    from patchrefinenet.refiner import Refiner

    for scenario in SCENARIOS:
        target = paths.refiner(scenario)
        if target.is_file() and not force:
            log.info("demo: refiner %s exists; --force refits it", target)
            continue
        prob_path, mask_path = layout.array_paths(paths.arrays(cfg.base_model, scenario), "val")
        probs = open_maps(prob_path, f"{scenario} val probabilities")
        masks = open_maps(mask_path, f"{scenario} val masks")
        log.info("demo: fitting the %s refiner on %d labelled maps", scenario, len(probs))
        refiner = Refiner.fit(probs, masks, epochs=cfg.prn_epochs, progress=progress, **prn_fit_options(cfg))
        refiner.save(target, overwrite=True)  # the demo's own file under its root (--force asked for it)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="demo.py",
        description="PatchRefineNet end to end on embedded synthetic data: a base model trained on one "
                    "distribution, a refiner fitted on a small labelled set from a shifted deployment distribution "
                    "and tested there, and a no-shift control; a results table and figures.",
        epilog="examples:\n  python demo.py\n  python demo.py --fast\n  python demo.py --kind roads\n"
               "  python demo.py --stages prn report --force\n  python demo.py --full   # the authors' geometry, "
               "for a GPU\n  python demo.py --weak   # + scribble-supervised base models",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=sorted(DATASETS), default=None,
                   help=f"synthetic scenes: polyps (Kvasir-like), roads (DeepGlobe-like), saliency (DUTS-like) "
                        f"(default: {DemoConfig.kind})")
    p.add_argument("--root", type=Path, default=None, help="output folder (default: runs/demo, or runs/demo-<kind>)")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run (default: all)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--fast", action="store_true", help="tiny sizes and budgets (about a minute; for smoke tests)")
    size.add_argument("--full", action="store_true",
                      help="the authors' geometry: 512-px maps, 64-px patches, PRN width 32, longer training "
                           "(for a GPU; hours on a CPU)")
    p.add_argument("--force", action="store_true", help="redo stages whose outputs already exist")
    p.add_argument("--seed", type=int, default=None, help="seeds data, training and augmentation (default: 0)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--base_model", choices=("dlinknet", "pfanet", "resunetplusplus"), default=None,
                   help=f"base architecture from the registry (default: {DemoConfig.base_model})")
    p.add_argument("--base_epochs", type=int, default=None, help="max epochs of the base model")
    p.add_argument("--prn_epochs", type=int, default=None, help="max epochs of each PRN")
    p.add_argument("--copy_figures", type=Path, default=None, help="also copy the figures into this folder "
                   "(the README's images/ were made with --copy_figures images)")
    p.add_argument("--weak", action="store_true",
                   help="also train base models from scribbles (pCE alone; fine-tuned with pCE + DenseCRF loss and "
                        "pCE + normalised cut, weights chosen on val) and PRN on the best, and add their rows to "
                        "the table; needs a finished default run (python demo.py --weak --stages report)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(p)
    return p


@cli_entry
def main(argv: Sequence[str] | None = None) -> dict:
    """Run the demo; returns the report (the rows of the results table)."""
    from patchrefinenet.demo.report import write_report  # matplotlib is only needed here
    from patchrefinenet.demo.weak import run_weak

    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in (("kind", args.kind), ("seed", args.seed), ("base_model", args.base_model),
                                   ("base_epochs", args.base_epochs), ("prn_epochs", args.prn_epochs),
                                   ("device", args.device)) if v is not None}
    cfg = (DemoConfig.fast if args.fast else DemoConfig.full if args.full else DemoConfig)(**overrides)
    dataset = DATASETS[cfg.kind]
    default = "demo" if cfg.kind == DemoConfig.kind else f"demo-{cfg.kind}"
    root = args.root or (repo_root() / "runs" / (default + ("-full" if args.full else "")))
    paths = DemoPaths(Path(root).resolve(), dataset)
    paths.root.mkdir(parents=True, exist_ok=True)
    setup_logging()
    demo_log = keep_log_file(paths.root / "demo.log")
    try:
        spec = demo_spec(cfg, dataset)
        write_text_atomic(paths.config, spec_to_toml(spec, header=f"Demo variant of src/{dataset}/dataset.toml, "
                                                                  "written by demo.py"))
        write_text_atomic(paths.root / "demo_config.json", json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        log.info("demo: %s scenes (%s layout) under %s; stages %s%s", cfg.kind, dataset, paths.root,
                 " ".join(args.stages), " + weak" if args.weak else "")
        timings: dict[str, float] = {}
        progress = not args.quiet
        weak: dict | None = None
        stages = [s for s in STAGES if s in args.stages]
        if args.weak:
            stages.insert(stages.index("report") if "report" in stages else len(stages), "weak")
        for stage in stages:
            t0 = time.perf_counter()
            configure_cli_threads(args.threads)  # per stage: the load of other processes may change
            if stage == "data":
                run_data(cfg, paths, progress)
            elif stage == "base":
                run_base(cfg, paths, spec, args.force, progress)
            elif stage == "arrays":
                run_arrays(cfg, paths, spec, args.force, progress)
            elif stage == "prn":
                run_prn(cfg, paths, args.force, progress)
            elif stage == "weak":
                weak = run_weak(cfg, paths, force=args.force, progress=progress)
            else:
                report = write_report(cfg, paths, spec, weak=weak)
            timings[stage] = time.perf_counter() - t0
            log.info("demo: stage %s done in %.1f s", stage, timings[stage])
        if "report" not in args.stages:
            return {"timings": timings}
        report["timings_s"] = timings
        report["config"] = dataclasses.asdict(cfg)
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
