"""The engine on a GPU: streams, page-locked copies and the single copy back must give the
predictions the CPU path gives. Runs only where torch sees a CUDA device (the GPU machine);
the same behaviour is tested on CPU in test_engine.py and test_schedule.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_engine import IMAGE_HW, street_frame

from tttkd_ros.core.adapt.engine import AdaptationEngine
from tttkd_ros.core.config import AdaptConfig, ModelConfig, TeacherConfig
from tttkd_ros.core.model.segmentation import build_model
from tttkd_ros.core.model.teacher import DinoTeacher

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


def cuda_engine(**cfg) -> AdaptationEngine:
    """Test-time normalisation off unless `cfg` sets it: these tests compare predictions of
    adapted and non-adapting engines (as test_engine_safety.engine does)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", voxel_size=0.2), "cuda")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        teacher = DinoTeacher(TeacherConfig(image_height=IMAGE_HW[0]), "cuda")
    cfg = {"budget_ms": 1e6, "target_norm_levels": 0, **cfg}
    return AdaptationEngine(model, AdaptConfig(**cfg), teacher, "cuda")


@pytest.mark.parametrize("schedule", ["sync", "async"])
def test_zero_steps_gives_the_labels_of_mode_none(schedule: str) -> None:
    frame = street_frame()
    zero = cuda_engine(mode="kd+ocl", max_steps=0, schedule=schedule).process(frame)
    none = cuda_engine(mode="none").process(frame)
    np.testing.assert_array_equal(zero.labels, none.labels)
    np.testing.assert_array_equal(zero.confidence, none.confidence)
    assert zero.masks["front"].shape == IMAGE_HW


def test_sync_predicts_with_the_weights_its_adaptation_stream_wrote() -> None:
    engine = cuda_engine(mode="kd+ocl", max_steps=3, lr=0.1)
    frame = street_frame()
    source = [p.detach().clone() for p in engine.model.parameters()]
    pred = engine.process(frame)
    assert pred.stats.steps == 3 and pred.stats.teacher_ms > 0 and pred.stats.adapt_ms > 0
    assert any(not torch.equal(p, s) for p, s in zip(engine.model.parameters(), source))
    engine.enabled = False  # predict again with the same, now adapted, weights
    again = engine.process(frame)
    np.testing.assert_array_equal(pred.labels, again.labels)


def test_async_serves_the_adapted_weights_from_the_next_frame() -> None:
    engine = cuda_engine(mode="kd+ocl", max_steps=2, lr=0.1, schedule="async")
    frame = street_frame()
    engine.process(frame)
    assert engine.background is not None
    engine.background.settle()
    adapted = [p.detach().clone() for p in engine.model.parameters()]
    engine.enabled = False
    engine.process(frame)  # nothing more in flight: serving == the engine's weights
    for served, want in zip(engine.background.serving.parameters(), adapted):
        assert torch.equal(served, want)


@pytest.mark.parametrize("schedule", ["sync", "async"])
def test_test_time_normalisation_keeps_its_statistics_on_the_gpu(schedule: str) -> None:
    engine = cuda_engine(mode="kd+ocl", max_steps=1, schedule=schedule, target_norm_levels=3,
                         target_norm_check=True)
    for seed in range(3):
        pred = engine.process(street_frame(seed=seed))
        assert (pred.labels < engine.model.cfg.num_classes).all()
    engine.close()
    used = [t for level in engine.target_norm.levels[:3] for t in level]
    assert used and all(t.mean is not None and t.mean.is_cuda and torch.isfinite(t.var).all()
                        for t in used)
    assert engine.target_norm.check.count >= 1  # the teacher's check ran (async may skip)
    assert math.isfinite(engine.target_norm.check.difference)


def test_gpu_memory_is_flat_over_frames() -> None:
    engine = cuda_engine(mode="kd+ocl", max_steps=1, schedule="async")
    frames = [street_frame(seed=k) for k in range(4)]
    for k in range(10):
        engine.process(frames[k % 4])
    engine.background.settle()
    torch.cuda.synchronize()
    settled = torch.cuda.memory_allocated()
    for k in range(40):
        engine.process(frames[k % 4])
    engine.background.settle()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= settled * 1.05


def test_cuda_and_cpu_agree_on_the_predictions() -> None:
    frame = street_frame()
    gpu = cuda_engine(mode="none").process(frame)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", voxel_size=0.2), "cpu")
    cpu = AdaptationEngine(model, AdaptConfig(mode="none"), None, "cpu").process(frame)
    assert (gpu.labels == cpu.labels).mean() > 0.99
    np.testing.assert_allclose(gpu.confidence, cpu.confidence, atol=1e-2)


@pytest.mark.parametrize("schedule", ["sync", "async"])
def test_the_harm_guard_checks_on_the_gpu(schedule: str) -> None:
    engine = cuda_engine(mode="kd+ocl", max_steps=1, schedule=schedule, guard_every=1)
    frame = street_frame()
    checked = []
    for _ in range(3):
        checked.append(engine.process(frame).stats)
        if engine.background is not None:
            checked.append(engine.background.settle())
    stats = [s for s in checked if s is not None and s.guard_checked]
    assert stats and engine.event_counts["guard_check"] == len(stats)
    for s in stats:
        assert s.guard_ms > 0 and 0.0 <= s.guard_drift <= 1.0 and s.guard_kl >= -1e-6
        assert 0.0 <= s.guard_flip <= 1.0
    engine.close()
