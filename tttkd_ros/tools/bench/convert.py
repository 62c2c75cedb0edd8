"""The message stages of `tttkd bench`: PointCloud2 decode, output conversion, and the decode
compared with sensor_msgs_py's `read_points_numpy` and with a naive per-point struct loop.

Everything here needs the rclpy message packages; `messages_available()` says whether they
import, and bench.py skips these stages (with a note) where they do not.
"""
from __future__ import annotations

import importlib.util
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tttkd_ros.core.frame import Prediction
from tttkd_ros.core.labels import palette_rgb

STRUCT_SUBSET = 2000  # points the naive loop decodes; its time is scaled to the whole cloud


def messages_available() -> bool:
    return importlib.util.find_spec("sensor_msgs") is not None


def times_ms(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall times of `repeats` calls after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def cloud_message(points: np.ndarray) -> Any:
    """An x, y, z, intensity FLOAT32 PointCloud2 (as a LiDAR driver sends it)."""
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from tttkd_ros.ros.convert import xyzi_fields_to_pointcloud2

    columns = {c: points[:, i] for i, c in enumerate("xyz")} | {"intensity": points[:, 3]}
    return xyzi_fields_to_pointcloud2(Header(frame_id="lidar"), columns, msg_cls=PointCloud2)


def decode_ms(msg: Any, repeats: int) -> list[float]:
    from tttkd_ros.ros.convert import pointcloud2_to_xyzi

    return times_ms(lambda: pointcloud2_to_xyzi(msg), repeats)


def output_ms(msg: Any, pred: Prediction, repeats: int) -> list[float]:
    """Labeled and colored clouds plus both masks of every camera, as the node publishes."""
    from tttkd_ros.ros.convert import pointcloud2_to_xyzi
    from tttkd_ros.ros.outputs import colored_cloud, labeled_cloud, mask_color_image, mask_image

    cloud, palette = pointcloud2_to_xyzi(msg), palette_rgb()

    def convert() -> None:
        labeled_cloud(msg.header, cloud, pred)
        colored_cloud(msg.header, cloud, pred.labels, palette)
        for mask in pred.masks.values():
            mask_image(msg.header, mask)
            mask_color_image(msg.header, mask, palette)

    return times_ms(convert, repeats)


def struct_loop_ms(msg: Any, repeats: int) -> float:
    """A per-point `struct.unpack_from` decode of the first STRUCT_SUBSET points (median of
    `repeats`), its time scaled to the whole cloud (the loop is linear in the points)."""
    offsets = [next(f.offset for f in msg.fields if f.name == n) for n in ("x", "y", "z",
                                                                          "intensity")]
    data, step = memoryview(bytes(msg.data)), int(msg.point_step)
    count = min(STRUCT_SUBSET, int(msg.width) * int(msg.height))
    out = np.empty((count, 4), dtype=np.float32)

    def loop() -> None:
        for i in range(count):
            base = i * step
            out[i] = [struct.unpack_from("<f", data, base + off)[0] for off in offsets]

    elapsed = float(np.median(times_ms(loop, repeats)))
    return elapsed * int(msg.width) * int(msg.height) / max(count, 1)


def has_read_points_numpy() -> bool:
    return importlib.util.find_spec("sensor_msgs_py") is not None


def read_points_numpy_ms(msg: Any, repeats: int) -> list[float] | None:
    """sensor_msgs_py's decode of the same fields; None where sensor_msgs_py is missing."""
    if not has_read_points_numpy():
        return None
    from sensor_msgs_py.point_cloud2 import read_points_numpy

    names = ("x", "y", "z", "intensity")
    return times_ms(lambda: read_points_numpy(msg, field_names=names), repeats)
