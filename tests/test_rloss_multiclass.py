"""rloss with K = 3 classes, as in rloss's own use: scribbles + DenseCRF loss train a tiny model."""
from __future__ import annotations

import torch

from patchrefinenet.rloss.losses import DenseCRFLoss, RegularizedLoss


def _scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 1×3×12×24 image of three colour bands, its 3-class truth, and scribbles on 2 pixels per class."""
    truth = torch.zeros(1, 12, 24, dtype=torch.long)
    truth[:, :, 8:16], truth[:, :, 16:] = 1, 2
    colours = torch.tensor([[200.0, 30, 30], [30, 200, 30], [30, 30, 200]])
    image = colours[truth].permute(0, 3, 1, 2).contiguous()  # (1, 3, 12, 24) in [0, 255]
    scribble = torch.full_like(truth, 255)
    for k, x in enumerate((3, 11, 19)):
        scribble[:, 5:7, x] = k
    return image, truth, scribble


def _train(weight: float, steps: int = 150) -> tuple[float, list[float]]:
    """Free per-pixel logits (the smallest 'model') trained from the scribbles; returns
    (accuracy on the unlabelled pixels, DenseCRF loss values along the way)."""
    image, truth, scribble = _scene()
    logits = torch.zeros(1, 3, 12, 24, dtype=torch.float64, requires_grad=True)
    objective = RegularizedLoss("densecrf", weight=weight, sigma_rgb=15.0, sigma_xy=6.0, scale=1.0, backend="exact")
    crf = DenseCRFLoss(sigma_rgb=15.0, sigma_xy=6.0, scale=1.0, backend="exact")
    opt = torch.optim.Adam([logits], lr=0.1)
    values = []
    for _ in range(steps):
        prob = logits.softmax(1)
        loss = objective(prob, scribble, image.double())["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            values.append(crf(logits.softmax(1), image.double()).item())
    unlabelled = scribble == 255
    accuracy = (logits.argmax(1) == truth)[unlabelled].double().mean().item()
    return accuracy, values


def test_densecrf_loss_spreads_three_class_scribbles_along_colour_regions():
    with_crf, crf_values = _train(weight=1.0)
    pce_only, _ = _train(weight=0.0)
    # pCE alone only moves the 6 scribbled pixels: the rest stay at the uniform start (argmax = class 0)
    assert pce_only < 0.4
    # with the regulariser, labels follow the colour bands
    assert with_crf > 0.95
    # and the DenseCRF energy it minimises goes down
    assert crf_values[-1] < 0.5 * crf_values[0]
