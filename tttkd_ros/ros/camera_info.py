"""sensor_msgs/CameraInfo -> the intrinsics the projection uses, with sanity checks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tttkd_ros.ros.convert_base import ConversionError


@dataclass
class CameraCalib:
    """Intrinsics of one camera.

    K: (3, 3) float64. D: (k,) float64 plumb_bob coefficients (k1, k2, p1, p2[, k3]) with
    k in {0, 4, 5}; empty means no distortion. distortion_model: the model D follows after
    normalisation, 'plumb_bob' or 'none' (a rational_polynomial whose k4..k6 are zero is
    plumb_bob). width / height: the calibrated image size, 0 when unknown.
    """

    K: np.ndarray
    D: np.ndarray
    distortion_model: str
    width: int
    height: int
    frame_id: str


def camera_info_to_calib(msg: Any) -> CameraCalib:
    """Read K and D from a CameraInfo (rclpy or rosbags) and reject what cannot project.

    Raises ConversionError for: a non-finite or all-zero K (uncalibrated), fx or fy <= 0,
    non-finite D, a plumb_bob D whose length is not 0, 4 or 5 (extra zero coefficients are
    dropped), a rational_polynomial with non-zero k4..k6, and any other model ('' and 'none'
    included) with non-zero D.
    """
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
