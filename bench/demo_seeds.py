"""How much does the demo's result depend on the seed and the refiner's batch size?

Usage:
    python bench/demo_seeds.py                              # runs/demo, seeds 0-4, 4 and 1 maps per step
    python bench/demo_seeds.py --scenarios control --seeds 0 1 2 --batch_sizes 4
    python bench/demo_seeds.py --root runs/demo-roads --no-record

On the base maps of a finished demo run (``python demo.py``), it refits the demo's refiner of each
scenario with :meth:`patchrefinenet.Refiner.fit` and the demo's own options
(:func:`patchrefinenet.demo.config.prn_fit_options`), changing only the seed (held-out split,
initialisation, augmentation) and the maps per step. For each fit it reports, on the scenario's
test maps, the pooled IoU of the shipped output (after selection and the guard), of the best PRN
rule forced, and what the guard decided, next to the base map at 0.5 and at the best global
threshold chosen on the labelled maps. The base model is not retrained. Each finished fit is
kept in ``<root>/bench_demo_seeds.json``, keyed by the thread count and a hash of the maps and
options, so an interrupted run continues where it stopped, a rerun demo is never served stale
fits, and the table lists every fit kept for the current maps.
Recorded in bench/RESULTS.md. These are quality numbers, not timings.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, table  # noqa: E402

from data_utils.errors import InputError  # noqa: E402
from data_utils.io import write_text_atomic  # noqa: E402
from data_utils.synthetic import DATASETS  # noqa: E402
from patchrefinenet.cli.common import cli_entry  # noqa: E402
from patchrefinenet.demo.config import SCENARIOS, DemoConfig, DemoPaths, prn_fit_options  # noqa: E402
from patchrefinenet.demo.report import best_global_threshold, scenario_maps  # noqa: E402
from patchrefinenet.refiner import Refiner  # noqa: E402
from patchrefinenet.selection import ThresholdSweep  # noqa: E402


def demo_config(root: Path) -> DemoConfig:
    """The configuration a finished demo run saved under ``root``."""
    path = root / "demo_config.json"
    if not path.is_file():
        raise InputError(f"{path} not found; run the demo first (python demo.py --root {root})")
    saved = json.loads(path.read_text())
    known = {f.name for f in dataclasses.fields(DemoConfig)}
    return DemoConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known})


def fingerprint(cfg: DemoConfig, maps: dict[str, np.ndarray]) -> str:
    """A short hash of the refiner options and the scenario's maps: a kept fit is reused only for both."""
    h = hashlib.sha1(json.dumps({**prn_fit_options(cfg), "epochs": cfg.prn_epochs}, sort_keys=True).encode())
    for name in sorted(maps):
        h.update(np.ascontiguousarray(maps[name]).tobytes())
    return h.hexdigest()[:12]


def pooled_iou(refiner: Refiner, prob: np.ndarray, gt: np.ndarray) -> float:
    return float(refiner.evaluate(prob, gt, batch_size=4)["refined"]["pooled_iou"])


def fit_once(cfg: DemoConfig, maps: dict[str, np.ndarray], seed: int, batch_size: int) -> dict:
    """One refit: shipped and forced test scores and the guard's record."""
    options = {**prn_fit_options(cfg), "seed": seed, "batch_size": batch_size}
    refiner = Refiner.fit(maps["val_prob"], maps["val_gt"], epochs=cfg.prn_epochs, progress=False, **options)
    s = refiner.selection
    forced = Refiner(refiner.model, s.prn_rule, device=refiner.device)
    return {"seed": seed, "batch_size": batch_size, "shipped": pooled_iou(refiner, maps["test_prob"], maps["test_gt"]),
            "forced": pooled_iou(forced, maps["test_prob"], maps["test_gt"]), "rule": refiner.rule.name,
            "prn_rule": s.prn_rule.name, "fell_back": s.fell_back, "judge_gain": 100 * (s.prn_score - s.base_score),
            "judge_lower": None if s.gain_lower is None else 100 * s.gain_lower}


