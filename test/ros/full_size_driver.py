"""A separate-process stand-in for a KITTI-size LiDAR + camera driver: publishes full-size
frames (a 4 MB Velodyne-layout cloud, a 1241 x 376 rgb8 image of 1.4 MB and its CameraInfo)
best-effort (sensor-data QoS), stamped with wall time. Its DDS profile comes from the
environment, as a driver's does.

Driven line by line on stdin, so the test can tell discovery from delivery: once the
adaptation node subscribes it prints "ready"; each line N then publishes N frames at 10 Hz
and answers "sent" (single frames let the test see that the node has matched every writer
before the burst it counts). It exits at the end of stdin."""
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


def main() -> int:
    rclpy.init()
    node = rclpy.create_node("full_size_driver")
    qos = qos_profile_sensor_data
    pubs = (node.create_publisher(PointCloud2, "/points", qos),
            node.create_publisher(Image, "/camera/image", qos),
            node.create_publisher(CameraInfo, "/camera/camera_info", qos))
    deadline = time.monotonic() + 120
    while not all(p.get_subscription_count() for p in pubs):
        if time.monotonic() > deadline:
            print("no subscriber on /points, /camera/image and /camera/camera_info in 120 s",
                  file=sys.stderr)
            return 1
        time.sleep(0.1)
    rng = np.random.default_rng(0)
    points = cloud(rng)
    points.header.frame_id = "velodyne"
    image = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=3 * WIDTH,
                  data=rng.integers(0, 256, HEIGHT * WIDTH * 3, dtype=np.uint8).tobytes())
    f = WIDTH / 2
    info = CameraInfo(height=HEIGHT, width=WIDTH, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[f, 0.0, WIDTH / 2, 0.0, f, HEIGHT / 2, 0.0, 0.0, 1.0])
    image.header.frame_id = info.header.frame_id = "camera_optical"

    def publish() -> None:
        stamp = node.get_clock().now().to_msg()
        points.header.stamp = image.header.stamp = info.header.stamp = stamp
        pubs[2].publish(info)
        pubs[1].publish(image)
        pubs[0].publish(points)

    print("ready", flush=True)
    for line in sys.stdin:
        for _ in range(int(line)):
            publish()
            time.sleep(0.1)
        print("sent", flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
