"""rosbag2 drive bags: write -> read gives back the frames, and broken bags say what is wrong."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from tttkd_ros.data.drive import generate_drive
from tttkd_ros.ros.bag import (
    BagError,
    iter_messages,
    read_bag_frames,
    topic_info,
    write_drive_bag,
)

TINY = {"lidar_beams": 8, "lidar_azimuth_res_deg": 2.0, "image_scale": 0.1}
DISTORTION = np.array([0.1, -0.05, 0.001, 0.002, 0.01])


@pytest.fixture(scope="module")
def drive() -> list:
    """Three tiny synthetic frames; the camera gets a non-zero plumb_bob D to carry."""
    frames = list(generate_drive("clean", frames=3, seed=1, **TINY))
    return [replace(f, cameras=[replace(v, D=DISTORTION) for v in f.cameras]) for f in frames]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_round_trip_gives_identical_arrays_and_stamps(drive, tmp_path: Path, storage: str):
    bag = tmp_path / "drive"
    assert write_drive_bag(bag, drive, storage=storage) == len(drive)

    read = list(read_bag_frames(bag, require_labels=True))

    assert len(read) == len(drive)
    for want, got in zip(drive, read):
        frame = got.frame
        assert frame.stamp_ns == want.stamp_ns
        assert frame.frame_id == "lidar"
        np.testing.assert_array_equal(frame.points, want.points)
        assert frame.points.dtype == np.float32
        np.testing.assert_array_equal(got.labels, want.labels)
        assert [v.name for v in frame.cameras] == [v.name for v in want.cameras]
        for v_want, v_got in zip(want.cameras, frame.cameras):
            np.testing.assert_array_equal(v_got.image, v_want.image)
            np.testing.assert_array_equal(v_got.K, v_want.K)
            np.testing.assert_array_equal(v_got.D, v_want.D)
            np.testing.assert_allclose(v_got.T_cam_lidar, v_want.T_cam_lidar, atol=1e-12)
            assert v_got.frame_id == f"{v_want.name}_optical"


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_layout_time_order_and_latched_tf_static(drive, tmp_path: Path, storage: str):
    bag = tmp_path / "drive"
    write_drive_bag(bag, drive, storage=storage)

    topics = topic_info(bag)
    assert {t: i.count for t, i in topics.items()} == {
        "/points": 3, "/ground_truth/points": 3, "/camera/image": 3,
        "/camera/camera_info": 3, "/tf_static": 1}
    assert [t for t, i in topics.items() if i.latched] == ["/tf_static"]

    messages = list(iter_messages(bag))
    stamps = [s for _, s, _ in messages]
    assert stamps == sorted(stamps)
    assert messages[0][0] == "/tf_static" and messages[0][1] == drive[0].stamp_ns
    info = next(m for t, _, m in messages if t == "/camera/camera_info")
    assert info.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(info.p.reshape(3, 4)[:, :3], drive[0].cameras[0].K)


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


@pytest.mark.parametrize("R", [np.eye(3), _rotation(0, np.pi), _rotation(1, np.pi),
                               _rotation(2, np.pi), _rotation(2, 2.0) @ _rotation(0, -1.0)])
def test_extrinsic_survives_tf_static_for_any_rotation(drive, tmp_path: Path, R: np.ndarray):
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, (0.3, -0.2, 1.5)
    frame = replace(drive[0], cameras=[replace(drive[0].cameras[0], T_cam_lidar=T)])
    write_drive_bag(tmp_path / "bag", [frame])

    (got,) = read_bag_frames(tmp_path / "bag")

    np.testing.assert_allclose(got.frame.cameras[0].T_cam_lidar, T, atol=1e-12)


def test_frame_without_its_image_goes_on_lidar_only(drive, tmp_path: Path):
    frames = [drive[0], replace(drive[1], cameras=[]), drive[2]]
    write_drive_bag(tmp_path / "bag", frames)

    read = list(read_bag_frames(tmp_path / "bag"))

    assert [len(r.frame.cameras) for r in read] == [1, 0, 1]


def test_given_extrinsic_replaces_tf_static(drive, tmp_path: Path):
    write_drive_bag(tmp_path / "bag", drive[:1])
    T = np.eye(4)
    T[:3, 3] = (1.0, 2.0, 3.0)

    (got,) = read_bag_frames(tmp_path / "bag", extrinsics={"camera": T})

    np.testing.assert_array_equal(got.frame.cameras[0].T_cam_lidar, T)


def test_missing_camera_topics_are_named(drive, tmp_path: Path):
    write_drive_bag(tmp_path / "bag", [replace(f, cameras=[]) for f in drive])

    with pytest.raises(BagError, match="lacks topics /camera/image, /camera/camera_info"):
        list(read_bag_frames(tmp_path / "bag"))
    assert len(list(read_bag_frames(tmp_path / "bag", cameras=()))) == len(drive)


def test_missing_labels_are_named(drive, tmp_path: Path):
    write_drive_bag(tmp_path / "none", [replace(f, labels=None) for f in drive])
    write_drive_bag(tmp_path / "some", [drive[0], replace(drive[1], labels=None)])

    with pytest.raises(BagError, match="missing labels topic /ground_truth/points"):
        list(read_bag_frames(tmp_path / "none", require_labels=True))
    assert [r.labels for r in read_bag_frames(tmp_path / "none")] == [None] * len(drive)
    with pytest.raises(BagError, match=f"at stamp {drive[1].stamp_ns}: missing labels"):
        list(read_bag_frames(tmp_path / "some", require_labels=True))


def test_wrong_message_type_is_named(tmp_path: Path):
    store = get_typestore(Stores.ROS2_JAZZY)
    text = store.types["std_msgs/msg/String"]
    with Writer(tmp_path / "bag", version=9) as writer:
        conn = writer.add_connection("/points", "std_msgs/msg/String", typestore=store)
        writer.write(conn, 1, store.serialize_cdr(text(data="x"), "std_msgs/msg/String"))

    with pytest.raises(BagError, match="/points is std_msgs/msg/String, expected "
                                       "sensor_msgs/msg/PointCloud2"):
        list(read_bag_frames(tmp_path / "bag", cameras=()))


def test_not_a_bag_is_named(tmp_path: Path):
    with pytest.raises(BagError, match="bag not found"):
        list(read_bag_frames(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="not a readable rosbag2 bag"):
        list(read_bag_frames(tmp_path / "empty"))
