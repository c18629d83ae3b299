"""Embedded demo data: small synthetic datasets in the real on-disk layouts of the authors' data.

Three generators mimic the three datasets — DeepGlobe road tiles (``"roads"``, the default),
Kvasir-SEG polyp frames (``"polyps"``) and DUTS salient-object photos (``"saliency"``). Each scene
is learnable by a small CNN in minutes yet hard *region by region*: haze, shadows, illumination
ramps, defocus, occluders and look-alike textures vary smoothly across an image, so a trained
base model is miscalibrated differently in different patches — the defect PatchRefineNet corrects.

- :func:`write_demo_dataset` / :func:`is_complete` — write (idempotently) and check a dataset;
- :func:`render_scene` — one sample in memory (deterministic in kind, seed, index and size);
- :func:`biased_probability_maps` — fake base-model output with a known smooth regional bias;
- :func:`preview_montage` — a picture of a few samples.

Command line: ``python -m data_utils.synthetic --kind roads --root runs/demo/data``.
"""
from data_utils.synthetic.bias import biased_probability_maps, signed_distance
from data_utils.synthetic.fields import Scene
from data_utils.synthetic.preview import preview_montage
from data_utils.synthetic.writer import (DATASETS, GENERATOR_VERSION, MANIFEST, RENDERERS, DemoSample, dataset_dir,
                                         is_complete, read_manifest, render_scene, sample_layout, write_demo_dataset)

KINDS = tuple(RENDERERS)

__all__ = ["KINDS", "DATASETS", "GENERATOR_VERSION", "MANIFEST", "Scene", "DemoSample", "write_demo_dataset",
           "is_complete", "read_manifest", "dataset_dir", "sample_layout", "render_scene",
           "biased_probability_maps", "signed_distance", "preview_montage"]
