"""sensor_msgs/CameraInfo -> the intrinsics the projection uses, with sanity checks.

A camera's image is raw (distorted: project with K and D) or rectified (image_proc's
image_rect: rotate by R, project with P's left 3 x 3 and no distortion). One CameraInfo
describes both, so which one the image is must be said (`rectified`); using K and D on a
rectified image distorts it a second time and misaligns every mask and distillation target.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tttkd_ros.core.frame import CameraView
from tttkd_ros.ros.convert_base import ConversionError


@dataclass
class CameraCalib:
    """Intrinsics of one camera.

    K: (3, 3) float64. D: (k,) float64 plumb_bob coefficients (k1, k2, p1, p2[, k3]) with
    k in {0, 4, 5}; empty means no distortion. distortion_model: the model D follows after
    normalisation, 'plumb_bob' or 'none' (a rational_polynomial whose k4..k6 are zero is
    plumb_bob). width / height: the calibrated image size, 0 when unknown. T_image_cam:
    4 x 4 from the camera's optical frame to the frame the image projects from (R of a
    rectified image, identity for a raw one).
    """

    K: np.ndarray
    D: np.ndarray
    distortion_model: str
    width: int
    height: int
    frame_id: str
    T_image_cam: np.ndarray = field(default_factory=lambda: np.eye(4))


def camera_info_to_calib(msg: Any, rectified: bool = False) -> CameraCalib:
    """Read the calibration of a raw (K, D) or a rectified (R, P, no distortion) image from a
    CameraInfo (rclpy or rosbags) and reject what cannot project.

    Raises ConversionError for: a non-finite or all-zero K (uncalibrated), fx or fy <= 0,
    non-finite D, a plumb_bob D whose length is not 0, 4 or 5 (extra zero coefficients are
    dropped), a rational_polynomial with non-zero k4..k6, and any other model ('' and 'none'
    included) with non-zero D; rectified: a P that is not finite or has no focal length, an R
    that is not a rotation. P's fourth column (a stereo baseline, in the first camera's frame)
    is not applied: the image's frame_id is taken to locate its own camera.
    """
    if rectified:
        return _rectified(msg)
    K = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if K.size != 9 or not np.isfinite(K).all():
        raise ConversionError(f"CameraInfo K must be 9 finite numbers, got {K.tolist()}")
    K = K.reshape(3, 3)
    if not K.any():
        raise ConversionError("CameraInfo K is all zero (camera not calibrated)")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConversionError(
            f"CameraInfo K has non-positive focal length (fx {K[0, 0]}, fy {K[1, 1]})")
    D, model = _distortion(str(msg.distortion_model), np.asarray(msg.d, dtype=np.float64))
    return CameraCalib(K=K, D=D, distortion_model=model, width=int(msg.width),
                       height=int(msg.height), frame_id=str(msg.header.frame_id))


def _rectified(msg: Any) -> CameraCalib:
    P = np.asarray(msg.p, dtype=np.float64).reshape(-1)
    if P.size != 12 or not np.isfinite(P).all() or P[0] <= 0 or P[5] <= 0:
        raise ConversionError(f"CameraInfo P must be 12 finite numbers with positive focal "
                              f"lengths for a rectified image, got {P.tolist()} (is the camera "
                              "calibrated? set CAM.rectified: false for a raw image)")
    R = np.asarray(msg.r, dtype=np.float64).reshape(-1)
    R = np.eye(3) if R.size != 9 or not R.any() else R.reshape(3, 3)  # some drivers leave 0
    if not np.isfinite(R).all() or not np.allclose(R @ R.T, np.eye(3), atol=1e-5):
        raise ConversionError(f"CameraInfo R is not a rotation: {R.tolist()}")
    T = np.eye(4)
    T[:3, :3] = R
    return CameraCalib(K=P.reshape(3, 4)[:, :3].copy(), D=np.zeros(0), distortion_model="none",
                       width=int(msg.width), height=int(msg.height),
                       frame_id=str(msg.header.frame_id), T_image_cam=T)


def camera_view(name: str, rgb: np.ndarray, calib: CameraCalib, T_cam_lidar: np.ndarray,
                frame_id: str) -> CameraView:
    """The engine's view of one camera image: its calibration, and the extrinsic (LiDAR ->
    the camera's optical frame) carried on to the frame the image projects from."""
    return CameraView(name=name, image=rgb, K=calib.K,
                      T_cam_lidar=calib.T_image_cam @ np.asarray(T_cam_lidar, np.float64),
                      D=calib.D, distortion_model=calib.distortion_model, frame_id=frame_id)


def rectified_from_topic(setting: str, image_topic: str) -> bool:
    """A camera's `CAM.rectified` setting: 'true', 'false', or 'auto', which reads the image
    topic's name the way image_proc names its outputs (image_rect, image_rect_color)."""
    if setting == "auto":
        return any(part.startswith("image_rect") for part in image_topic.split("/"))
    return setting == "true"


def _distortion(model: str, d: np.ndarray) -> tuple[np.ndarray, str]:
    """(D, model) normalised to plumb_bob or none; see camera_info_to_calib for rejections."""
    d = d.reshape(-1)
    if not np.isfinite(d).all():
        raise ConversionError(f"CameraInfo D ({model!r}) has non-finite values: {d.tolist()}")
    if not d.any():
        return np.zeros(0), "none"
    if model == "rational_polynomial":
        # k1, k2, p1, p2, k3 come first and mean the same as in plumb_bob
        if d[5:].any():
            raise ConversionError(
                f"CameraInfo distortion rational_polynomial has non-zero k4..k6 "
                f"{d[5:].tolist()}; only its plumb_bob part (k1, k2, p1, p2, k3) is supported")
    elif model != "plumb_bob":
        raise ConversionError(
            f"CameraInfo distortion model {model!r} with non-zero D {d.tolist()} is not "
            "supported (supported: plumb_bob, rational_polynomial with k4..k6 = 0, D all zero)")
    if d.size > 5 and not d[5:].any():
        d = d[:5]
    if d.size not in (4, 5):
        raise ConversionError(
            f"CameraInfo {model} needs 4 or 5 coefficients, got {d.size}: {d.tolist()}")
    return d.copy(), "plumb_bob"


def check_image_matches_info(image_hw: tuple[int, int], calib: CameraCalib) -> None:
    """Raise ConversionError if the calibrated size disagrees with the image's (H, W).

    A CameraInfo width or height of 0 means the size is unknown and is accepted.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    if calib.width == 0 or calib.height == 0:
        return
    if (height, width) != (calib.height, calib.width):
        raise ConversionError(
            f"Image is {width}x{height} but its CameraInfo ({calib.frame_id or 'no frame_id'}) "
            f"is calibrated for {calib.width}x{calib.height}")
