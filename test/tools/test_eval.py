"""`tttkd eval`: every mode on the same bag frames, the JSON and plots, clear failures."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tttkd_ros.core.config import MODES, AdaptConfig, TeacherConfig
from tttkd_ros.core.labels import CLASS_NAMES, IGNORE_INDEX, raw_to_train
from tttkd_ros.core.metrics import ConfusionMatrix
from tttkd_ros.data.drive import generate_drive
from tttkd_ros.data.kitti import write_sequence
from tttkd_ros.ros.bag import read_bag_frames, write_drive_bag
from tttkd_ros.tools import eval as eval_tool
from tttkd_ros.tools.cli import build_parser
from tttkd_ros.tools.evaluation import label_lut, load_frames, mode_configs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEACHER = "vit_small_patch14_dinov2"
TINY = {"lidar_beams": 8, "lidar_azimuth_res_deg": 2.0, "image_scale": 0.1}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVAL_FRAMES = 2


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser("eval").parse_args(["eval", *argv])


@pytest.fixture(scope="module")
def drive() -> list:
    return list(generate_drive("clean", frames=3, seed=2, **TINY))


@pytest.fixture(scope="module")
def bag(drive: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "drive"
    write_drive_bag(path, drive, storage="mcap")
    return path


@pytest.fixture(scope="module")
def evaluated(bag: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[int, Path, Path]:
    """The CLI run once over every mode (budget large enough that every step is taken)."""
    out = tmp_path_factory.mktemp("eval")
    args = _parse("--bag", str(bag), "--checkpoint", str(tiny_checkpoint),
                  "--modes", ",".join(MODES),
                  "--json", str(out / "result.json"), "--report-dir", str(out / "report"),
                  "--max-frames", str(EVAL_FRAMES), "--budget-ms", "1e7",
                  "--teacher-height", "56", "--device", "cpu")
    return args.func(args), out / "result.json", out / "report"


def test_eval_writes_every_mode_and_the_plots(evaluated):
    code, json_path, report = evaluated
    assert code == 0
    result = json.loads(json_path.read_text())

    assert result["frames"] == EVAL_FRAMES
    assert result["classes"] == CLASS_NAMES
    assert list(result["modes"]) == list(MODES)
    for mode, entry in result["modes"].items():
        assert 0.0 <= entry["miou"] <= 100.0
        assert set(entry["iou"]) <= set(CLASS_NAMES) and entry["iou"]
        assert entry["miou"] == pytest.approx(np.mean(list(entry["iou"].values())))
        assert 0.0 < entry["latency_ms"]["p50"] <= entry["latency_ms"]["p99"]
        assert entry["steps_mean"] == (0.0 if mode == "none" else 1.0)
        assert entry["over_budget_frames"] == 0
        assert len(entry["miou_per_frame"]) == EVAL_FRAMES
        assert entry["config"]["mode"] == mode
    tent = result["modes"]["tent"]["config"]
    assert (tent["params"], tent["bn_prior"]) == ("backbone_bn", 0.0)
    assert result["modes"]["kd"]["config"]["params"] == "backbone"

    text = (report / "report.md").read_text()
    assert all(f"| {mode} |" in text for mode in MODES)
    for png in ("miou_sequence.png", "class_iou.png", "latency.png"):
        assert (report / png).read_bytes()[:8] == PNG_MAGIC


def test_none_mode_equals_a_direct_engine_run(evaluated, bag: Path, tiny_checkpoint: Path):
    from tttkd_ros.core.loading import build_engine

    result = json.loads(evaluated[1].read_text())["modes"]["none"]
    engine = build_engine(str(tiny_checkpoint), AdaptConfig(mode="none"),
                          TeacherConfig(name=TEACHER, image_height=56), "cpu")
    total, per_frame = ConfusionMatrix(len(CLASS_NAMES)), []
    for item in list(read_bag_frames(bag))[:EVAL_FRAMES]:
        pred = engine.process(item.frame)
        cm = ConfusionMatrix(len(CLASS_NAMES))
        cm.update(raw_to_train(item.labels), pred.labels)
        total.matrix += cm.matrix
        per_frame.append(cm.miou())

    assert result["miou"] == pytest.approx(total.miou(), rel=1e-12)
    assert result["miou_per_frame"] == pytest.approx(per_frame, rel=1e-12)
    iou = total.iou() * 100
    assert result["iou"] == pytest.approx(
        {c: iou[i] for i, c in enumerate(CLASS_NAMES) if total.present()[i]}, rel=1e-12)


def test_kitti_folder_without_labels_is_label_free_and_a_gap_fails(drive, tmp_path: Path):
    """Scans without any labels (KITTI's object scans) give label-free frames, as a bag
    without ground truth does (test_eval_unlabeled.py); a folder where only some frames
    have labels is an error naming the first gap."""
    write_sequence(tmp_path, "04", [replace(f, labels=None) for f in drive])
    frames = load_frames(data=tmp_path, sequence="04")
    assert len(frames) == len(drive) and all(f.labels is None for f in frames)

    write_sequence(tmp_path, "05", [drive[0], *[replace(f, labels=None) for f in drive[1:]]])
    with pytest.raises(ValueError, match="frame 1 has no labels"):
        load_frames(data=tmp_path, sequence="05")


def test_labeled_result_says_so(evaluated):
    result = json.loads(evaluated[1].read_text())

    assert result["labels"] is True and result["none_added"] is False
    for entry in result["modes"].values():
        assert sum(entry["class_shares"].values()) == pytest.approx(1.0)
        assert len(entry["agreement_with_none_per_frame"]) == EVAL_FRAMES
    assert result["modes"]["none"]["agreement_with_none"] == 1.0


def test_kitti_folder_gives_the_frames_of_the_bag(drive, bag: Path, tmp_path: Path):
    write_sequence(tmp_path, "03", drive)

    from_data = load_frames(data=tmp_path, sequence="03", max_frames=2)
    from_bag = load_frames(bag=bag, max_frames=2)

    assert len(from_data) == len(from_bag) == 2
    for a, b in zip(from_data, from_bag):
        np.testing.assert_array_equal(a.frame.points, b.frame.points)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.frame.cameras[0].image, b.frame.cameras[0].image)


def test_labels_map_through_the_checkpoint_class_names():
    lut = label_lut(["road", "car"])

    assert lut[40] == 0 and lut[10] == 1 and lut[252] == 1  # moving-car is a car
    assert lut[70] == IGNORE_INDEX and lut[0] == IGNORE_INDEX
    with pytest.raises(ValueError, match="share no name"):
        label_lut(["sky"])


def test_overrides_reach_every_mode_or_one():
    args = _parse("--bag", "b", "--checkpoint", "c", "--json", "j", "--steps", "3",
                  "--set", "tent.params=all", "--set", "kd+ocl.w_ocl=0.5",
                  "--set", "restore_prob=0.01")
    common, per_mode = eval_tool.parse_overrides(args)
    configs = mode_configs(MODES, common, per_mode)

    assert all(c.max_steps == 3 and c.restore_prob == 0.01 for c in configs.values())
    assert (configs["tent"].params, configs["tent"].bn_prior) == ("all", 0.0)
    assert configs["kd+ocl"].w_ocl == 0.5 and configs["ocl"].w_ocl == 1.0
    for bad in ("tent.nothing=1", "sky.lr=1", "lr"):
        with pytest.raises(ValueError, match="--set"):
            eval_tool.parse_overrides(_parse("--bag", "b", "--checkpoint", "c", "--json", "j",
                                             "--set", bad))
