"""rosbag2 files in the shapes robots record, written here with rosbags from synthetic frames
(never with the package's own bag writer): a Velodyne driver's padded cloud (point_step 22,
float intensity 0..255, ring, time) on /velodyne_points, or an Ouster driver's organised
cloud (point_step 48, no-returns at (0, 0, 0)) on /ouster/points; cameras as JPEG
CompressedImage on image_transport's /NAME/image_raw/compressed with CameraInfo; extrinsics
only as a tf tree on /tf_static (base_link -> LiDAR, base_link -> NAME_link ->
NAME_optical_frame); bag time = when the message was received, later than its stamp, the
images a little after their cloud."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image as PilImage
from rosbags.rosbag2 import Writer

from tttkd_ros.ros.bag import msg_type, typestore
from tttkd_ros.ros.extrinsics import quaternion_from_matrix

MS = 1_000_000
RECEIVE_LAG_NS = 80 * MS  # stamps lag the bag (receive) time
IMAGE_AFTER_CLOUD_NS = 15 * MS
BASE_T_LIDAR = np.array([[1.0, 0, 0, 0.3], [0, 1, 0, 0], [0, 0, 1, 1.8], [0, 0, 0, 1]])
VELODYNE = np.dtype({"names": ["x", "y", "z", "intensity", "ring", "time"],
                     "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f4"],
                     "offsets": [0, 4, 8, 12, 16, 18], "itemsize": 22})
OUSTER = np.dtype({"names": ["x", "y", "z", "intensity", "t", "reflectivity", "ring",
                             "ambient", "range"],
                   "formats": ["<f4", "<f4", "<f4", "<f4", "<u4", "<u2", "<u2", "<u2", "<u4"],
                   "offsets": [0, 4, 8, 16, 20, 24, 26, 28, 32], "itemsize": 48})
_DATATYPES = {"<f4": 7, "<u2": 4, "<u4": 6}


def _header(stamp_ns: int, frame_id: str):
    stamp = msg_type("builtin_interfaces/msg/Time")(sec=stamp_ns // 1_000_000_000,
                                                    nanosec=stamp_ns % 1_000_000_000)
    return msg_type("std_msgs/msg/Header")(stamp=stamp, frame_id=frame_id)


def _cloud(header, packed: np.ndarray, height: int):
    field = msg_type("sensor_msgs/msg/PointField")
    fields = [field(name=n, offset=packed.dtype.fields[n][1],
                    datatype=_DATATYPES[packed.dtype.fields[n][0].str], count=1)
              for n in packed.dtype.names]
    width = len(packed) // height
    return msg_type("sensor_msgs/msg/PointCloud2")(
        header=header, height=height, width=width, fields=fields, is_bigendian=False,
        point_step=packed.dtype.itemsize, row_step=packed.dtype.itemsize * width,
        data=packed.view(np.uint8).reshape(-1), is_dense=False)


def velodyne_cloud(header, points: np.ndarray):
    """Velodyne's layout, intensity in 0..255 as velodyne_pointcloud publishes it."""
    packed = np.zeros(len(points), VELODYNE)
    for i, name in enumerate(("x", "y", "z")):
        packed[name] = points[:, i]
    packed["intensity"] = points[:, 3] * 255.0
    packed["ring"] = np.arange(len(points)) % 64
    return _cloud(header, packed, height=1)


def ouster_cloud(header, points: np.ndarray, rows: int = 8, hole_every: int = 3):
    """Ouster's organised layout: `rows` rows; every `hole_every`-th cell a no-return at
    (0, 0, 0) with range 0, the synthetic points fill the others in order. Returns the
    message and the (rows * width,) mask of no-returns."""
    cells = len(points) + len(points) // (hole_every - 1) + rows
    cells += -cells % rows
    holes = np.arange(cells) % hole_every == 0
    holes[np.flatnonzero(~holes)[len(points):]] = True  # cells left over are no-returns too
    packed = np.zeros(cells, OUSTER)
    for i, name in enumerate(("x", "y", "z")):
        packed[name][~holes] = points[:, i]
    packed["intensity"][~holes] = points[:, 3]
    packed["range"][~holes] = (np.linalg.norm(points[:, :3], axis=1) * 1000).astype(np.uint32)
    packed["ring"] = np.arange(cells) // (cells // rows)
    return _cloud(header, packed, height=rows), holes


def _jpeg(header, rgb: np.ndarray):
    buf = io.BytesIO()
    PilImage.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return msg_type("sensor_msgs/msg/CompressedImage")(
        header=header, format="bgr8; jpeg compressed bgr8",
        data=np.frombuffer(buf.getvalue(), np.uint8))


