"""Adaptation safety in the engine: spikes and non-finite losses restore the last good weights,
a collapse resets to the source, clock jumps reset when configured, huge clouds are capped."""
from __future__ import annotations

import math

import numpy as np
import torch

from tttkd_ros.core.adapt.engine import AdaptationEngine
from tttkd_ros.core.adapt.safety import grid_subsample
from tttkd_ros.core.config import AdaptConfig, ModelConfig
from tttkd_ros.core.frame import UNLABELED, Frame
from tttkd_ros.core.loading import forward_camera
from tttkd_ros.core.model.segmentation import build_model

IMAGE_HW = (28, 56)
NUM_CLASSES = 19


class VectorTeacher:
    """A stand-in teacher whose patch grid holds one vector everywhere: KD can learn it fast,
    so the loss settles and a later jump is unambiguous. `sign` flips the targets."""

    def __init__(self, dim: int = 384) -> None:
        self.vector = torch.randn(dim, 1, 1, generator=torch.Generator().manual_seed(0))
        self.sign = 1.0
        self.nan = False

    def features(self, image: np.ndarray) -> torch.Tensor:
        h, w = image.shape[0] // 14, image.shape[1] // 14
        grid = self.sign * self.vector.expand(-1, h, w).clone()
        return grid * math.nan if self.nan else grid


def frame(seed: int, n: int = 1200) -> Frame:
    """Points ahead of the sensor and one forward camera that sees most of them."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform((3.0, -6.0, -2.0), (25.0, 6.0, 2.0), size=(n, 3))
    points = np.c_[xyz, rng.uniform(0, 1, n)].astype(np.float32)
    return Frame(points, [forward_camera("front", IMAGE_HW, rng)], stamp_ns=seed + 1)


def engine(teacher=None, head_scale: float = 1.0, **cfg) -> AdaptationEngine:
    """An engine on a fresh tiny model. Test-time normalisation is off unless `cfg` sets it:
    these tests follow the weights, and compare predictions with engines that do not adapt
    (test_target_norm.py tests the normalisation with every mechanism here)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", voxel_size=0.2), "cpu")
    with torch.no_grad():
        model.head_cls.weight.mul_(head_scale)  # > 1 spreads the predictions over classes
    cfg = {"budget_ms": 1e6, "target_norm_levels": 0, **cfg}
    return AdaptationEngine(model, AdaptConfig(**cfg), teacher, "cpu")


def params(e: AdaptationEngine) -> list[torch.Tensor]:
    return [p.detach().clone() for p in e.params]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def settled_kd_engine(teacher: VectorTeacher, frames: int = 14) -> AdaptationEngine:
    """KD on all parameters at a high rate: the loss falls to near 0 and stays there (no
    anchor holding it back)."""
    e = engine(teacher, mode="kd", params="all", lr=0.2, spike_window=8, anchor_weight=0.0)
    for seed in range(frames):
        assert e.process(frame(seed)).stats.events == []
    return e


def test_a_loss_spike_is_discarded_and_the_last_good_weights_come_back() -> None:
    teacher = VectorTeacher()
    e = settled_kd_engine(teacher)
    current, good = params(e), [p.detach().clone() for p in e.last_good]
    assert not same(current, good)  # the previous frame's step moved the weights
    with torch.no_grad():  # a diverged update: the weights are thrown far off
        for p in e.params:
            p.add_(torch.randn_like(p))
    pred = e.process(frame(100))
    assert pred.stats.events == ["loss_spike_discarded"] and pred.stats.steps == 1
    assert same(params(e), good)  # back to the weights of the last normal loss
    assert e.event_counts["loss_spike_discarded"] == 1
    assert (pred.labels < NUM_CLASSES).all()  # predicted from the restored weights
    assert e.process(frame(101)).stats.events == []  # and adaptation goes on


def test_a_lasting_new_loss_level_is_accepted_after_patience_spikes() -> None:
    teacher = VectorTeacher()
    e = settled_kd_engine(teacher)
    teacher.sign = -1.0  # the scene changed for good: every later loss is high
    events = [e.process(frame(200 + i)).stats.events for i in range(e.cfg.spike_patience)]
    assert events[:-1] == [["loss_spike_discarded"]] * (e.cfg.spike_patience - 1)
    assert events[-1] == []
    assert e.process(frame(300)).stats.events == []


def test_a_nonfinite_loss_restores_the_last_good_weights() -> None:
    teacher = VectorTeacher()
    e = settled_kd_engine(teacher, frames=3)
    good = [p.detach().clone() for p in e.last_good]
    teacher.nan = True
    pred = e.process(frame(50))
    assert pred.stats.events == ["nonfinite_loss_discarded"]
    assert same(params(e), good)
    assert (pred.labels < NUM_CLASSES).all()


def test_spike_detection_off_applies_every_finite_step() -> None:
    teacher = VectorTeacher()
    e = engine(teacher, mode="kd", params="all", lr=0.2, spike_window=8, spike_factor=0.0)
    for seed in range(10):
        e.process(frame(seed))
    before = params(e)
    teacher.sign = -1.0
    assert e.process(frame(20)).stats.events == []
    assert not same(params(e), before)


def test_a_collapse_resets_to_the_source_and_predicts_from_it() -> None:
    e = engine(head_scale=30.0, mode="ocl", params="all", lr=1e-4, collapse_window=6,
               collapse_frames=2)
    source = engine(head_scale=30.0, mode="none")
    for seed in range(6):
        assert e.process(frame(seed)).stats.events == []
    with torch.no_grad():
        e.model.head_cls.bias[3] += 1e3  # every point now class 3
    first = e.process(frame(10))
    assert first.stats.events == [] and (first.labels == 3).all()  # one frame is no collapse
    second = e.process(frame(11))
    assert second.stats.events == ["collapse_reset"]
    assert e.resets == 1 and e.event_counts["collapse_reset"] == 1
    assert same([p.detach() for p in e.model.parameters()], e.source)
    np.testing.assert_array_equal(second.labels, source.process(frame(11)).labels)


def test_clock_jump_resets_only_when_configured() -> None:
    e = engine(mode="ocl", lr=1e-2)
    e.process(frame(0))
    assert e.clock_jumped() and e.resets == 1 and e.event_counts["clock_jump_reset"] == 1
    assert same([p.detach() for p in e.model.parameters()], e.source)
    e.configure(reset_on_clock_jump=False)
    e.process(frame(1))
    assert not e.clock_jumped() and e.resets == 1


def test_a_cloud_over_the_cap_is_subsampled_and_every_point_labeled() -> None:
    f = frame(0, n=4000)
    f.points[:7, 1] = np.inf
    capped = engine(mode="ocl", max_points=500).process(f)
    assert capped.stats.events == ["points_subsampled"]
    assert (capped.labels[:7] == UNLABELED).all() and (capped.labels[7:] < NUM_CLASSES).all()
    assert (capped.confidence[7:] > 0).all()
    # each point carries the label of its grid cell's representative
    keep, owner = grid_subsample(torch.from_numpy(f.points[7:, :3]), 500, 0.2)
    labels = capped.labels[7:]
    np.testing.assert_array_equal(labels, labels[keep.numpy()][owner.numpy()])
    assert (capped.masks["front"] < NUM_CLASSES).any()
    uncapped = engine(mode="ocl", max_points=0).process(f)
    assert uncapped.stats.events == []
