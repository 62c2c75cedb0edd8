"""The harm guard, teacher reliability, weight anchoring and RDumb's periodic reset, in the
engine on small CPU frames (core/adapt/guard.py, anchor.py) and as pure rules."""
from __future__ import annotations

import copy
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_engine_safety import VectorTeacher, engine, frame, params, same

from tttkd_ros.core.adapt.anchor import anchor_gradient
from tttkd_ros.core.adapt.engine import AdaptationEngine
from tttkd_ros.core.adapt.guard import HarmGuard, Verdict, camera_kd_ratios, drift, sure_labels
from tttkd_ros.core.adapt.objective import KdTargets, SourceLabels, adaptation_loss
from tttkd_ros.core.config import AdaptConfig, ModelConfig, TeacherConfig
from tttkd_ros.core.frame import CameraView, Frame
from tttkd_ros.core.labels import CLASS_NAMES, palette_rgb
from tttkd_ros.core.loading import load_engine
from tttkd_ros.core.model.checkpoint import save_checkpoint
from tttkd_ros.core.model.segmentation import build_model
from tttkd_ros.core.model.teacher import teacher_fingerprint

# KD on every parameter at a high rate learns the stand-in teacher's vector in a few frames;
# the spike and collapse detectors and the anchor are off so that the guard is the only thing
# that reacts (the anchor's tests below turn it on)
KD = {"mode": "kd", "params": "all", "lr": 0.2, "spike_factor": 0.0, "collapse_jump": 0.0,
      "anchor_weight": 0.0}


