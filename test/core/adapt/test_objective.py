"""The per-mode objective in tttkd_ros.core.adapt.objective."""
from __future__ import annotations

import pytest
import torch

from tttkd_ros.core.adapt.losses import kd_loss
from tttkd_ros.core.adapt.objective import KdTargets, adaptation_loss
from tttkd_ros.core.config import AdaptConfig


@pytest.mark.parametrize("center", [False, True])
def test_kd_part_measures_as_the_model_was_trained(center: bool) -> None:
    gen = torch.Generator().manual_seed(4)
    feat2d = torch.randn(10, 6, generator=gen) + 20.0  # a large common direction
    index = torch.tensor([0, 2, 3, 7, 9])
    targets = KdTargets(index, torch.randn(5, 6, generator=gen) + 20.0, (5,))
    cfg = AdaptConfig(mode="kd")
    total, parts = adaptation_loss(cfg, torch.zeros(10, 3), feat2d, 10, targets,
                                   kd_center=center)
    expected = kd_loss(feat2d[index], targets.features, center=center)
    assert parts["kd"] == pytest.approx(expected.item())
    assert total.item() == pytest.approx(cfg.w_kd * expected.item())
    other = kd_loss(feat2d[index], targets.features, center=not center)
    assert abs(parts["kd"] - other.item()) > 0.1  # the flag changes what is measured
