"""`tttkd eval` on bags recorded the way robots record them (robot_bags.py): configured by the
node's own parameter file and remaps, JPEG cameras, extrinsics through a tf tree, 0..255
intensity, receive times after the stamps, an organised Ouster cloud with no-returns; and
a bag whose topics do not match says which it has and what to pass."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from robot_bags import write_robot_bag
from rosbags.highlevel import AnyReader

from tttkd_ros.core.frame import UNLABELED
from tttkd_ros.data.camera import CameraConfig
from tttkd_ros.data.drive import generate_drive
from tttkd_ros.ros.bag import InputTopics
from tttkd_ros.tools.cli import build_parser
from tttkd_ros.tools.evaluation import load_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"lidar_beams": 8, "lidar_azimuth_res_deg": 2.0, "image_scale": 0.1}
CAMERAS = ("camera", "camera_right")
REMAPS = ["points:=/velodyne_points",
          *(f"{c}/image:=/{c}/image_raw/compressed" for c in CAMERAS),
          *(f"{c}/camera_info:=/{c}/camera_info" for c in CAMERAS)]


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser("eval").parse_args(["eval", *argv])


@pytest.fixture(scope="module")
def drive() -> list:
    two = (CameraConfig(), CameraConfig().stereo_partner())
    return list(generate_drive("clean", frames=3, seed=4, cameras=two, **TINY))


@pytest.fixture(scope="module")
def velodyne_bag(drive, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("robot") / "velodyne"
    write_robot_bag(path, drive, lidar="velodyne")
    return path


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    """The node's parameter file on this robot: two compressed cameras, extrinsics from tf."""
    section = {"cameras": list(CAMERAS), "use_tf": True, "teacher": {"image_height": 56},
               "adaptation": {"budget_ms": 1.0e7}, "sync": {"slop": 0.05}}
    section.update({c: {"transport": "compressed"} for c in CAMERAS})
    path = tmp_path_factory.mktemp("params") / "robot.yaml"
    path.write_text(yaml.safe_dump({"tttkd_adapt": {"ros__parameters": section}}))
    return path


def test_robot_bag_frames_are_the_ones_the_node_would_build(drive, velodyne_bag) -> None:
    inputs = InputTopics.remapped(CAMERAS, dict(r.split(":=") for r in REMAPS),
                                  compressed=CAMERAS)
    frames = load_frames(bag=velodyne_bag, cameras=CAMERAS, inputs=inputs)
    assert len(frames) == len(drive)
    for got, want in zip(frames, drive):
        assert got.labels is None and got.frame.stamp_ns == want.stamp_ns
        np.testing.assert_array_equal(got.frame.points[:, :3], want.points[:, :3])
        np.testing.assert_allclose(got.frame.points[:, 3], want.points[:, 3] * 255, rtol=1e-6)
        assert got.frame.intensity_max is None  # a float field: auto scaling reads its values
        assert [v.name for v in got.frame.cameras] == list(CAMERAS)  # both paired
        for view, truth in zip(got.frame.cameras, want.cameras):
            # the chain base_link -> CAM_link -> CAM_optical_frame against base_link -> lidar
            np.testing.assert_allclose(view.T_cam_lidar, truth.T_cam_lidar, atol=1e-9)
            assert view.frame_id == f"{truth.name}_optical_frame"
            error = np.abs(view.image.astype(int) - truth.image.astype(int)).mean()
            assert view.image.shape == truth.image.shape and error < 8  # JPEG's loss


def test_eval_with_the_nodes_params_and_remaps(velodyne_bag, params_file, tiny_checkpoint,
                                               tmp_path) -> None:
    out = tmp_path / "result.json"
    args = _parse("--bag", str(velodyne_bag), "--checkpoint", str(tiny_checkpoint),
                  "--params", str(params_file), *(f"--remap={r}" for r in REMAPS),
                  "--modes", "kd+ocl", "--json", str(out), "--max-frames", "2",
                  "--device", "cpu", "--no-progress")
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    config = result["config"]
    assert result["labels"] is False and result["frames"] == 2
    assert config["cameras"] == list(CAMERAS) and config["params"] == str(params_file)
    assert config["topics"]["points"] == "/velodyne_points"
    assert config["topics"]["images"]["camera_right"] == "/camera_right/image_raw/compressed"
    kd_ocl = result["modes"]["kd+ocl"]
    assert kd_ocl["config"]["budget_ms"] == 1.0e7  # the params file's, for every mode
    assert np.isfinite(kd_ocl["losses_mean"]["kd"])  # the JPEG cameras gave targets
    assert "intensity_out_of_range" not in kd_ocl["events"]  # 0..255 scaled to 0..1


