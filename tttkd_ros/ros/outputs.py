"""Prediction -> messages: the labeled and colored clouds, camera masks and per-frame stats.

Headers are passed through untouched (never restamped): the clouds carry the input cloud's
header, a camera's masks that camera's image header. The clouds and masks are rclpy messages
unless message classes are passed (rosbags' types: ros/bag_outputs.py writes them to a bag).
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import String

from ..core.frame import MASK_NONE, UNLABELED, FrameStats, Prediction
from .convert import CloudArrays, array_to_image, pack_rgb, xyzi_fields_to_pointcloud2

UNLABELED_RGB = (0, 0, 0)  # SemanticKITTI's colour for "unlabeled"


def label_colors(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """labels (...) integer class ids -> (..., 3) uint8 RGB; ids outside the palette
    (UNLABELED, MASK_NONE) get UNLABELED_RGB."""
    labels = np.asarray(labels)
    colors = np.empty(labels.shape + (3,), dtype=np.uint8)
    colors[...] = UNLABELED_RGB
    known = labels < len(palette)
    colors[known] = palette[labels[known]]
    return colors


def labeled_cloud(header: Any, cloud: CloudArrays, pred: Prediction,
                  msg_cls: type | None = None, field_cls: type | None = None) -> PointCloud2:
    """x, y, z, [intensity,] label (uint16), confidence (float32): one point per input point.
    msg_cls / field_cls: PointCloud2 / PointField classes (default rclpy's)."""
    pts = cloud.points
    columns = {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2]}
    if cloud.has_intensity:
        columns["intensity"] = pts[:, 3]
    columns["label"] = pred.labels.astype(np.uint16, copy=False)
    columns["confidence"] = pred.confidence.astype(np.float32, copy=False)
    return xyzi_fields_to_pointcloud2(header, columns, msg_cls, field_cls)


def colored_cloud(header: Any, cloud: CloudArrays, labels: np.ndarray, palette: np.ndarray,
                  msg_cls: type | None = None, field_cls: type | None = None) -> PointCloud2:
    """x, y, z and `rgb` (float32 packed 0x00RRGGBB) from the class palette.
    msg_cls / field_cls: PointCloud2 / PointField classes (default rclpy's)."""
    pts = cloud.points
    return xyzi_fields_to_pointcloud2(header, {
        "x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2],
        "rgb": pack_rgb(label_colors(labels, palette).reshape(-1, 3)),
    }, msg_cls, field_cls)


def mask_image(header: Any, mask: np.ndarray, msg_cls: type | None = None) -> Image:
    """H x W uint8 class ids (MASK_NONE = no label) -> mono8 Image (msg_cls: default rclpy's)."""
    return array_to_image(header, mask, "mono8", msg_cls)


def mask_color_image(header: Any, mask: np.ndarray, palette: np.ndarray,
                     msg_cls: type | None = None) -> Image:
    """H x W uint8 class ids -> rgb8 Image in the class palette (no label = UNLABELED_RGB;
    msg_cls: default rclpy's)."""
    return array_to_image(header, label_colors(mask, palette), "rgb8", msg_cls)


def stats_message(stamp_ns: int, frame_id: str, stats: FrameStats, **extra: Any) -> String:
    """One JSON object: the input's stamp and frame, what the engine did, plus `extra`
    (node-level facts such as dropped frames and which cameras were paired)."""
    payload = {
        "stamp": {"sec": stamp_ns // 1_000_000_000, "nanosec": stamp_ns % 1_000_000_000},
        "frame_id": frame_id,
        "steps": stats.steps,
        "adapt_ms": round(stats.adapt_ms, 3),
        "infer_ms": round(stats.infer_ms, 3),
        "teacher_ms": round(stats.teacher_ms, 3),
        "budget_ms": stats.budget_ms,
        "over_budget": stats.over_budget,
        "no_return_points": stats.no_return_points,
        "losses": _finite(stats.losses),
        "events": stats.events,
        # the harm guard (core/adapt/guard.py): its source pass's time (inside budget_ms) and,
        # on a checked frame, what it compared; per camera the KD level under the source
        "guard": {"ms": round(stats.guard_ms, 3), "checked": stats.guard_checked,
                  **_finite({"drift": stats.guard_drift, "kl": stats.guard_kl,
                             "gain": stats.guard_gain, "flip": stats.guard_flip}),
                  "rollback": stats.guard_rollback},
        "camera_kd_ratio": _finite(stats.camera_kd_ratio),
        "cameras_untrusted": stats.cameras_untrusted,
        **extra,
    }
    return String(data=json.dumps(payload))


def _finite(values: dict[str, float | None]) -> dict[str, float | None]:
    """A discarded non-finite step leaves NaN/inf in the figures; JSON has no such numbers."""
    return {k: v if v is not None and math.isfinite(v) else None for k, v in values.items()}


def class_map_message(class_names: list[str], palette: np.ndarray) -> String:
    """The labels' meaning for consumers, one JSON object (published latched on ~/class_map):
    {"classes": [{"id": int, "name": str, "color": "#rrggbb"}], "unlabeled": 65535 (the
    label of a point the model gave no class), "mask_none": 255 (a mask pixel no point hit)}.
    """
    classes = [{"id": i, "name": name, "color": "#{:02x}{:02x}{:02x}".format(*palette[i])}
               for i, name in enumerate(class_names)]
    return String(data=json.dumps({"classes": classes, "unlabeled": UNLABELED,
                                   "mask_none": MASK_NONE}))


def label_info_message(class_names: list[str], header: Any) -> Any | None:
    """vision_msgs/LabelInfo (ids and names) where vision_msgs is installed, else None."""
    try:
        from vision_msgs.msg import LabelInfo, VisionClass
    except ImportError:
        return None
    return LabelInfo(header=header, threshold=0.0, class_map=[
        VisionClass(class_id=i, class_name=name) for i, name in enumerate(class_names)])
