"""Refine the ResUNet++ test probability maps (Kvasir-SEG polyp) with a trained PatchRefineNet and log
"Total mIoU after Refinement" to src/kvasir/refine-models/logs/<aux>/<aux>_predict_log.log.

Usage (from any folder; --help lists every option):
    python src/kvasir/refine-models/predict.py --base_model resunetplusplus --aux_model p64 --checkpoint True
    python src/kvasir/refine-models/predict.py --base_model resunetplusplus --aux_model p64 --checkpoint True --batch_stats True
"""
from patchrefinenet.cli.refine_predict import main

if __name__ == "__main__":
    main(__file__)
