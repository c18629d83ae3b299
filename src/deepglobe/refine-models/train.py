"""Train PatchRefineNet on the D-LinkNet34 probability maps of the DeepGlobe road validation split
(data/deepglobe/refine-models/dlinknet/val_pred.npy, val_orig_gt.npy; pseudo-labels made on demand).

Usage (from any folder; --help lists every option):
    python src/deepglobe/refine-models/train.py --base_model dlinknet --aux_model p64
    python src/deepglobe/refine-models/train.py --base_model dlinknet --aux_model p64 --resume True     # after Ctrl-C
    torchrun --standalone --nproc_per_node=2 src/deepglobe/refine-models/train.py --aux_model p64  # several GPUs
"""
from patchrefinenet.cli.refine_train import main

if __name__ == "__main__":
    main(__file__)
