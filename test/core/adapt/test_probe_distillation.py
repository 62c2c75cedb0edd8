"""Label-level distillation in the engine: with w_probe, the steps pull the visible points
towards the teacher probe's sure labels (core/model/teacher_probe.py)."""
from __future__ import annotations

import torch
from test_engine_safety import VectorTeacher, engine, frame

from tttkd_ros.core.model.teacher_probe import TeacherProbe

TARGET_CLASS = 7


def sure_of(cls: int, dim: int = 384, classes: int = 19) -> TeacherProbe:
    """A probe that gives every feature class `cls` with a probability near 1."""
    bias = torch.zeros(classes)
    bias[cls] = 20.0
    return TeacherProbe(torch.zeros(classes, dim), bias, torch.zeros(dim), torch.ones(dim))


def share_of(e, cls: int, seed: int = 40) -> float:
    pred = e.process(frame(seed))
    return float((pred.labels == cls).mean())


def probe_engine(w_probe: float, probe: TeacherProbe | None):
    e = engine(VectorTeacher(), mode="kd", lr=0.05, w_probe=w_probe, anchor_weight=0.0,
               spike_factor=0.0, collapse_jump=0.0, guard_every=0)
    e.probe = probe
    return e


def test_the_probe_labels_pull_the_visible_points_and_are_reported() -> None:
    plain = probe_engine(0.0, sure_of(TARGET_CLASS))
    probed = probe_engine(1.0, sure_of(TARGET_CLASS))
    before = share_of(plain, TARGET_CLASS)
    for seed in range(6):
        assert "probe" not in plain.process(frame(seed)).stats.losses
        assert probed.process(frame(seed)).stats.losses["probe"] > 0
    assert share_of(probed, TARGET_CLASS) > max(0.5, before + 0.3)
    assert share_of(plain, TARGET_CLASS) < 0.5


def test_an_unsure_probe_teaches_nothing() -> None:
    unsure = sure_of(TARGET_CLASS)
    unsure.bias.zero_()  # a flat softmax: no class reaches probe_confidence
    e = probe_engine(1.0, unsure)
    losses = e.process(frame(0)).stats.losses
    assert losses["probe"] == 0.0
