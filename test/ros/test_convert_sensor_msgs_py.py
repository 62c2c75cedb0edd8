"""The package's PointCloud2 conversions against ROS 2's own sensor_msgs_py, on the layouts
real drivers publish: Velodyne (point_step 22: float intensity, ring, time), Ouster
(organised, point_step 48, padding, no-returns at the origin), nuScenes (point_step 20),
and what the package writes read back by sensor_msgs_py. sensor_msgs_py comes with a ROS 2
install (or the ros-overlay environment), not with the PyPI wheels: skipped without it."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="rclpy's sensor_msgs is not installed")
point_cloud2 = pytest.importorskip(
    "sensor_msgs_py.point_cloud2",
    reason="sensor_msgs_py is not installed (it comes with a ROS 2 install)")
from sensor_msgs.msg import PointField
from std_msgs.msg import Header

from tttkd_ros.ros.convert import pointcloud2_to_xyzi, xyzi_fields_to_pointcloud2

F32, U16, U32 = PointField.FLOAT32, PointField.UINT16, PointField.UINT32
RNG = np.random.default_rng(11)
LAYOUTS = {  # name -> (fields (name, offset, datatype), point_step, height)
    "velodyne": ([("x", 0, F32), ("y", 4, F32), ("z", 8, F32), ("intensity", 12, F32),
                  ("ring", 16, U16), ("time", 18, F32)], 22, 1),
    "ouster": ([("x", 0, F32), ("y", 4, F32), ("z", 8, F32), ("intensity", 16, F32),
                ("t", 20, U32), ("reflectivity", 24, U16), ("ring", 26, U16),
                ("ambient", 28, U16), ("range", 32, U32)], 48, 16),
    "nuscenes": ([("x", 0, F32), ("y", 4, F32), ("z", 8, F32), ("intensity", 12, F32),
                  ("ring", 16, F32)], 20, 1),
}


def driver_cloud(layout: str, n: int = 1024):
    """A cloud in `layout` built with sensor_msgs_py's own create_cloud (no-returns at the
    origin for the organised Ouster layout)."""
    spec, step, height = LAYOUTS[layout]
    fields = [PointField(name=name, offset=off, datatype=dt, count=1) for name, off, dt in spec]
    points = []
    for k in range(n):
        xyz = RNG.uniform(-40, 40, 3) if layout != "ouster" or k % 3 else np.zeros(3)
        rest = [float(RNG.uniform(0, 255)) if name == "intensity" else int(RNG.integers(0, 60))
                if dt in (U16, U32) else float(RNG.uniform(0, 0.1))
                for name, _, dt in spec[3:]]
        points.append([*map(float, xyz), *rest])
    msg = point_cloud2.create_cloud(Header(frame_id="lidar"), fields, points, point_step=step)
    if height > 1:  # organised: rows of the same points, as a driver lays out its beams
        msg.height, msg.width, msg.row_step = height, n // height, step * (n // height)
    return msg


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_decoding_matches_sensor_msgs_py(layout: str) -> None:
    msg = driver_cloud(layout)
    ours = pointcloud2_to_xyzi(msg)
    theirs = point_cloud2.read_points_numpy(msg, field_names=("x", "y", "z", "intensity"))
    np.testing.assert_array_equal(ours.points, theirs.astype(np.float32))
    assert ours.has_intensity and (ours.height, ours.width) == (msg.height, msg.width)


def test_what_the_package_writes_reads_back_with_sensor_msgs_py() -> None:
    n = 500
    columns = {"x": RNG.uniform(-5, 5, n).astype(np.float32),
               "y": RNG.uniform(-5, 5, n).astype(np.float32),
               "z": RNG.uniform(-1, 1, n).astype(np.float32),
               "label": RNG.integers(0, 19, n).astype(np.uint16),
               "confidence": RNG.uniform(0, 1, n).astype(np.float32)}
    msg = xyzi_fields_to_pointcloud2(Header(frame_id="lidar"), columns)
    back = point_cloud2.read_points(msg, field_names=list(columns))
    for name, column in columns.items():
        np.testing.assert_array_equal(back[name], column)
