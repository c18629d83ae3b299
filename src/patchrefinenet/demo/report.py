"""The demo's results table and figures, computed from the base maps and the two fitted refiners.

For each scenario (``shift``: deployment scenes; ``control``: the training distribution) and on its
held-out test maps, rows with these ids:

- ``base@0.5``: the base model at 0.5 (the authors' protocol);
- ``best_global``: the base model at the one threshold (0.01 … 0.99) that maximises pooled IoU on
  the scenario's labelled maps — the same maps PRN is fitted on, so both get the same labels;
- ``prn``: the shipped refiner — the output rule chosen on its held-out maps, or the base map at
  its best global threshold when the guard found no gain (docs/refiner.md);
- ``prn_authors`` / ``prn_global``: the same PRN weights with the authors' combination
  G ∪ dilate(G ∩ L) and with the global head at 0.5 (what a user gets without selection);
- ``oracle``: every patch binarised at its best threshold *chosen with the test ground truth*
  (an upper bound for patch-wise thresholding, not a method);
- with ``--weak``, the rows of :mod:`.weak` (control column: base models from scribbles), also in a
  table of their own with the share of the pCE → full-supervision gap each closes.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from data_utils import layout
from data_utils.arrays import open_maps
from data_utils.datasets import load_sample, read_split
from data_utils.io import atomic_path, write_text_atomic
from data_utils.pseudo_labels import patch_pseudo_labels
from data_utils.spec import DatasetSpec
from patchrefinenet.demo.config import SCENARIOS, DemoConfig, DemoPaths
from patchrefinenet.metrics import CalibrationMeter, SegmentationMeter
from patchrefinenet.refiner import Refiner
from patchrefinenet.selection import Rule, ThresholdSweep

log = logging.getLogger("patchrefinenet")

METRICS = ("pooled_iou", "mean_iou", "dice")
CALIBRATION = ("ece", "brier")


def scenario_maps(paths: DemoPaths, model: str, scenario: str) -> dict[str, np.ndarray]:
    """The base model's val/test probabilities and masks of a scenario, (N, H, W) float32 arrays."""
    folder = paths.arrays(model, scenario)
    files = {f"{split}_{kind}": path for split in ("val", "test")
             for kind, path in zip(("prob", "gt"), layout.array_paths(folder, split))}
    return {k: np.array(open_maps(v, f"{scenario} {k}"), dtype=np.float32) for k, v in files.items()}  # writable copies


