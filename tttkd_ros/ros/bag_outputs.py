"""Every evaluated mode's outputs in one rosbag2 (sqlite3) folder, for RViz or Foxglove.

What the node would have published for each mode, under its topic names in a namespace per
mode (MODE_NAME: the mode with what ROS names forbid replaced, `kd+ocl` -> `kd_ocl`), plus
the input clouds to show beside them:

    /points                                 sensor_msgs/PointCloud2  x, y, z, intensity
    /MODE_NAME/tttkd_adapt/labeled_points   sensor_msgs/PointCloud2  x, y, z, intensity,
                                                                     label UINT16,
                                                                     confidence FLOAT32
    /MODE_NAME/tttkd_adapt/colored_points   sensor_msgs/PointCloud2  x, y, z, rgb (packed)
    /MODE_NAME/tttkd_adapt/CAM/mask         sensor_msgs/Image        mono8 class ids
    /MODE_NAME/tttkd_adapt/CAM/mask_color   sensor_msgs/Image        rgb8 in the palette

The messages are built by the node's own functions (ros/outputs.py) with rosbags' Jazzy
types. Every message carries the input cloud's stamp and its bag time is that stamp; the
clouds carry the cloud's frame_id, the masks their camera's image frame_id. A Frame keeps no
image stamp, so the masks carry the cloud's (the node gives them the image's; the two differ
by at most the sync slop). A Frame does not keep whether its cloud had an intensity field
either, so the clouds always have one (0 where the input had none), as the node's have for a
LiDAR that measures intensity.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from ..core.frame import Frame, Prediction
from .bag import (
    CLOUD_TYPE,
    IMAGE_TYPE,
    POINTS_TOPIC,
    BagError,
    BagWriter,
    LabeledFrame,
    header_msg,
    msg_type,
)
from .convert import CloudArrays, xyzi_fields_to_pointcloud2
from .outputs import colored_cloud, labeled_cloud, mask_color_image, mask_image
from .params import NODE_NAME

_NS = 1_000_000_000


def ros_name(mode: str) -> str:
    """`mode` as a ROS name token: characters other than letters, digits and '_' become
    '_', repeated '_' collapse (ROS 2 forbids them), and a leading digit gets a '_'."""
    token = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", mode))
    return f"_{token}" if token[:1].isdigit() else token


def mode_topics(mode: str, cameras: Sequence[str] = ()) -> dict[str, str]:
    """The topics of one mode: output name ('labeled_points', 'CAM/mask', ...) -> topic."""
    base = f"/{ros_name(mode)}/{NODE_NAME}"
    names = ["labeled_points", "colored_points"]
    names += [f"{cam}/{kind}" for cam in cameras for kind in ("mask", "mask_color")]
    return {name: f"{base}/{name}" for name in names}


def _cloud_arrays(frame: Frame) -> CloudArrays:
    """The frame's points as the decoded input cloud the node's output functions take."""
    points = np.asarray(frame.points, dtype=np.float32)
    return CloudArrays(points=points, has_intensity=True, height=1, width=len(points),
                       intensity_max=frame.intensity_max)


class OutputBag:
    """Takes the inputs once and each mode's predictions as they are made (the
    evaluation.PredictionSink `write_prediction`), so no mode's outputs are held in memory."""

    def __init__(self, writer: Writer) -> None:
        self.bag = BagWriter(writer)
        self.cloud_cls, self.image_cls = msg_type(CLOUD_TYPE), msg_type(IMAGE_TYPE)
        self.field_cls = msg_type("sensor_msgs/msg/PointField")

    def write_inputs(self, frames: Iterable[LabeledFrame]) -> None:
        """The input clouds on /points (x, y, z, intensity), to show beside the outputs."""
        for frame in (item.frame for item in frames):
            pts = np.asarray(frame.points, dtype=np.float32)
            self.bag.write(POINTS_TOPIC, frame.stamp_ns, xyzi_fields_to_pointcloud2(
                header_msg(frame.stamp_ns, frame.frame_id),
                {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2], "intensity": pts[:, 3]},
                self.cloud_cls, self.field_cls))

    def write_prediction(self, mode: str, palette: np.ndarray, frame: Frame,
                         pred: Prediction) -> None:
        """One frame's outputs of `mode`, as the node publishes them (module doc)."""
        stamp = int(frame.stamp_ns)
        topics = mode_topics(mode, list(pred.masks))
        header = header_msg(stamp, frame.frame_id)
        cloud = _cloud_arrays(frame)
        self.bag.write(topics["labeled_points"], stamp,
                    labeled_cloud(header, cloud, pred, self.cloud_cls, self.field_cls))
        self.bag.write(topics["colored_points"], stamp, colored_cloud(
            header, cloud, pred.labels, palette, self.cloud_cls, self.field_cls))
        frame_ids = {view.name: view.frame_id for view in frame.cameras}
        for cam, mask in pred.masks.items():
            cam_header = header_msg(stamp, frame_ids[cam])
            self.bag.write(topics[f"{cam}/mask"], stamp,
                        mask_image(cam_header, mask, self.image_cls))
            self.bag.write(topics[f"{cam}/mask_color"], stamp,
                        mask_color_image(cam_header, mask, palette, self.image_cls))


@contextmanager
def open_output_bag(path: str | Path) -> Iterator[OutputBag]:
    """An OutputBag writing the new rosbag2 (sqlite3) folder `path`, closed on leaving; raises
    BagError if `path` exists (checked first, before any evaluation time is spent)."""
    path = Path(path)
    if path.exists():
        raise BagError(f"{path} exists: the output bag must be a new folder")
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        yield OutputBag(writer)
