"""Class-mix-balanced test-time statistics: each voxel weighs by its predicted class's training
share over its share of the frame, the coarser levels take their children's mean weight, and
the engine takes a frame in with these weights once the forward has predicted it."""
from __future__ import annotations

import warnings
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from test_engine_safety import VectorTeacher, frame

from tttkd_ros.core.adapt.class_mix import (
    MAX_WEIGHT,
    coarser_weights,
    voxel_weights,
    weighted_var_mean,
)
from tttkd_ros.core.adapt.engine import AdaptationEngine
from tttkd_ros.core.config import AdaptConfig, ModelConfig, TeacherConfig
from tttkd_ros.core.labels import CLASS_NAMES
from tttkd_ros.core.loading import load_engine
from tttkd_ros.core.model.checkpoint import save_checkpoint
from tttkd_ros.core.model.norm import PriorBatchNorm1d, RunningTarget
from tttkd_ros.core.model.segmentation import build_model
from tttkd_ros.core.model.voxelize import voxelize

KD_OCL = {"mode": "kd+ocl", "target_norm_levels": 3, "budget_ms": 1e6, "lr": 0.0,
          "restore_prob": 0.0}


def logits_of(classes: list[int], num_classes: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), num_classes).float()


def test_weights_give_the_frame_the_training_class_mix() -> None:
    """A frame of 90 % class 0 and 10 % class 1, trained on half and half: the weighted
    mean of two class clusters is their midpoint, the plain mean is near class 0's."""
    classes = [0] * 90 + [1] * 10
    w = voxel_weights(logits_of(classes), torch.tensor([0.5, 0.5, 0.0]))
    x = torch.tensor([[0.0]] * 90 + [[10.0]] * 10)
    var, mean = weighted_var_mean(x, w)
    torch.testing.assert_close(mean, torch.tensor([5.0]))
    torch.testing.assert_close(var, torch.tensor([25.0]))
    torch.testing.assert_close(x.mean(dim=0), torch.tensor([1.0]))


def test_a_class_the_frame_barely_has_weighs_at_most_max_weight() -> None:
    w = voxel_weights(logits_of([0] * 999 + [1]), torch.tensor([0.5, 0.5, 0.0]))
    assert float(w[-1]) == MAX_WEIGHT
    w = voxel_weights(logits_of([0, 1, 2]), torch.tensor([0.5, 0.5, 0.0]))
    assert float(w[2]) == pytest.approx(1.0 / MAX_WEIGHT)  # a class training never had


def test_a_coarse_voxel_weighs_the_mean_of_its_children() -> None:
    fine = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 1, 1], [0, 2, 0, 0],
                         [1, 0, 0, 1]], dtype=torch.int32)
    coarse = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.int32)
    weights = torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0])
    torch.testing.assert_close(coarser_weights(fine, weights, coarse),
                               torch.tensor([9.0, 7.0, 3.0]))


def test_the_encoder_levels_are_their_finer_levels_halved() -> None:
    """What coarser_weights assumes of the real spconv encoder (kernel 2, stride 2)."""
    model = build_model(ModelConfig(backbone="tiny", voxel_size=0.2), "cpu").eval()
    with torch.no_grad():
        model(voxelize([torch.from_numpy(frame(0).points)], 0.2))
    levels = model.backbone.level_indices
    assert len(levels) == len(model.backbone.encoder_norms())
    for fine, coarse in pairwise(levels):
        halved = fine.long().clone()
        halved[:, 1:] //= 2
        assert torch.equal(torch.unique(halved, dim=0), torch.unique(coarse.long(), dim=0))


def balanced_engine(shares: torch.Tensor | None, **cfg) -> AdaptationEngine:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", voxel_size=0.2), "cpu")
    with torch.no_grad():
        model.head_cls.weight.mul_(20.0)  # predictions spread over the classes
    return AdaptationEngine(model, AdaptConfig(**{**KD_OCL, **cfg}), VectorTeacher(), "cpu",
                            class_shares=shares)


def test_the_engine_takes_the_frame_in_weighted_by_its_predicted_classes() -> None:
    shares = torch.full((19,), 1.0 / 19)
    plain = balanced_engine(shares, target_norm_balance=False)
    balanced = balanced_engine(shares, target_norm_balance=True)
    no_shares = balanced_engine(None, target_norm_balance=True)
    for e in (plain, balanced, no_shares):
        e.process(frame(0))
    stem = [e.target_norm.levels[0][0] for e in (plain, balanced, no_shares)]
    assert all(t.count == 1 and t.pending is None for t in stem)
    torch.testing.assert_close(stem[2].mean, stem[0].mean)  # no shares: the plain mean
    assert not torch.allclose(stem[1].mean, stem[0].mean)
    # recompute the weighted mean from the stem norm's input rows (the voxels) and the
    # prediction that took the frame in, which normalised with the frame's plain statistics:
    # the plain engine's average after that one frame (the weights are the same, lr 0)
    kept: dict[str, torch.Tensor] = {}
    norm = plain.model.backbone.stem[1]
    norm.register_forward_hook(lambda m, args, out: kept.update(x=args[0].detach()))
    with torch.no_grad():
        out = plain.model(voxelize([torch.from_numpy(frame(0).points)], 0.2))
    weights = voxel_weights(out.voxel_logits, shares)
    assert weights.std() > 0  # the classes are not equally common in the frame
    _, expected = weighted_var_mean(kept["x"], weights)
    torch.testing.assert_close(stem[1].mean, expected, rtol=1e-4, atol=1e-5)
    assert all(t.mean is None for level in balanced.target_norm.levels[3:] for t in level)


