"""`use_tf: true`: the node looks its camera extrinsic up in tf2 through a robot's tree
(base_link -> lidar_top, base_link -> camera_link -> camera_optical) broadcast on /tf_static
by a real tf2_ros StaticTransformBroadcaster, over DDS (loopback only). tf2_ros comes with a
ROS 2 install (or the ros-overlay environment), not with the PyPI wheels: skipped without."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install '.[ros]')")
tf2_ros = pytest.importorskip("tf2_ros", reason="tf2_ros is not installed (it comes with a "
                              "ROS 2 install)")
from conftest import CAMERA_FRAME, LIDAR_FRAME, running_adapt_node
from geometry_msgs.msg import TransformStamped

from tttkd_ros.ros.extrinsics import extrinsic_matrix

pytestmark = pytest.mark.dds

NS = 1_000_000_000
T0 = 7_000 * NS
OPTICAL = (-0.5, 0.5, -0.5, 0.5)  # camera_link (x forward, z up) -> optical (z forward)
TREE = [("base_link", LIDAR_FRAME, (0.3, 0.0, 1.8), (0.0, 0.0, 0.0, 1.0)),
        ("base_link", "camera_link", (0.8, 0.1, 1.5), (0.0, 0.0, 0.0871557, 0.9961947)),
        ("camera_link", CAMERA_FRAME, (0.0, 0.0, 0.0), OPTICAL)]


def expected_T_cam_lidar() -> np.ndarray:
    T = {child: extrinsic_matrix(xyz, quat) for _, child, xyz, quat in TREE}
    base_T_optical = T["camera_link"] @ T[CAMERA_FRAME]
    return np.linalg.inv(base_T_optical) @ T[LIDAR_FRAME]


@pytest.fixture(scope="module")
def adapt(ros_context, executor, rig, node_params):
    broadcaster = tf2_ros.StaticTransformBroadcaster(rig.node)
    messages = []
    for parent, child, xyz, quat in TREE:
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = parent, child
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = xyz
        r = t.transform.rotation
        r.x, r.y, r.z, r.w = quat
        messages.append(t)
    broadcaster.sendTransform(messages)
    # the parameters' extrinsic points the camera backwards: only tf2 can give the frame masks
    params = {**node_params, "use_tf": True, "tf_timeout": 2.0, "camera.quat":
              [0.5, 0.5, -0.5, -0.5], "qos.input.reliability": "reliable"}
    with running_adapt_node(ros_context, executor, rig, params) as node:
        yield node


def test_the_extrinsic_comes_from_the_tf2_chain(adapt, rig) -> None:
    def send() -> None:
        rig.clock(T0)
        rig.publish_frame(T0)

    cloud = rig.publish_frame(T0)
    stats = rig.check_outputs(cloud, resend=send)  # masks with labeled pixels: it projected
    assert stats["cameras"] == ["camera"] and not stats["input_defects"]
    np.testing.assert_allclose(adapt.extrinsics.tf.cache[(CAMERA_FRAME, LIDAR_FRAME)],
                               expected_T_cam_lidar(), atol=1e-6)
