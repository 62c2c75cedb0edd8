"""rosbag2 (sqlite3 or mcap) writing and reading of labeled drives with `rosbags`, no rclpy.

A drive bag is self-contained for evaluation; every message's bag time is its header stamp:

    /points               sensor_msgs/PointCloud2  x, y, z, intensity FLOAT32; frame `lidar`
    /CAM/image            sensor_msgs/Image        rgb8; frame `CAM_optical`
    /CAM/camera_info      sensor_msgs/CameraInfo   plumb_bob K, D, R = I, P = K [I | 0], size
    /tf_static            tf2_msgs/TFMessage       lidar -> CAM_optical per camera, written
                                                   once at the start, offered transient_local
    /ground_truth/points  sensor_msgs/PointCloud2  x, y, z FLOAT32, label UINT32 (raw
                                                   SemanticKITTI id), same stamp as /points

Reading pairs each cloud with its cameras through the node's FrameSynchronizer, with `now`
the bag time, so offline frames are the ones the node would build.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ..core.augment import moved_frame
from ..core.frame import CameraView, Frame
from .convert import (
    ConversionError,
    any_image_to_rgb,
    array_to_image,
    camera_info_to_calib,
    camera_view,
    check_image_matches_info,
    pointcloud2_to_xyzi,
    xyzi_fields_to_pointcloud2,
)
from .convert_base import message_bytes
from .extrinsics import quaternion_from_matrix
from .pointcloud import POINTFIELD_NUMPY
from .sync import FrameSynchronizer, SyncedFrame
from .tf_tree import TfLookupError, TfTree

POINTS_TOPIC = "/points"
LABELS_TOPIC = "/ground_truth/points"
TF_STATIC_TOPIC = "/tf_static"
TF_TOPIC = "/tf"
LIDAR_FRAME = "lidar"
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
_NS = 1_000_000_000
_LABEL_TYPES = (6, 4, 5)  # PointField UINT32, UINT16, INT32
# latched like a tf2 static broadcaster: late subscribers still get the transforms
_LATCHED = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
               QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)


class BagError(ValueError):
    """A bag that cannot be evaluated; the text names the bag and what is missing or wrong."""


@dataclass
class LabeledFrame:
    """A frame as the engine gets it, plus its ground truth: labels (N,) uint32 raw
    SemanticKITTI ids aligned with frame.points, or None when the bag holds none for it."""

    frame: Frame
    labels: np.ndarray | None


class BagTopic(NamedTuple):
    msgtype: str
    count: int
    latched: bool  # offered transient_local (e.g. /tf_static): a player must latch it too


def image_topic(camera: str) -> str:
    return f"/{camera}/image"


def info_topic(camera: str) -> str:
    return f"/{camera}/camera_info"


@dataclass(frozen=True)
class InputTopics:
    """The bag topics of the node's inputs: `points`, and per camera its image (an Image, or
    a CompressedImage under the `.../compressed` name image_transport gives it) and its
    CameraInfo. `remapped` turns the node's remap rules into these."""

    points: str = POINTS_TOPIC
    images: Mapping[str, str] = field(default_factory=dict)  # camera -> topic
    infos: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def remapped(cls, cameras: Iterable[str], remaps: Mapping[str, str] | None = None,
                 compressed: Collection[str] = ()) -> InputTopics:
        """The node's input names (`points`, `CAM/image` or `CAM/image/compressed`,
        `CAM/camera_info`) under `remaps` (node name -> topic, as `--remap NAME:=TOPIC`),
        each unremapped name at the root, as the node in the root namespace resolves it.
        Raises ValueError for a remap of a name the node does not have."""
        remaps, cameras = dict(remaps or {}), list(cameras)
        names = {"points": "points"}
        for cam in cameras:
            image = f"{cam}/image"
            names[image] = f"{image}/compressed" if cam in compressed else image
            names[f"{cam}/camera_info"] = f"{cam}/camera_info"
        unknown = sorted(set(remaps) - set(names) - set(names.values()))
        if unknown:
            raise ValueError(f"--remap of {unknown}: the node's inputs are "
                             f"{sorted(names.values())}")

        def topic(key: str) -> str:
            name = names[key]
            return remaps.get(name, remaps.get(key, "/" + name))

        return cls(topic("points"), {c: topic(f"{c}/image") for c in cameras},
                   {c: topic(f"{c}/camera_info") for c in cameras})

    def image(self, camera: str) -> str:
        return self.images.get(camera, image_topic(camera))

    def info(self, camera: str) -> str:
        return self.infos.get(camera, info_topic(camera))