def _camera_info(header, view):
    K = np.asarray(view.K, np.float64)
    h, w = view.size
    return msg_type("sensor_msgs/msg/CameraInfo")(
        header=header, height=h, width=w, distortion_model="plumb_bob", d=np.zeros(5),
        k=K.reshape(-1), r=np.eye(3).reshape(-1),
        p=np.c_[K, np.zeros(3)].reshape(-1), binning_x=0, binning_y=0,
        roi=msg_type("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0,
                                                         width=0, do_rectify=False))


def _transform(parent: str, child: str, T: np.ndarray, stamp_ns: int):
    vec, quat = msg_type("geometry_msgs/msg/Vector3"), msg_type("geometry_msgs/msg/Quaternion")
    x, y, z, w = quaternion_from_matrix(T[:3, :3])
    return msg_type("geometry_msgs/msg/TransformStamped")(
        header=_header(stamp_ns, parent), child_frame_id=child,
        transform=msg_type("geometry_msgs/msg/Transform")(
            translation=vec(x=T[0, 3], y=T[1, 3], z=T[2, 3]), rotation=quat(x=x, y=y, z=z, w=w)))


def robot_tree(cameras, lidar_frame: str, stamp_ns: int):
    """/tf_static: base_link -> lidar, and per camera base_link -> NAME_link ->
    NAME_optical_frame, composed so that optical <- lidar is the view's T_cam_lidar."""
    transforms = [_transform("base_link", lidar_frame, BASE_T_LIDAR, stamp_ns)]
    for k, view in enumerate(cameras):
        base_t_link = np.eye(4)
        base_t_link[:3, 3] = (0.5 + 0.1 * k, 0.2 * k, 1.5)
        link_t_optical = (np.linalg.inv(base_t_link) @ BASE_T_LIDAR
                          @ np.linalg.inv(np.asarray(view.T_cam_lidar, np.float64)))
        transforms += [_transform("base_link", f"{view.name}_link", base_t_link, stamp_ns),
                       _transform(f"{view.name}_link", f"{view.name}_optical_frame",
                                  link_t_optical, stamp_ns)]
    return msg_type("tf2_msgs/msg/TFMessage")(transforms=transforms)


def write_robot_bag(path: Path, frames: list, lidar: str = "velodyne",
                    in_base_link: bool = False) -> dict:
    """Write `frames` (SynthFrame: points, cameras, stamp_ns) as a robot's bag; returns the
    topics it used and, for the Ouster layout, each frame's no-return mask. in_base_link:
    the clouds are published in base_link, as Autoware's are (Velodyne layout only)."""
    store = typestore()
    topic = {"velodyne": "/velodyne_points", "ouster": "/ouster/points"}[lidar]
    lidar_frame = {"velodyne": "velodyne", "ouster": "os_sensor"}[lidar]
    holes: list[np.ndarray] = []
    with Writer(path, version=9) as writer:
        connections: dict = {}

        def write(name: str, bag_time: int, msg) -> None:
            if name not in connections:
                connections[name] = writer.add_connection(name, msg.__msgtype__, typestore=store)
            writer.write(connections[name], bag_time,
                         store.serialize_cdr(msg, msg.__msgtype__))

        first = frames[0].stamp_ns
        write("/tf_static", first, robot_tree(frames[0].cameras, lidar_frame, first))
        for f in frames:
            received = f.stamp_ns + RECEIVE_LAG_NS
            header = _header(f.stamp_ns, "base_link" if in_base_link else lidar_frame)
            if lidar == "velodyne":
                points = f.points.copy()
                if in_base_link:
                    points[:, :3] = f.points[:, :3] @ BASE_T_LIDAR[:3, :3].T + BASE_T_LIDAR[:3, 3]
                write(topic, received, velodyne_cloud(header, points))
            else:
                cloud, mask = ouster_cloud(header, f.points)
                holes.append(mask)
                write(topic, received, cloud)
            for view in f.cameras:
                cam_header = _header(f.stamp_ns, f"{view.name}_optical_frame")
                write(f"/{view.name}/camera_info", received + IMAGE_AFTER_CLOUD_NS,
                      _camera_info(cam_header, view))
                write(f"/{view.name}/image_raw/compressed", received + IMAGE_AFTER_CLOUD_NS,
                      _jpeg(cam_header, view.image))
    return {"points": topic, "cameras": [v.name for v in frames[0].cameras], "holes": holes}
