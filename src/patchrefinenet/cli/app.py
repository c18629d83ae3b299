"""The ``patchrefinenet`` command (also ``python -m patchrefinenet``): PRN on any model's maps, from folders.

    patchrefinenet fit --probs val/probs --masks val/masks --out prn.pt --patch_size 64
    patchrefinenet refine --model prn.pt --probs test/probs --out refined/
    patchrefinenet evaluate --model prn.pt --probs test/probs --masks test/masks --out eval/
    patchrefinenet pseudo-labels --probs val/probs --masks val/masks --out pseudo/ --patch_size 64

A thin adapter over :class:`patchrefinenet.refiner.Refiner`: folders in, files out. Every written
file goes through an atomic rename, and nothing that exists is replaced without ``--overwrite True``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from data_utils.errors import InputError
from patchrefinenet.cli.common import add_threads_argument, cli_entry, configure_cli_threads, setup_logging, str2bool
from patchrefinenet.cli.fields import add_field_options, field_values

log = logging.getLogger("patchrefinenet")

_FORMATS = ("8-bit or 16-bit PNG/TIFF (scaled to [0, 1]) or float .npy/.npz in [0, 1]; "
            "masks 0/1 or 0/255; maps and masks pair by file stem")

_EXAMPLES = {
    "fit": """examples:
  patchrefinenet fit --probs val/probs --masks val/masks --out prn.pt --patch_size 64
  patchrefinenet fit --probs val/probs --masks val/masks --out prn.pt --aux_model p16 --epochs 50 --width 16
  patchrefinenet fit --probs val/probs --masks val/masks --out prn.pt --patch_size 64 \\
      --select_probs sel/probs --select_masks sel/masks --margin 0.01

20 % of the maps are held out (--select) to choose the best epoch and the output rule; if PRN does not
beat the base map at its best global threshold there, the model returns that thresholded map instead.""",
    "refine": """examples:
  patchrefinenet refine --model prn.pt --probs test/probs --out refined/
  patchrefinenet refine --model prn.pt --probs test/probs --out refined/ --save_probs True --save_thresholds True
  patchrefinenet refine --model p64_weights.th --probs test/probs --out refined/   # the authors' weights

