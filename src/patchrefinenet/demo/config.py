"""What a demo run is made of: its sizes and budgets (:class:`DemoConfig`) and where it writes (:class:`DemoPaths`).

Shared by the pipeline, the report and the weakly-supervised branch, so none of them imports another.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from data_utils import layout
from data_utils.spec import DatasetSpec, dataset_spec_path, load_dataset_spec

SCENARIOS = ("shift", "control")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and budgets of one demo run (primitives only; saved next to the results).

    The base model trains on ``n_train`` source scenes (early stopping on ``n_val`` source scenes).
    Two PRNs are then fitted, each on ``n_val`` labelled maps, and tested on ``n_test`` maps:
    *shift* — deployment scenes seen through ``shift`` (new scenes, another seed), the situation
    PRN exists for; *control* — more scenes of the training distribution (the base model's own
    val/test splits, the authors' setting).
    """

    kind: str = "polyps"
    n_train: int = 160
    n_val: int = 80                # each PRN's labelled set (the source val split also stops the base model)
    n_test: int = 60
    image_size: int = 256          # generated images
    input_size: int = 128          # network input and PRN map side
    shift: str = "haze"
    base_model: str = "dlinknet"
    base_width: int = 8            # ResUNet++ only: filters (w, 2w, 4w, 8w, 16w); authors: 32
    base_epochs: int = 10
    base_batch_size: int = 4
    base_lr: float = 1e-3
    patch_size: int = 32           # PRN patch side in pixels (4×4 grid on 128-px maps)
    prn_width: int = 8
    prn_epochs: int = 20
    prn_lr: float = 8e-4
    prn_batch_size: int = 4        # maps per PRN step; the authors: 1 (docs/refiner.md, "Batch size")
    prn_residual: bool = True      # PRN heads correct the base logit (see PRNConfig.residual)
    select: float = 0.2            # share of each PRN's labelled maps held out for selection and the guard
    margin: float = 0.005
    # --weak (rloss): the regularised phase's epochs, regularisers, weight grid (chosen on val) and kernel
    weak_epochs: int = 2
    weak_losses: tuple[str, ...] = ("densecrf", "ncut")
    weak_weights: tuple[float, ...] = (0.3, 1.0, 3.0)
    weak_sigma_xy: float | None = None     # pixels of the 128-px input; None: rloss's 100 px at 512, scaled
    weak_sigma_rgb: float = 15.0
    weak_balanced_pce: bool = True         # per-class pCE means (docs/rloss.md §L6.1); rloss: plain pCE
    weak_prn_epochs: int = 10              # the refiner on the best weak base (the branch's 15-minute budget)
    seed: int = 0
    device: str = "auto"

    @classmethod
    def fast(cls, **overrides) -> "DemoConfig":
        """A tiny configuration that runs end to end in about a minute (used by the tests)."""
        small = dict(n_train=24, n_val=12, n_test=8, image_size=64, input_size=64, base_model="resunetplusplus",
                     base_width=4, base_epochs=2, base_batch_size=4, patch_size=16, prn_width=4, prn_epochs=2,
                     weak_epochs=1, weak_weights=(1.0,), weak_prn_epochs=2)
        return cls(**{**small, **overrides})

    @classmethod
    def full(cls, **overrides) -> "DemoConfig":
        """The authors' geometry — 512-px maps, 64-px patches (p64), PRN width 32 — and budgets for a GPU."""
        big = dict(n_train=400, n_val=100, n_test=100, image_size=512, input_size=512, base_epochs=40,
                   patch_size=64, prn_width=32, prn_epochs=60)
        return cls(**{**big, **overrides})


@dataclass(frozen=True)
class DemoPaths:
    """Where each stage reads and writes, under the demo root."""

    root: Path
    dataset: str

    @property
    def data_root(self) -> Path:
        """The training distribution, in the authors' layout (train / val / test)."""
        return self.root / "data"

    @property
    def deploy_root(self) -> Path:
        """The deployment distribution, in the same layout (its val and test splits are used)."""
        return self.root / "deploy-data"

    @property
    def config(self) -> Path:
        return self.root / f"{self.dataset}.toml"

    @property
    def seg_root(self) -> Path:
        return self.root / layout.SEG_MODELS

    def arrays(self, model: str, scenario: str = "control") -> Path:
        """``<data root>/<ds>/refine-models/<model>``: the base model's probability maps of a scenario."""
        return layout.refine_arrays_dir(self.deploy_root if scenario == "shift" else self.data_root, self.dataset, model)

    def refiner(self, scenario: str) -> Path:
        return self.root / f"prn-{scenario}.pt"


def demo_spec(cfg: DemoConfig, dataset: str) -> DatasetSpec:
    """The real dataset config with the demo's reduced sizes and budgets: same preprocessing, loss and
    plateau rule as the authors' recipe, smaller images, fewer epochs and a narrow registry model."""
    spec = load_dataset_spec(dataset_spec_path(dataset))
    train = dataclasses.replace(spec.train, batch_size=cfg.base_batch_size, lr=cfg.base_lr,
                                max_epochs=cfg.base_epochs)
    return dataclasses.replace(spec, base_model=cfg.base_model, input_size=cfg.input_size,
                               prn_size=cfg.input_size, train=train)


def prn_fit_options(cfg: DemoConfig) -> dict:
    """The :meth:`patchrefinenet.Refiner.fit` options every refiner of the demo shares (all but ``epochs``)."""
    return dict(patch_size=cfg.patch_size, select=cfg.select, margin=cfg.margin, width=cfg.prn_width,
                lr=cfg.prn_lr, batch_size=cfg.prn_batch_size, residual=cfg.prn_residual, seed=cfg.seed,
                device=cfg.device)


def base_model_kwargs(cfg: DemoConfig) -> dict | None:
    """Constructor arguments of the demo's base model (a narrow ResUNet++; the others as registered)."""
    if cfg.base_model == "resunetplusplus":
        w = cfg.base_width
        return {"filters": [w, 2 * w, 4 * w, 8 * w, 16 * w]}
    return None
