"""Score the PFANet base model on the test split: pooled IoU at 0.5 (the authors'
"mIoU"), per-image mean IoU, Dice, precision, recall, MAE and the oracle mean IoU.

Usage (from any folder; --help lists every option):
    python src/DUTS/seg-models/calculate_base_iou.py --model pfanet
"""
from patchrefinenet.cli.calculate_base_iou import main

if __name__ == "__main__":
    main(__file__)
