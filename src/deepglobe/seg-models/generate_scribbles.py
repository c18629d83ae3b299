"""Draw synthetic scribbles from the DeepGlobe road masks into data/deepglobe/seg-models/scribbles/
(<mask file stem>.png: 0 = background, 1 = foreground, 255 = unlabelled) for scribble-supervised training.

Usage (from any folder; --help lists every option):
    python src/deepglobe/seg-models/generate_scribbles.py                             # train split, seed 0
    python src/deepglobe/seg-models/generate_scribbles.py --splits train val --seed 1
    python src/deepglobe/seg-models/train.py --model dlinknet --supervision scribbles   # then train from them
"""
from patchrefinenet.cli.generate_scribbles import main

if __name__ == "__main__":
    main(__file__)
