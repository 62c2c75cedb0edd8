"""Test-time normalisation: the encoder's first levels normalise with a moving average of
the frames' own statistics, taken in once a frame, shared by every copy of the model,
forgotten on a reset, and never used without adaptation; the teacher's check holds the levels
after the stem at the source statistics while the teacher finds them costing."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_engine_safety import VectorTeacher, engine, frame

from tttkd_ros.core.adapt import source_pass
from tttkd_ros.core.adapt.engine import AdaptationEngine
from tttkd_ros.core.adapt.losses import kd_loss
from tttkd_ros.core.adapt.objective import teacher_targets
from tttkd_ros.core.adapt.target_norm import DeepLevelCheck, TargetNorm
from tttkd_ros.core.config import MODE_PRESETS, AdaptConfig, ModelConfig, with_mode_preset
from tttkd_ros.core.model.norm import PriorBatchNorm1d, RunningTarget
from tttkd_ros.core.model.segmentation import build_model

KD_OCL = {"mode": "kd+ocl", "target_norm_levels": 3, "target_norm_check": False}
CHECKED = {**KD_OCL, "target_norm_check": True}


def trained_bn(channels: int = 4) -> PriorBatchNorm1d:
    torch.manual_seed(0)
    bn = PriorBatchNorm1d(channels).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    return bn


def normalised(x: torch.Tensor, bn: PriorBatchNorm1d, mean: torch.Tensor,
               var: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)


def test_a_layer_normalises_with_the_moving_average_of_its_batches() -> None:
    bn = trained_bn()
    a, b = torch.randn(50, 4) * 3 + 2, torch.randn(60, 4) - 1
    bn.target = RunningTarget(momentum=0.25, use=True, armed=True)
    out = bn(a)
    var_a, mean_a = torch.var_mean(a, dim=0, correction=1)
    torch.testing.assert_close(out, normalised(a, bn, mean_a, var_a))  # the first batch starts it
    assert not bn.target.armed  # taken in once
    torch.testing.assert_close(bn(b), normalised(b, bn, mean_a, var_a))  # not armed: kept
    var_b, mean_b = torch.var_mean(b, dim=0, correction=1)
    bn.target.armed = True
    bn(b)  # second batch: weight max(0.25, 1/2), the plain mean of the two
    mean_ab, var_ab = 0.5 * (mean_a + mean_b), 0.5 * (var_a + var_b)
    torch.testing.assert_close(bn.target.mean, mean_ab)
    torch.testing.assert_close(bn.target.var, var_ab)
    for n in (3, 4, 5):  # weights 1/3, 1/4, then the momentum 0.25
        bn.target.armed = True
        bn(b)
        weight = max(0.25, 1 / n)
        mean_ab = torch.lerp(mean_ab, mean_b, weight)
        var_ab = torch.lerp(var_ab, var_b, weight)
    torch.testing.assert_close(bn.target.mean, mean_ab)
    torch.testing.assert_close(bn.target.var, var_ab)
    bn.target.clear()
    bn.target.armed = True
    bn(b)  # after clear the next batch starts the average again
    torch.testing.assert_close(bn.target.mean, mean_b)


def test_a_layer_whose_target_is_not_in_use_normalises_as_the_source() -> None:
    bn = trained_bn()
    x = torch.randn(30, 4) * 2 + 1
    source = bn(x)
    bn.target = RunningTarget(use=False, armed=True, mean=torch.zeros(4), var=torch.ones(4))
    torch.testing.assert_close(bn(x), source)
    assert bn.target.armed and torch.equal(bn.target.mean, torch.zeros(4))  # untouched


def test_the_bn_prior_mixes_the_batch_into_the_target_statistics() -> None:
    bn = trained_bn()
    x = torch.randn(40, 4) + 3
    mean_t, var_t = torch.full((4,), 0.5), torch.full((4,), 2.0)
    bn.target = RunningTarget(use=True, mean=mean_t, var=var_t)
    bn.prior = 0.5
    var_x, mean_x = torch.var_mean(x, dim=0, correction=1)
    torch.testing.assert_close(bn(x), normalised(x, bn, 0.5 * mean_t + 0.5 * mean_x,
                                                 0.5 * var_t + 0.5 * var_x))


def test_levels_are_the_stem_then_each_encoder_stage_and_never_the_decoder() -> None:
    model = build_model(ModelConfig(backbone="tiny"), "cpu")
    levels = model.backbone.encoder_norms()
    assert len(levels) == 5 and len(levels[0]) == 1  # the stem's one norm
    assert all(len(level) == 3 for level in levels[1:])  # downsampling + a block's two
    encoder = {id(m) for level in levels for m in level}
    decoder = [m for m in model.backbone.dec.modules() if isinstance(m, PriorBatchNorm1d)]
    assert decoder and not encoder & {id(m) for m in decoder}
    norm = TargetNorm(model)
    norm.select(2, 0.1)
    assert [t.use for t in norm.targets] == [True] * 4 + [False] * 9
    norm.select(0, 0.1)
    assert not any(t.use for t in norm.targets)


def test_the_engine_takes_each_frame_in_once_into_the_levels_it_uses() -> None:
    e = engine(VectorTeacher(), **KD_OCL)  # a source pass and a step before the prediction
    added: list[RunningTarget] = []
    for target in e.target_norm.targets:
        original = target.add
        target.add = lambda m, v, t=target, f=original: (added.append(t), f(m, v))
    e.process(frame(0))
    used = [t for level in e.target_norm.levels[:3] for t in level]
    assert sorted(map(id, added)) == sorted(map(id, used))  # each used layer, once
    assert all(t.mean is None for level in e.target_norm.levels[3:] for t in level)
    added.clear()
    e.process(frame(1))
    assert len(added) == len(used)


def test_the_prediction_normalises_with_the_frame_it_predicts() -> None:
    """Momentum 1: the average is the predicted frame's own statistics, whatever came
    before, so a fresh engine predicting the same frame after other frames agrees."""
    cfg = {**KD_OCL, "target_norm_momentum": 1.0, "lr": 0.0, "restore_prob": 0.0}
    seen = engine(VectorTeacher(), **cfg)
    for seed in range(3):
        seen.process(frame(seed))
    fresh = engine(VectorTeacher(), **cfg)
    np.testing.assert_array_equal(seen.process(frame(9)).labels,
                                  fresh.process(frame(9)).labels)


def test_every_copy_of_the_model_shares_the_statistics() -> None:
    e = engine(VectorTeacher(), ema_momentum=0.9, schedule="async", **KD_OCL)
    try:
        copies = [e.reference.model, e.ema.model, e.background.serving]
        mine = [m.target for m in e.model.modules() if isinstance(m, PriorBatchNorm1d)]
        for copy in copies:
            theirs = [m.target for m in copy.modules() if isinstance(m, PriorBatchNorm1d)]
            assert all(a is b for a, b in zip(mine, theirs)) and len(theirs) == len(mine)
    finally:
        e.close()


def test_without_adaptation_the_source_statistics_predict() -> None:
    kept = engine(VectorTeacher(), lr=0.0, restore_prob=0.0, **KD_OCL)  # weights stay
    kept.process(frame(0))
    plain = engine(mode="none", target_norm_levels=0)
    for e in (engine(mode="none", target_norm_levels=3), kept):
        e.enabled = e is not kept
        np.testing.assert_array_equal(e.process(frame(5)).labels,
                                      plain.process(frame(5)).labels)
    assert kept.target_norm.targets[0].mean is not None  # kept for when adaptation resumes


def test_a_reset_and_the_end_of_an_episode_forget_the_statistics() -> None:
    e = engine(VectorTeacher(), **KD_OCL)
    e.process(frame(0))
    e.reset()
    assert all(t.mean is None for t in e.target_norm.targets)
    episodic = engine(VectorTeacher(), protocol="episodic", **KD_OCL)
    episodic.process(frame(0))
    assert all(t.mean is None for t in episodic.target_norm.targets)


def test_the_order_predict_then_adapt_takes_the_frame_in_on_its_first_step() -> None:
    e = engine(VectorTeacher(), order="predict_then_adapt", **KD_OCL)
    e.process(frame(0))
    assert all(t.mean is not None for level in e.target_norm.levels[:3] for t in level)


def test_a_closed_gate_keeps_the_source_statistics_and_still_takes_batches_in() -> None:
    bn = trained_bn()
    x = torch.randn(30, 4) * 2 + 1
    source = bn(x)
    is_open = [False]
    bn.target = RunningTarget(use=True, armed=True, gate=lambda: is_open[0])
    torch.testing.assert_close(bn(x), source)
    var_x, mean_x = torch.var_mean(x, dim=0, correction=1)
    torch.testing.assert_close(bn.target.mean, mean_x)  # taken in while closed
    is_open[0] = True
    torch.testing.assert_close(bn(x), normalised(x, bn, mean_x, var_x))


def test_the_check_averages_its_differences_and_opens_while_they_are_not_positive() -> None:
    check = DeepLevelCheck()
    check.record(1.0)
    assert check()  # off: always open
    check.enabled, check.momentum = True, 0.5
    assert not check() and check.difference == 1.0
    check.record(-3.0)  # the second weighs 1/2: a plain mean
    assert check.difference == -1.0 and check()
    check.record(3.0)  # then the momentum, 0.5
    assert check.difference == 1.0 and not check()
    check.record(math.nan)  # non-finite targets: no evidence either way
    assert check.difference == 1.0 and check.count == 3
    seen: list[bool] = []
    with check.forced(True):
        assert check()
        other = threading.Thread(target=lambda: seen.append(check()))
        other.start()
        other.join()
    assert seen == [False] and not check()  # forced on this thread only
    check.clear()
    assert check.difference is None and check()


def test_the_source_pass_measures_what_the_deeper_levels_do_to_the_kd_loss() -> None:
    teacher = VectorTeacher()
    e = engine(teacher, lr=0.0, restore_prob=0.0, **CHECKED)
    e.process(frame(0))  # no averages yet when its source pass ran: a difference of 0
    assert e.target_norm.check.difference == 0.0
    pts = torch.as_tensor(frame(1).points)
    targets = teacher_targets(teacher, pts[:, :3], frame(1).cameras, [True])
    feat2d = {}
    for on in (True, False):
        with e.target_norm.check.forced(on):
            feat2d[on] = e.reference.forward([pts], None).feat2d[targets.point_index]
    center = e.model.cfg.kd_center
    expected = float(kd_loss(feat2d[True], targets.features, center)
                     - kd_loss(feat2d[False], targets.features, center))
    assert expected != 0.0
    e.process(frame(1))
    assert e.target_norm.check.difference == pytest.approx(expected / 2, rel=1e-5)
    assert e.event_counts["target_norm_check"] == 2
    e.reset()
    assert e.target_norm.check.difference is None


@pytest.mark.parametrize("difference", [1.0, -1.0])
def test_the_check_serves_the_stem_alone_while_the_teacher_finds_the_levels_costing(
        monkeypatch: pytest.MonkeyPatch, difference: float) -> None:
    monkeypatch.setattr(source_pass, "_levels_difference", lambda *args: difference)
    frames = range(4)

    def labels_of(**cfg: object) -> tuple[list[np.ndarray], AdaptationEngine]:
        e = engine(VectorTeacher(), lr=0.0, restore_prob=0.0, **cfg)  # only the statistics move
        return [e.process(frame(seed)).labels for seed in frames], e

    stem_only, _ = labels_of(**{**KD_OCL, "target_norm_levels": 1})
    three, _ = labels_of(**KD_OCL)
    assert any((a != b).any() for a, b in zip(stem_only, three))  # the deeper levels matter
    checked, e = labels_of(**CHECKED)
    for a, b in zip(checked, stem_only if difference > 0 else three):
        np.testing.assert_array_equal(a, b)
    gated = len(frames) if difference > 0 else 0
    assert e.event_counts["target_norm_gated"] == gated
    assert all(t.count == len(frames) for t in e.target_norm.targets[:7])  # still taking in


def test_the_baselines_run_without_it_and_bad_levels_are_refused() -> None:
    for mode in MODE_PRESETS:
        assert with_mode_preset(AdaptConfig(mode=mode)).target_norm_levels == 0
    for bad in ({"target_norm_levels": 6}, {"target_norm_levels": -1},
                {"target_norm_momentum": 0.0}):
        with pytest.raises(ValueError, match="target_norm"):
            AdaptConfig(**bad).validate()
