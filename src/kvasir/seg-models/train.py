"""Train the ResUNet++ base model for Kvasir-SEG polyp segmentation with the authors' recipe
(loss, optimiser, epochs and plateau rule from src/kvasir/dataset.toml).

Usage (from any folder; --help lists every option):
    python src/kvasir/seg-models/train.py --model resunetplusplus
    python src/kvasir/seg-models/train.py --model resunetplusplus --resume True                            # continue an interrupted run
    python src/kvasir/seg-models/train.py --model resunetplusplus --checkpoint True                        # start from resunetplusplus_weights.th
    python src/kvasir/seg-models/train.py --model resunetplusplus --model_width 8 --epochs 5 --device cpu  # narrow model, a CPU try-out
"""
from patchrefinenet.cli.seg_train import main

if __name__ == "__main__":
    main(__file__)
