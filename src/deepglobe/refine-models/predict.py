"""Refine the D-LinkNet34 test probability maps (DeepGlobe road) with a trained PatchRefineNet and log
"Total mIoU after Refinement" to src/deepglobe/refine-models/logs/<aux>/<aux>_predict_log.log.

Usage (from any folder; --help lists every option):
    python src/deepglobe/refine-models/predict.py --base_model dlinknet --aux_model p64 --checkpoint True
    python src/deepglobe/refine-models/predict.py --base_model dlinknet --aux_model p64 --checkpoint True --batch_stats True
"""
from patchrefinenet.cli.refine_predict import main

if __name__ == "__main__":
    main(__file__)
