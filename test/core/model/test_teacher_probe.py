"""The teacher probe (core/model/teacher_probe.py): fitted on labelled teacher features, it
labels the features it is sure of, and travels in the checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tttkd_ros.core.config import ModelConfig
from tttkd_ros.core.model.checkpoint import load_checkpoint, save_checkpoint
from tttkd_ros.core.model.segmentation import build_model
from tttkd_ros.core.model.teacher_probe import EXTRA_KEY, TeacherProbe, fit_probe


def clusters(n: int, classes: int = 4, dim: int = 16, spread: float = 0.5, draw: int = 0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features around one centre per class (the same centres for every `draw`), on a large
    common offset and scale (as the teacher's have), and their classes."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)) * 3
    gen = torch.Generator().manual_seed(100 + draw)
    labels = torch.randint(classes, (n,), generator=gen)
    noise = torch.randn(n, dim, generator=gen) * spread * 3
    return 50.0 + 10.0 * (centres[labels] + noise), labels


def test_a_fitted_probe_labels_unseen_features_of_separable_classes() -> None:
    features, labels = clusters(4000)
    probe = fit_probe(features, labels, num_classes=6, steps=200)
    assert probe.accuracy > 0.95
    test_features, test_labels = clusters(1000, draw=1)  # other points of the same classes
    predicted = probe.logits(test_features).argmax(1)
    assert (predicted == test_labels).float().mean() > 0.95
    # the two classes no training point had are never predicted
    assert not (predicted >= 4).any()


def test_only_features_at_or_above_the_confidence_get_a_label() -> None:
    features, labels = clusters(2000, spread=1.2)  # overlapping classes: some are unsure
    probe = fit_probe(features, labels, num_classes=4, steps=200)
    prob = torch.softmax(probe.logits(features), 1).max(1).values
    sure = probe.sure_labels(features, 0.9)
    assert torch.equal(sure >= 0, prob >= 0.9)
    assert 0 < int((sure >= 0).sum()) < len(features)
    assert torch.equal(sure[sure >= 0], probe.logits(features).argmax(1)[sure >= 0])
    # the sure labels are more often right than all labels
    right_all = (probe.logits(features).argmax(1) == labels).float().mean()
    right_sure = (sure[sure >= 0] == labels[sure >= 0]).float().mean()
    assert right_sure > right_all


def test_no_visible_point_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no labelled point is visible"):
        fit_probe(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long), 3)


def test_the_probe_travels_in_the_checkpoint(tmp_path) -> None:
    features, labels = clusters(500, classes=3, dim=384)
    probe = fit_probe(features, labels, num_classes=19, steps=20)
    cfg = ModelConfig(backbone="tiny")
    path = tmp_path / "model.pt"
    save_checkpoint(path, build_model(cfg, "cpu"), cfg, class_names=[f"c{i}" for i in range(19)],
                    palette=np.zeros((19, 3), np.uint8), teacher_name="vit_small_patch14_dinov2",
                    extra={EXTRA_KEY: probe.to_extra()})
    loaded = TeacherProbe.from_extra(load_checkpoint(path, "cpu").extra)
    assert loaded is not None and loaded.accuracy == pytest.approx(probe.accuracy)
    assert torch.equal(loaded.logits(features), probe.logits(features))
    assert TeacherProbe.from_extra({}) is None  # a checkpoint from before probes


def test_fitting_leaves_the_global_random_state_alone() -> None:
    """`tttkd train` fits the probe before its first epoch: the epochs must draw the same
    numbers as without it."""
    features, labels = clusters(300)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    fit_probe(features, labels, num_classes=4, steps=5)
    assert torch.equal(torch.rand(3), expected)