def baselines(maps: dict[str, np.ndarray]) -> dict[str, float]:
    """base@0.5 and the best global threshold (chosen on the labelled maps, as the demo), on the test maps."""
    tau, _ = best_global_threshold(maps)
    test = ThresholdSweep()
    test.update(torch.from_numpy(maps["test_prob"]), torch.from_numpy(maps["test_gt"]))
    return {"base@0.5": test.score_at(0.5), "best_global": test.score_at(tau), "tau": tau}


def judged(r: dict) -> str:
    """The judge maps' lead of the best PRN rule over the base map, with its bootstrap bound."""
    bound = "-" if r["judge_lower"] is None else f"{r['judge_lower']:+.2f}"
    return f"{r['judge_gain']:+.2f} ({bound})"


def report(cfg: DemoConfig, done: dict, base: dict) -> str:
    rows = []
    for key in sorted(done, key=lambda k: (SCENARIOS.index(done[k]["scenario"]), -done[k]["batch_size"],
                                           done[k]["seed"])):
        r = done[key]
        b = base[r["scenario"]]
        rows.append([r["scenario"], r["batch_size"], r["seed"], f"{r['shipped']:.4f}",
                     "guard" if r["fell_back"] else r["rule"], f"{r['forced']:.4f}",
                     f"{100 * (r['shipped'] - b['best_global']):+.2f}",
                     judged(r)])
    head = ["scenario", "maps per step", "seed", "shipped", "rule", "PRN forced", "shipped − best_global (points)",
            "judge lead (90 % bound)"]
    bases = "; ".join(f"{s}: base@0.5 {b['base@0.5']:.4f}, best_global {b['best_global']:.4f} (τ {b['tau']:g})"
                      for s, b in base.items())
    return (table(head, rows) + "\n\n" + f"Test maps' pooled IoU. {bases}. Demo configuration: {cfg.kind}, "
            f"{cfg.input_size}-px maps, PRN width {cfg.prn_width}, {cfg.patch_size}-px patches, at most "
            f"{cfg.prn_epochs} epochs, {round(100 * cfg.select)} % held out, margin {100 * cfg.margin:g} points; "
            f"torch threads {torch.get_num_threads()}.")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Refit the demo's refiners with other seeds and batch sizes "
                                            "on the base maps of a finished demo run.")
    p.add_argument("--root", type=Path, default=Path("runs/demo"), help="a finished demo run (default: runs/demo)")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=["shift"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--batch_sizes", nargs="+", type=int, default=[4, 1], help="maps per step to compare")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-record", action="store_true", help="print only; do not write bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = demo_config(args.root)
    paths = DemoPaths(args.root.resolve(), DATASETS[cfg.kind])
    cache = args.root / "bench_demo_seeds.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    threads = torch.get_num_threads()
    kept, base = {}, {}  # every fit kept for these maps, options and threads: separate runs add up in one table
    for scenario in SCENARIOS:
        maps = scenario_maps(paths, cfg.base_model, scenario)
        suffix = f"/{threads}/{fingerprint(cfg, maps)}"
        for batch_size in args.batch_sizes if scenario in args.scenarios else ():
            for seed in args.seeds:
                key = f"{scenario}/{batch_size}/{seed}{suffix}"
                if key not in done:
                    done[key] = {"scenario": scenario, **fit_once(cfg, maps, seed, batch_size)}
                    write_text_atomic(cache, json.dumps(done, indent=2) + "\n")
                r = done[key]
                print(f"{scenario} batch {batch_size} seed {seed}: shipped {r['shipped']:.4f} ({r['rule']}), "
                      f"forced {r['forced']:.4f}", flush=True)
        mine = {k: v for k, v in done.items() if k.startswith(scenario + "/") and k.endswith(suffix)}
        if mine:
            kept.update(mine)
            base[scenario] = baselines(maps)
    body = report(cfg, kept, base)
    print(body)
    if not args.no_record:
        record("Demo refiners by seed and batch size (bench/demo_seeds.py)", body)


if __name__ == "__main__":
    main()