def test_a_kept_batch_is_normalised_as_if_it_had_joined_the_average() -> None:
    """The forward that keeps its batch for weighting normalises with the average moved by
    the batch's plain statistics, as a layer without weighting would, and leaves the
    average itself for the weighted commit."""
    torch.manual_seed(0)
    x = torch.randn(50, 4) * 3.0 + 1.0
    outputs, targets = [], []
    for deferred in (False, True):
        norm = PriorBatchNorm1d(4).eval()
        target = RunningTarget(momentum=0.1, use=True, armed=True, deferred=deferred,
                               mean=torch.zeros(4), var=torch.ones(4), count=3)
        norm.target = target
        outputs.append(norm(x))
        targets.append(target)
    var, mean = torch.var_mean(x, dim=0, correction=1)
    weight = 1.0 / 4  # the fourth batch of a plain mean (1 / momentum is 10)
    expected = torch.nn.functional.batch_norm(
        x, weight * mean, torch.lerp(torch.ones(4), var, weight), eps=norm.eps)
    torch.testing.assert_close(outputs[0], expected)
    torch.testing.assert_close(outputs[1], expected)
    assert targets[1].count == 3 and torch.equal(targets[1].mean, torch.zeros(4))
    assert torch.equal(targets[1].pending, x)


def test_the_first_frame_is_served_as_without_weights() -> None:
    shares = torch.full((19,), 1.0 / 19)
    first = [balanced_engine(shares, target_norm_balance=balance).process(frame(0))
             for balance in (False, True)]
    np.testing.assert_array_equal(first[0].labels, first[1].labels)
    np.testing.assert_allclose(first[0].confidence, first[1].confidence, rtol=1e-5)


@pytest.mark.parametrize("order", ["adapt_then_predict", "predict_then_adapt"])
def test_every_used_level_takes_each_frame_in_once(order: str) -> None:
    e = balanced_engine(torch.full((19,), 1.0 / 19), target_norm_balance=True, order=order,
                        lr=1e-3)
    for seed in range(2):
        e.process(frame(seed))
    used = [t for level in e.target_norm.levels[:3] for t in level]
    assert all(t.count == 2 and t.pending is None for t in used)


def test_the_async_schedule_weighs_each_forward_its_own_rows() -> None:
    """The serving forward and the background's adapting one share the averages."""
    e = balanced_engine(torch.full((19,), 1.0 / 19), target_norm_balance=True,
                        schedule="async", lr=1e-3)
    try:
        for seed in range(5):
            e.process(frame(seed))
        e.background.pending.result(60)
        e.process(frame(5))  # a failure of the last adaptation surfaces here
    finally:
        e.close()
    used = [t for level in e.target_norm.levels[:3] for t in level]
    assert all(t.count >= 5 and torch.isfinite(t.mean).all() for t in used)


def checkpoint_without_shares(tmp_path) -> Path:
    model = build_model(ModelConfig(backbone="tiny", voxel_size=0.2), "cpu")
    path = tmp_path / "old.pt"
    save_checkpoint(path, model, model.cfg, class_names=list(CLASS_NAMES),
                    palette=np.zeros((19, 3), np.uint8), teacher_name=TeacherConfig().name)
    return path


def test_a_checkpoint_without_class_shares_is_loaded_with_a_warning(tmp_path) -> None:
    path = checkpoint_without_shares(tmp_path)
    with pytest.warns(UserWarning, match="records no training class shares"):
        loaded = load_engine(str(path), AdaptConfig(target_norm_balance=True),
                             TeacherConfig(image_height=28), "cpu")
    assert loaded.engine.target_norm.class_shares is None


def test_a_checkpoint_without_class_shares_loads_quietly_where_nothing_normalises(
        tmp_path) -> None:
    path = checkpoint_without_shares(tmp_path)
    for adapt in (AdaptConfig(mode="none"), AdaptConfig(target_norm_levels=0)):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*class shares.*")
            load_engine(str(path), adapt, TeacherConfig(image_height=28), "cpu")
