"""A cloud published in base_link (as Autoware publishes it) while the model was trained in
the LiDAR frame: with `cloud_to_sensor` the node moves the points into the sensor frame for
the model and publishes the cloud's own points, labeled as the sensor-frame cloud would be.
Over DDS (loopback only), adaptation off so the labels are the model's alone."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install '.[ros]')")
from conftest import Rig, make_cloud, running_adapt_node

from tttkd_ros.core.config import AdaptConfig, TeacherConfig
from tttkd_ros.core.frame import Frame
from tttkd_ros.core.loading import load_engine
from tttkd_ros.ros.extrinsics import extrinsic_matrix

pytestmark = pytest.mark.dds

NS = 1_000_000_000
T0 = 9_000 * NS
YAW_QUAT = (0.0, 0.0, 0.3826834, 0.9238795)  # 45 degrees about z
SENSOR_FROM_BASE = extrinsic_matrix((-0.4, 0.1, -1.9), YAW_QUAT)


@pytest.fixture(scope="module")
def adapt(ros_context, executor, rig, node_params):
    params = {**node_params, "adaptation.mode": "none", "qos.input.reliability": "reliable",
              "cloud_to_sensor.xyz": list(SENSOR_FROM_BASE[:3, 3]),
              "cloud_to_sensor.quat": list(YAW_QUAT)}
    with running_adapt_node(ros_context, executor, rig, params) as node:
        yield node


def test_a_base_link_cloud_is_labeled_as_in_the_sensor_frame(adapt, rig, node_params) -> None:
    sensor_cloud = make_cloud(T0, seed=4)
    sensor = np.frombuffer(bytes(sensor_cloud.data), np.float32).reshape(-1, 4)
    base_from_sensor = np.linalg.inv(SENSOR_FROM_BASE)
    base = sensor.copy()
    base[:, :3] = sensor[:, :3] @ base_from_sensor[:3, :3].T + base_from_sensor[:3, 3]
    cloud = make_cloud(T0, seed=4)
    cloud.header.frame_id = "base_link"
    cloud.data = base.astype(np.float32).tobytes()

    def send() -> None:
        rig.clock(T0)
        rig.pub_points.publish(cloud)

    labeled = Rig.cloud_array(rig.wait_for("labeled", T0, resend=send))
    assert (labeled["x"] == base[:, 0].astype(np.float32)).all()  # the cloud's own points
    reference = load_engine(node_params["checkpoint"], AdaptConfig(mode="none"),
                            TeacherConfig(image_height=56), "cpu").engine
    expected = reference.process(Frame(sensor.copy())).labels
    assert (labeled["label"] == expected).mean() > 0.99
