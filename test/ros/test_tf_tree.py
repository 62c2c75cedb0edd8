"""TfTree: chains of tf transforms, dynamic interpolation and refusals; and bags whose
camera-LiDAR extrinsic is a robot's tf tree rather than one direct transform.

Expected matrices are built here from axis-angle (Rodrigues) and composed by hand, never
with the code under test.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from tttkd_ros.data.drive import generate_drive
from tttkd_ros.ros.bag import BagError, read_bag_frames, write_drive_bag
from tttkd_ros.ros.extrinsics import extrinsic_matrix
from tttkd_ros.ros.tf_tree import TfLookupError, TfTree

NS = 1_000_000_000
Z, Y, X = (0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)
# camera_link (x forward, y left, z up) -> optical (x right, y down, z forward), as ROS
# camera drivers publish it; its rotation, column j = optical axis j in camera_link axes
OPTICAL_QUAT = (-0.5, 0.5, -0.5, 0.5)
OPTICAL_R = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
YAW_90 = (0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5))  # quat x y z w: 90 deg about z


def _pose(xyz, axis=Z, angle=0.0) -> tuple[np.ndarray, tuple, tuple]:
    """(4 x 4, xyz, quat x y z w) of a rotation by `angle` about `axis`, then `xyz`."""
    k = np.asarray(axis) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    T = np.eye(4)
    T[:3, :3] = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
    T[:3, 3] = xyz
    return T, tuple(xyz), (*(k * np.sin(angle / 2)), np.cos(angle / 2))


def _optical(xyz) -> tuple[np.ndarray, tuple, tuple]:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = OPTICAL_R, xyz
    return T, tuple(xyz), OPTICAL_QUAT


def _tf(parent: str, child: str, pose: tuple, stamp_ns: int = 0) -> SimpleNamespace:
    """A TransformStamped-like object: header.frame_id parent, child_frame_id child."""
    _, (x, y, z), (qx, qy, qz, qw) = pose
    N = SimpleNamespace
    return N(header=N(frame_id=parent, stamp=N(sec=stamp_ns // NS, nanosec=stamp_ns % NS)),
             child_frame_id=child,
             transform=N(translation=N(x=x, y=y, z=z), rotation=N(x=qx, y=qy, z=qz, w=qw)))


def _tree(*transforms: SimpleNamespace, static: bool = True, **kwargs) -> TfTree:
    tree = TfTree(**kwargs)
    tree.add(SimpleNamespace(transforms=list(transforms)), static=static)
    return tree


def test_transform_maps_child_points_into_the_parent():
    lidar = _pose((0.0, 0.0, 1.8))  # a LiDAR 1.8 m above base_link
    tree = _tree(_tf("base_link", "lidar", lidar))

    origin = np.array([0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(tree.lookup("base_link", "lidar", 0) @ origin, [0, 0, 1.8, 1])
    np.testing.assert_allclose(tree.lookup("lidar", "base_link", 0) @ origin, [0, 0, -1.8, 1])
    np.testing.assert_array_equal(tree.lookup("lidar", "lidar", 0), np.eye(4))


def test_a_leading_slash_names_the_same_frame_as_in_tf2():
    tree = _tree(_tf("/base_link", "/lidar", _pose((0.0, 0.0, 1.8))))  # a ROS 1 bag's ids
    np.testing.assert_array_equal(tree.lookup("base_link", "/lidar", 0),
                                  tree.lookup("/base_link", "lidar", 0))
    assert tree.frames == ["base_link", "lidar"]


# base -> a1 -> a2 -> a3 and base -> b1 -> b2 -> b3, each edge a different rotation
EDGES = {"a1": ("base", _pose((1.0, 2.0, 3.0), Z, 0.3)),
         "a2": ("a1", _pose((-0.5, 0.1, 0.2), X, 1.1)),
         "a3": ("a2", _pose((0.0, -2.0, 0.4), (1.0, 1.0, 0.0), -2.5)),
         "b1": ("base", _pose((0.3, -1.0, 0.0), Y, 2.9)),
         "b2": ("b1", _pose((2.0, 0.0, -1.0), (0.2, -1.0, 0.5), 0.7)),
         "b3": ("b2", _pose((0.1, 0.1, 0.1), Z, -1.4))}
_T = {name: pose[0] for name, (_, pose) in EDGES.items()}
# T_base_frame composed by hand along each branch
T_BASE = {"base": np.eye(4), "a1": _T["a1"], "a2": _T["a1"] @ _T["a2"],
          "a3": _T["a1"] @ _T["a2"] @ _T["a3"], "b1": _T["b1"], "b2": _T["b1"] @ _T["b2"],
          "b3": _T["b1"] @ _T["b2"] @ _T["b3"]}


@pytest.mark.parametrize("target, source", [
    ("base", "a1"), ("base", "a2"), ("base", "a3"),  # down to a child, depth 1..3
    ("a1", "base"), ("a2", "base"), ("b3", "base"),  # up to an ancestor, depth 1..3
    ("a1", "a3"), ("a3", "a1"),  # within a branch, not from the root
    ("a1", "b1"), ("b2", "a1"), ("a3", "b3"), ("b3", "a2"),  # through the common ancestor
])
def test_chain_equals_the_hand_composed_transforms(target: str, source: str):
    tree = _tree(*(_tf(parent, child, pose) for child, (parent, pose) in EDGES.items()))

    got = tree.lookup(target, source, 123)

    np.testing.assert_allclose(got, np.linalg.inv(T_BASE[target]) @ T_BASE[source],
                               atol=1e-12)
    assert got.dtype == np.float64 and got.shape == (4, 4)


def test_robot_tree_projects_a_point_to_the_expected_pixel():
    # velodyne turned 90 deg on its mount; the camera 1.5 m ahead of base_link at 1.2 m
    tree = _tree(_tf("base_link", "velodyne", _pose((0.2, 0.0, 1.8), Z, np.pi / 2)),
                 _tf("base_link", "camera_link", _pose((1.5, 0.0, 1.2))),
                 _tf("camera_link", "camera_color_optical_frame", _optical((0, 0, 0))))
    K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    # base_link (11.5, -1, 0.7): 10 m ahead of the camera, 1 m right, 0.5 m down; in the
    # velodyne's frame (yawed +90 deg, at (0.2, 0, 1.8)) that is (-1, -11.3, -1.1)
    point = np.array([-1.0, -11.3, -1.1, 1.0])

    T_cam_lidar = tree.lookup("camera_color_optical_frame", "velodyne", 0)

    cam = T_cam_lidar @ point
    np.testing.assert_allclose(cam[:3], [1.0, 0.5, 10.0], atol=1e-12)
    uv = (K @ cam[:3])[:2] / cam[2]
    np.testing.assert_allclose(uv, [370.0, 265.0], atol=1e-9)  # cx + 500 * 0.1, cy + 500 * 0.05


def _moving_base(q_last: tuple = YAW_90, **kwargs) -> TfTree:
    """odom -> base_link on /tf: at 10 s identity, at 12 s moved (2, 4, 0) and turned 90 deg
    about z (the later sample added first: /tf need not be in stamp order); base_link ->
    velodyne static, 1.8 m up."""
    tree = TfTree(**kwargs)
    last = (None, (2.0, 4.0, 0.0), q_last)
    first = (None, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    tree.add(SimpleNamespace(transforms=[_tf("odom", "base_link", last, 12 * NS)]), False)
    tree.add(SimpleNamespace(transforms=[_tf("odom", "base_link", first, 10 * NS)]), False)
    tree.add(SimpleNamespace(transforms=[_tf("base_link", "velodyne", _pose((0, 0, 1.8)))]),
             True)
    return tree


@pytest.mark.parametrize("q_last", [YAW_90, tuple(-q for q in YAW_90)],
                         ids=["q", "minus_q"])  # -q is the same rotation: slerp the short way
def test_dynamic_transform_is_interpolated_between_its_samples(q_last):
    tree = _moving_base(q_last)
    c = np.sqrt(0.5)
    want = np.array([[c, -c, 0, 1], [c, c, 0, 2], [0, 0, 1, 0], [0, 0, 0, 1]])  # 45 deg

    np.testing.assert_allclose(tree.lookup("odom", "base_link", 11 * NS), want, atol=1e-12)
    quarter = _pose((0.5, 1.0, 0.0), Z, np.pi / 8)[0]  # a quarter of the way: 22.5 deg
    np.testing.assert_allclose(tree.lookup("odom", "base_link", 10 * NS + NS // 2), quarter,
                               atol=1e-12)
    np.testing.assert_allclose(tree.lookup("base_link", "odom", 11 * NS), np.linalg.inv(want),
                               atol=1e-12)
    # a chain with a static edge below the dynamic one: velodyne's origin in odom
    np.testing.assert_allclose(tree.lookup("odom", "velodyne", 11 * NS)[:3, 3], [1, 2, 1.8],
                               atol=1e-12)
    np.testing.assert_allclose(tree.lookup("odom", "base_link", 12 * NS),
                               _pose((2.0, 4.0, 0.0), Z, np.pi / 2)[0], atol=1e-12)


def test_stamp_outside_the_samples_is_refused_beyond_the_tolerance():
    tree = _moving_base()
    end = _pose((2.0, 4.0, 0.0), Z, np.pi / 2)[0]

    # within 0.1 s of the ends: the end samples
    np.testing.assert_allclose(tree.lookup("odom", "base_link", 12 * NS + NS // 20), end,
                               atol=1e-12)
    np.testing.assert_allclose(tree.lookup("odom", "base_link", 10 * NS - NS // 20), np.eye(4),
                               atol=1e-12)
    with pytest.raises(TfLookupError) as err:
        tree.lookup("odom", "velodyne", 12 * NS + NS // 5)
    text = str(err.value)
    assert "'odom' -> 'base_link' at t=12.200 s" in text
    assert "span 10.000 .. 12.000 s" in text and "tolerance is 0.100 s" in text
    with pytest.raises(TfLookupError, match="at t=9.800 s"):
        tree.lookup("odom", "base_link", 10 * NS - NS // 5)
    # a wider tolerance accepts it; the static edge alone takes any stamp
    wide = _moving_base(tolerance_s=0.5)
    np.testing.assert_allclose(wide.lookup("odom", "base_link", 12 * NS + NS // 5), end,
                               atol=1e-12)
    np.testing.assert_allclose(tree.lookup("base_link", "velodyne", 99 * NS)[:3, 3],
                               [0, 0, 1.8])


def test_unconnected_or_unknown_frames_are_refused_naming_them():
    tree = _tree(_tf("base_link", "velodyne", _pose((0, 0, 1.8))),
                 _tf("camera_link", "camera_optical", _optical((0, 0, 0))))

    with pytest.raises(LookupError) as err:  # TfLookupError is a LookupError
        tree.lookup("camera_optical", "velodyne", 0)
    text = str(err.value)
    assert "no tf chain from 'velodyne' to 'camera_optical'" in text
    assert "'velodyne' connects to ['base_link']" in text
    assert "'camera_optical' connects to ['camera_link']" in text
    assert "known frames" not in text  # both are known: their trees say enough

    with pytest.raises(TfLookupError) as err:
        tree.lookup("camera", "velodyne", 0)
    text = str(err.value)
    assert "'camera' is not in the tf tree" in text
    assert "known frames are ['base_link', 'camera_link', 'camera_optical', 'velodyne']" in text


def test_an_untidy_recorded_tree_reads_as_tf2_reads_it():
    tree = _tree(_tf("base_link", "velodyne", _pose((0, 0, 1.8))))
    # a fixed joint repeated on /tf: the static transform stands
    tree.add(SimpleNamespace(transforms=[_tf("base_link", "velodyne", _pose((0, 0, 0)), 5)]),
             False)
    np.testing.assert_allclose(tree.lookup("base_link", "velodyne", 99)[:3, 3], [0, 0, 1.8])
    # a static transform given again (a re-latched /tf_static) replaces the earlier one
    tree.add(SimpleNamespace(transforms=[_tf("base_link", "velodyne", _pose((0, 0, 2.0)))]),
             True)
    np.testing.assert_allclose(tree.lookup("base_link", "velodyne", 0)[:3, 3], [0, 0, 2.0])
    # a new parent re-parents the frame: the old link is gone
    tree.add(SimpleNamespace(transforms=[_tf("odom", "velodyne", _pose((1.0, 0, 0)))]), True)
    np.testing.assert_allclose(tree.lookup("odom", "velodyne", 0)[:3, 3], [1.0, 0, 0])
    with pytest.raises(TfLookupError):
        tree.lookup("base_link", "velodyne", 0)


# -- bags ----------------------------------------------------------------------------------

STORE = get_typestore(Stores.ROS2_JAZZY)
TF_TYPE = "tf2_msgs/msg/TFMessage"
TINY = {"lidar_beams": 8, "lidar_azimuth_res_deg": 2.0, "image_scale": 0.1}


@pytest.fixture(scope="module")
def drive() -> list:
    return list(generate_drive("clean", frames=3, seed=1, **TINY))


def _ros_tf(parent: str, child: str, pose: tuple, stamp_ns: int) -> object:
    """A rosbags geometry_msgs/TransformStamped."""
    t = STORE.types
    _, (x, y, z), (qx, qy, qz, qw) = pose
    stamp = t["builtin_interfaces/msg/Time"](sec=stamp_ns // NS, nanosec=stamp_ns % NS)
    return t["geometry_msgs/msg/TransformStamped"](
        header=t["std_msgs/msg/Header"](stamp=stamp, frame_id=parent), child_frame_id=child,
        transform=t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
            rotation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw)))


def _bag_with_tf(drive: list, tmp_path: Path, static: list[tuple] = (),
                 dynamic: list[tuple] = ()) -> Path:
    """A drive bag (cloud frame `velodyne`, image frame `camera_optical`) whose tf is
    replaced: write_drive_bag's bag copied message by message without its direct
    /tf_static transform, then `static` (parent, child, pose) on /tf_static at the first
    stamp and each `dynamic` (stamp_ns, parent, child, pose) on /tf at its stamp."""
    src, dst = tmp_path / "drive", tmp_path / "robot"
    write_drive_bag(src, drive, lidar_frame="velodyne")
    first = drive[0].stamp_ns
    with AnyReader([src], default_typestore=STORE) as reader, Writer(dst, version=9) as out:
        if static:
            msg = STORE.types[TF_TYPE](transforms=[_ros_tf(*s, first) for s in static])
            conn = out.add_connection("/tf_static", TF_TYPE, typestore=STORE)
            out.write(conn, first, STORE.serialize_cdr(msg, TF_TYPE))
        if dynamic:
            conn = out.add_connection("/tf", TF_TYPE, typestore=STORE)
            for stamp, *d in sorted(dynamic, key=lambda d: d[0]):
                msg = STORE.types[TF_TYPE](transforms=[_ros_tf(*d, stamp)])
                out.write(conn, stamp, STORE.serialize_cdr(msg, TF_TYPE))
        copied = [c for c in reader.connections if c.topic != "/tf_static"]
        conns = {c.id: out.add_connection(c.topic, c.msgtype, typestore=STORE) for c in copied}
        for c, stamp, raw in reader.messages(copied):
            out.write(conns[c.id], stamp, raw)
    return dst


LIDAR = _pose((0.2, 0.0, 1.8), Z, np.pi / 2)
OPTICAL = _optical((0.0, 0.015, 0.0))


def test_bag_extrinsic_from_a_robot_tree_on_tf_static(drive, tmp_path: Path):
    link = _pose((1.5, 0.1, 1.2), Y, 0.2)  # pitched 0.2 rad down
    bag = _bag_with_tf(drive, tmp_path, static=[
        ("base_link", "velodyne", LIDAR), ("base_link", "camera_link", link),
        ("camera_link", "camera_optical", OPTICAL)])
    want = np.linalg.inv(link[0] @ OPTICAL[0]) @ LIDAR[0]

    read = list(read_bag_frames(bag))

    assert len(read) == len(drive)
    for got in read:
        assert got.frame.frame_id == "velodyne"
        assert got.frame.cameras[0].frame_id == "camera_optical"
        np.testing.assert_allclose(got.frame.cameras[0].T_cam_lidar, want, atol=1e-12)


def test_bag_extrinsic_from_tf_alone_at_each_clouds_stamp(drive, tmp_path: Path):
    """A camera on a pan joint: base_link -> camera_link turns from 0 to 0.4 rad on /tf
    between 50 ms before the first cloud and 50 ms after the last; the bag has no
    /tf_static, the fixed transforms are on /tf too."""
    t0, t1 = drive[0].stamp_ns - NS // 20, drive[-1].stamp_ns + NS // 20
    dynamic = [(t, parent, child, pose) for t in (t0, t1) for parent, child, pose in (
        ("base_link", "velodyne", LIDAR), ("camera_link", "camera_optical", OPTICAL))]
    dynamic += [(t0, "base_link", "camera_link", _pose((1.5, 0.0, 1.2), Z, 0.0)),
                (t1, "base_link", "camera_link", _pose((1.5, 0.0, 1.2), Z, 0.4))]
    bag = _bag_with_tf(drive, tmp_path, dynamic=dynamic)

    read = list(read_bag_frames(bag))

    assert len(read) == len(drive)
    for want_frame, got in zip(drive, read):
        pan = 0.4 * (want_frame.stamp_ns - t0) / (t1 - t0)  # about one axis: slerp is linear
        link = _pose((1.5, 0.0, 1.2), Z, pan)[0]
        want = np.linalg.inv(link @ OPTICAL[0]) @ LIDAR[0]
        np.testing.assert_allclose(got.frame.cameras[0].T_cam_lidar, want, atol=1e-9)
    first, last = (r.frame.cameras[0].T_cam_lidar for r in (read[0], read[-1]))
    assert not np.allclose(first, last)  # the frames really got different extrinsics


def test_bag_without_a_connecting_chain_names_the_frames(drive, tmp_path: Path):
    # no base_link -> camera_link: two trees
    bag = _bag_with_tf(drive, tmp_path, static=[
        ("base_link", "velodyne", LIDAR), ("camera_link", "camera_optical", OPTICAL)])

    with pytest.raises(BagError) as err:
        list(read_bag_frames(bag))
    text = str(err.value)
    assert "no camera-LiDAR extrinsic for camera 'camera'" in text
    assert "no tf chain from 'velodyne' to 'camera_optical'" in text
    assert "'velodyne' connects to ['base_link']" in text
    assert "'camera_optical' connects to ['camera_link']" in text
    assert "extrinsics={'camera': T_cam_lidar}" in text

    T = np.eye(4)  # the way out: a given extrinsic wins over the bag's tf
    assert all(np.array_equal(r.frame.cameras[0].T_cam_lidar, T)
               for r in read_bag_frames(bag, extrinsics={"camera": T}))


def test_bag_without_any_tf_needs_given_extrinsics(drive, tmp_path: Path):
    bag = _bag_with_tf(drive, tmp_path)

    with pytest.raises(BagError, match=r"neither /tf_static nor /tf .* cameras \['camera'\]; "
                                       r"pass extrinsics="):
        list(read_bag_frames(bag))
    T = drive[0].cameras[0].T_cam_lidar
    read = list(read_bag_frames(bag, extrinsics={"camera": T}))
    assert len(read) == len(drive)
    np.testing.assert_array_equal(read[0].frame.cameras[0].T_cam_lidar, T)


def test_the_readme_tf2_echo_example_gives_the_camera_extrinsic():
    """README, Troubleshooting: `tf2_echo camera_optical_frame velodyne` (tf2_echo passes its
    first argument as lookup_transform's target) on a robot whose camera sits 0.3 m ahead of
    and 0.1 m below the LiDAR prints what CAM.xyz / CAM.quat take; a point at the LiDAR's
    height 10 m ahead lands 0.1 m above the optical axis (y down), 9.7 m in front."""
    tree = _tree(_tf("base_link", "velodyne", _pose((0.0, 0.0, 1.8))),
                 _tf("base_link", "camera_link", _pose((0.3, 0.0, 1.7))),
                 _tf("camera_link", "camera_optical_frame",
                     (None, (0.0, 0.0, 0.0), OPTICAL_QUAT)))
    xyz, quat = [0.0, -0.1, -0.3], [0.5, -0.5, 0.5, 0.5]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "tf2_echo camera_optical_frame velodyne" in readme
    assert f"camera.xyz: {xyz}" in readme and f"camera.quat: {quat}" in readme

    T = tree.lookup("camera_optical_frame", "velodyne", 0)
    np.testing.assert_allclose(T, extrinsic_matrix(xyz, quat), atol=1e-12)
    np.testing.assert_allclose(T @ [10.0, 0.0, 0.0, 1.0], [0.0, -0.1, 9.7, 1.0], atol=1e-12)
