"""`tttkd pretrain-teacher`: patch targets, the loss, and a weights file the teacher loads."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tttkd_ros.core.config import TeacherConfig
from tttkd_ros.core.labels import IGNORE_INDEX
from tttkd_ros.core.model.teacher import DinoTeacher
from tttkd_ros.tools import pretrain_teacher as pt
from tttkd_ros.tools.cli import build_parser


def test_patch_targets_are_the_class_histograms_of_each_patch():
    classes = np.full((4, 6), IGNORE_INDEX, dtype=np.uint8)
    classes[:2, :3] = 8  # top-left patch: all road
    classes[:2, 3:] = [[pt.SKY, pt.SKY, 0], [0, 0, 0]]  # top-right: 2 sky, 4 car
    classes[2:, :3] = 12  # bottom-left: building; bottom-right stays unlabeled
    y = pt.patch_targets(classes, rows=2, cols=2).numpy()
    assert y.shape == (4, pt.SKY + 1)
    assert y[0, 8] == 1.0 and y[0].sum() == 1.0
    assert y[1, pt.SKY] == pytest.approx(2 / 6) and y[1, 0] == pytest.approx(4 / 6)
    assert y[2, 12] == 1.0
    assert y[3].sum() == 0.0


def test_soft_cross_entropy_ignores_unlabeled_patches_and_prefers_the_target():
    target = torch.zeros(1, 2, 3)
    target[0, 0, 1] = 1.0  # patch 0 is class 1; patch 1 has no labeled pixel
    right = torch.tensor([[[0.0, 5.0, 0.0], [9.0, -9.0, 0.0]]])
    wrong = torch.tensor([[[5.0, 0.0, 0.0], [-9.0, 9.0, 0.0]]])
    assert pt.soft_cross_entropy(right, target) < pt.soft_cross_entropy(wrong, target)
    expected = -torch.log_softmax(right[0, 0], dim=0)[1]
    assert pt.soft_cross_entropy(right, target) == pytest.approx(float(expected))


def test_flipped_batch_mirrors_image_and_targets_together():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (28, 56, 3), dtype=np.uint8)
    classes = np.zeros((28, 56), dtype=np.uint8)
    classes[:, :14] = 8  # the leftmost patch column is road
    x, y = pt._batch([(image, classes, "clean")], 28, 14)
    xf, yf = pt._batch([(image, classes, "clean")], 28, 14, flip=True)
    assert torch.equal(xf, x.flip(3))
    assert yf[0, 3, 8] == 1.0 and y[0, 0, 8] == 1.0 and yf[0, 0, 8] == 0.0


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser("pretrain-teacher").parse_args(["pretrain-teacher", *argv])


@pytest.mark.parametrize(("extra", "message"), [
    (("--set", "lidar_colour=3"), "unknown synthetic-world setting 'lidar_colour'"),
    (("--minutes", "0"), "must be positive"),
    (("--steps", "-1"), "--steps at least 0"),
])
def test_bad_arguments_are_named_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture, extra, message):
    args = _parse("--out", str(tmp_path / "t.pth"), *extra)
    assert args.func(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t.pth").exists()


def test_pretrained_weights_load_into_the_teacher(tmp_path: Path):
    out = tmp_path / "teacher.pth"
    args = _parse("--out", str(out), "--drives", "1", "--frames", "1", "--towns", "1",
                  "--held-out-frames", "1", "--minutes", "0.05", "--batch-size", "2",
                  "--eval-every", "0.002", "--set", "lidar_beams=8", "--set", "image_scale=0.1")
    torch.set_num_threads(1)
    assert args.func(args) == 0

    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["steps"] >= 1
    assert summary["images"] == len(pt.CONDITIONS) + 1  # one frame per condition + 1 town
    assert set(summary["held_out_patch_accuracy"]) == set(pt.CONDITIONS)
    curve = summary["held_out_curve"]  # the accuracy along the run, in time order
    assert curve and all(0 <= p["mean_accuracy"] <= 100 for p in curve)
    assert [p["minutes"] for p in curve] == sorted(p["minutes"] for p in curve)
    teacher = DinoTeacher(TeacherConfig(weights=str(out), image_height=56), "cpu")
    trained = torch.load(out, weights_only=True)
    assert torch.equal(teacher.model.state_dict()["pos_embed"], trained["pos_embed"])
    assert teacher.features(np.zeros((37, 124, 3), np.uint8)).shape == (384, 4, 13)


def test_a_step_budget_gives_the_same_weights_however_long_the_steps_take(tmp_path: Path):
    def pretrain(name: str) -> dict:
        out = tmp_path / name / "teacher.pth"
        args = _parse("--out", str(out), "--drives", "1", "--frames", "1", "--towns", "1",
                      "--held-out-frames", "1", "--steps", "3", "--minutes", "0.0001",
                      "--batch-size", "2", "--set", "lidar_beams=8", "--set", "image_scale=0.1")
        assert args.func(args) == 0
        return torch.load(out, weights_only=True)

    torch.set_num_threads(1)
    first, second = pretrain("a"), pretrain("b")
    summary = json.loads((tmp_path / "a" / "teacher.json").read_text())
    assert summary["steps"] == 3  # the step budget, not the (far too short) time budget
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
