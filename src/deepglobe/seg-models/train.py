"""Train the D-LinkNet34 base model for DeepGlobe road extraction with the authors' recipe
(loss, optimiser, epochs and plateau rule from src/deepglobe/dataset.toml).

Usage (from any folder; --help lists every option):
    python src/deepglobe/seg-models/train.py --model dlinknet
    python src/deepglobe/seg-models/train.py --model dlinknet --resume True               # continue an interrupted run
    python src/deepglobe/seg-models/train.py --model dlinknet --checkpoint True           # start from dlinknet_weights.th
    python src/deepglobe/seg-models/train.py --model dlinknet --no-pretrained --epochs 5  # random init, no ImageNet download
"""
from patchrefinenet.cli.seg_train import main

if __name__ == "__main__":
    main(__file__)
