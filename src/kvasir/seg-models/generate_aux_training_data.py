"""Write the ResUNet++ probability maps and the ground truth of the val and test splits
for PatchRefineNet, into data/kvasir/refine-models/resunetplusplus/.

Usage (from any folder; --help lists every option):
    python src/kvasir/seg-models/generate_aux_training_data.py --model resunetplusplus
    python src/kvasir/seg-models/generate_aux_training_data.py --model resunetplusplus --checkpoint_path my_weights.th --splits val
"""
from patchrefinenet.cli.generate_aux import main

if __name__ == "__main__":
    main(__file__)
