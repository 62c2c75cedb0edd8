"""`tttkd eval` on a robot's bag without ground truth: the label-free JSON and report, and
`--write-bag` with every mode's outputs as the node publishes them."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from tttkd_ros.core.frame import UNLABELED
from tttkd_ros.core.labels import CLASS_NAMES, palette_rgb
from tttkd_ros.data.drive import generate_drive
from tttkd_ros.ros.bag import LABELS_TOPIC, topic_info, write_drive_bag
from tttkd_ros.ros.bag_outputs import NODE_NAME, mode_topics, ros_name
from tttkd_ros.ros.convert import CloudArrays
from tttkd_ros.ros.outputs import colored_cloud, label_colors, labeled_cloud
from tttkd_ros.ros.pointcloud import pack_rgb
from tttkd_ros.tools import eval as eval_tool
from tttkd_ros.tools.cli import build_parser
from tttkd_ros.tools.evaluation import load_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"lidar_beams": 8, "lidar_azimuth_res_deg": 2.0, "image_scale": 0.1}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVAL_FRAMES = 2
MODES = ("none", "kd+ocl")  # none is not asked for: it runs as the reference
OUTPUTS = ("labeled_points", "colored_points", "camera/mask", "camera/mask_color")


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser("eval").parse_args(["eval", *argv])


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A robot-like drive: clouds, a camera and /tf_static, no ground-truth topic."""
    drive = generate_drive("clean", frames=3, seed=2, **TINY)
    path = tmp_path_factory.mktemp("bags") / "robot"
    write_drive_bag(path, [replace(f, labels=None) for f in drive])
    assert LABELS_TOPIC not in topic_info(path)
    return path


