"""``src/<ds>/seg-models/generate_aux_training_data.py``: write the base model's probability maps
and ground truth for PatchRefineNet (docs/authors-seg.md §S5.1).

val → ``val_pred.npy`` + ``val_orig_gt.npy`` (PRN's training set), test → ``test_input.npy`` +
``test_orig_gt.npy``, all N×P×P×1 float32 in ``data/<ds>/refine-models/<model>/``; deterministic
(eval mode, no augmentation) and streamed to disk.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from patchrefinenet.cli.common import cli_entry, setup_logging, str2bool
from patchrefinenet.cli.seg_train import resolve_seg_script, seg_parser


@cli_entry
def main(script_file: str, argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv``, run the base model on the chosen splits and return the written paths."""
    parser = seg_parser(script_file, "Run the trained base model on the val and test splits and save its "
                                     "probability maps and the ground truth at PRN's resolution.")
    parser.add_argument("--checkpoint_path", type=Path, default=None,
                        help="base weights (default: checkpoints/<model>/<model>_weights.th, else the released "
                             "file named in the dataset config)")
    parser.add_argument("--splits", nargs="+", choices=("val", "test"), default=["val", "test"],
                        help="splits to predict (default: val test)")
    parser.add_argument("--batch_size", type=int, default=4, help="images per forward pass (default: 4)")
    parser.add_argument("--num_workers", type=int, default=0, help="data-loading worker processes (default: 0)")
    parser.add_argument("--compile", type=str2bool, nargs="?", const=True, default=False,
                        help="torch.compile the model (opt-in, default False; the first batches compile)")
    args = parser.parse_args(argv)
    setup_logging()
    run = resolve_seg_script(args, script_file)
    from patchrefinenet.seg.generate import generate_aux_arrays  # torch: after parsing, --help stays instant
    written = generate_aux_arrays(run.spec, run.model, data_root=run.data_root, checkpoint=args.checkpoint_path,
                                  output_root=run.output_root, device=args.device, splits=args.splits,
                                  batch_size=args.batch_size, num_workers=args.num_workers, progress=args.progress,
                                  compile=args.compile)
    print(json.dumps(written, indent=2))
    return written
