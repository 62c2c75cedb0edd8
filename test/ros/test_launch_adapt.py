"""launch/adapt.launch.py under launch_testing: the launch file starts adapt_node from the
installed package (colcon build), and the node answers synchronized frames on
~/labeled_points. Needs the ROS 2 launch stack; skipped where launch_testing is missing."""
from __future__ import annotations

import tempfile
import time
import unittest
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("launch_testing", reason="launch_testing is not installed (it comes with "
                    "a ROS 2 install: ros-jazzy-launch-testing; pytest must be < 8.4)")
import launch_testing.actions
import rclpy
import yaml
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from launch import LaunchDescription

# collected by launch_testing as a File item, which ignores this; test/ros/conftest.py adds
# the dds marker to launch test items so the loopback-only rule still applies
pytestmark = pytest.mark.dds

ROOT = Path(__file__).resolve().parents[2]
H, W, N = 96, 320, 2000


def write_inputs(directory: Path) -> Path:
    """A tiny random-init checkpoint and a params file (from config/adapt.yaml) using it."""
    import torch

    from tttkd_ros.core.config import ModelConfig
    from tttkd_ros.core.labels import CLASS_NAMES, palette_rgb
    from tttkd_ros.core.model.checkpoint import save_checkpoint
    from tttkd_ros.core.model.segmentation import build_model

    torch.manual_seed(0)
    cfg = ModelConfig()
    checkpoint = directory / "tiny.pt"
    save_checkpoint(checkpoint, build_model(cfg, "cpu"), cfg, class_names=CLASS_NAMES,
                    palette=palette_rgb(), teacher_name="vit_small_patch14_dinov2")
    params = yaml.safe_load((ROOT / "config" / "adapt.yaml").read_text())
    p = params["tttkd_adapt"]["ros__parameters"]
    p.update(checkpoint=str(checkpoint), device="cpu")
    p["teacher"]["image_height"] = 56
    p["adaptation"]["budget_ms"] = 60000.0
    params_file = directory / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    return params_file


@pytest.mark.launch_test
def generate_test_description() -> LaunchDescription:
    params_file = write_inputs(Path(tempfile.mkdtemp(prefix="tttkd_launch_")))
    adapt = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(ROOT / "launch" / "adapt.launch.py")),
        launch_arguments={"params_file": str(params_file)}.items())
    return LaunchDescription([adapt, launch_testing.actions.ReadyToTest()])


def frame_messages(stamp) -> tuple[CameraInfo, Image, PointCloud2]:
    from tttkd_ros.ros.convert import array_to_image, xyzi_fields_to_pointcloud2

    rng = np.random.default_rng(0)
    cam = Header(frame_id="camera_optical", stamp=stamp)
    info = CameraInfo(header=cam, height=H, width=W, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[W / 2, 0.0, W / 2, 0.0, W / 2, H / 2, 0.0, 0.0, 1.0])
    image = array_to_image(cam, rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "rgb8")
    xyz = rng.uniform((3, -8, -2), (30, 8, 2), (N, 3)).astype(np.float32)
    cloud = xyzi_fields_to_pointcloud2(Header(frame_id="lidar", stamp=stamp),
                                       {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    return info, image, cloud


class TestLabeledPoints(unittest.TestCase):
    def test_node_from_the_launch_file_publishes_labeled_points(self, proc_output) -> None:
        context = rclpy.Context()
        rclpy.init(context=context)
        node = rclpy.create_node("launch_test_rig", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        try:
            received: list[PointCloud2] = []
            node.create_subscription(PointCloud2, "/tttkd_adapt/labeled_points",
                                     received.append, 10)
            pubs = [node.create_publisher(t, name, 10) for t, name in (
                (CameraInfo, "/camera/camera_info"), (Image, "/camera/image"),
                (PointCloud2, "/points"))]
            stamp = node.get_clock().now().to_msg()
            deadline = time.monotonic() + 150.0  # imports, model load and warm-up
            next_send = 0.0
            while not received and time.monotonic() < deadline:
                if time.monotonic() >= next_send:
                    for pub, msg in zip(pubs, frame_messages(stamp)):
                        pub.publish(msg)
                    next_send = time.monotonic() + 2.0
                executor.spin_once(timeout_sec=0.1)
            self.assertTrue(received, "no ~/labeled_points from the launched node")
            msg = received[0]
            self.assertEqual((msg.header.stamp, msg.header.frame_id), (stamp, "lidar"))
            self.assertEqual(msg.width * msg.height, N)
            self.assertEqual([f.name for f in msg.fields],
                             ["x", "y", "z", "label", "confidence"])
        finally:
            executor.shutdown()
            node.destroy_node()
            rclpy.shutdown(context=context)
