"""``src/<ds>/seg-models/generate_rst.py``: patch-wise optimal-threshold pseudo-labels (RST, docs/authors-seg.md §S5.2).

From ``val_pred.npy`` / ``val_orig_gt.npy`` writes ``train_aux_gt_p_<P>.npy`` (PRN's training
targets) and from the test arrays ``test_aux_gt_p_<P>.npy``, each with the chosen threshold per
patch in ``*_aux_thresholds_p_<P>.npy``. ``--patch_size`` in pixels or ``--aux_model pN``
(N patches: p64 → 64-px patches at 512, p0 → the whole image); default: the P64 and P0 sizes.
"""
from __future__ import annotations

from typing import Sequence

from patchrefinenet.cli.common import cli_entry, setup_logging
from patchrefinenet.cli.seg_train import resolve_seg_script, seg_parser


@cli_entry
def main(script_file: str, argv: Sequence[str] | None = None) -> list[dict]:
    """Parse ``argv``, write the pseudo-labels and return one summary per (split, patch size)."""
    parser = seg_parser(script_file, "Make RST pseudo-labels: each patch of each base probability map binarised "
                                     "at the threshold (0.05..1.00) that maximises its IoU with the ground truth.")
    parser.add_argument("--patch_size", type=int, nargs="+", default=None, metavar="P",
                        help="patch sides in pixels at the PRN resolution (default: those of p64 and p0, "
                             "i.e. 64 and 512 at 512 px)")
    parser.add_argument("--aux_model", nargs="+", default=None, metavar="pN",
                        help="PRN variants whose pseudo-labels to make: p0, p4, p16, p64, ... (N = patches)")
    parser.add_argument("--splits", nargs="+", choices=("val", "test"), default=None,
                        help="default: val, plus test when its arrays exist")
    args = parser.parse_args(argv)
    setup_logging()
    run = resolve_seg_script(args, script_file)
    from patchrefinenet.seg.generate import generate_rst  # torch: after parsing, --help stays instant

    # pN is resolved on the maps' own side, exactly as refine-models/train.py resolves it
    summaries = generate_rst(run.spec, run.model, data_root=run.data_root, patch_sizes=args.patch_size,
                             aux_models=args.aux_model or (), splits=args.splits, progress=args.progress,
                             device=args.device)
    for s in summaries:
        print(f"{s['split']:>4} p={s['patch_size']:<4d} {s['n_images']} images: mean patch IoU "
              f"{s['mean_patch_iou']:.6f}, RST mean IoU {s['mean_image_iou']:.6f} -> {s['out_path']}")
    return summaries
