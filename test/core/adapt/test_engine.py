"""The adaptation engine on small CPU frames: shapes, what adapts, budget, protocols, safety."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tttkd_ros.core.adapt.engine import AdaptationEngine
from tttkd_ros.core.adapt.losses import kd_loss
from tttkd_ros.core.adapt.objective import teacher_targets
from tttkd_ros.core.config import AdaptConfig, ModelConfig, TeacherConfig
from tttkd_ros.core.frame import MASK_NONE, UNLABELED, Frame
from tttkd_ros.core.loading import forward_camera
from tttkd_ros.core.model.segmentation import build_model
from tttkd_ros.core.model.teacher import DinoTeacher
from tttkd_ros.core.model.voxelize import voxelize

IMAGE_HW = (56, 112)


@pytest.fixture(scope="module")
def teacher() -> DinoTeacher:
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return DinoTeacher(TeacherConfig(image_height=28), "cpu")


def street_frame(n: int = 3000, seed: int = 0, camera: bool = True) -> Frame:
    """Ground points and two boxes ahead of the sensor, one forward camera."""
    rng = np.random.default_rng(seed)
    ground = np.c_[rng.uniform(2, 30, n // 2), rng.uniform(-8, 8, n // 2), np.full(n // 2, -1.7)]
    box = np.c_[rng.uniform(8, 10, n - n // 2), rng.uniform(-2, 2, n - n // 2),
                rng.uniform(-1.7, 0.5, n - n // 2)]
    xyz = np.r_[ground, box]
    points = np.c_[xyz, rng.uniform(0, 1, n)].astype(np.float32)
    cams = [forward_camera("front", IMAGE_HW, rng)] if camera else []
    return Frame(points, cams, stamp_ns=1)


def make_engine(teacher, seed: int = 0, **cfg) -> AdaptationEngine:
    torch.manual_seed(seed)
    model = build_model(ModelConfig(backbone="tiny", voxel_size=0.2), "cpu")
    return AdaptationEngine(model, AdaptConfig(**{"budget_ms": 1e6, **cfg}), teacher, "cpu")


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_every_point_labeled_with_the_documented_dtypes(teacher) -> None:
    frame = street_frame()
    frame.points[:5, 0] = np.nan  # non-finite points get UNLABELED, everything else a class
    pred = make_engine(teacher, mode="kd+ocl", max_steps=1).process(frame)
    assert pred.labels.dtype == np.uint16 and pred.labels.shape == (3000,)
    assert pred.confidence.dtype == np.float32
    assert (pred.labels[:5] == UNLABELED).all() and (pred.confidence[:5] == 0).all()
    assert (pred.labels[5:] < 19).all() and (pred.confidence[5:] > 0).all()
    mask = pred.masks["front"]
    assert mask.shape == IMAGE_HW and mask.dtype == np.uint8
    assert ((mask < 19) | (mask == MASK_NONE)).all() and (mask < 19).any()
    assert pred.stats.steps == 1 and pred.stats.teacher_ms > 0


@pytest.mark.parametrize("mode", ["kd", "ocl", "kd+ocl", "tent"])
def test_only_the_backbone_adapts(teacher, mode) -> None:
    engine = make_engine(teacher, mode=mode, max_steps=2, lr=1e-2)
    before = state(engine.model)
    teacher_before = state(teacher.model)
    assert engine.process(street_frame()).stats.steps == 2
    after = state(engine.model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("backbone.") for k in changed)
    assert all(torch.equal(v, teacher.model.state_dict()[k]) for k, v in teacher_before.items())
    # running BN statistics are never written while adapting
    assert not any("running_" in k for k in changed)


def test_kd_loss_falls_over_steps_on_a_fixed_frame(teacher) -> None:
    engine = make_engine(teacher, mode="kd", max_steps=1, lr=5e-2)
    frame = street_frame()
    losses = [engine.process(frame).stats.losses["kd"] for _ in range(8)]
    assert losses[-1] < losses[0] - 0.02, losses


@pytest.mark.parametrize("center", [False, True])
def test_the_step_distils_as_the_model_was_trained(teacher, center: bool) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", voxel_size=0.2, kd_center=center), "cpu")
    frame = street_frame()
    pts = torch.from_numpy(frame.points)
    with torch.no_grad():  # the source model's KD loss, measured both ways
        feat2d = model.eval()(voxelize([pts], 0.2)).feat2d
        t = teacher_targets(teacher, pts[:, :3], frame.cameras)
        plain, centred = (kd_loss(feat2d[t.point_index], t.features, c).item()
                          for c in (False, True))
    engine = AdaptationEngine(model, AdaptConfig(mode="kd", budget_ms=1e6), teacher, "cpu")
    reported = engine.process(frame).stats.losses["kd"]  # the first step's, before it
    assert reported == pytest.approx(centred if center else plain, rel=1e-4)
    assert abs(plain - centred) > 0.01  # so the match above tells the two apart


def test_episodic_restores_weights_bit_exactly(teacher) -> None:
    engine = make_engine(teacher, mode="kd+ocl", protocol="episodic", max_steps=3, lr=1e-2)
    before = state(engine.model)
    assert engine.process(street_frame()).stats.steps == 3
    after = state(engine.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_continual_keeps_updates_and_reset_restores_source(teacher) -> None:
    engine = make_engine(teacher, mode="ocl", max_steps=1, lr=1e-2)
    before = state(engine.model)
    engine.process(street_frame())
    assert any(not torch.equal(before[k], v) for k, v in state(engine.model).items())
    engine.reset()
    assert all(torch.equal(before[k], v) for k, v in state(engine.model).items())
    assert engine.resets == 1


def test_zero_budget_takes_no_step_and_matches_none(teacher) -> None:
    frame = street_frame()
    zero = make_engine(teacher, mode="kd+ocl", budget_ms=0.0).process(frame)
    none = make_engine(teacher, mode="none").process(frame)
    assert zero.stats.steps == 0
    np.testing.assert_array_equal(zero.labels, none.labels)
    np.testing.assert_array_equal(zero.confidence, none.confidence)


def test_budget_overrun_is_at_most_one_step(teacher) -> None:
    engine = make_engine(teacher, mode="ocl", max_steps=50, budget_ms=1.0)
    frame = street_frame()
    # A step costs far more than 1 ms: only the probing first step of a frame may overrun;
    # a frame refused by the planner spends nothing.
    steps = []
    for _ in range(4):
        stats = engine.process(frame).stats
        steps.append(stats.steps)
        assert stats.steps <= 1
        if stats.steps == 0:
            assert stats.adapt_ms == 0.0
    assert steps[0] == 1 and 0 in steps
    engine.configure(budget_ms=1e6, max_steps=3)
    assert engine.process(frame).stats.steps == 3


def test_frames_without_a_visible_camera_still_run(teacher) -> None:
    no_camera = make_engine(teacher, mode="kd+ocl", max_steps=1).process(
        street_frame(camera=False))
    assert no_camera.stats.steps == 1 and "kd" not in no_camera.stats.losses
    assert no_camera.masks == {}
    kd_only = make_engine(teacher, mode="kd", max_steps=1)
    behind = street_frame()
    behind.points[:, 0] *= -1  # every point behind the camera
    pred = kd_only.process(behind)
    assert pred.stats.steps == 0 and (pred.labels < 19).all()
    assert (pred.masks["front"] == MASK_NONE).all()


def test_nonfinite_loss_is_discarded_without_touching_weights(teacher) -> None:
    engine = make_engine(teacher, mode="kd", max_steps=1, lr=1e-2)
    frame = street_frame()
    before = state(engine.model)
    original = teacher.features
    teacher.features = lambda image: original(image) * math.nan
    try:
        stats = engine.process(frame).stats
    finally:
        teacher.features = original
    assert stats.events == ["nonfinite_loss_discarded"]
    assert all(torch.equal(before[k], v) for k, v in state(engine.model).items())


def test_seeded_cpu_runs_are_deterministic(teacher) -> None:
    frame = street_frame()
    runs = [make_engine(teacher, seed=3, mode="kd+ocl", max_steps=2, restore_prob=0.01)
            for _ in range(2)]
    a, b = (engine.process(frame) for engine in runs)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert all(torch.equal(x, y) for x, y in zip(runs[0].model.parameters(),
                                                  runs[1].model.parameters()))


def test_invalid_runtime_change_is_rejected_and_changes_nothing(teacher) -> None:
    engine = make_engine(teacher)
    with pytest.raises(ValueError, match="adaptation.mode"):
        engine.configure(mode="bogus")
    assert engine.cfg.mode == "kd+ocl"


def test_no_return_points_are_left_out_and_unlabeled(teacher) -> None:
    """An organised cloud's no-returns, (0, 0, 0) or closer than min_range, are left out of
    the model like NaN points: labeled UNLABELED, counted, and the other points get the
    labels they get without them."""
    clean = street_frame(seed=3)
    rows = np.r_[np.zeros((40, 4)), [[0.1, 0.1, 0.0, 0.5]] * 10, [[0.0, 0.0, 0.0, 0.7]]]
    organised = Frame(np.r_[rows[:25], clean.points, rows[25:]].astype(np.float32),
                      clean.cameras, stamp_ns=1)
    expected = make_engine(teacher, mode="none").process(clean)
    got = make_engine(teacher, mode="none", min_range=0.3).process(organised)
    no_return = np.r_[np.ones(25, bool), np.zeros(len(clean.points), bool), np.ones(26, bool)]
    assert (got.labels[no_return] == UNLABELED).all() and (got.confidence[no_return] == 0).all()
    np.testing.assert_array_equal(got.labels[~no_return], expected.labels)
    assert got.stats.no_return_points == 51
    for name, mask in expected.masks.items():  # no mask pixel comes from a no-return
        np.testing.assert_array_equal(got.masks[name], mask)
    # min_range 0 keeps the point at 0.14 m; only the exact origin is a no-return
    kept = make_engine(teacher, mode="none", min_range=0.0).process(organised)
    near = slice(len(clean.points) + 40, len(clean.points) + 50)  # after the 40 zeros
    assert kept.stats.no_return_points == 41 and (kept.labels[near] < 19).all()
