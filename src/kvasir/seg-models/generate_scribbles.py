"""Draw synthetic scribbles from the Kvasir-SEG polyp masks into data/kvasir/seg-models/scribbles/
(<mask file stem>.png: 0 = background, 1 = foreground, 255 = unlabelled) for scribble-supervised training.

Usage (from any folder; --help lists every option):
    python src/kvasir/seg-models/generate_scribbles.py                             # train split, seed 0
    python src/kvasir/seg-models/generate_scribbles.py --splits train val --seed 1
    python src/kvasir/seg-models/train.py --model resunetplusplus --supervision scribbles   # then train from them
"""
from patchrefinenet.cli.generate_scribbles import main

if __name__ == "__main__":
    main(__file__)