def damage(e: AdaptationEngine) -> None:
    """A diverged update: large noise on every adapted weight."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in e.params:
            p.add_(torch.randn_like(p))


def kd_engine(**cfg) -> AdaptationEngine:
    """The untrained test model is sure of no label (its softmax is nearly flat), so every
    label counts as sure here (source_confidence 0); its predictions spread over the classes
    (head_scale 10), so that KD on the vector changes a few of them and damage nearly all."""
    return engine(VectorTeacher(), head_scale=10.0, **{
        **KD, "guard_every": 1, "guard_patience": 2, "source_confidence": 0.0,
        "guard_flip": 0.5, **cfg})


def adapt_frames(e: AdaptationEngine, seeds) -> list:
    return [e.process(frame(seed)).stats for seed in seeds]


# -- the rule ------------------------------------------------------------------------------

def rule(**cfg) -> tuple[HarmGuard, list[torch.Tensor]]:
    weights = [torch.zeros(3)]
    return HarmGuard(AdaptConfig(**{"guard_patience": 2, **cfg}), weights), weights


def test_a_check_fails_when_more_than_guard_flip_of_the_sure_labels_changed() -> None:
    guard, w = rule(guard_flip=0.2)
    assert guard.judge(0.1, w) is Verdict.PASSED
    assert guard.judge(0.2, w) is Verdict.PASSED  # at the threshold: still a pass
    assert guard.judge(0.3, w) is Verdict.FAILED
    assert guard.judge(0.0, w) is Verdict.PASSED  # a pass ends the run of failures
    assert guard.judge(0.9, w) is Verdict.FAILED
    assert guard.judge(0.9, w) is Verdict.ROLLBACK  # patience 2


def test_a_passed_check_keeps_the_checked_weights_as_the_last_good_state() -> None:
    guard, _ = rule()
    checked = [torch.tensor([1.0, 2.0, 3.0])]
    guard.judge(0.0, checked)
    assert same(guard.good, checked)
    guard.judge(1.0, [torch.full((3,), 9.0)])  # a failed check keeps the old state
    assert same(guard.good, checked)


def test_a_rollback_failing_again_goes_to_the_source() -> None:
    guard, w = rule(guard_patience=1)
    assert guard.judge(0.5, w) is Verdict.ROLLBACK
    assert guard.judge(0.5, w) is Verdict.SOURCE  # the last good state was no good
    assert guard.judge(0.5, w) is Verdict.ROLLBACK  # from the source: a fresh start
    assert guard.judge(0.0, w) is Verdict.PASSED
    assert guard.judge(0.5, w) is Verdict.ROLLBACK  # a pass came in between
    source_first, _ = rule(guard_patience=1, guard_restore="source")
    assert source_first.judge(0.5, w) is Verdict.SOURCE


def test_a_check_is_due_every_guard_every_frames_and_stays_due_until_judged() -> None:
    guard, w = rule(guard_every=3)
    assert [guard.due() for _ in range(4)] == [False, False, True, True]
    guard.judge(0.0, w)
    assert [guard.due() for _ in range(3)] == [False, False, True]
    off, _ = rule(guard_every=0)
    assert not any(off.due() for _ in range(5))


def test_drift_counts_changed_labels_all_and_among_the_sure_ones_and_the_kl() -> None:
    source = torch.tensor([[4.0, 0.0], [0.0, 4.0], [0.1, 0.0], [0.0, 0.1]])  # 2 sure, 2 not
    adapted = source.clone()
    adapted[0] = torch.tensor([0.0, 2.0])  # one sure label changes
    adapted[2] = torch.tensor([0.0, 2.0])  # and one unsure one
    d = drift(source, adapted, confidence=0.9)
    p, q = torch.softmax(source, 1), torch.softmax(adapted, 1)
    assert float(d.share) == pytest.approx(0.5)
    assert float(d.sure_flip) == pytest.approx(0.5)  # 1 of the 2 sure labels
    assert float(d.kl) == pytest.approx(float((p * (p / q).log()).sum()) / 4, rel=1e-5)
    same_labels = drift(source, source, confidence=0.9)
    assert same_labels.kl.abs() < 1e-7 and float(same_labels.sure_flip) == 0.0
    assert float(drift(source, adapted, confidence=0.999).sure_flip) == 0.0  # none sure


def test_sure_labels_are_the_points_at_or_above_the_confidence() -> None:
    logits = torch.tensor([[4.0, 0.0], [0.1, 0.0], [0.0, 4.0]])
    index, labels = sure_labels(logits, 0.9)
    assert index.tolist() == [0, 2] and labels.tolist() == [0, 1]


def test_camera_ratios_average_each_cameras_rows_over_the_reference() -> None:
    feat = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    targets = KdTargets(point_index=torch.tensor([0, 1, 2]),
                        features=torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]),
                        counts=(2, 0, 1))
    # camera 0: distances 0 and 1; camera 1 sees nothing; camera 2: distance 2
    assert camera_kd_ratios(feat, targets, reference=0.5) == [pytest.approx(1.0), None,
                                                               pytest.approx(4.0)]
    kept = targets.only([True, True, False])
    assert kept.counts == (2, 0, 0) and kept.point_index.tolist() == [0, 1]


def test_camera_ratios_measure_as_the_model_was_trained() -> None:
    # a common direction: the plain cosine barely sees that each point's own part is flipped
    parts = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    common = torch.tensor([[0.0, 0.0, 10.0]])
    feat = torch.cat([-parts, torch.zeros(4, 1)], dim=1) + common
    targets = KdTargets(torch.arange(4), torch.cat([parts, torch.zeros(4, 1)], 1) + common,
                        (4,))
    plain, = camera_kd_ratios(feat, targets, 0.5)
    centred, = camera_kd_ratios(feat, targets, 0.5, center=True)
    assert plain < 0.05 and centred == pytest.approx(4.0)  # distance 2 over the level 0.5


# -- rollback in the engine ----------------------------------------------------------------

def test_damaged_weights_are_rolled_back_to_the_last_passed_check() -> None:
    e = kd_engine()
    for stats in adapt_frames(e, range(6)):
        assert stats.guard_checked and not stats.guard_rollback and stats.guard_flip < 0.5
    assert stats.guard_gain > 0  # adapting on the teacher's vector beats the source
    good = [g.clone() for g in e.guard.good]
    damage(e)
    first = e.process(frame(100)).stats
    assert first.guard_checked and first.guard_flip > 0.9 and first.guard_drift > 0.9
    assert not first.guard_rollback and first.events == []  # patience 2: one failure waits
    second = e.process(frame(101)).stats
    assert second.guard_rollback and second.events == ["guard_rollback"]
    assert same(params(e), good)  # the weights of the last passed check
    assert e.event_counts["guard_check"] == 8 and e.event_counts["guard_check_failed"] == 2
    assert e.event_counts["guard_rollback"] == 1 and e.resets == 0
    after = e.process(frame(102)).stats  # and adapting goes on from them
    assert after.guard_gain > 0 and after.guard_flip < 0.5


def test_a_second_rollback_without_a_pass_resets_to_the_source() -> None:
    e = kd_engine(guard_patience=1)
    adapt_frames(e, range(4))
    damage(e)
    assert e.process(frame(100)).stats.events == ["guard_rollback"]
    damage(e)
    stats = e.process(frame(101)).stats
    assert stats.events == ["guard_source_reset"] and stats.guard_rollback
    assert same(params(e), e.params_source) and e.resets == 1


def test_restore_source_goes_straight_to_the_source() -> None:
    e = kd_engine(guard_patience=1, guard_restore="source")
    adapt_frames(e, range(4))
    damage(e)
    assert e.process(frame(100)).stats.events == ["guard_source_reset"]
    assert same(params(e), e.params_source)


def test_the_guard_off_leaves_damaged_weights_alone() -> None:
    e = kd_engine(guard_every=0)
    adapt_frames(e, range(4))
    damage(e)
    stats = adapt_frames(e, range(100, 104))
    assert not any(s.guard_checked or s.guard_ms for s in stats)
    assert e.event_counts["guard_check"] == 0


def test_predict_then_adapt_predicts_a_rolled_back_frame_with_the_restored_weights() -> None:
    e = kd_engine(guard_patience=1, order="predict_then_adapt")
    adapt_frames(e, range(4))
    damage(e)
    pred = e.process(frame(100))
    assert pred.stats.guard_rollback
    e.enabled = False
    np.testing.assert_array_equal(pred.labels, e.process(frame(100)).labels)


def test_the_async_schedule_runs_the_guard_in_the_background() -> None:
    e = kd_engine(guard_patience=1, schedule="async")
    try:
        for seed in range(4):
            e.process(frame(seed))
            e.background.settle()  # each frame's adaptation done before the next arrives
        assert e.event_counts["guard_check"] >= 3
        damage(e)  # no adaptation in flight: the worker's weights are free to touch
        e.process(frame(100))  # serves, then adapts on the frame: the guard rolls back
        while e.background.in_flight:
            time.sleep(0.01)
        assert same(params(e), e.guard.good)
        # the next frame reports the finished adaptation and is served by its weights
        swapped = e.process(frame(101)).stats
        assert swapped.guard_checked and swapped.guard_rollback
        assert swapped.events[0] == "guard_rollback"
        serving = dict(e.background.serving.named_parameters())
        assert all(torch.equal(serving[k], v) for k, v in zip(
            dict(e.model.named_parameters()), e.guard.good))
    finally:
        e.close()


# -- source consistency --------------------------------------------------------------------

def changed_from_source(e: AdaptationEngine, seed: int = 50) -> float:
    """Share of a fresh frame's labels that differ between `e` and its source model."""
    e.enabled = False
    adapted = e.process(frame(seed)).labels
    source = AdaptationEngine(copy.deepcopy(e.reference.model), AdaptConfig(mode="none"),
                              None, "cpu").process(frame(seed)).labels
    return float((adapted != source).mean())


