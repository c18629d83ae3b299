"""Make the RST pseudo-labels train_aux_gt_p_<P>.npy (from val) and test_aux_gt_p_<P>.npy
(from test) out of the ResUNet++ probability maps.

Usage (from any folder; --help lists every option):
    python src/kvasir/seg-models/generate_rst.py --model resunetplusplus                     # p64 and p0 patch sizes
    python src/kvasir/seg-models/generate_rst.py --model resunetplusplus --aux_model p64 p4
    python src/kvasir/seg-models/generate_rst.py --model resunetplusplus --patch_size 64
"""
from patchrefinenet.cli.generate_rst import main

if __name__ == "__main__":
    main(__file__)
