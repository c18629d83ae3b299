"""Refine the PFANet test probability maps (DUTS saliency) with a trained PatchRefineNet and log
"Total mIoU after Refinement" to src/DUTS/refine-models/logs/<aux>/<aux>_predict_log.log.

Usage (from any folder; --help lists every option):
    python src/DUTS/refine-models/predict.py --base_model pfanet --aux_model p64 --checkpoint True
    python src/DUTS/refine-models/predict.py --base_model pfanet --aux_model p64 --checkpoint True --batch_stats True
"""
from patchrefinenet.cli.refine_predict import main

if __name__ == "__main__":
    main(__file__)