def test_source_consistency_keeps_the_labels_that_kd_alone_changes() -> None:
    plain = kd_engine(guard_every=0, lr=0.5)
    anchored = kd_engine(guard_every=0, lr=0.5, w_source=5.0)
    adapt_frames(plain, range(8))
    stats = adapt_frames(anchored, range(8))
    assert all("source" in s.losses and s.guard_ms > 0 for s in stats)  # every frame
    assert "source" not in plain.process(frame(9)).stats.losses
    moved, kept = changed_from_source(plain), changed_from_source(anchored)
    assert moved > 0.3 and kept < moved / 2, (moved, kept)


def test_the_consistency_term_is_cross_entropy_towards_the_sure_labels_in_both_views() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])  # 2 views x 2
    labels = SourceLabels(torch.tensor([1]), torch.tensor([0]))  # point 1 is sure of class 0
    cfg = AdaptConfig(mode="kd", w_source=2.0)
    total, parts = adaptation_loss(cfg, logits, torch.zeros(4, 1), 2, None, labels)
    expected = F.cross_entropy(logits[[1, 3]], torch.tensor([0, 0]))
    assert parts["source"] == pytest.approx(float(expected))
    assert float(total) == pytest.approx(2.0 * float(expected))
    assert adaptation_loss(replace(cfg, w_source=0.0), logits, torch.zeros(4, 1), 2, None,
                           labels)[1] == {}


