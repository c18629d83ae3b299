"""The one-command demo: synthetic data → base model → pseudo-labels → PRN → a results table and figures.

It drives the same command-line implementations users run on the real datasets (no separate demo
code path), on a small generated dataset in the real on-disk layout. Entry point: ``python demo.py``.
"""