def test_a_bag_whose_topics_do_not_match_names_them_and_the_option(velodyne_bag, params_file,
                                                                   tiny_checkpoint, tmp_path,
                                                                   capsys) -> None:
    args = _parse("--bag", str(velodyne_bag), "--checkpoint", str(tiny_checkpoint),
                  "--params", str(params_file), "--json", str(tmp_path / "r.json"),
                  "--device", "cpu", "--no-progress")
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "lacks topics /points" in err and "/velodyne_points" in err and "--remap" in err
    bad = _parse("--bag", str(velodyne_bag), "--checkpoint", str(tiny_checkpoint),
                 "--remap", "lidar:=/velodyne_points", "--json", str(tmp_path / "r.json"))
    assert bad.func(bad) == 2 and "the node's inputs are" in capsys.readouterr().err


def test_ouster_no_returns_come_out_unlabeled(drive, tiny_checkpoint, tmp_path) -> None:
    bag = tmp_path / "ouster"
    holes = write_robot_bag(bag, drive, lidar="ouster")["holes"]
    args = _parse("--bag", str(bag), "--checkpoint", str(tiny_checkpoint), "--cameras", "",
                  "--remap", "points:=/ouster/points", "--modes", "none", "--max-frames", "2",
                  "--json", str(tmp_path / "r.json"), "--write-bag", str(tmp_path / "out"),
                  "--device", "cpu", "--no-progress")
    assert args.func(args) == 0
    with AnyReader([tmp_path / "out"]) as reader:
        conns = [c for c in reader.connections if c.topic == "/none/tttkd_adapt/labeled_points"]
        labels = []
        for conn, _, raw in reader.messages(conns):
            msg = reader.deserialize(raw, conn.msgtype)
            offset = next(f.offset for f in msg.fields if f.name == "label")
            rows = np.frombuffer(msg.data, np.uint8).reshape(-1, msg.point_step)
            labels.append(rows[:, offset:offset + 2].copy().view("<u2").ravel())
    assert len(labels) == 2
    for got, mask in zip(labels, holes):
        assert len(got) == len(mask) and mask.mean() > 0.3
        assert (got[mask] == UNLABELED).all() and (got[~mask] < 19).all()


@pytest.mark.parametrize("by", ["tf", "parameter"])
def test_a_base_link_cloud_is_moved_into_the_sensor_frame(drive, by, tmp_path) -> None:
    """Autoware publishes its cloud in base_link; the model was trained in the LiDAR frame:
    with sensor_frame (tf) or cloud_to_sensor (parameter) the model gets the frames it
    would have got from the LiDAR, cameras included."""
    from robot_bags import BASE_T_LIDAR

    from tttkd_ros.ros.param_file import settings_from_file

    bag = tmp_path / "base_link"
    write_robot_bag(bag, drive, in_base_link=True)
    sensor_from_base = np.linalg.inv(BASE_T_LIDAR)
    section = {"cameras": list(CAMERAS), "use_tf": by == "tf", "sensor_frame": "velodyne"}
    if by == "parameter":
        from tttkd_ros.ros.extrinsics import quaternion_from_matrix

        section["cloud_to_sensor"] = {"xyz": sensor_from_base[:3, 3].tolist(),
                                      "quat": quaternion_from_matrix(
                                          sensor_from_base[:3, :3]).tolist()}
    node = tmp_path / "params.yaml"
    node.write_text(yaml.safe_dump({"tttkd_adapt": {"ros__parameters": section}}))
    settings = settings_from_file(node)
    inputs = InputTopics.remapped(CAMERAS, dict(r.split(":=") for r in REMAPS), CAMERAS)
    # the parameter way takes the camera extrinsics from the bag's tf (base_link -> camera)
    frames = load_frames(bag=bag, cameras=CAMERAS, inputs=inputs,
                         sensor_frame=settings.sensor_frame if settings.use_tf else "",
                         cloud_to_sensor=settings.cloud_to_sensor)
    for got, want in zip(frames, drive):
        assert got.frame.frame_id == "base_link"
        np.testing.assert_allclose(got.frame.points[:, :3], want.points[:, :3], atol=1e-4)
        for view, truth in zip(got.frame.cameras, want.cameras):
            np.testing.assert_allclose(view.T_cam_lidar, truth.T_cam_lidar, atol=1e-9)


def test_remaps_name_the_nodes_inputs_for_any_iterable_of_cameras() -> None:
    remaps = dict(r.split(":=") for r in REMAPS)
    listed = InputTopics.remapped(list(CAMERAS), remaps, compressed=CAMERAS)
    assert InputTopics.remapped(iter(CAMERAS), remaps, compressed=CAMERAS) == listed
    assert listed.images["camera"] == "/camera/image_raw/compressed"
    # an unremapped input stays at the root, under image_transport's name when compressed
    default = InputTopics.remapped(["front"], {}, compressed=["front"])
    assert (default.points, default.image("front")) == ("/points", "/front/image/compressed")