# -- teacher reliability -------------------------------------------------------------------

class CameraTeacher(VectorTeacher):
    """The vector for a normal image; for an all-black one the opposite (features that are
    nothing like the ones the model was trained towards)."""

    def features(self, image: np.ndarray) -> torch.Tensor:
        grid = super().features(image)
        return -grid if image.max() == 0 else grid


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, float]:
    """A 'source' model trained towards the teacher's vector, and its KD loss there (what
    the checkpoint records as the training-time level)."""
    e = engine(CameraTeacher(), **KD, guard_every=0)
    adapt_frames(e, range(12))
    return e.model, e.process(frame(50)).stats.losses["kd"]


def two_camera_frame(seed: int) -> Frame:
    f = frame(seed)
    front = f.cameras[0]
    black = CameraView("black", np.zeros_like(front.image), front.K, front.T_cam_lidar)
    return Frame(f.points, [front, black], stamp_ns=f.stamp_ns)


def from_trained(trained, kd_reference: float | None, teacher=None, **cfg
                 ) -> AdaptationEngine:
    """An engine on the trained model; the KD ratio alone judges the cameras unless `cfg`
    sets guard_min_brightness (the exposure rule's tests do)."""
    cfg = {**KD, "lr": 0.05, "restore_prob": 0.0, "guard_every": 0,
           "guard_min_brightness": 0.0, **cfg}
    return AdaptationEngine(copy.deepcopy(trained[0]), AdaptConfig(budget_ms=1e6, **cfg),
                            teacher or CameraTeacher(), "cpu", kd_reference=kd_reference)


def test_a_black_camera_is_not_distilled_from_while_a_normal_one_is(trained) -> None:
    reference = trained[1]
    both = from_trained(trained, reference)
    stats = both.process(two_camera_frame(60)).stats
    assert stats.cameras_untrusted == ["black"] and stats.events == ["camera_untrusted"]
    assert 0.5 < stats.camera_kd_ratio["front"] < 2.0 < stats.camera_kd_ratio["black"]
    assert both.event_counts["camera_untrusted"] == 1
    # its targets were dropped: the step is the one the front camera alone gives
    front_only = from_trained(trained, reference)
    front = two_camera_frame(60)
    front.cameras = front.cameras[:1]
    assert front_only.process(front).stats.cameras_untrusted == []
    for a, b in zip(both.params, front_only.params):
        torch.testing.assert_close(a, b)
    # and without the check the black camera's targets pull the weights elsewhere
    unchecked = from_trained(trained, reference, guard_kd_ratio=0.0)
    unchecked_stats = unchecked.process(two_camera_frame(60)).stats
    assert unchecked_stats.cameras_untrusted == [] and unchecked_stats.camera_kd_ratio == {}
    assert unchecked_stats.losses["kd"] > stats.losses["kd"]
    assert not all(torch.allclose(a, b) for a, b in zip(both.params, unchecked.params))