@lru_cache(maxsize=1)
def typestore():
    """ROS 2 Jazzy's message definitions, for reading and writing bags without rclpy."""
    return get_typestore(Stores.ROS2_JAZZY)


def msg_type(name: str) -> type:
    """The rosbags class of a message type, e.g. 'sensor_msgs/msg/Image'."""
    return typestore().types[name]


# -- writing -------------------------------------------------------------------------------

def header_msg(stamp_ns: int, frame_id: str) -> Any:
    """A rosbags std_msgs/Header."""
    stamp = msg_type("builtin_interfaces/msg/Time")(sec=stamp_ns // _NS, nanosec=stamp_ns % _NS)
    return msg_type("std_msgs/msg/Header")(stamp=stamp, frame_id=frame_id)


def _tf_static(stamp_ns: int, lidar_frame: str, cameras: list[CameraView]) -> Any:
    """TFMessage: parent lidar_frame, child each camera's optical frame (T_lidar_cam)."""
    vec, quat = msg_type("geometry_msgs/msg/Vector3"), msg_type("geometry_msgs/msg/Quaternion")
    transforms = []
    for view in cameras:
        T = np.linalg.inv(np.asarray(view.T_cam_lidar, dtype=np.float64))
        x, y, z, w = quaternion_from_matrix(T[:3, :3])
        transform = msg_type("geometry_msgs/msg/Transform")(
            translation=vec(x=T[0, 3], y=T[1, 3], z=T[2, 3]), rotation=quat(x=x, y=y, z=z, w=w))
        transforms.append(msg_type("geometry_msgs/msg/TransformStamped")(
            header=header_msg(stamp_ns, lidar_frame), child_frame_id=_camera_frame(view.name),
            transform=transform))
    return msg_type(TF_TYPE)(transforms=transforms)


def _camera_frame(camera: str) -> str:
    return f"{camera}_optical"


def _camera_info(header: Any, view: CameraView) -> Any:
    K = np.asarray(view.K, dtype=np.float64).reshape(3, 3)
    D = np.zeros(5)
    D[:len(view.D)] = view.D  # plumb_bob with 4 coefficients: k3 = 0
    P = np.concatenate([K, np.zeros((3, 1))], axis=1)
    height, width = view.size
    return msg_type(INFO_TYPE)(
        header=header, height=height, width=width, distortion_model="plumb_bob", d=D,
        k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
        roi=msg_type("sensor_msgs/msg/RegionOfInterest")(
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _cloud(header: Any, columns: dict[str, np.ndarray]) -> Any:
    return xyzi_fields_to_pointcloud2(header, columns, msg_type(CLOUD_TYPE),
                                      msg_type("sensor_msgs/msg/PointField"))


class BagWriter:
    """Writes rosbags messages to an open rosbag2 Writer; a topic's connection is added on
    its first message, so a drive without labels gets no label topic."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.connections: dict[str, Any] = {}

    def write(self, topic: str, stamp_ns: int, msg: Any, latched: bool = False) -> None:
        msgtype = msg.__msgtype__
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(
                topic, msgtype, typestore=typestore(),
                offered_qos_profiles=[_LATCHED] if latched else [])
        self.writer.write(self.connections[topic], stamp_ns,
                          typestore().serialize_cdr(msg, msgtype))


def write_drive_bag(path: str | Path, frames: Iterable[Any], storage: str = "sqlite3",
                    lidar_frame: str = LIDAR_FRAME) -> int:
    """Write `frames` (SynthFrame, KittiFrame or core Frame: points (N, 4) float32, cameras
    list[CameraView], stamp_ns; optional labels (N,) raw ids) as a new rosbag2 folder.

    The cameras of the first frame define the camera topics and /tf_static (written at the
    first stamp); a later frame may lack a camera but may not add one. Returns the number
    of frames written. Raises ValueError for an unknown storage or camera, and rosbags'
    WriterError if `path` exists.
    """
    if storage not in STORAGES:
        raise ValueError(f"unknown bag storage {storage!r}; choose one of {sorted(STORAGES)}")
    count = 0
    with Writer(Path(path), version=9, storage_plugin=STORAGES[storage]) as writer:
        out = BagWriter(writer)
        names: list[str] | None = None
        for frame in frames:
            stamp = int(frame.stamp_ns)
            if names is None:
                names = [v.name for v in frame.cameras]
                if frame.cameras:
                    out.write(TF_STATIC_TOPIC, stamp,
                              _tf_static(stamp, lidar_frame, frame.cameras), latched=True)
            extra = [v.name for v in frame.cameras if v.name not in names]
            if extra:
                raise ValueError(f"frame {count} at {stamp} has cameras {extra} that the "
                                 f"first frame lacks ({names}); the bag's topics are fixed")
            points = np.asarray(frame.points, dtype=np.float32)
            xyz = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2]}
            header = header_msg(stamp, lidar_frame)
            out.write(POINTS_TOPIC, stamp, _cloud(header, {**xyz, "intensity": points[:, 3]}))
            if getattr(frame, "labels", None) is not None:  # a core Frame has none
                labels = np.asarray(frame.labels, dtype=np.uint32)
                out.write(LABELS_TOPIC, stamp, _cloud(header, {**xyz, "label": labels}))
            for view in frame.cameras:
                cam_header = header_msg(stamp, _camera_frame(view.name))
                out.write(info_topic(view.name), stamp, _camera_info(cam_header, view))
                out.write(image_topic(view.name), stamp, array_to_image(
                    cam_header, view.image, "rgb8", msg_type(IMAGE_TYPE)))
            count += 1
    return count


# -- reading -------------------------------------------------------------------------------

def _open(path: str | Path) -> AnyReader:
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    try:
        return AnyReader([path], default_typestore=typestore())
    except (AnyReaderError, FileNotFoundError) as err:  # no metadata.yaml: FileNotFoundError
        raise BagError(f"{path} is not a readable rosbag2 bag: {err}") from err


def topic_info(path: str | Path) -> dict[str, BagTopic]:
    """topic -> (message type, message count, latched) for every topic in the bag."""
    try:
        with _open(path) as reader:
            conns: dict[str, list[Any]] = {}
            for conn in reader.connections:
                conns.setdefault(conn.topic, []).append(conn)
    except AnyReaderError as err:
        raise BagError(f"{path} is not a readable rosbag2 bag: {err}") from err
    return {topic: BagTopic(
        msgtype=group[0].msgtype, count=sum(c.msgcount for c in group),
        latched=any(q.durability == QosDurability.TRANSIENT_LOCAL
                    for c in group for q in c.ext.offered_qos_profiles))
        for topic, group in conns.items()}


def iter_messages(path: str | Path, topics: Collection[str] | None = None
                  ) -> Iterator[tuple[str, int, Any]]:
    """(topic, bag time ns, deserialised rosbags message) in bag-time order.

    topics: only these (default: all). Raises BagError when a selected topic's type has no
    definition in the bag nor in ROS 2 Jazzy's standard messages.
    """
    try:
        with _open(path) as reader:
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            unknown = sorted({f"{c.topic} ({c.msgtype})" for c in conns
                              if c.msgtype not in reader.typestore.fielddefs})
            if unknown:
                raise BagError(f"{path}: unknown message types, no definition in the bag or in "
                               f"ROS 2 Jazzy: {', '.join(unknown)}")
            for conn, stamp, raw in reader.messages(conns):
                yield conn.topic, stamp, reader.deserialize(raw, conn.msgtype)
    except AnyReaderError as err:
        raise BagError(f"{path}: cannot read: {err}") from err


def _check_topics(path: str | Path, topics: dict[str, BagTopic],
                  wanted: dict[str, tuple[str, ...]]) -> None:
    """Every wanted topic is in the bag with one of its allowed types, else a BagError that
    lists what the bag has and how to point at other topics."""
    missing = [t for t in wanted if t not in topics]
    if missing:
        have = ", ".join(f"{t} ({i.msgtype})" for t, i in sorted(topics.items())) or "none"
        raise BagError(f"{path} lacks topics {', '.join(missing)}; it has: {have}. Point the "
                       "node's inputs at the bag's topics (tttkd eval --remap "
                       "points:=/velodyne_points, --remap CAM/image:=TOPIC, --remap "
                       "CAM/camera_info:=TOPIC; CAM.transport: compressed in --params for a "
                       "CompressedImage topic) or choose --cameras")
    wrong = [f"{t} is {topics[t].msgtype}, expected {' or '.join(m)}"
             for t, m in wanted.items() if topics[t].msgtype not in m]
    if wrong:
        raise BagError(f"{path}: unknown message types for evaluation: {'; '.join(wrong)}")


def _label_column(msg: Any) -> np.ndarray:
    """The `label` field of a ground-truth PointCloud2 as (N,) uint32."""
    fields = {str(f.name): f for f in msg.fields}
    field = fields.get("label")
    if field is None or int(field.datatype) not in _LABEL_TYPES:
        raise ConversionError(f"ground-truth cloud needs a UINT32/UINT16/INT32 'label' field, "
                              f"has fields {sorted(fields)}")
    order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype({"names": ["label"],
                      "formats": [order + POINTFIELD_NUMPY[int(field.datatype)]],
                      "offsets": [int(field.offset)], "itemsize": int(msg.point_step)})
    height, width, row_step = int(msg.height), int(msg.width), int(msg.row_step)
    buf = message_bytes(msg.data, "ground-truth PointCloud2")
    if buf.size != row_step * height or row_step < width * int(msg.point_step):
        raise ConversionError(f"ground-truth cloud has {buf.size} bytes for {height} rows of "
                              f"{row_step} bytes")
    view = np.ndarray((height, width), dtype=dtype, buffer=buf,
                      strides=(row_step, int(msg.point_step)))
    return view["label"].reshape(-1).astype(np.uint32)


class _Extrinsics:
    """T_cam_lidar per camera: from the caller, else the bag's tf tree (/tf_static, and /tf
    at the cloud's stamp) through any chain of frames, as a robot records it."""

    def __init__(self, path: str | Path, given: Mapping[str, np.ndarray],
                 tf_topics: Collection[str]) -> None:
        self.path, self.given = path, {k: np.asarray(v, np.float64) for k, v in given.items()}
        self.tree = TfTree()
        if tf_topics:  # rosbags reads every topic for an empty selection
            for topic, _, msg in iter_messages(path, tf_topics):
                try:
                    self.tree.add(msg, static=topic == TF_STATIC_TOPIC)
                except ValueError as err:
                    raise BagError(f"{path}: {topic}: {err}") from err

    def get(self, camera: str, camera_frame: str, lidar_frame: str, stamp_ns: int
            ) -> np.ndarray:
        if camera in self.given:
            return self.given[camera]
        try:
            return self.tree.lookup(camera_frame, lidar_frame, stamp_ns)
        except TfLookupError as err:
            raise BagError(f"{self.path}: no camera-LiDAR extrinsic for camera '{camera}' "
                           f"(image frame '{camera_frame}', cloud frame '{lidar_frame}') in "
                           f"the bag's tf: {err}; or pass extrinsics={{'{camera}': "
                           "T_cam_lidar}") from err


def _build(path: str | Path, synced: SyncedFrame, extrinsics: _Extrinsics,
           rectified: Collection[str], sensor: tuple[str, np.ndarray | None]) -> Frame:
    """The engine's Frame from a synchronised cloud and its camera pairs (as the node does);
    `rectified`: the cameras whose images are rectified; `sensor`: (the LiDAR frame the model
    expects, looked up in the bag's tf, or "" and T_sensor_cloud or None)."""
    header, where = synced.cloud.header, f"{path} at stamp {synced.stamp_ns}"
    try:
        cloud = pointcloud2_to_xyzi(synced.cloud)
    except ConversionError as err:
        raise BagError(f"{where}: {POINTS_TOPIC}: {err}") from err
    views = []
    for cam, pair in synced.cameras.items():
        if pair is None:  # no image within the slop: the frame goes on without this camera
            continue
        try:
            rgb = any_image_to_rgb(pair.image)
            calib = camera_info_to_calib(pair.info, cam in rectified)
            check_image_matches_info(rgb.shape[:2], calib)
        except ConversionError as err:
            raise BagError(f"{where}: camera '{cam}': {err}") from err
        camera_frame = str(pair.image.header.frame_id)
        T = extrinsics.get(cam, camera_frame, str(header.frame_id), synced.stamp_ns)
        views.append(camera_view(cam, rgb, calib, T, camera_frame))
    frame = Frame(points=cloud.points, cameras=views, stamp_ns=synced.stamp_ns,
                  frame_id=str(header.frame_id), intensity_max=cloud.intensity_max)
    sensor_frame, to_sensor = sensor
    if sensor_frame and sensor_frame != frame.frame_id:
        try:
            to_sensor = extrinsics.tree.lookup(sensor_frame, frame.frame_id, synced.stamp_ns)
        except TfLookupError as err:
            raise BagError(f"{where}: no transform from the cloud's frame into sensor_frame "
                           f"'{sensor_frame}' in the bag's tf: {err}") from err
    return frame if to_sensor is None else moved_frame(frame, to_sensor)


def _labels_for(path: str | Path, frame: Frame, msg: Any | None, required: bool
                ) -> np.ndarray | None:
    where = f"{path} at stamp {frame.stamp_ns}"
    if msg is None:
        if required:
            raise BagError(f"{where}: missing labels: no {LABELS_TOPIC} message with the "
                           f"stamp of the {POINTS_TOPIC} cloud")
        return None
    try:
        labels = _label_column(msg)
        xyz = pointcloud2_to_xyzi(msg).points[:, :3]
    except ConversionError as err:
        raise BagError(f"{where}: {LABELS_TOPIC}: {err}") from err
    if not np.array_equal(xyz, frame.points[:, :3], equal_nan=True):
        raise BagError(f"{where}: {LABELS_TOPIC} does not hold the points of {POINTS_TOPIC} "
                       f"({len(xyz)} vs {len(frame.points)} points, or another order)")
    return labels


def _stamp(msg: Any) -> int:
    return int(msg.header.stamp.sec) * _NS + int(msg.header.stamp.nanosec)


def read_bag_frames(path: str | Path, cameras: Iterable[str] = ("camera",),
                    slop_s: float = 0.05, timeout_s: float = 0.2, queue_size: int = 10,
                    extrinsics: Mapping[str, np.ndarray] | None = None,
                    require_labels: bool = False, inputs: InputTopics | None = None,
                    rectified: Collection[str] = (), sensor_frame: str = "",
                    cloud_to_sensor: np.ndarray | None = None) -> Iterator[LabeledFrame]:
    """Frames of a bag in stamp order, paired by the node's FrameSynchronizer.

    cameras: camera namespaces; empty for LiDAR only. inputs: the bag topics of the cloud
    and of each camera's image (Image or CompressedImage) and CameraInfo (default /points,
    /CAM/image, /CAM/camera_info). rectified: cameras whose images are rectified (projected
    with CameraInfo R and P, no distortion; the others with K and D). A cloud not in the
    LiDAR frame the model expects is moved into it: into `sensor_frame` through the bag's
    tf, or by `cloud_to_sensor` (T_sensor_cloud); the extrinsics are the cloud frame's.
    extrinsics: camera -> 4 x 4 T_cam_lidar; cameras not given use the bag's tf tree
    (/tf_static, and /tf at the cloud's stamp), through any chain of frames. A frame
    whose camera has no image within slop_s goes on without that camera (as in the node).
    Ground truth of a cloud is the /ground_truth/points message with its stamp; a frame is
    held until the bag time passes its stamp by timeout_s so that its ground truth is in.
    Raises BagError naming what is missing: topics, labels (require_labels), the extrinsic,
    or message types that are unknown or not the expected ones; and for defective messages.
    """
    cameras, given = list(cameras), dict(extrinsics or {})
    inputs = inputs or InputTopics()
    topics = topic_info(path)
    wanted = {inputs.points: (CLOUD_TYPE,)}
    for cam in cameras:
        wanted.update({inputs.image(cam): (IMAGE_TYPE, COMPRESSED_TYPE),
                       inputs.info(cam): (INFO_TYPE,)})
    if require_labels:
        wanted[LABELS_TOPIC] = (CLOUD_TYPE,)
    untold = [cam for cam in cameras if cam not in given]
    tf_topics = [t for t in (TF_STATIC_TOPIC, TF_TOPIC)
                 if (untold or sensor_frame) and t in topics]
    wanted.update(dict.fromkeys(tf_topics, (TF_TYPE,)))
    if require_labels and LABELS_TOPIC not in topics:
        raise BagError(f"{path} has no ground truth: missing labels topic {LABELS_TOPIC} "
                       "(PointCloud2 with a 'label' field; `tttkd synth --bag` writes it)")
    _check_topics(path, topics, wanted)
    if untold and not tf_topics:
        raise BagError(f"{path} has neither {TF_STATIC_TOPIC} nor {TF_TOPIC} for the "
                       f"camera-LiDAR extrinsics of cameras {untold}; pass "
                       "extrinsics={camera: T_cam_lidar}")
    tf = _Extrinsics(path, given, tf_topics)

    sync = FrameSynchronizer(cameras, slop_s, queue_size, timeout_s)
    # each message's bag time is when it was received: the clouds' arrival for the sync
    route = {inputs.points: lambda s, m, now: sync.add_cloud(s, m, now)}
    for cam in cameras:
        route[inputs.image(cam)] = lambda s, m, now, c=cam: sync.add_image(c, s, m)
        route[inputs.info(cam)] = lambda s, m, now, c=cam: sync.add_camera_info(c, s, m)
    truth: dict[int, Any] = {}
    ready: deque[SyncedFrame] = deque()
    hold = round(timeout_s * _NS)

    def release(until_ns: int | None) -> Iterator[LabeledFrame]:
        while ready and (until_ns is None or ready[0].stamp_ns + hold < until_ns):
            synced = ready.popleft()
            frame = _build(path, synced, tf, rectified, (sensor_frame, cloud_to_sensor))
            labels = _labels_for(path, frame, truth.pop(synced.stamp_ns, None), require_labels)
            for stamp in [s for s in truth if s < synced.stamp_ns]:  # clouds sync dropped
                del truth[stamp]
            yield LabeledFrame(frame, labels)

    for topic, now, msg in iter_messages(path, list(route) + [LABELS_TOPIC]):
        yield from release(now)
        if topic == LABELS_TOPIC:
            truth[_stamp(msg)] = msg
        else:
            route[topic](_stamp(msg), msg, now)
        ready.extend(sync.poll(now))
    ready.extend(sync.flush())
    yield from release(None)
