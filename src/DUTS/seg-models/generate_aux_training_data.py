"""Write the PFANet probability maps and the ground truth of the val and test splits
for PatchRefineNet, into data/DUTS/refine-models/pfanet/.

Usage (from any folder; --help lists every option):
    python src/DUTS/seg-models/generate_aux_training_data.py --model pfanet
    python src/DUTS/seg-models/generate_aux_training_data.py --model pfanet --checkpoint_path my_weights.th --splits val
"""
from patchrefinenet.cli.generate_aux import main

if __name__ == "__main__":
    main(__file__)
