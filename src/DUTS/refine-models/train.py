"""Train PatchRefineNet on the PFANet probability maps of the DUTS saliency validation split
(data/DUTS/refine-models/pfanet/val_pred.npy, val_orig_gt.npy; pseudo-labels made on demand).

Usage (from any folder; --help lists every option):
    python src/DUTS/refine-models/train.py --base_model pfanet --aux_model p64
    python src/DUTS/refine-models/train.py --base_model pfanet --aux_model p64 --resume True     # after Ctrl-C
    torchrun --standalone --nproc_per_node=2 src/DUTS/refine-models/train.py --aux_model p64  # several GPUs
"""
from patchrefinenet.cli.refine_train import main

if __name__ == "__main__":
    main(__file__)