def _scores(prob: np.ndarray, mask: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Segmentation metrics of ``mask`` and calibration of ``prob`` against ``gt``."""
    seg, cal = SegmentationMeter(), CalibrationMeter()
    seg.update(mask.astype(np.float32), gt)
    cal.update(prob, gt)
    return {**{k: float(v) for k, v in seg.compute().items() if k in METRICS}, **cal.compute()}


def best_global_threshold(maps: dict[str, np.ndarray]) -> tuple[float, float]:
    """(τ, pooled IoU) of the one threshold that maximises pooled IoU on a scenario's labelled (val) maps."""
    sweep = ThresholdSweep()
    sweep.update(torch.from_numpy(maps["val_prob"]), torch.from_numpy(maps["val_gt"]))
    return sweep.best()


def scenario_rows(cfg: DemoConfig, paths: DemoPaths, scenario: str) -> tuple[list[dict], dict]:
    """The rows of one scenario and the extras the figures need."""
    maps = scenario_maps(paths, cfg.base_model, scenario)
    test_prob, test_gt = maps["test_prob"], maps["test_gt"]
    rows: list[dict] = []

    def add(row_id: str, method: str, prob: np.ndarray, mask: np.ndarray, note: str = "") -> None:
        rows.append({"id": row_id, "method": method, **_scores(prob, mask, test_gt), "note": note})

    add("base@0.5", "Base model, threshold 0.5", test_prob, test_prob > 0.5)
    tau, val_score = best_global_threshold(maps)
    add("best_global", "Base model, best global threshold", test_prob, test_prob > tau,
        f"τ = {tau:.2f}, chosen on the {len(maps['val_prob'])} labelled maps (pooled IoU {val_score:.4f} there)")

    refiner = Refiner.load(paths.refiner(scenario), device="cpu")
    shipped = refiner.refine(test_prob, thresholds=True)
    note = f"rule {refiner.rule.name}"
    if refiner.selection is not None and refiner.selection.fell_back:
        note += " (guard: PRN did not beat the base map on the held-out maps)"
    add("prn", "PRN, shipped (held-out selection + guard)", shipped.prob, shipped.mask, note)
    for row_id, rule, label in (("prn_authors", Rule("authors"), "PRN, the authors' combination G ∪ dilate(G ∩ L)"),
                                ("prn_global", Rule("global"), "PRN, global head at 0.5")):
        out = Refiner(refiner.model, rule, device="cpu").refine(test_prob, thresholds=False)
        add(row_id, label, out.prob, out.mask, "same weights, fixed rule, no selection")
    oracle = patch_pseudo_labels(test_prob, test_gt, cfg.patch_size).labels
    add("oracle", f"Patch oracle, {cfg.patch_size}-px patches (uses the test masks)", test_prob, oracle,
        "upper bound, not a method")
    extras = {"shipped": shipped, "tau": tau, "test_prob": test_prob, "test_gt": test_gt,
              "selection": None if refiner.selection is None else refiner.selection.message()}
    return rows, extras


def _split_images(spec: DatasetSpec, data_root, split: str, n: int) -> np.ndarray:
    """The first ``n`` images of ``split`` as RGB uint8 at the PRN map size, in array order."""
    import cv2

    out = []
    for s in read_split(spec, data_root, split)[:n]:
        rgb = load_sample(spec, s)[2]
        if rgb.shape[0] != spec.prn_size:
            rgb = cv2.resize(rgb, (spec.prn_size, spec.prn_size), interpolation=cv2.INTER_AREA)
        out.append(rgb)
    return np.stack(out)


def write_report(cfg: DemoConfig, paths: DemoPaths, spec: DatasetSpec, weak: dict | None = None) -> dict:
    """Compute every row, write ``results.md`` and the figures under the demo root, return the report.

    ``weak``: :func:`~patchrefinenet.demo.weak.run_weak`'s result, whose rows join the table.
    """
    table: dict[str, list[dict]] = {}
    extras: dict[str, dict] = {}
    for scenario in SCENARIOS:
        table[scenario], extras[scenario] = scenario_rows(cfg, paths, scenario)
    rows = _merge(table, weak["rows"] if weak else ())
    goals = _goals(table)
    markdown = _markdown(rows, cfg, extras, goals) + (_weak_markdown(weak, cfg) if weak else "")
    write_text_atomic(paths.root / "results.md", markdown)
    images = _split_images(spec, paths.deploy_root, "test", len(extras["shift"]["test_prob"]))
    figures = _figures(cfg, paths, images, extras["shift"])
    return {"rows": rows, "goals": goals, "markdown": markdown, "figures": figures,
            **({"weak": {"grid": weak["grid"], "labelled_fraction": weak["labelled_fraction"]}} if weak else {}),
            "selection": {s: extras[s]["selection"] for s in SCENARIOS},
            "best_global_threshold": {s: extras[s]["tau"] for s in SCENARIOS}}


def _merge(table: dict[str, list[dict]], extra_rows: Sequence[dict]) -> list[dict]:
    """One row per id with a sub-dict per scenario; weak rows (control only) go before the oracle."""
    rows = []
    for i, row in enumerate(table["shift"]):
        merged = {"id": row["id"], "method": row["method"]}
        for s in SCENARIOS:
            r = table[s][i]
            merged[s] = {k: r[k] for k in (*METRICS, *CALIBRATION)}
            merged[s]["note"] = r["note"]
        rows.append(merged)
    weak = [{"id": r.get("id", r["method"]), "method": r["method"], "shift": None,
             "control": {**{k: r[k] for k in METRICS}, "note": r.get("note", "")}} for r in extra_rows]
    return rows[:-1] + weak + rows[-1:]


def _goals(table: dict[str, list[dict]]) -> dict[str, Any]:
    """The issue's quality goals, measured: prn vs base@0.5 and best_global (shift), and the control."""
    def get(s: str, row_id: str) -> float:
        return next(r["pooled_iou"] for r in table[s] if r["id"] == row_id)

    shift_vs_base = get("shift", "prn") - get("shift", "base@0.5")
    shift_vs_global = get("shift", "prn") - get("shift", "best_global")
    control_vs_global = get("control", "prn") - get("control", "best_global")
    return {"shift_prn_minus_base_points": round(100 * shift_vs_base, 2),
            "shift_prn_minus_best_global_points": round(100 * shift_vs_global, 2),
            "control_prn_minus_best_global_points": round(100 * control_vs_global, 2),
            "met": {"shift: prn >= base@0.5 + 3": shift_vs_base >= 0.03,
                    "shift: prn >= best_global + 1": shift_vs_global >= 0.01,
                    "control: prn >= best_global - 0.2": control_vs_global >= -0.002}}


def _cell(d: dict | None, key: str) -> str:
    return "" if d is None or key not in d else f"{d[key]:.4f}"


def _markdown(rows: list[dict], cfg: DemoConfig, extras: dict, goals: dict) -> str:
    n_test = len(extras["shift"]["test_prob"])
    lines = [f"Demo results ({cfg.kind}, {cfg.input_size}×{cfg.input_size} maps, base model {cfg.base_model} "
             f"trained on {cfg.n_train} source scenes for at most {cfg.base_epochs} epochs, seed {cfg.seed}). "
             f"Each PRN (width {cfg.prn_width}, {cfg.patch_size}-px patches, {cfg.prn_batch_size} maps per step, at most "
             f"{cfg.prn_epochs} epochs) is fitted "
             f"on {cfg.n_val} labelled maps of its scenario, {round(100 * cfg.select)} % of them held out for selection; "
             f"all scores are on {n_test} further test maps. *shift*: deployment scenes under '{cfg.shift}'; "
             "*control*: scenes of the training distribution.", "",
             "| id | method | shift pooled IoU | shift mean IoU | shift Dice | control pooled IoU | control mean IoU "
             "| control Dice |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [_cell(r[s], k) for s in SCENARIOS for k in METRICS]
        lines.append(f"| {r['id']} | {r['method']} | " + " | ".join(cells) + " |")
    lines += ["", "Calibration of the probabilities (lower is better): expected calibration error (15 bins) and "
              "Brier score.", "", "| id | shift ECE | shift Brier | control ECE | control Brier |",
              "|---|---|---|---|---|"]
    for r in rows:
        if r["id"] in ("base@0.5", "prn", "prn_authors"):
            lines.append(f"| {r['id']} | " + " | ".join(_cell(r[s], k) for s in SCENARIOS for k in CALIBRATION) + " |")
    lines += ["", "Notes:"]
    for r in rows:
        notes = [f"{s}: {r[s]['note']}" for s in SCENARIOS if r[s] and r[s].get("note")]
        if notes:
            lines.append(f"- `{r['id']}`: " + "; ".join(notes))
    for s in SCENARIOS:
        if extras[s]["selection"]:
            lines.append(f"- selection ({s}): {extras[s]['selection']}")
    met = ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals["met"].items())
    lines += ["", f"Goals — shift: prn − base@0.5 = {goals['shift_prn_minus_base_points']:+.2f} points, "
                  f"prn − best_global = {goals['shift_prn_minus_best_global_points']:+.2f}; control: prn − best_global = "
                  f"{goals['control_prn_minus_best_global_points']:+.2f}. {met}."]
    return "\n".join(lines) + "\n"


def _weak_markdown(weak: dict, cfg: DemoConfig) -> str:
    """The weak branch's own table: test scores at 0.5, the gap closed, and the weight grid on val."""
    lines = ["", f"Weak supervision (rloss), control test split, threshold 0.5; scribbles label "
                 f"{100 * weak['labelled_fraction']:.1f} % of the train pixels. *gap closed*: (row − pce) / "
                 "(full − pce) in pooled IoU.", "",
             "| id | method | pooled IoU | mean IoU | Dice | gap closed |", "|---|---|---|---|---|---|"]
    for r in weak["rows"]:
        gap = r.get("gap_closed")
        lines.append(f"| {r['id']} | {r['method']} | " + " | ".join(f"{r[k]:.4f}" for k in METRICS)
                     + f" | {'' if gap is None else f'{100 * gap:.0f} %'} |")
    lines += ["", f"Weight grid (each a {cfg.weak_epochs}-epoch fine-tune of the pCE model; chosen by val pooled IoU):",
              "", "| regulariser | weight | val pooled IoU | test pooled IoU |", "|---|---|---|---|"]
    for c in weak["grid"]:
        lines.append(f"| {c['reg_loss']} | {c['weight']:g} | {c['val']['pooled_iou']:.4f} | "
                     f"{c['test']['pooled_iou']:.4f} |")
    return "\n".join(lines) + "\n"


def _per_image_iou(mask: np.ndarray, gt: np.ndarray) -> np.ndarray:
    p, g = mask.reshape(len(mask), -1) > 0.5, gt.reshape(len(gt), -1) > 0.5
    return ((p & g).sum(1) + 1) / ((p | g).sum(1) + 1)


def _figures(cfg: DemoConfig, paths: DemoPaths, images: np.ndarray, shift: dict) -> dict[str, str]:
    """Example rows of the shift test set and the per-image IoU scatter (shipped PRN vs best global)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prob, gt, out = shift["test_prob"], shift["test_gt"], shift["shipped"]
    glob = _per_image_iou(prob > shift["tau"], gt)
    ours = _per_image_iou(np.asarray(out.mask), gt)
    gain = ours - glob
    order = np.argsort(gain)  # the images PRN helped most, a typical one and the one it hurt most
    picks = list(dict.fromkeys([int(order[-1]), int(order[-2]), int(order[len(order) // 2]), int(order[0])]))
    cols = ["deployment image", "ground truth", "base probability", f"base > {shift['tau']:.2f} (best global)",
            "refined thresholds per patch", f"refined mask ({out.rule})"]
    fig, axes = plt.subplots(len(picks), len(cols), figsize=(2.3 * len(cols), 2.4 * len(picks)), squeeze=False)
    for r, i in enumerate(picks):
        panels = [images[i], gt[i], prob[i], prob[i] > shift["tau"], out.thresholds[i], out.mask[i]]
        for c, (ax, panel) in enumerate(zip(axes[r], panels)):
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
            if c == 4:
                im = ax.imshow(panel, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
                if r == 0:
                    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
                continue
            ax.imshow(panel, cmap=None if np.ndim(panel) == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r][0].set_ylabel(f"test #{i}\nIoU {glob[i]:.2f} → {ours[i]:.2f}", fontsize=8)
    fig.tight_layout()
    examples = paths.root / "demo_examples.png"
    with atomic_path(examples) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.scatter(glob, ours, s=14, alpha=0.8)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel(f"per-image IoU, base > {shift['tau']:.2f} (best global)")
    ax.set_ylabel(f"per-image IoU, shipped refiner ({out.rule})")
    ax.set_title(f"shift test: refiner better on {int((gain > 0).sum())}, worse on {int((gain < 0).sum())} "
                 f"of {len(gain)}", fontsize=9)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    fig.tight_layout()
    scatter = paths.root / "demo_per_image_iou.png"
    with atomic_path(scatter) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return {"examples": str(examples), "per_image_iou": str(scatter)}
