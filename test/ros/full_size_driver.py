"""A separate-process stand-in for a KITTI-size LiDAR + camera driver: once the adaptation
node subscribes, publishes FRAMES full-size frames (a 4 MB Velodyne-layout cloud, a 1241 x
376 rgb8 image of 1.4 MB and its CameraInfo) best-effort (sensor-data QoS) at 10 Hz, stamped
with wall time, then exits. Its DDS profile comes from the environment, as a driver's does."""
from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

POINTS, POINT_STEP = 125_000, 32  # Velodyne: x, y, z, intensity, ring, time and padding
HEIGHT, WIDTH = 376, 1241


def cloud(rng: np.random.Generator) -> PointCloud2:
    raw = np.zeros((POINTS, POINT_STEP // 4), np.float32)
    raw[:, 0] = rng.uniform(3, 60, POINTS)
    raw[:, 1] = rng.uniform(-20, 20, POINTS)
    raw[:, 2] = rng.uniform(-2, 2, POINTS)
    raw[:, 3] = rng.uniform(0, 1, POINTS)
    msg = PointCloud2(height=1, width=POINTS, point_step=POINT_STEP,
                      row_step=POINT_STEP * POINTS, is_dense=True, data=raw.tobytes())
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate(("x", "y", "z", "intensity"))]
    return msg


def main(frames: int) -> int:
    rclpy.init()
    node = rclpy.create_node("full_size_driver")
    qos = qos_profile_sensor_data
    pubs = (node.create_publisher(PointCloud2, "/points", qos),
            node.create_publisher(Image, "/camera/image", qos),
            node.create_publisher(CameraInfo, "/camera/camera_info", qos))
    deadline = time.monotonic() + 120
    while not all(p.get_subscription_count() for p in pubs) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # discovery of the reverse direction settles
    rng = np.random.default_rng(0)
    points = cloud(rng)
    image = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=3 * WIDTH,
                  data=rng.integers(0, 256, HEIGHT * WIDTH * 3, dtype=np.uint8).tobytes())
    f = WIDTH / 2
    info = CameraInfo(height=HEIGHT, width=WIDTH, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[f, 0.0, WIDTH / 2, 0.0, f, HEIGHT / 2, 0.0, 0.0, 1.0])
    for _ in range(frames):
        stamp = node.get_clock().now().to_msg()
        points.header.stamp = image.header.stamp = info.header.stamp = stamp
        points.header.frame_id, image.header.frame_id = "velodyne", "camera_optical"
        info.header.frame_id = "camera_optical"
        pubs[2].publish(info)
        pubs[1].publish(image)
        pubs[0].publish(points)
        time.sleep(0.1)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
