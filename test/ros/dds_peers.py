"""Separate-process DDS peers for the harness test: `pub` publishes a known PointCloud2 until
killed; `sub` waits for one and prints a digest of what it received as JSON."""
from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField

TOPIC = "harness_points"
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def known_cloud() -> PointCloud2:
    xyz = np.arange(300, dtype=np.float32).reshape(100, 3)
    msg = PointCloud2()
    msg.header.frame_id = "lidar"
    msg.header.stamp.sec = 42
    msg.height, msg.width = 1, 100
    msg.fields = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, n in enumerate("xyz")
    ]
    msg.point_step, msg.row_step = 12, 1200
    msg.data = xyz.tobytes()
    return msg


def digest(msg: PointCloud2) -> dict:
    return {
        "frame_id": msg.header.frame_id,
        "sec": msg.header.stamp.sec,
        "width": msg.width,
        "sha256": hashlib.sha256(bytes(msg.data)).hexdigest(),
    }


def main(role: str) -> int:
    rclpy.init()
    node = rclpy.create_node(f"harness_{role}")
    if role == "pub":
        pub = node.create_publisher(PointCloud2, TOPIC, QOS)
        cloud = known_cloud()
        node.create_timer(0.1, lambda: pub.publish(cloud))
        rclpy.spin(node)
        return 0
    received: list[PointCloud2] = []
    node.create_subscription(PointCloud2, TOPIC, received.append, QOS)
    while not received:
        rclpy.spin_once(node, timeout_sec=0.5)
    print(json.dumps(digest(received[0])), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
