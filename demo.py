"""One-command demo of PatchRefineNet on embedded synthetic data (no downloads).

    python demo.py                 # road scenes: base model → pseudo-labels → PRN p0/p64 → table + figures
    python demo.py --fast          # a tiny configuration (about a minute)
    python demo.py --help          # every stage can also be run on its own

Results land in runs/demo/ (table: runs/demo/results.md, figures: runs/demo/*.png).
"""
from patchrefinenet.demo.pipeline import main

main()
