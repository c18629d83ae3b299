"""Benchmark: does PRN recover a known, smooth, region-by-region bias of its input?

No base model is trained. Ground-truth masks (smooth random blobs, or road masks from
:func:`data_utils.synthetic.render_scene`) go through :func:`data_utils.synthetic.biased_probability_maps`,
which makes fake base-model probabilities whose logits carry a known smooth bias field ``b`` plus
per-pixel noise. Two sets share the masks and the noise: ``biased`` (``--bias_scale`` > 0) and
``control`` (bias 0). For each set the real engine runs end to end: pseudo-labels
(``generate_pseudo_label_file``) on the ``val`` split, ``train_prn`` on it,
``predict_prn(save_probs=True)`` on the ``test`` split.

Reported per set (pooled IoU on the test split): the base map at 0.5, the best single threshold
chosen on ``val``, PRN's final mask (the authors' head combination) and its global head alone,
and the patch oracle (each patch at its best threshold against the test GT, i.e. what the
pseudo-labels are); PRN's gain and the share of the base → oracle gap it closes. Recovery of the
bias itself: the *implied* threshold of a patch is the grid threshold τ on the base probabilities
whose mask best reproduces PRN's mask in that patch (``patch_pseudo_labels(base, prn_mask, p)``);
its Pearson and Spearman correlation with the patch mean of ``b`` over the test patches whose GT
holds both classes, next to the same correlation for the oracle's thresholds (the ceiling). ``b``
is added to the logit, so a positive ``b`` inflates the probabilities and the right threshold
rises: recovery shows as a positive correlation.

Also, per set: the *shipped* refiner (``Refiner.fit`` with held-out selection and the do-no-harm guard)
and the global head of the engine-trained PRN under three BatchNorm modes at inference.

Usage: ``python bench/bias_recovery.py [--epochs 30] [--masks roads --size 128] [--quick] [--no-record]``.
Files go to ``--out`` (default ``runs/bench_bias/``, git-ignored); each set's folder is rebuilt
every run, and ``results.json`` there holds every number.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb, record, table  # noqa: E402

from data_utils.errors import InputError  # noqa: E402
from data_utils.io import save_npy_atomic, write_text_atomic  # noqa: E402
from data_utils.pseudo_labels import generate_pseudo_label_file, patch_pseudo_labels  # noqa: E402
from data_utils.synthetic import biased_probability_maps, render_scene  # noqa: E402
from data_utils.synthetic.fields import smooth_field  # noqa: E402
from patchrefinenet.cli.common import cli_entry, setup_logging  # noqa: E402
from patchrefinenet.metrics import pooled_iou  # noqa: E402
from patchrefinenet.models.prn import load_prn, resolve_grid  # noqa: E402
from patchrefinenet.refiner import Refiner  # noqa: E402
from patchrefinenet.selection import ThresholdSweep  # noqa: E402
from patchrefinenet.refine.data import TEST_GT, TEST_INPUTS, TRAIN_GT, TRAIN_INPUTS, pseudo_label_name  # noqa: E402
from patchrefinenet.refine.predict import RefinePredictConfig, combine_heads, predict_prn  # noqa: E402
from patchrefinenet.refine.train import RefineTrainConfig, train_prn  # noqa: E402

log = logging.getLogger("patchrefinenet")
SECTION = "Bias recovery (bench/bias_recovery.py)"
SECTION_RESIDUAL = "Bias recovery, residual heads (bench/bias_recovery.py --residual)"
REPO = Path(__file__).resolve().parents[1]
# Goals fixed before the run; the recorded paragraph says which were met.
GOAL_GAP_SHARE = 0.5  # PRN closes at least half of the base → patch-oracle gap
GOAL_SPEARMAN = 0.5  # implied thresholds follow the injected bias (rank correlation)
GOAL_CONTROL_POINTS = -0.2  # on unbiased input PRN loses at most 0.2 IoU points


def ground_truth(kind: str, n: int, size: int, seed: int) -> np.ndarray:
    """(n, size, size) uint8 {0, 1} masks: ``roads`` = the road masks of demo scenes 0 … n−1 of
    ``seed``; ``blobs`` = a smooth random field (correlation length size/8 px) above 0.5 std,
    about 30 % foreground in rounded blobs. The blob streams ``(seed, i, 7)`` are not the bias
    streams ``(seed, i)`` of :func:`biased_probability_maps`, so mask and bias are independent."""
    if kind == "roads":
        return np.stack([render_scene("roads", seed=seed, index=i, size=size).mask for i in range(n)])
    return np.stack([(smooth_field(np.random.default_rng([seed, i, 7]), (size, size), size / 8) > 0.5)
                     for i in range(n)]).astype(np.uint8)


def best_global_threshold(prob: np.ndarray, gt: np.ndarray) -> float:
    """The threshold (0.01 … 0.99, the grid the refiner's own fallback uses) with the highest pooled IoU
    of ``prob > τ`` on (N, H, W) maps."""
    sweep = ThresholdSweep()
    sweep.update(torch.from_numpy(np.ascontiguousarray(prob, dtype=np.float32)), torch.from_numpy(gt))
    return sweep.best()[0]


def patch_means(maps: np.ndarray, p: int) -> np.ndarray:
    """(N, H, W) → (N, H/p, W/p): the mean of every p×p patch (H and W multiples of p)."""
    n, h, w = maps.shape
    return maps.reshape(n, h // p, p, w // p, p).mean(axis=(2, 4))  # (N, gh, gw)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0 … n−1 of a 1-D array, ties sharing their average rank (as Spearman needs)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # rank of the first member of each tie group
    return (first + (counts - 1) / 2.0)[inverse]


def correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman) of two equally long 1-D samples; NaN when either is constant."""
    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
        return float((a * b).sum() / denom) if denom > 0 else float("nan")

    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    return pearson(x, y), pearson(_ranks(x), _ranks(y))


def run_set(name: str, prob: np.ndarray, gt: np.ndarray, field: np.ndarray, args: argparse.Namespace,
            root: Path) -> dict:
    """Write one set's arrays, run pseudo-labels → train → predict, and measure it (see module doc).

    prob, field: (N, H, W) float32; gt: (N, H, W) uint8; the first ``args.n_val`` maps train PRN.
    """
    folder = root / name
    if folder.exists():
        shutil.rmtree(folder)  # a stale pseudo-label file or checkpoint must not leak into this run
    data, out = folder / "data", folder / "out"
    v = args.n_val
    for fname, arr in ((TRAIN_INPUTS, prob[:v]), (TRAIN_GT, gt[:v]), (TEST_INPUTS, prob[v:]), (TEST_GT, gt[v:])):
        save_npy_atomic(data / fname, np.ascontiguousarray(arr[..., None]))  # N×H×W×1
    choice = resolve_grid(args.aux_model, image_size=args.size)
    p = choice.patch_size
    t0 = time.perf_counter()
    pl = generate_pseudo_label_file(data / TRAIN_INPUTS, data / TRAIN_GT, data / pseudo_label_name(p), p,
                                    progress=False)
    t_pl = time.perf_counter() - t0
    log.info("[%s] pseudo-labels p=%d: pooled IoU %.4f against val GT", name, p, pl["pooled_iou"])
    t0 = time.perf_counter()
    trained = train_prn(RefineTrainConfig(
        data_dir=str(data), output_root=str(out), aux_model=choice.aux_name, width=args.width, epochs=args.epochs,
        lr=args.lr, batch_size=args.batch_size, seed=args.seed, device="cpu", dataset="bench_bias", base_model=name,
        patch_bn_stats=args.bn == "batch", residual=args.residual, progress=not args.quiet,
        select=0.0))  # the authors' engine behaviour: every val map trains, best weights by training loss
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    predicted = predict_prn(RefinePredictConfig(
        data_dir=str(data), output_root=str(out), aux_model=choice.aux_name, device="cpu", save_probs=True, figure=0,
        batch_stats=args.bn == "batch", batch_size=1, dataset="bench_bias", base_model=name, progress=not args.quiet))
    t_predict = time.perf_counter() - t0

    heads = {k: torch.from_numpy(np.load(path)).permute(0, 3, 1, 2) for k, path in predicted["probabilities"].items()}
    final = combine_heads(heads["global"], heads.get("local"), "upstream" if "local" in heads else "global")
    masks = {"final": final[:, 0].numpy(), "global head": combine_heads(heads["global"], None, "global")[:, 0].numpy()}
    bn_modes = inference_bn_modes(trained["checkpoint"], prob[v:], gt[v:])

    # What a user ships: Refiner.fit holds out --select of the val maps, keeps the best epoch there, picks the
    # output rule there and falls back to the base map's best global threshold unless PRN beats it by --margin.
    t0 = time.perf_counter()
    refiner = Refiner.fit(prob[:v], gt[:v], aux_model=choice.aux_name, select=args.select, margin=args.margin,
                          width=args.width, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                          seed=args.seed, device="cpu", patch_bn_stats=args.bn == "batch", residual=args.residual,
                          progress=not args.quiet)
    t_select = time.perf_counter() - t0
    masks["shipped"] = refiner.refine(prob[v:], thresholds=False).mask
    res = measure(prob[:v], gt[:v], prob[v:], gt[v:], field[v:], masks, p)
    res.update(shipped_rule=refiner.rule.name, selection=refiner.selection.message(), bn_modes=bn_modes)
    if abs(res["iou"]["final"] - predicted["miou"]) > 1e-9:  # the mask measured must be the one predict_prn scored
        raise RuntimeError(f"[{name}] recomputed PRN IoU {res['iou']['final']:.6f} != "
                           f"predict_prn's {predicted['miou']:.6f}")
    res.update(set=name, patch_size=p, pseudo_label_val_iou=pl["pooled_iou"], epochs_run=trained["epochs_run"],
               stopped=trained["stopped"], best_loss=trained["best_loss"],
               seconds={"pseudo_labels": t_pl, "train": t_train, "predict": t_predict, "fit_with_selection": t_select})
    return res


def inference_bn_modes(checkpoint: str, prob: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Pooled test IoU of the global head at 0.5 of one trained PRN under three BatchNorm modes at inference:
    per-application running statistics (``step_bn``, eval mode), one running average per BN (the plain
    eval mode, which mixes the recurrent block's three applications), and per-map batch statistics (the
    authors' inference). The first two do not depend on the batch; the third does (one map per call here)."""
    model, _ = load_prn(checkpoint, "cpu")
    x = torch.from_numpy(np.ascontiguousarray(prob, dtype=np.float32))[:, None]
    out = {}
    with torch.no_grad():
        out["eval, per-application statistics (step_bn)"] = pooled_iou(model.eval()(x)[0][:, 0].numpy() > 0.5, gt)
        steps = [m for m in model.modules() if getattr(m, "steps", 1) > 1]
        for m in steps:
            m.steps = 1  # fall back to the one running average shared by the three applications
        out["eval, one running average per BatchNorm"] = pooled_iou(model(x)[0][:, 0].numpy() > 0.5, gt)
        for m in steps:
            m.steps = 3
        model.set_batch_statistics(True)
        per_map = torch.cat([model(x[i:i + 1])[0] for i in range(len(x))])
        out["per-map batch statistics (the authors')"] = pooled_iou(per_map[:, 0].numpy() > 0.5, gt)
    return out


def measure(val_prob: np.ndarray, val_gt: np.ndarray, prob: np.ndarray, gt: np.ndarray, field: np.ndarray,
            prn_masks: dict[str, np.ndarray], p: int) -> dict:
    """Pooled test IoUs, gains and bias correlations of one set (all arrays (N, H, W); see module doc).

    ``prn_masks``: name → PRN binary mask on the test maps. Correlations use the test patches whose
    GT holds both classes: in an all-foreground patch every low threshold ties and the lowest wins,
    so its τ says nothing about the bias.
    """
    tau = best_global_threshold(val_prob, val_gt)
    oracle = patch_pseudo_labels(prob, gt, p)
    fg_share = patch_means(gt.astype(np.float32), p)  # (N, gh, gw)
    mixed = (fg_share > 0) & (fg_share < 1)
    mean_bias = patch_means(field, p)[mixed]
    iou = {"base": pooled_iou(prob > 0.5, gt), "best global": pooled_iou(prob > tau, gt)}
    iou.update({k: pooled_iou(m, gt) for k, m in prn_masks.items()})
    iou["oracle"] = pooled_iou(oracle.labels, gt)
    grown = combine_heads(torch.from_numpy(gt[:, None]).float(), torch.from_numpy(gt[:, None]).float())  # (N, 1, H, W)
    iou["perfect heads combined"] = pooled_iou(grown[:, 0].numpy(), gt)  # the head combination fed two perfect heads
    gap = iou["oracle"] - iou["base"]
    corr = {k: correlations(patch_pseudo_labels(prob, m, p).thresholds[mixed], mean_bias) for k, m in prn_masks.items()}
    corr["oracle"] = correlations(oracle.thresholds[mixed], mean_bias)
    return {"iou": iou, "global_threshold": tau, "n_patches": int(mixed.sum()), "correlation": corr,
            "gain_points": {k: 100 * (iou[k] - iou["base"]) for k in prn_masks},
            "gap_share": {k: (iou[k] - iou["base"]) / gap if gap > 0 else float("nan") for k in prn_masks}}


def _summary(res: dict[str, dict], args: argparse.Namespace) -> str:
    """The two tables and the paragraph recorded in RESULTS.md."""
    rows = []
    for r in res.values():
        i, g, s = r["iou"], r["gain_points"], r["gap_share"]
        rows.append([r["set"], f"{i['base']:.4f}", f"{i['best global']:.4f} (τ = {r['global_threshold']:.2f})",
                     f"{i['final']:.4f} ({i['perfect heads combined']:.4f})", f"{i['global head']:.4f}",
                     f"{i['shipped']:.4f} ({r['shipped_rule']})", f"{i['oracle']:.4f}",
                     f"{g['final']:+.2f} / {g['global head']:+.2f}",
                     "—" if r["set"] == "control" else f"{100 * s['final']:.0f} % / {100 * s['global head']:.0f} %",
                     f"{r['epochs_run']} ({r['seconds']['train']:.0f} s)"])
    body = table(["set", "base @0.5", "best global τ (val)", "PRN final (same rule, perfect heads)", "PRN global head",
                  "shipped: selection + guard (rule)", "patch oracle", "PRN − base, pts (final / global)", "oracle gap closed (final / global)",
                  "epochs (train time)"], rows)
    b, c = res["biased"], res["control"]
    labels = {"final": "PRN final mask (implied τ)", "global head": "PRN global head (implied τ)",
              "shipped": "shipped refiner (implied τ)", "oracle": "patch oracle τ (ceiling)"}
    body += "\n\nBias recovery, biased set: correlation of each patch's threshold with its mean injected bias " \
            f"({b['n_patches']} test patches holding both classes).\n\n" + table(
                ["thresholds", "Pearson", "Spearman"],
                [[labels[k], f"{v[0]:+.3f}", f"{v[1]:+.3f}"] for k, v in b["correlation"].items()])
    checks = {
        "beats base and the best global threshold on the biased set":
            lambda k: b["iou"][k] > max(b["iou"]["base"], b["iou"]["best global"]),
        f"closes ≥ {100 * GOAL_GAP_SHARE:.0f} % of the oracle gap": lambda k: b["gap_share"][k] >= GOAL_GAP_SHARE,
        f"implied-threshold Spearman ≥ {GOAL_SPEARMAN}": lambda k: b["correlation"][k][1] >= GOAL_SPEARMAN,
        f"control: PRN − base ≥ {GOAL_CONTROL_POINTS} points": lambda k: c["gain_points"][k] >= GOAL_CONTROL_POINTS,
    }
    shipped_goals = {
        "beats the best global threshold on the biased set": b["iou"]["shipped"] > b["iou"]["best global"],
        f"control: within {-GOAL_CONTROL_POINTS} points of the best global threshold":
            100 * (c["iou"]["shipped"] - c["iou"]["best global"]) >= GOAL_CONTROL_POINTS,
    }
    verdict = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731
    goals = "; ".join(f"{text}: final {verdict(ok('final'))}, global head {verdict(ok('global head'))}"
                      for text, ok in checks.items())
    body += "\n\nBatchNorm at inference: pooled test IoU of the global head at 0.5 of the engine-trained PRN.\n\n" + table(
        ["mode", "biased", "control"], [[k, f"{b['bn_modes'][k]:.4f}", f"{c['bn_modes'][k]:.4f}"] for k in b["bn_modes"]])
    body += "\n\nSelection: biased — " + b["selection"] + "; control — " + c["selection"] + "."
    masks = "road (`render_scene('roads')`)" if args.masks == "roads" else "blob (smooth random field > 0.5 std)"
    setup = (
        f"Setup: {args.n_val} val (PRN training) + {args.n_test} test {masks} masks of {args.size}×{args.size} "
        f"(seed {args.seed}); probabilities from `biased_probability_maps(seed={args.seed}, "
        f"bias_scale={args.bias_scale} (control 0), noise={args.noise}, smoothness={args.smoothness})`: the bias "
        f"field's correlation length is {args.smoothness * args.size:.0f} px against {b['patch_size']}-px patches. "
        f"PRN {args.aux_model} (grid {args.size // b['patch_size']}{', residual heads' if args.residual else ''}), "
        f"width {args.width}, {args.epochs} epochs at most, "
        f"batch {args.batch_size}, lr {args.lr:g}, seed {args.seed}, CPU with {torch.get_num_threads()} torch thread(s), "
        f"BatchNorm with {args.bn} statistics (inference one map at a time). PRN final = the authors' head "
        f"combination G ∪ dilate₃ₓ₃(G ∩ L); in brackets, the same rule applied to two perfect heads, i.e. the GT "
        f"grown by one pixel, which on maps this small costs many points by itself. PRN global head = G alone "
        f"(`--combine global`). Implied τ: the grid threshold on the base map that best reproduces the PRN mask in a "
        f"patch. The bias is added to the logit, so a positive bias inflates the "
        f"probabilities and raises the best threshold: recovery shows as a positive correlation. Goals (fixed before "
        f"running): {goals}. Shipped refiner (`Refiner.fit`, {100 * args.select:.0f} % of the val maps held out, "
        f"margin {100 * args.margin:g} points): "
        + "; ".join(f"{text}: {verdict(ok)}" for text, ok in shipped_goals.items())
        + f". Peak RSS {peak_rss_mb():.0f} MiB.")
    return body + "\n\n" + setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", choices=("blobs", "roads"), default="blobs", help="ground truth (default blobs)")
    parser.add_argument("--size", type=int, default=64, help="map side in pixels (default 64)")
    parser.add_argument("--n_val", type=int, default=96, help="maps PRN trains on (default 96)")
    parser.add_argument("--n_test", type=int, default=48, help="maps PRN is measured on (default 48)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.add_argument("--width", type=int, default=8, help="PRN base width (default 8)")
    parser.add_argument("--aux_model", default="p64", help="PRN grid as pN, N patches (default p64: 8×8)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3; the authors' 8e-4)")
    parser.add_argument("--bn", choices=("batch", "running"), default="batch",
                        help="BatchNorm: 'batch' = per-patch batch statistics in training and per-image batch "
                             "statistics at inference (the authors'); 'running' = pooled in training, running "
                             "statistics at inference (default batch)")
    parser.add_argument("--residual", action="store_true",
                        help="residual heads (PRNConfig.residual: corrections to the base logit); recorded in its "
                             "own RESULTS.md section")
    parser.add_argument("--batch_size", type=int, default=4, help="maps per step (default 4)")
    parser.add_argument("--select", type=float, default=0.2,
                        help="share of the val maps the shipped refiner holds out for selection (default 0.2)")
    parser.add_argument("--margin", type=float, default=0.005,
                        help="gain over the best global threshold the shipped refiner requires (default 0.005)")
    parser.add_argument("--bias_scale", type=float, default=1.5, help="std of the injected logit bias (default 1.5)")
    parser.add_argument("--noise", type=float, default=0.5, help="std of the per-pixel logit noise (default 0.5)")
    parser.add_argument("--smoothness", type=float, default=0.25,
                        help="bias correlation length as a fraction of --size (default 0.25: a few patches)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core box 2 threads ran ~10× slower)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_bias", help="run folder")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (8+4 maps, 1 epoch, not recorded)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--no-record", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_val, args.n_test, args.epochs, args.no_record = 8, 4, 1, True
    for key in ("n_val", "n_test", "epochs", "width", "batch_size", "threads"):
        if getattr(args, key) < 1:
            raise InputError(f"--{key} must be >= 1, got {getattr(args, key)}")
    if args.size < 32:
        raise InputError(f"--size must be >= 32 (the road renderer's minimum), got {args.size}")
    if args.bias_scale <= 0:
        raise InputError(f"--bias_scale must be > 0 (the control set is the bias-0 twin), got {args.bias_scale}")
    return args


@cli_entry
def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    setup_logging()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    gt = ground_truth(args.masks, args.n_val + args.n_test, args.size, args.seed)
    res = {}
    for name, scale in (("biased", args.bias_scale), ("control", 0.0)):
        prob, field = biased_probability_maps(gt, seed=args.seed, bias_scale=scale, noise=args.noise,
                                              smoothness=args.smoothness)
        res[name] = run_set(name, prob, gt, field, args, args.out)
    body = _summary(res, args)
    body += f" Whole run {time.perf_counter() - t0:.0f} s wall."
    write_text_atomic(args.out / "results.json", json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                              "results": res}, indent=2) + "\n")
    print(body)
    if not args.no_record:
        record(SECTION_RESIDUAL if args.residual else SECTION, body)
    return res


if __name__ == "__main__":
    main()