def test_targets_far_easier_than_in_training_are_not_trusted_either(trained) -> None:
    e = from_trained(trained, kd_reference=1000 * trained[1])  # every camera 'too close'
    stats = e.process(two_camera_frame(61)).stats
    assert stats.cameras_untrusted == ["front", "black"]
    assert "kd" not in stats.losses and stats.steps == 0  # KD alone: nothing to learn from


class CountingTeacher(CameraTeacher):
    def __init__(self) -> None:
        super().__init__()
        self.passes = 0  # images it was asked for

    def features(self, image: np.ndarray) -> torch.Tensor:
        self.passes += 1
        return super().features(image)


def dim_camera_frame(seed: int, brightness: float) -> Frame:
    """The front camera and a second one that sees the same, scaled to `brightness`."""
    f = two_camera_frame(seed)
    front = f.cameras[0]
    scaled = front.image.astype(np.float32) * (brightness * 255 / front.image.mean())
    dim = CameraView("dim", scaled.clip(0, 255).astype(np.uint8), front.K, front.T_cam_lidar)
    return Frame(f.points, [front, dim], stamp_ns=f.stamp_ns)


def test_an_underexposed_camera_teaches_nothing_and_costs_no_teacher_pass(trained) -> None:
    teacher = CountingTeacher()
    e = from_trained(trained, trained[1], teacher, guard_min_brightness=0.15)
    stats = e.process(dim_camera_frame(64, brightness=0.08)).stats
    assert stats.cameras_untrusted == ["dim"] and stats.events == ["camera_underexposed"]
    assert "dim" not in stats.camera_kd_ratio and teacher.passes == 1
    assert e.event_counts["camera_underexposed"] == 1
    # the step is the one the front camera alone gives
    front_only = from_trained(trained, trained[1], guard_min_brightness=0.15)
    alone = dim_camera_frame(64, brightness=0.08)
    alone.cameras = alone.cameras[:1]
    assert front_only.process(alone).stats.cameras_untrusted == []
    for a, b in zip(e.params, front_only.params):
        torch.testing.assert_close(a, b)
    # bright enough, or the rule off: the second camera is distilled from
    for floor, brightness in ((0.15, 0.2), (0.0, 0.08)):
        teacher = CountingTeacher()
        e = from_trained(trained, trained[1], teacher, guard_min_brightness=floor)
        assert e.process(dim_camera_frame(64, brightness)).stats.cameras_untrusted == []
        assert teacher.passes == 2


def test_the_checkpoints_training_kd_loss_reaches_the_engine(tmp_path) -> None:
    teacher = TeacherConfig(image_height=28)
    cfg = ModelConfig(backbone="tiny", voxel_size=0.2)
    record = {"name": teacher.name, "weights": teacher_fingerprint(teacher), "weights_file": "",
              "image_height": 28, "kd_loss": 0.3}
    path = tmp_path / "model.pt"
    save_checkpoint(path, build_model(cfg, "cpu"), cfg, class_names=CLASS_NAMES,
                    palette=palette_rgb(), teacher_name=teacher.name,
                    extra={"teacher": record})
    loaded = load_engine(str(path), AdaptConfig(), teacher, "cpu", dino=VectorTeacher())
    assert loaded.engine.kd_reference == 0.3
    # another teacher, allowed to start: the level it was trained to says nothing about it
    other = replace(teacher, image_height=56, allow_mismatch=True)
    with pytest.warns(UserWarning, match="does not match"):
        loaded = load_engine(str(path), AdaptConfig(), other, "cpu", dino=VectorTeacher())
    assert loaded.engine.kd_reference is None


def test_without_a_training_level_every_camera_is_trusted(trained) -> None:
    # the teacher's check of the normalisation would run the source model anyway
    engine = from_trained(trained, kd_reference=None, target_norm_check=False)
    stats = engine.process(two_camera_frame(62)).stats
    assert stats.cameras_untrusted == [] and stats.guard_ms == 0.0


# -- anchoring -----------------------------------------------------------------------------

