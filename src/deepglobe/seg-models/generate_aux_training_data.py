"""Write the D-LinkNet34 probability maps and the ground truth of the val and test splits
for PatchRefineNet, into data/deepglobe/refine-models/dlinknet/.

Usage (from any folder; --help lists every option):
    python src/deepglobe/seg-models/generate_aux_training_data.py --model dlinknet
    python src/deepglobe/seg-models/generate_aux_training_data.py --model dlinknet --checkpoint_path my_weights.th --splits val
"""
from patchrefinenet.cli.generate_aux import main

if __name__ == "__main__":
    main(__file__)
