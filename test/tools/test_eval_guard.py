"""The eval JSON's `guard` entry: the harm guard's decisions and figures per mode."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tttkd_ros.core.adapt.engine import AdaptationEngine
from tttkd_ros.core.config import AdaptConfig, ModelConfig
from tttkd_ros.core.frame import Frame
from tttkd_ros.core.labels import CLASS_NAMES
from tttkd_ros.core.model.segmentation import build_model
from tttkd_ros.ros.bag import LabeledFrame
from tttkd_ros.tools.evaluation import run_mode

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def frames(count: int) -> list[LabeledFrame]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        xyz = rng.uniform((3.0, -6.0, -2.0), (25.0, 6.0, 2.0), size=(800, 3))
        points = np.c_[xyz, rng.uniform(0, 1, 800)].astype(np.float32)
        out.append(LabeledFrame(Frame(points), None))
    return out


def entry(**cfg) -> dict:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", voxel_size=0.2), "cpu")
    engine = AdaptationEngine(model, AdaptConfig(mode="ocl", budget_ms=1e6, **cfg))
    return run_mode(engine, frames(4), None, CLASS_NAMES, progress=False)


def test_guard_entry_counts_checks_and_resets_and_keeps_the_figures() -> None:
    guard = entry(guard_every=1, reset_every=2)["guard"]
    assert guard["checks"] == 4 and guard["failed_checks"] == 0
    assert guard["rollbacks"] == 0 and guard["source_resets"] == 0
    assert guard["periodic_resets"] == 1 and guard["cameras_untrusted"] == {}
    assert len(guard["drift_per_frame"]) == 4
    assert guard["drift_per_frame"][0] == 0.0  # the first frame's weights are the source's
    assert all(0.0 <= d <= 1.0 for d in guard["drift_per_frame"])
    assert guard["drift_mean"] == pytest.approx(np.mean(guard["drift_per_frame"]))
    assert guard["kl_mean"] >= 0.0 and guard["gain_mean"] is not None
    assert 0.0 <= guard["flip_mean"] <= 1.0
    assert 0.0 < guard["guard_ms"]["p50"] <= guard["guard_ms"]["p99"]


def test_guard_entry_without_the_guard_has_no_figures() -> None:
    guard = entry(guard_every=0)["guard"]
    assert guard["checks"] == 0 and guard["drift_per_frame"] == [None] * 4
    assert guard["drift_mean"] is None and guard["guard_ms"] == {"p50": None, "p99": None}
