"""Make the RST pseudo-labels train_aux_gt_p_<P>.npy (from val) and test_aux_gt_p_<P>.npy
(from test) out of the PFANet probability maps.

Usage (from any folder; --help lists every option):
    python src/DUTS/seg-models/generate_rst.py --model pfanet                     # p64 and p0 patch sizes
    python src/DUTS/seg-models/generate_rst.py --model pfanet --aux_model p64 p4
    python src/DUTS/seg-models/generate_rst.py --model pfanet --patch_size 64
"""
from patchrefinenet.cli.generate_rst import main

if __name__ == "__main__":
    main(__file__)
