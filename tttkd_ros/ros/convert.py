"""Message <-> numpy conversion, one import for the node, the evaluator and the bag writer.

Pure numpy: no rclpy or message package is imported here. Messages are read through their
attributes, so rclpy messages and rosbags' dataclasses both work; messages are built from a
class passed in (default: sensor_msgs.msg, imported when first needed). The code lives in
pointcloud.py, image.py and camera_info.py; every documented rejection is a ConversionError.
"""
from tttkd_ros.ros.camera_info import (
    CameraCalib,
    camera_info_to_calib,
    camera_view,
    check_image_matches_info,
    rectified_from_topic,
)
from tttkd_ros.ros.convert_base import ConversionError
from tttkd_ros.ros.image import any_image_to_rgb, array_to_image, compressed_to_rgb, image_to_rgb
from tttkd_ros.ros.pointcloud import (
    CloudArrays,
    pack_rgb,
    pointcloud2_to_xyzi,
    xyzi_fields_to_pointcloud2,
)

__all__ = [
    "CameraCalib",
    "CloudArrays",
    "ConversionError",
    "any_image_to_rgb",
    "array_to_image",
    "camera_info_to_calib",
    "camera_view",
    "check_image_matches_info",
    "compressed_to_rgb",
    "image_to_rgb",
    "pack_rgb",
    "pointcloud2_to_xyzi",
    "rectified_from_topic",
    "xyzi_fields_to_pointcloud2",
]
