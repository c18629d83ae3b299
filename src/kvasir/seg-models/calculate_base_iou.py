"""Score the ResUNet++ base model on the test split: pooled IoU at 0.5 (the authors'
"mIoU"), per-image mean IoU, Dice, precision, recall, MAE and the oracle mean IoU.

Usage (from any folder; --help lists every option):
    python src/kvasir/seg-models/calculate_base_iou.py --model resunetplusplus
"""
from patchrefinenet.cli.calculate_base_iou import main

if __name__ == "__main__":
    main(__file__)