@pytest.fixture(scope="module")
def evaluated(bag: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> dict:
    """The CLI run once with --write-bag, keeping every prediction the evaluation made (a spy
    around the bag writer's sink) and what it printed."""
    out = tmp_path_factory.mktemp("eval")
    args = _parse("--bag", str(bag), "--checkpoint", str(tiny_checkpoint), "--modes", "kd+ocl",
                  "--json", str(out / "result.json"), "--report-dir", str(out / "report"),
                  "--max-frames", str(EVAL_FRAMES), "--budget-ms", "1e7",
                  "--teacher-height", "56", "--device", "cpu", "--no-progress",
                  "--write-bag", str(out / "outputs"))
    predictions: dict[str, list] = {}
    real = eval_tool.evaluate

    def spy(*a, sink, **kw):
        def keep(mode, palette, frame, pred):
            predictions.setdefault(mode, []).append((frame, pred))
            sink(mode, palette, frame, pred)
        return real(*a, sink=keep, **kw)

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(eval_tool, "evaluate", spy)
        code = args.func(args)
    return {"code": code, "result": json.loads((out / "result.json").read_text()),
            "report": out / "report", "bag": out / "outputs", "predictions": predictions,
            "printed": printed.getvalue()}


def test_label_free_json(evaluated):
    assert evaluated["code"] == 0
    result, preds = evaluated["result"], evaluated["predictions"]

    assert result["frames"] == EVAL_FRAMES and result["classes"] == CLASS_NAMES
    assert result["labels"] is False and result["none_added"] is True
    assert list(result["modes"]) == list(MODES)
    for mode, entry in result["modes"].items():
        assert entry["miou"] is None and entry["iou"] == {}
        assert entry["miou_per_frame"] == [None] * EVAL_FRAMES
        assert 0.0 < entry["latency_ms"]["p50"] <= entry["latency_ms"]["p99"]
        assert len(entry["latency_ms_per_frame"]) == EVAL_FRAMES
        assert len(entry["losses_per_frame"]) == len(entry["events_per_frame"]) == EVAL_FRAMES
        assert entry["steps_per_frame"] == [0 if mode == "none" else 1] * EVAL_FRAMES
        assert entry["events"] == {}  # a clean drive trips no guard
        # class shares: of the labels the mode gave, summing to 1
        labels = np.concatenate([p.labels for _, p in preds[mode]])
        labels = labels[labels != UNLABELED]
        counts = np.bincount(labels, minlength=len(CLASS_NAMES))
        assert sum(entry["class_shares"].values()) == pytest.approx(1.0)
        assert entry["class_shares"] == pytest.approx(
            {c: counts[i] / len(labels) for i, c in enumerate(CLASS_NAMES)})

    none, adapted = result["modes"]["none"], result["modes"]["kd+ocl"]
    assert none["agreement_with_none"] == 1.0
    assert none["agreement_with_none_per_frame"] == [1.0] * EVAL_FRAMES
    assert none["losses_per_frame"] == [{}] * EVAL_FRAMES and none["losses_mean"] == {}
    for frame_losses in adapted["losses_per_frame"]:
        assert set(frame_losses) >= {"kd", "ocl"}
        assert all(np.isfinite(v) for v in frame_losses.values())
    assert set(adapted["losses_mean"]) == set(adapted["losses_per_frame"][0])
    agree = [(p.labels == r.labels)[r.labels != UNLABELED].mean()
             for (_, p), (_, r) in zip(preds["kd+ocl"], preds["none"])]
    assert adapted["agreement_with_none_per_frame"] == pytest.approx(agree)


def test_label_free_report_and_table(evaluated):
    report = evaluated["report"]
    text = (report / "report.md").read_text()

    assert "no ground truth" in text and "ran as the reference" in text
    assert all(f"| {mode} |" in text for mode in MODES)
    assert "| mode | agreement with none (%) |" in text and "| kd+ocl |" in text
    for png in ("losses.png", "agreement_with_none.png", "class_shares.png", "latency.png"):
        assert (report / png).read_bytes()[:8] == PNG_MAGIC
    assert not (report / "miou_sequence.png").exists()
    lines = evaluated["printed"].splitlines()
    assert "agree %" in lines[0] and "mIoU" not in lines[0]
    assert lines[1].split()[:2] == ["none", "100.0"]


def _fields(msg) -> list[tuple[str, int, int, int]]:
    return [(str(f.name), int(f.offset), int(f.datatype), int(f.count)) for f in msg.fields]


def _column(msg, name: str) -> np.ndarray:
    """One field of a dense little-endian PointCloud2 (as written) as an array."""
    kinds = {2: "u1", 4: "<u2", 6: "<u4", 7: "<f4"}
    field = next(f for f in msg.fields if f.name == name)
    dtype = np.dtype({"names": [name], "formats": [kinds[int(field.datatype)]],
                      "offsets": [int(field.offset)], "itemsize": int(msg.point_step)})
    return np.frombuffer(bytes(msg.data), dtype=dtype)[name]


def test_write_bag_has_every_mode_as_the_node_publishes_it(evaluated, bag: Path):
    inputs = load_frames(bag=bag, max_frames=EVAL_FRAMES)
    stamps = [f.frame.stamp_ns for f in inputs]
    wanted = ["/points"] + [t for m in MODES for t in mode_topics(m, ["camera"]).values()]
    assert mode_topics("kd+ocl")["labeled_points"] == f"/kd_ocl/{NODE_NAME}/labeled_points"

    with AnyReader([evaluated["bag"]]) as reader:
        assert sorted(c.topic for c in reader.connections) == sorted(wanted)
        got: dict[str, list] = {}
        for conn, t, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            got.setdefault(conn.topic, []).append((t, msg))

    for topic in wanted:
        times = [t for t, _ in got[topic]]
        header_stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
                         for _, m in got[topic]]
        assert times == header_stamps == stamps, topic
    camera_frame = inputs[0].frame.cameras[0].frame_id
    for mode in MODES:
        topics = mode_topics(mode, ["camera"])
        for i, (frame, pred) in enumerate(evaluated["predictions"][mode]):
            cloud = CloudArrays(frame.points, True, 1, len(frame.points))
            labeled = got[topics["labeled_points"]][i][1]
            colored = got[topics["colored_points"]][i][1]
            node_labeled = labeled_cloud(labeled.header, cloud, pred)  # rclpy, as published
            node_colored = colored_cloud(colored.header, cloud, pred.labels, palette_rgb())
            assert _fields(labeled) == _fields(node_labeled)
            assert [f[0] for f in _fields(labeled)] == ["x", "y", "z", "intensity", "label",
                                                        "confidence"]
            assert _fields(colored) == _fields(node_colored)
            assert [f[0] for f in _fields(colored)] == ["x", "y", "z", "rgb"]
            assert labeled.header.frame_id == colored.header.frame_id == frame.frame_id
            np.testing.assert_array_equal(_column(labeled, "label"), pred.labels)
            np.testing.assert_array_equal(_column(labeled, "confidence"), pred.confidence)
            np.testing.assert_array_equal(_column(labeled, "x"), frame.points[:, 0])
            rgb = pack_rgb(label_colors(pred.labels, palette_rgb()))
            np.testing.assert_array_equal(_column(colored, "rgb").view(np.uint32),
                                          rgb.view(np.uint32))
            mask = got[topics["camera/mask"]][i][1]
            color = got[topics["camera/mask_color"]][i][1]
            assert (mask.encoding, color.encoding) == ("mono8", "rgb8")
            assert mask.header.frame_id == color.header.frame_id == camera_frame
            np.testing.assert_array_equal(
                np.asarray(mask.data).reshape(mask.height, mask.width), pred.masks["camera"])


def test_write_bag_refuses_an_existing_folder(bag: Path, tiny_checkpoint: Path,
                                              tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "taken").mkdir()
    args = _parse("--bag", str(bag), "--checkpoint", str(tiny_checkpoint), "--modes", "none",
                  "--json", str(tmp_path / "r.json"), "--device", "cpu",
                  "--write-bag", str(tmp_path / "taken"))

    assert args.func(args) == 2
    assert "exists" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_mode_names_are_legal_ros_names():
    assert [ros_name(m) for m in ("kd+ocl", "tent", "a+-b", "3d")] == [
        "kd_ocl", "tent", "a_b", "_3d"]


def test_node_name_is_the_nodes():
    from tttkd_ros.ros.node import NODE_NAME as node_name

    assert NODE_NAME == node_name
