"""Train the PFANet base model for DUTS salient-object detection with the authors' recipe
(loss, optimiser, epochs and plateau rule from src/DUTS/dataset.toml).

Usage (from any folder; --help lists every option):
    python src/DUTS/seg-models/train.py --model pfanet
    python src/DUTS/seg-models/train.py --model pfanet --resume True               # continue an interrupted run
    python src/DUTS/seg-models/train.py --model pfanet --checkpoint True           # start from pfanet_weights.th
    python src/DUTS/seg-models/train.py --model pfanet --no-pretrained --epochs 5  # random init, no ImageNet download
"""
from patchrefinenet.cli.seg_train import main

if __name__ == "__main__":
    main(__file__)
