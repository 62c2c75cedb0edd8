"""Weight anchoring: what keeps the adapted weights, or what is served, near the source.

- `EmaWeights`: the served weights are an exponential moving average of the adapted ones
  (CoTTA's mean teacher, EATA's slow weights): one noisy step moves the predictions by
  (1 - momentum) of its size.
- `anchor_gradient`: L2-SP (Li et al., 2018) with the source as the starting point: the loss
  gains weight * ||theta - theta_source||^2, added as its gradient after backward (no graph
  is built for it, and it is no part of the objective the spike detector and the harm guard
  compare).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from ..model.segmentation import SegModel
from .restore import copy_into


class EmaWeights:
    """A frozen copy of the model whose adapted parameters are the moving average
    ema = momentum * ema + (1 - momentum) * theta, updated after every applied step. Under the
    sync schedule it predicts the frames; under async its values go into the serving copy."""

    def __init__(self, model: SegModel, params: Sequence[torch.Tensor], momentum: float) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
            p.grad = None  # a gradient the original held is not the copy's
        index = {id(p): i for i, p in enumerate(model.parameters())}
        mine = list(self.model.parameters())
        self.values = [mine[index[id(p)]] for p in params]  # the average of each of params
        self.momentum = momentum

    @torch.no_grad()
    def update(self, params: Sequence[torch.Tensor]) -> None:
        for average, p in zip(self.values, params):
            average.lerp_(p, 1.0 - self.momentum)

    def reset(self, params: Sequence[torch.Tensor]) -> None:
        """The average starts over from `params` (after a reset or a rollback)."""
        copy_into(self.values, params)


@torch.no_grad()
def anchor_gradient(params: Sequence[torch.Tensor], source: Sequence[torch.Tensor],
                    weight: float) -> None:
    """Add the gradient of weight * sum ||p - s||^2, 2 * weight * (p - s), to each p.grad."""
    for p, s in zip(params, source):
        pull = (p - s).mul_(2.0 * weight)
        if p.grad is None:
            p.grad = pull
        else:
            p.grad.add_(pull)
