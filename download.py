"""Download the authors' released weights (and, with --data, the datasets) from Google Drive.

Usage (from any folder):
    python download.py                              # weights of deepglobe, DUTS and kvasir
    python download.py --datasets kvasir --data     # kvasir weights + data.zip unpacked into data/
    python download.py --dest /somewhere/else       # install under another root

Weights land in src/<dataset>/{seg,refine}-models/checkpoints/released/ (training writes
checkpoints/<name>/, so neither replaces the other). Files already in place are kept unless
--overwrite True. Offline, it exits with the manual Drive links.
"""
from data_utils.download import main

if __name__ == "__main__":
    main()
