"""The per-mode objective in tttkd_ros.core.adapt.objective."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

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


def test_the_probe_term_is_cross_entropy_towards_the_sure_labels_in_both_views() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0],
                           [3.0, 0.0], [1.0, 0.0], [0.0, 2.0]])  # 2 views x 3 points
    # points 0 and 2 visible and sure (classes 1 and 0), point 1 visible and unsure
    targets = KdTargets(torch.tensor([0, 1, 2]), torch.zeros(3, 4), (3,),
                        labels=torch.tensor([1, -1, 0]))
    cfg = AdaptConfig(mode="kd", w_kd=0.0, w_probe=2.0)
    total, parts = adaptation_loss(cfg, logits, torch.zeros(6, 4), 3, targets)
    expected = F.cross_entropy(logits[[0, 2, 3, 5]], torch.tensor([1, 0, 1, 0]))
    assert parts["probe"] == pytest.approx(float(expected))
    assert float(total) == pytest.approx(2.0 * float(expected))
    # off, or with no probe labels, the term is absent
    assert "probe" not in adaptation_loss(replace(cfg, w_probe=0.0), logits,
                                          torch.zeros(6, 4), 3, targets)[1]
    assert "probe" not in adaptation_loss(cfg, logits, torch.zeros(6, 4), 3,
                                          replace(targets, labels=None))[1]
    # OCL alone distils nothing from the teacher, its probe included
    assert "probe" not in adaptation_loss(replace(cfg, mode="ocl"), logits,
                                          torch.zeros(6, 4), 3, targets)[1]


def test_dropping_a_camera_keeps_each_row_with_its_probe_label() -> None:
    targets = KdTargets(torch.tensor([4, 5, 6, 7, 8]), torch.arange(5.0)[:, None], (2, 3),
                        labels=torch.tensor([1, -1, 2, 3, -1]))
    kept = targets.only([False, True])
    assert kept.point_index.tolist() == [6, 7, 8]
    assert kept.labels.tolist() == [2, 3, -1] and kept.counts == (0, 3)
