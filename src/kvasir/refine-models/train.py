"""Train PatchRefineNet on the ResUNet++ probability maps of the Kvasir-SEG polyp validation split
(data/kvasir/refine-models/resunetplusplus/val_pred.npy, val_orig_gt.npy; pseudo-labels made on demand).

Usage (from any folder; --help lists every option):
    python src/kvasir/refine-models/train.py --base_model resunetplusplus --aux_model p64
    python src/kvasir/refine-models/train.py --base_model resunetplusplus --aux_model p64 --resume True     # after Ctrl-C
    torchrun --standalone --nproc_per_node=2 src/kvasir/refine-models/train.py --aux_model p64  # several GPUs
"""
from patchrefinenet.cli.refine_train import main

if __name__ == "__main__":
    main(__file__)