def test_ema_serves_a_moving_average_of_the_adapted_weights() -> None:
    m = 0.8
    e = kd_engine(guard_every=0, ema_momentum=m)
    expected = [p.detach().clone() for p in e.params]
    for seed in range(4):
        pred = e.process(frame(seed))
        expected = [m * x + (1 - m) * p for x, p in zip(expected, params(e))]
    for got, want in zip(e.ema.values, expected):
        torch.testing.assert_close(got, want)
    assert not same(e.ema.values, params(e))  # served != adapted
    served = AdaptationEngine(copy.deepcopy(e.ema.model), AdaptConfig(mode="none"))
    np.testing.assert_array_equal(pred.labels, served.process(frame(3)).labels)
    e.reset()
    assert same(e.ema.values, e.params_source)


def test_async_serves_the_moving_average() -> None:
    e = kd_engine(guard_every=0, ema_momentum=0.5, schedule="async")
    try:
        e.process(frame(0))
        e.background.settle()
        serving = dict(e.background.serving.named_parameters())
        ema = dict(e.ema.model.named_parameters())
        assert all(torch.equal(serving[k], ema[k]) for k in ema)
        assert not same(list(e.model.parameters()), list(e.background.serving.parameters()))
    finally:
        e.close()


def distance_to_source(e: AdaptationEngine) -> float:
    return sum(float((p.detach() - s).square().sum()) for p, s in zip(e.params, e.params_source))


def test_the_anchor_pulls_the_adapted_weights_towards_the_source() -> None:
    free = kd_engine(guard_every=0, restore_prob=0.0)
    anchored = kd_engine(guard_every=0, restore_prob=0.0, anchor_weight=2.0)
    adapt_frames(free, range(5))
    adapt_frames(anchored, range(5))
    assert distance_to_source(anchored) < 0.8 * distance_to_source(free)


def test_the_anchor_gradient_is_that_of_the_l2_distance() -> None:
    p = torch.randn(5, requires_grad=True)
    s = torch.randn(5)
    (3.0 * (p - s).square().sum()).backward()
    want = p.grad.clone()
    p.grad = None
    anchor_gradient([p], [s], 3.0)
    torch.testing.assert_close(p.grad, want)


# -- RDumb ---------------------------------------------------------------------------------

def test_reset_every_starts_from_the_source_every_n_frames() -> None:
    e = kd_engine(guard_every=0, restore_prob=0.0, reset_every=3)
    events = [s.events for s in adapt_frames(e, range(10))]
    assert [i for i, ev in enumerate(events) if ev == ["periodic_reset"]] == [3, 6, 9]
    assert e.resets == 3 and e.event_counts["periodic_reset"] == 3
    # frame 9 adapted from the source exactly as a fresh engine's first frame does
    fresh = kd_engine(guard_every=0, restore_prob=0.0)
    fresh.process(frame(9))
    assert same(params(e), params(fresh))


# -- budget --------------------------------------------------------------------------------

def test_a_due_check_that_would_not_fit_with_a_step_takes_neither() -> None:
    e = kd_engine(guard_every=2, budget_ms=10_000.0)
    e.planner.record(6000.0)  # as if a step and a source pass each took 6 s: one fits, not both
    e.planner.record_guard(6000.0)
    s1, s2 = adapt_frames(e, (0, 1))
    assert s1.steps == 1 and not s1.guard_checked  # no check due: the step fits alone
    assert s2.steps == 0 and s2.guard_ms == 0.0 and not s2.guard_checked
    assert not s2.over_budget
    s3 = e.process(frame(2)).stats  # refused frames age the estimate out: it probes again
    assert s3.guard_checked and s3.steps == 1


def test_the_guard_time_is_spent_inside_the_budget() -> None:
    e = kd_engine(guard_every=1, max_steps=50, budget_ms=1.0)
    for stats in adapt_frames(e, range(6)):
        assert stats.steps <= 1
        if stats.steps == 0:  # a refused frame spends nothing, the guard included
            assert stats.guard_ms == 0.0 and stats.adapt_ms == 0.0
        else:
            assert stats.over_budget == (stats.adapt_ms + stats.guard_ms > 1.0)