Writes <stem>.png (0/255 mask, the input's size) per input map; --save_probs adds <stem>_prob.npy,
--save_thresholds <stem>_thresholds.npy (per-patch threshold on the base map). No masks needed.""",
    "evaluate": """examples:
  patchrefinenet evaluate --model prn.pt --probs test/probs --masks test/masks --out eval/
  patchrefinenet evaluate --model prn.pt --probs test/probs --masks test/masks --out eval/ --figure 4

Writes metrics.json: pooled IoU, mean IoU, Dice, precision, recall, MAE, ECE and Brier score for the base
maps (at 0.5) and the refined maps; --figure N adds figure.png with N example rows.""",
    "pseudo-labels": """examples:
  patchrefinenet pseudo-labels --probs val/probs --masks val/masks --out pseudo/ --patch_size 64

Writes <stem>.png (0/255): each patch of the map binarised at the threshold (0.05 ... 1.00) that maximises
its IoU with the mask; --save_thresholds adds <stem>_thresholds.npy.""",
}


def _bool(parser: argparse.ArgumentParser, name: str, help_text: str, default: bool = False) -> None:
    parser.add_argument(name, type=str2bool, nargs="?", const=True, default=default,
                        help=f"{help_text} (default: {default})")


def _parser() -> tuple[argparse.ArgumentParser, list[str]]:
    from patchrefinenet.refine.config import OWN_FIELDS, SELECTION_FIELDS, RefineTrainConfig

    parser = argparse.ArgumentParser(
        prog="patchrefinenet", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="PatchRefineNet on any segmentation model's probability maps, from folders. Inputs: " + _FORMATS,
        epilog="run `patchrefinenet <command> --help` for each command's options and examples")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{fit,refine,evaluate,pseudo-labels}")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--progress", type=str2bool, default=True, help="show progress bars (default: True)")
        _bool(p, "--overwrite", "replace existing output files")
        add_threads_argument(p)
        return p

    fit = command("fit", "train a PRN on labelled probability maps and save it")
    fit.add_argument("--probs", required=True, help="folder of base probability maps")
    fit.add_argument("--masks", required=True, help="folder of ground-truth masks")
    fit.add_argument("--out", required=True, help="the model file to write (e.g. prn.pt)")
    fit.add_argument("--patch_size", type=int, default=None, help="patch side in pixels (e.g. 64)")
    fit.add_argument("--aux_model", default=None, help="or the grid as pN, N patches: p0, p4, p16, p64, ...")
    fit.add_argument("--select_probs", default=None, help="an explicit selection folder of maps (with --select_masks)")
    fit.add_argument("--select_masks", default=None, help="masks of --select_probs")
    fit.add_argument("--work_dir", default=None,
                     help="where training checkpoints and logs go (needed for --resume; default: a temporary folder)")
    train_names = add_field_options(fit, RefineTrainConfig, exclude=(OWN_FIELDS - set(SELECTION_FIELDS)) | {"init_checkpoint"},
                                    title="selection and training options (training: the authors' defaults)")

    refine = command("refine", "refine a folder of probability maps (no masks needed)")
    refine.add_argument("--model", required=True, help="a model from `fit`, a PRN checkpoint or the authors' weights")
    refine.add_argument("--probs", required=True, help="folder of base probability maps")
    refine.add_argument("--out", required=True, help="output folder")
    _bool(refine, "--save_probs", "also write <stem>_prob.npy (refined probabilities)")
    _bool(refine, "--save_thresholds", "also write <stem>_thresholds.npy (per-patch thresholds)")

    evaluate = command("evaluate", "refine and score against masks: base vs refined")
    evaluate.add_argument("--model", required=True, help="a model from `fit`, a PRN checkpoint or the authors' weights")
    evaluate.add_argument("--probs", required=True, help="folder of base probability maps")
    evaluate.add_argument("--masks", required=True, help="folder of ground-truth masks")
    evaluate.add_argument("--out", required=True, help="output folder (metrics.json, figure.png)")
    evaluate.add_argument("--figure", type=int, default=0, help="example rows in figure.png (default: 0, none)")
    for p in (refine, evaluate):
        p.add_argument("--rule", default=None,
                       help="override the model's output rule: authors, global, local, mean or base, optionally "
                            "@threshold (e.g. global@0.45)")
        p.add_argument("--batch_size", type=int, default=4, help="maps per forward pass (default: 4)")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
        _bool(p, "--bf16", "bf16 autocast on CUDA")

    pseudo = command("pseudo-labels", "write patch-wise optimal-threshold pseudo-labels for a folder")
    pseudo.add_argument("--probs", required=True, help="folder of base probability maps")
    pseudo.add_argument("--masks", required=True, help="folder of ground-truth masks")
    pseudo.add_argument("--out", required=True, help="output folder")
    pseudo.add_argument("--patch_size", type=int, required=True, help="patch side in pixels (e.g. 64)")
    _bool(pseudo, "--save_thresholds", "also write <stem>_thresholds.npy")
    return parser, train_names


# --------------------------------------------------------------------------- writing


class _Writer:
    """Writes files into ``folder`` atomically, refusing to replace existing files unless ``overwrite``.

    Every target name is checked before the first write (:meth:`check`), so a refused run writes nothing.
    """

    def __init__(self, folder: str, overwrite: bool) -> None:
        self.folder, self.overwrite = Path(folder), overwrite
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"--out {self.folder}: exists and is not a folder; pass a folder path")

    def check(self, names: list[str]) -> None:
        if self.overwrite:
            return
        existing = [n for n in names if (self.folder / n).exists()]
        if existing:
            raise InputError(f"--out {self.folder}: {len(existing)} output file(s) exist already, e.g. {existing[0]}; "
                             "pass --overwrite True or another --out folder")

    def png(self, name: str, image: np.ndarray) -> None:
        import cv2

        from data_utils.io import atomic_path

        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / name, suffix=".png") as tmp:
            if not cv2.imwrite(str(tmp), np.ascontiguousarray(image, dtype=np.uint8)):
                raise OSError(f"could not write {self.folder / name}")

    def npy(self, name: str, array: np.ndarray) -> None:
        from data_utils.io import save_npy_atomic

        self.folder.mkdir(parents=True, exist_ok=True)
        save_npy_atomic(self.folder / name, array)

    def text(self, name: str, text: str) -> None:
        from data_utils.io import write_text_atomic

        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.folder / name, text)


def _output_names(stems: list[str], probs: bool, thresholds: bool) -> list[str]:
    names = [f"{s}.png" for s in stems]
    names += [f"{s}_prob.npy" for s in stems] if probs else []
    names += [f"{s}_thresholds.npy" for s in stems] if thresholds else []
    return names


# --------------------------------------------------------------------------- commands


def _fit(args: argparse.Namespace, train_names: list[str]) -> dict:
    from patchrefinenet.refiner import Refiner

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError(f"--out {out} exists; pass --overwrite True or another path")
    if (args.select_probs is None) != (args.select_masks is None):
        raise InputError("--select_probs and --select_masks go together; give both or neither")
    options = field_values(args, train_names)
    if args.select_probs:
        options["select"] = (args.select_probs, args.select_masks)
    refiner = Refiner.fit(args.probs, args.masks, patch_size=args.patch_size, aux_model=args.aux_model,
                          work_dir=args.work_dir, progress=args.progress, **options)
    refiner.save(out, overwrite=args.overwrite)
    summary = {"model": str(out), "rule": refiner.rule.name}
    if refiner.selection is not None:
        summary["selection"] = refiner.selection.message()
    return summary


def _load(args: argparse.Namespace):
    from patchrefinenet.refiner import Refiner

    return Refiner.load(args.model, rule=args.rule, device=args.device, bf16=args.bf16)


def _refine(args: argparse.Namespace) -> dict:
    from patchrefinenet.maps import as_source

    refiner = _load(args)
    source = as_source(args.probs, "probs")
    writer = _Writer(args.out, args.overwrite)
    writer.check(_output_names(source.names, args.save_probs, args.save_thresholds))
    for out in refiner.refine_iter(source, batch_size=args.batch_size, thresholds=args.save_thresholds,
                                   progress=args.progress):
        writer.png(f"{out.name}.png", out.mask * 255)
        if args.save_probs:
            writer.npy(f"{out.name}_prob.npy", out.prob)
        if args.save_thresholds:
            writer.npy(f"{out.name}_thresholds.npy", out.thresholds)
    log.info("refined %d maps with rule %s into %s", len(source), refiner.rule.name, args.out)
    return {"maps": len(source), "rule": refiner.rule.name, "out": str(args.out)}


def _evaluate(args: argparse.Namespace) -> dict:
    from patchrefinenet.maps import aligned_masks, as_source

    if args.figure < 0:
        raise InputError(f"--figure {args.figure}: must be >= 0")
    refiner = _load(args)
    probs = as_source(args.probs, "probs")
    masks = aligned_masks(probs, as_source(args.masks, "masks"))
    writer = _Writer(args.out, args.overwrite)
    writer.check(["metrics.json"] + (["figure.png"] if args.figure else []))
    rows: list[tuple[np.ndarray, ...]] = []

    def keep(out) -> None:
        if len(rows) < args.figure:
            i = len(rows)
            rows.append((probs[i], out.prob, out.mask.astype(np.float32), masks[i]))

    result = refiner.evaluate(probs, masks, batch_size=args.batch_size, progress=args.progress,
                              on_map=keep if args.figure else None)
    writer.text("metrics.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
    if rows:
        from patchrefinenet.refine.predict import save_figure

        save_figure(Path(args.out) / "figure.png", rows, f"PRN, rule {refiner.rule.name}",
                    titles=("base probability", "refined probability", "refined mask", "ground truth"))
    b, r = result["base"], result["refined"]
    log.info("pooled IoU base %.4f -> refined %.4f (%+.2f points); metrics in %s", b["pooled_iou"], r["pooled_iou"],
             100 * result["gain_pooled_iou"], Path(args.out) / "metrics.json")
    return {"base": b["pooled_iou"], "refined": r["pooled_iou"], "rule": result["rule"]}


def _pseudo_labels(args: argparse.Namespace) -> dict:
    from tqdm.auto import tqdm

    from data_utils.pseudo_labels import patch_pseudo_labels
    from patchrefinenet.maps import aligned_masks, as_source, check_same_size

    probs = as_source(args.probs, "probs")
    masks = aligned_masks(probs, as_source(args.masks, "masks"))
    writer = _Writer(args.out, args.overwrite)
    writer.check(_output_names(probs.names, False, args.save_thresholds))
    if args.patch_size < 1:
        raise InputError(f"--patch_size {args.patch_size}: must be >= 1")
    for i in tqdm(range(len(probs)), desc="pseudo-labels", unit="map", disable=not args.progress):
        check_same_size(probs, masks, i)
        pl = patch_pseudo_labels(probs[i], masks[i], args.patch_size)
        writer.png(f"{probs.names[i]}.png", pl.labels * 255)
        if args.save_thresholds:
            writer.npy(f"{probs.names[i]}_thresholds.npy", pl.thresholds)
    return {"maps": len(probs), "out": str(args.out), "patch_size": args.patch_size}


@cli_entry
def main(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run one command; returns its summary."""
    parser, train_names = _parser()
    args = parser.parse_args(argv)
    setup_logging()
    configure_cli_threads(args.threads)
    if args.command == "fit":
        summary = _fit(args, train_names)
    elif args.command == "refine":
        summary = _refine(args)
    elif args.command == "evaluate":
        summary = _evaluate(args)
    else:
        summary = _pseudo_labels(args)
    print(json.dumps(summary, indent=2), file=sys.stdout)
    return summary


if __name__ == "__main__":  # pragma: no cover
    main()
