"""CameraInfo -> CameraCalib: what is accepted, how D is normalised, what is rejected."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="rclpy's sensor_msgs is not installed")
from sensor_msgs.msg import CameraInfo

from tttkd_ros.ros.convert import (
    CameraCalib,
    ConversionError,
    camera_info_to_calib,
    check_image_matches_info,
)

K = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]


def info(model: str = "plumb_bob", d: list[float] | None = None, k: list[float] = K,
         width: int = 640, height: int = 480) -> CameraInfo:
    msg = CameraInfo(width=width, height=height, distortion_model=model,
                     d=[0.1, -0.05, 0.001, 0.002, 0.01] if d is None else d, k=k)
    msg.header.frame_id = "cam_optical"
    return msg


def test_plumb_bob_is_read_as_given() -> None:
    calib = camera_info_to_calib(info())
    np.testing.assert_array_equal(calib.K, np.array(K).reshape(3, 3))
    np.testing.assert_array_equal(calib.D, [0.1, -0.05, 0.001, 0.002, 0.01])
    assert calib.K.dtype == np.float64 and calib.D.dtype == np.float64
    assert (calib.distortion_model, calib.width, calib.height, calib.frame_id) == (
        "plumb_bob", 640, 480, "cam_optical")


@pytest.mark.parametrize(("model", "d"), [
    ("plumb_bob", [0.0] * 5), ("plumb_bob", []), ("", []), ("none", [0.0] * 4),
    ("equidistant", [0.0] * 4), ("rational_polynomial", [0.0] * 8),
])
def test_zero_distortion_means_none(model: str, d: list[float]) -> None:
    calib = camera_info_to_calib(info(model, d))
    assert calib.D.shape == (0,) and calib.distortion_model == "none"


def test_plumb_bob_extra_zero_coefficients_are_dropped_and_four_kept() -> None:
    assert camera_info_to_calib(info(d=[0.1, 0.2, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0])).D.tolist() == [
        0.1, 0.2, 0.0, 0.0, 0.3]
    assert camera_info_to_calib(info(d=[0.1, 0.2, 0.3, 0.4])).D.tolist() == [0.1, 0.2, 0.3, 0.4]


def test_rational_polynomial_with_zero_k4_to_k6_is_plumb_bob() -> None:
    calib = camera_info_to_calib(info("rational_polynomial",
                                      [0.1, -0.2, 0.003, 0.004, 0.05, 0.0, 0.0, 0.0]))
    assert calib.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(calib.D, [0.1, -0.2, 0.003, 0.004, 0.05])


def test_rosbags_camera_info() -> None:
    typesys = pytest.importorskip("rosbags.typesys")
    types = typesys.get_typestore(typesys.Stores.ROS2_JAZZY).types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="cam")
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
    msg = types["sensor_msgs/msg/CameraInfo"](
        header=header, height=480, width=640, distortion_model="plumb_bob",
        d=np.array([0.1, 0.0, 0.0, 0.0, 0.0]), k=np.array(K), r=np.eye(3).reshape(-1),
        p=np.zeros(12), binning_x=0, binning_y=0, roi=roi)
    calib = camera_info_to_calib(msg)
    assert calib.frame_id == "cam" and calib.D.tolist() == [0.1, 0.0, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(calib.K, np.array(K).reshape(3, 3))


@pytest.mark.parametrize(("msg", "match"), [
    (info(k=[0.0] * 9), r"K is all zero \(camera not calibrated\)"),
    (info(k=[0.0, 0, 320, 0, 510, 240, 0, 0, 1]), r"non-positive focal length \(fx 0.0, fy 510"),
    (info(k=[500.0, 0, 320, 0, -5, 240, 0, 0, 1]), r"non-positive focal length .*fy -5.0"),
    (info(k=[float("nan"), 0, 320, 0, 500, 240, 0, 0, 1]), r"K must be 9 finite numbers"),
    (info(d=[0.1, float("inf"), 0, 0, 0]), r"D \('plumb_bob'\) has non-finite values"),
    (info(d=[0.1, 0.2, 0.3]), r"plumb_bob needs 4 or 5 coefficients, got 3"),
    (info(d=[0.1, 0.2, 0.0, 0.0, 0.3, 0.4]), r"plumb_bob needs 4 or 5 coefficients, got 6"),
    (info("rational_polynomial", [0.1, 0.2, 0, 0, 0.3, 0.01, 0, 0]),
     r"rational_polynomial has non-zero k4..k6 \[0.01, 0.0, 0.0\]"),
    (info("equidistant", [0.1, 0.0, 0.0, 0.0]),
     r"distortion model 'equidistant' with non-zero D \[0.1, 0.0, 0.0, 0.0\] is not supported"),
    (info("", [0.1, 0.0, 0.0, 0.0, 0.0]), r"distortion model '' with non-zero D"),
    (info("none", [0.0, 0.0, 0.0, 0.0, 0.2]), r"distortion model 'none' with non-zero D"),
])
def test_rejections(msg: CameraInfo, match: str) -> None:
    with pytest.raises(ConversionError, match=match):
        camera_info_to_calib(msg)


def calib(width: int, height: int) -> CameraCalib:
    return CameraCalib(K=np.eye(3), D=np.zeros(0), distortion_model="none", width=width,
                       height=height, frame_id="cam")


def test_image_size_must_match_calibrated_size() -> None:
    check_image_matches_info((480, 640), calib(640, 480))
    with pytest.raises(ConversionError, match=r"Image is 640x360 but its CameraInfo \(cam\) is "
                                              r"calibrated for 640x480"):
        check_image_matches_info((360, 640), calib(640, 480))
    with pytest.raises(ConversionError, match=r"calibrated for 640x480"):
        check_image_matches_info((640, 480), calib(640, 480))  # transposed


@pytest.mark.parametrize(("width", "height"), [(0, 0), (0, 480), (640, 0)])
def test_unknown_calibrated_size_accepts_any_image(width: int, height: int) -> None:
    check_image_matches_info((123, 45), calib(width, height))
