"""`tttkd train`: a short run on a tiny synthetic drive lowers the loss, writes checkpoints
the engine loads, and resumes from its last state."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tttkd_ros.core.config import AdaptConfig, TeacherConfig
from tttkd_ros.core.labels import CLASS_NAMES, raw_to_train_lut
from tttkd_ros.core.loading import load_engine
from tttkd_ros.core.model.checkpoint import load_checkpoint
from tttkd_ros.core.model.teacher import DinoTeacher
from tttkd_ros.data.drive import generate_drive
from tttkd_ros.data.kitti import write_sequence
from tttkd_ros.tools import train
from tttkd_ros.tools.cli import build_parser

TINY = {"lidar_beams": 16, "lidar_azimuth_res_deg": 1.5, "image_scale": 0.1}


def parse(*argv: str) -> argparse.Namespace:
    return build_parser("train").parse_args(["train", *argv])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drive")
    write_sequence(root, "00", generate_drive("clean", frames=4, seed=0, **TINY))
    write_sequence(root, "01", generate_drive("clean", frames=2, seed=5, **TINY))
    return root


def common(data: Path, out: Path, epochs: int) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--train-seqs", "00", "--val-seqs", "01",
            "--epochs", str(epochs), "--batch-size", "1", "--lr", "1e-2", "--voxel-size", "0.2",
            "--teacher-height", "28", "--device", "cpu"]


@pytest.mark.filterwarnings("ignore:DINOv2 teacher")
def test_short_run_lowers_loss_and_writes_a_loadable_checkpoint(data: Path, tmp_path: Path,
                                                                  capsys) -> None:
    out = tmp_path / "model.ckpt"
    args = parse(*common(data, out, epochs=4))
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.rindex("\n{"):])  # the summary closes the output
    history = summary["history"]
    assert len(history) == 4
    assert history[-1]["ce"] < history[0]["ce"]
    assert "kd" in history[0] and all(np.isfinite(h["val_miou"]) for h in history)
    assert out.exists() and out.with_name("model.last.ckpt").exists()
    loaded = load_engine(str(out), AdaptConfig(mode="none"), TeacherConfig(image_height=28),
                         "cpu")
    assert loaded.class_names == CLASS_NAMES
    # the synthetic world's intensities are 0..1: the checkpoint says so for the engine
    assert loaded.engine.intensity.range == 1.0 and 0 < loaded.engine.intensity.p99 <= 1.0
    # and the teacher it was trained with: another one is refused, unless allowed
    record = load_checkpoint(out, "cpu").teacher
    assert record["weights"] == "random:0" and record["image_height"] == 28
    best = max(history, key=lambda h: h["val_miou"])  # the first of the best epochs
    assert record["kd_loss"] == pytest.approx(best["kd"])
    assert load_checkpoint(out, "cpu").cfg.kd_center  # --kd-features centred by default
    with pytest.raises(ValueError, match="image_height: trained with 28, configured 56"):
        load_engine(str(out), AdaptConfig(), TeacherConfig(image_height=56), "cpu")
    with pytest.warns(UserWarning, match="does not match the one"):
        load_engine(str(out), AdaptConfig(), TeacherConfig(image_height=56,
                                                           allow_mismatch=True), "cpu")
    shares = load_checkpoint(out, "cpu").class_shares  # the training voxels' class mix
    assert shares is not None and float(shares.sum()) == pytest.approx(1.0)
    assert torch.equal(loaded.engine.target_norm.class_shares, shares)
    frame = next(generate_drive("clean", frames=1, seed=9, **TINY))
    pred = loaded.engine.process(frame.to_frame())
    assert pred.labels.shape == (len(frame.points),) and (pred.labels < 19).all()


@pytest.mark.filterwarnings("ignore:DINOv2 teacher")
def test_resume_continues_from_the_last_epoch(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.ckpt"
    first = train.train(parse(*common(data, out, epochs=1)))
    assert first["epochs"] == 1
    resumed = train.train(parse(*common(data, out, epochs=2), "--resume"))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"][0] == first["history"][0]


class LabelledCloud:  # what the class statistics read of a training frame
    def __init__(self, labels: np.ndarray, points: np.ndarray | None = None) -> None:
        self.labels = labels
        self.points = points


def test_class_shares_count_each_voxel_once_split_among_its_points_classes() -> None:
    """Voxel 0.2 m: three road points in one voxel, a road and a pole point in a second, a
    pole point in a third and an unlabelled point in a fourth: road 1.5, pole 1.5 voxels."""
    xyz = [[0.01, 0, 0], [0.02, 0, 0], [0.03, 0, 0], [1.01, 0, 0], [1.02, 0, 0],
           [2.01, 0, 0], [3.01, 0, 0]]
    points = np.c_[np.array(xyz, np.float32), np.zeros(7, np.float32)]
    raw = np.array([40, 40, 40, 40, 80, 80, 0], dtype=np.uint32)  # road 8, pole 17, unlabelled
    shares = train.class_shares([LabelledCloud(raw, points)], raw_to_train_lut(), 19, 0.2)
    assert shares[8] == pytest.approx(0.5) and shares[17] == pytest.approx(0.5)
    assert sum(shares) == pytest.approx(1.0)


def test_balanced_weights_favour_rare_classes() -> None:
    raw = np.array([40] * 90 + [80] * 10, dtype=np.uint32)  # road (train 8) and pole (17)
    weights = train.balanced_weights([LabelledCloud(raw)], raw_to_train_lut(), 19,
                                     power=0.5).numpy()
    assert weights[17] > weights[8]
    assert np.isclose(weights[17] / weights[8], 3.0)  # (0.9 / 0.1) ** 0.5
    assert np.isclose(weights[[8, 17]].mean(), 1.0) and weights[0] == 1.0
    assert np.allclose(train.balanced_weights([LabelledCloud(raw)], raw_to_train_lut(), 19,
                                              power=0.0).numpy(), 1.0)


@pytest.mark.filterwarnings("ignore:DINOv2 teacher")
def test_another_class_set_from_a_label_map(data: Path, tmp_path: Path) -> None:
    """A label map in semantic-kitti.yaml's format defines the classes: the checkpoint has
    its names and colours, and eval scores the ground truth in it."""
    import yaml

    from tttkd_ros.core.labels import LEARNING_MAP, RAW_LABELS
    from tttkd_ros.ros.bag import write_drive_bag
    from tttkd_ros.tools import eval as eval_tool

    groups = {"vehicle": (10, 11, 13, 15, 18, 20, 252, 257, 258, 259),
              "ground": (40, 44, 48, 49, 60, 72)}  # everything else: "other"
    learning = {raw: 3 for raw, learn in LEARNING_MAP.items() if learn > 0}
    learning.update({raw: 1 for raw in groups["vehicle"]})
    learning.update({raw: 2 for raw in groups["ground"]})
    learning.update({0: 0, 1: 0})
    label_map = tmp_path / "three.yaml"
    label_map.write_text(yaml.safe_dump({
        "labels": {**RAW_LABELS, 1000: "vehicle", 1001: "ground", 1002: "other"},
        "color_map": {0: [0, 0, 0], 1000: [255, 0, 0], 1001: [0, 255, 0], 1002: [0, 0, 255]},
        "learning_map": learning, "learning_map_inv": {0: 0, 1: 1000, 2: 1001, 3: 1002}}))
    out = tmp_path / "three.ckpt"
    args = parse(*common(data, out, epochs=1), "--label-map", str(label_map))
    assert args.func(args) == 0
    loaded = load_checkpoint(out, "cpu")
    assert loaded.class_names == ["vehicle", "ground", "other"] and loaded.cfg.num_classes == 3
    assert loaded.palette.tolist() == [[0, 0, 255], [0, 255, 0], [255, 0, 0]]  # BGR -> RGB

    bag = tmp_path / "bag"
    write_drive_bag(bag, list(generate_drive("clean", frames=1, seed=9, **TINY)))
    result = tmp_path / "eval.json"
    ev = build_parser("eval").parse_args([
        "eval", "--bag", str(bag), "--checkpoint", str(out), "--modes", "none",
        "--label-map", str(label_map), "--teacher-height", "28", "--device", "cpu",
        "--json", str(result), "--no-progress"])
    assert eval_tool.run(ev) == 0
    iou = json.loads(result.read_text())["modes"]["none"]["iou"]
    assert set(iou) <= {"vehicle", "ground", "other"} and "ground" in iou


@pytest.mark.filterwarnings("ignore:DINOv2 teacher")
def test_no_intensity_model_ignores_intensity(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.ckpt"
    args = parse(*common(data, out, epochs=1), "--no-intensity", "--kd-weight", "0")
    assert args.func(args) == 0
    loaded = load_engine(str(out), AdaptConfig(mode="none"), TeacherConfig(image_height=28),
                         "cpu")
    assert loaded.engine.model.cfg.use_intensity is False
    frame = next(generate_drive("clean", frames=1, seed=9, **TINY)).to_frame()
    first = loaded.engine.process(frame)
    frame.points[:, 3] = np.random.default_rng(0).random(len(frame.points))
    again = loaded.engine.process(frame)
    np.testing.assert_array_equal(again.labels, first.labels)
    np.testing.assert_allclose(again.confidence, first.confidence, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:DINOv2 teacher")
def test_init_starts_from_a_checkpoint(data: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.ckpt"
    args = parse(*common(data, first, epochs=3))
    assert args.func(args) == 0
    # the init checkpoint's settings win over the command line's (voxel 0.2 over 0.1)
    again = tmp_path / "again.ckpt"
    args = parse(*common(data, again, epochs=1), "--init", str(first), "--voxel-size", "0.1",
                 "--kd-features", "plain")
    summary = train.train(args)
    scratch = train.train(parse(*common(data, tmp_path / "scratch.ckpt", epochs=1)))
    assert load_checkpoint(again, "cpu").cfg.voxel_size == 0.2
    # but what the head learns is this run's: the init checkpoint's centred features no more
    assert load_checkpoint(first, "cpu").cfg.kd_center
    assert not load_checkpoint(again, "cpu").cfg.kd_center
    assert summary["history"][0]["ce"] < scratch["history"][0]["ce"]
    with pytest.raises(ValueError, match="feat_dim"):
        train.train(parse(*common(data, tmp_path / "x.ckpt", epochs=1), "--init", str(first),
                          "--teacher", "vit_base_patch14_dinov2"))


@pytest.mark.filterwarnings("ignore:DINOv2 teacher")
def test_teacher_height_zero_follows_the_checkpoint(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.ckpt"
    assert train.run(parse(*common(data, out, epochs=1))) == 0  # trained at height 28
    loaded = load_engine(str(out), AdaptConfig(mode="none"), TeacherConfig(), "cpu")
    assert loaded.engine.teacher.image_height == 28
    with pytest.raises(ValueError, match="image_height 0"):
        DinoTeacher(TeacherConfig(), "cpu")
