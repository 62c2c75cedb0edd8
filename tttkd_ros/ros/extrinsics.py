"""Camera extrinsics: the 4 x 4 transform from the LiDAR frame to each camera's optical frame.

Two sources: the parameters `CAM.xyz` + `CAM.quat` (always available), or tf2 where
`tf2_ros` is importable and `use_tf` is true, looked up at the cloud's stamp. tf2 is optional:
a plain-pip install has no tf2_ros, so the import is guarded and the parameters are used.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

try:  # tf2_ros ships with a ROS install, not with the PyPI rclpy wheels
    import tf2_ros
except ImportError:
    tf2_ros = None


class ExtrinsicsError(RuntimeError):
    """No transform is known for a camera at the requested time."""


def extrinsic_matrix(xyz: Sequence[float], quat: Sequence[float]) -> np.ndarray:
    """Translation (x, y, z) and quaternion (x, y, z, w) -> 4 x 4 float64 rigid transform.

    The quaternion is normalised; a zero or non-finite one raises ValueError.
    """
    t = np.asarray(xyz, dtype=np.float64)
    q = np.asarray(quat, dtype=np.float64)
    if t.shape != (3,) or not np.isfinite(t).all():
        raise ValueError(f"xyz must be 3 finite numbers, got {list(xyz)}")
    if q.shape != (4,) or not np.isfinite(q).all():
        raise ValueError(f"quat must be 4 finite numbers (x, y, z, w), got {list(quat)}")
    norm = np.linalg.norm(q)
    if norm < 1e-9:
        raise ValueError("quat has zero length; the identity rotation is [0, 0, 0, 1]")
    x, y, z, w = q / norm
    T = np.eye(4)
    T[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    T[:3, 3] = t
    return T


def quaternion_from_matrix(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> unit quaternion (x, y, z, w), stable for any angle (Shepperd);
    the inverse of the rotation part of `extrinsic_matrix`."""
    trace = np.trace(R)
    i = int(np.argmax([trace, R[0, 0], R[1, 1], R[2, 2]]))
    if i == 0:
        w = np.sqrt(1.0 + trace) / 2
        q = [(R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w),
             (R[1, 0] - R[0, 1]) / (4 * w), w]
    else:
        a, b, c = (i - 1, i % 3, (i + 1) % 3)
        s = np.sqrt(1.0 + R[a, a] - R[b, b] - R[c, c]) * 2
        q = [0.0, 0.0, 0.0, (R[c, b] - R[b, c]) / s]
        q[a], q[b], q[c] = s / 4, (R[a, b] + R[b, a]) / s, (R[a, c] + R[c, a]) / s
    return np.asarray(q) / np.linalg.norm(q)


def tf_available() -> bool:
    return tf2_ros is not None


class TfExtrinsics:
    """tf2 lookups of T_cam_lidar at the cloud's stamp, waiting at most `timeout_s`.

    With `static=True` (rigidly mounted cameras, published on /tf_static) the first
    successful lookup per (camera frame, LiDAR frame) pair is cached and reused.
    """

    def __init__(self, node, timeout_s: float, static: bool) -> None:
        if tf2_ros is None:
            raise RuntimeError("tf2_ros is not importable; install ROS 2's tf2_ros or set "
                               "use_tf to false and give CAM.xyz / CAM.quat")
        self.buffer = tf2_ros.Buffer()
        self.listener = tf2_ros.TransformListener(self.buffer, node)
        self.timeout_s = timeout_s
        self.static = static
        self.cache: dict[tuple[str, str], np.ndarray] = {}

    def lookup(self, camera_frame: str, lidar_frame: str, stamp_ns: int) -> np.ndarray:
        from rclpy.clock_type import ClockType
        from rclpy.duration import Duration
        from rclpy.time import Time

        key = (camera_frame, lidar_frame)
        if self.static and key in self.cache:
            return self.cache[key]
        try:
            msg = self.buffer.lookup_transform(
                camera_frame, lidar_frame,
                Time(nanoseconds=stamp_ns, clock_type=ClockType.ROS_TIME),
                timeout=Duration(nanoseconds=int(self.timeout_s * 1e9)))
        except tf2_ros.TransformException as exc:
            raise ExtrinsicsError(
                f"no tf transform {lidar_frame} -> {camera_frame} at t={stamp_ns * 1e-9:.3f}:"
                f" {exc}") from exc
        tr, rot = msg.transform.translation, msg.transform.rotation
        T = extrinsic_matrix((tr.x, tr.y, tr.z), (rot.x, rot.y, rot.z, rot.w))
        if self.static:
            self.cache[key] = T
        return T


class Extrinsics:
    """Per-camera T_cam_lidar: from tf2 when `tf` is given, else from the parameters."""

    def __init__(self, from_params: dict[str, np.ndarray], tf: TfExtrinsics | None = None
                 ) -> None:
        self.from_params = from_params
        self.tf = tf

    def get(self, camera: str, camera_frame: str, lidar_frame: str, stamp_ns: int
            ) -> np.ndarray:
        """4 x 4 T_cam_lidar for `camera`; raises ExtrinsicsError when tf2 has none."""
        if self.tf is not None:
            if not camera_frame or not lidar_frame:
                raise ExtrinsicsError(
                    f"camera '{camera}': tf lookup needs frame_ids (image '{camera_frame}',"
                    f" cloud '{lidar_frame}')")
            return self.tf.lookup(camera_frame, lidar_frame, stamp_ns)
        return self.from_params[camera]
